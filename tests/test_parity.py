import numpy as np
import pytest

from edgekit.errors import ParityError
from edgekit.parity import compare_outputs, mask_iou, psnr
from edgekit.spec import IOSpec, TensorSpec


def _io(kind):
    return IOSpec((TensorSpec("x", (1, 3, 8, 8)),), (TensorSpec("y", (1, 1, 8, 8), kind=kind),))


def test_metrics():
    a = np.zeros((8, 8), bool)
    b = a.copy()
    a[:4], b[:2] = True, True
    assert mask_iou(a, b) == pytest.approx(0.5)
    assert mask_iou(np.zeros(4, bool), np.zeros(4, bool)) == 1.0
    ref = np.linspace(0, 1, 100)
    assert psnr(ref, ref + 0.01) == pytest.approx(40.0, abs=0.01)


def test_gate_fails_on_wrong_mask_and_raises():
    rng = np.random.default_rng(0)
    ref = [{"y": rng.random((1, 1, 8, 8)).astype(np.float32)} for _ in range(4)]
    flipped = [{"y": 1 - r["y"]} for r in ref]
    report = compare_outputs(ref, flipped, _io("probability"), "int8")
    assert not report.passed and report.outputs[0].iou < 0.2
    with pytest.raises(ParityError, match="mask IoU"):
        report.raise_if_failed("x")


def test_fp32_tolerance_is_tight():
    ref = [{"y": np.full((1, 1, 8, 8), 0.3, np.float32)}]
    near = [{"y": ref[0]["y"] + 5e-3}]
    assert compare_outputs(ref, near, _io("tensor"), "fp16").passed
    assert not compare_outputs(ref, near, _io("tensor"), "fp32").passed


def test_image_outputs_use_psnr():
    ref = [{"y": np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 1, 8, 8)}]
    noisy = [{"y": ref[0]["y"] + np.float32(0.05)}]
    report = compare_outputs(ref, noisy, _io("image"), "int8")
    assert report.outputs[0].psnr == pytest.approx(26.0, abs=0.1)
    assert not report.passed
