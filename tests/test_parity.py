import numpy as np
import pytest

from edgekit.core.iospec import IOSpec, TensorSpec
from edgekit.core.parity import check, compare_outputs, mask_iou, psnr
from edgekit.errors import InputError, ParityError


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


# ---------------------------------------------------------------- class maps, cosine, non-finite values


def _io_out(shape, kind, layout="NCHW"):
    return IOSpec((TensorSpec("x", (1, 3, 4, 4)),), (TensorSpec("y", shape, kind=kind, layout=layout),))


def _one_hot(labels: np.ndarray, classes: int) -> np.ndarray:
    """(H, W) labels -> (1, C, H, W) probabilities (1 for the class, 0 elsewhere)."""
    return np.eye(classes, dtype=np.float32)[labels].transpose(2, 0, 1)[None]


def test_class_1_everywhere_vs_class_2_everywhere_fails():
    ref = [{"y": _one_hot(np.full((4, 4), 1), 3)}]
    cand = [{"y": _one_hot(np.full((4, 4), 2), 3)}]
    report = compare_outputs(ref, cand, _io_out((1, 3, 4, 4), "probability"), "int8")
    o = report.outputs[0]
    # no pixel has the same class; classes present: {1, 2}, each with intersection 0 -> IoU 0
    assert o.agreement == 0.0 and o.iou == 0.0 and o.classes == 2
    assert not report.passed
    with pytest.raises(ParityError, match="pixel agreement 0.0000"):
        report.raise_if_failed("x")


def test_label_maps_compared_class_by_class():
    ref = np.array([[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 2, 2], [2, 2, 2, 2]])
    cand = ref.copy()
    cand[0, 1] = 1  # one pixel of class 0 becomes class 1
    report = compare_outputs([{"y": ref[None, None].astype(np.int64)}], [{"y": cand[None, None].astype(np.int64)}],
                             _io_out((1, 1, 4, 4), "labels"), "int8")
    o = report.outputs[0]
    assert o.agreement == pytest.approx(15 / 16)
    # class 0: 3 shared of 4 in either; class 1: 4 shared of 5; class 2: 8 of 8
    assert o.iou == pytest.approx((3 / 4 + 4 / 5 + 8 / 8) / 3)
    assert o.classes == 3
    assert not report.passed  # 15/16 = 0.9375 < 0.98 agreement; mean IoU 0.85 < 0.97


def test_class_axis_follows_the_layout():
    labels = np.array([[0, 1], [1, 0]])
    nhwc = _one_hot(labels, 2).transpose(0, 2, 3, 1)  # (1, 2, 2, C)
    io = _io_out((1, 2, 2, 2), "logits", layout="NHWC")
    swapped = nhwc[..., ::-1].copy()  # every pixel's class flipped
    o = compare_outputs([{"y": nhwc}], [{"y": swapped}], io, "int8").outputs[0]
    assert o.agreement == 0.0 and o.iou == 0.0
    assert compare_outputs([{"y": nhwc}], [{"y": nhwc.copy()}], io, "fp32").passed


def test_classifier_top1_agreement():
    ref = [{"y": np.array([[0.1, 0.7, 0.2]], np.float32)}, {"y": np.array([[0.6, 0.3, 0.1]], np.float32)}]
    cand = [{"y": np.array([[0.1, 0.2, 0.7]], np.float32)}, {"y": np.array([[0.6, 0.3, 0.1]], np.float32)}]
    o = compare_outputs(ref, cand, _io_out((1, 3), "probability"), "int8").outputs[0]
    assert o.agreement == pytest.approx(0.5)  # top-1 differs on the first sample only
    assert o.iou == pytest.approx(0.5)  # sample 1: classes {1, 2}, both IoU 0; sample 2: class 0, IoU 1


def test_binary_probability_map_needs_cosine_too():
    # same mask (first pixel above 0.5 on both sides) but values far apart
    ref = [{"y": np.array([1.0, 0.0], np.float32).reshape(1, 1, 1, 2)}]
    cand = [{"y": np.array([0.6, 0.4], np.float32).reshape(1, 1, 1, 2)}]
    report = compare_outputs(ref, cand, _io_out((1, 1, 1, 2), "probability"), "int8")
    o = report.outputs[0]
    assert o.iou == 1.0
    assert o.cosine == pytest.approx(0.6 / np.sqrt(0.6**2 + 0.4**2))  # = 0.832
    assert not report.passed and any("cosine" in f for f in o.failures)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("kind", ["image", "probability", "logits", "tensor"])
def test_nan_candidate_fails_at_every_precision(kind, precision):
    ref = [{"y": np.linspace(0, 1, 64, dtype=np.float32).reshape(1, 1, 8, 8)}]
    cand = [{"y": np.full((1, 1, 8, 8), np.nan, np.float32)}]
    cand[0]["y"][0, 0, 0, :3] = [0.0, np.inf, -np.inf]
    report = compare_outputs(ref, cand, _io(kind), precision)
    assert not report.passed
    assert report.failures == [
        "y: artifact output y has 63 non-finite value(s) of 64 (NaN/Inf; the reference has none)"]


def test_nan_reference_blames_the_source_model():
    ref = [{"y": np.full((1, 1, 8, 8), np.nan, np.float32)}]
    with pytest.raises(InputError, match="source model itself .* output 'y' has 64 non-finite"):
        compare_outputs(ref, [{"y": np.zeros((1, 1, 8, 8), np.float32)}], _io("image"), "fp32")


class _Echo:
    """A session returning its input as output 'y'."""

    io = _io("tensor")
    verified_by = "runtime"

    def run(self, s):
        return {"y": s["x"][:, :1, :, :]}


def test_nan_inputs_are_refused_before_running():
    samples = [{"x": np.zeros((1, 3, 8, 8), np.float32)}, {"x": np.full((1, 3, 8, 8), np.inf, np.float32)}]
    with pytest.raises(InputError, match=r"my\.npy for input 'x' holds 192 non-finite value\(s\) .* first sample 1"):
        check(_Echo(), _Echo(), samples, "fp32", inputs_from="my.npy")


def test_finite_outputs_still_pass():
    samples = [{"x": np.random.default_rng(0).random((1, 3, 8, 8)).astype(np.float32)}]
    assert check(_Echo(), _Echo(), samples, "fp32").passed


def test_tolerances_not_loosened():
    from edgekit.core.parity import TOLERANCES

    assert TOLERANCES["fp32"].max_abs == 1e-3 and TOLERANCES["fp32"].min_iou == 0.995
    assert TOLERANCES["int8"].min_iou == 0.97 and TOLERANCES["int8"].min_cosine == 0.98
    assert all(t.min_map_cosine == t.min_cosine for t in TOLERANCES.values())
