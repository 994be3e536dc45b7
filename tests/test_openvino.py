"""OpenVINO targets on the real converter (openvino + nncf) and runtime."""

import numpy as np
import pytest

import edgekit
from edgekit.errors import DeviceError, InputError
from tests.conftest import STUDENT, as_input
from tests.reference import assert_agrees, portrait_inputs

pytest.importorskip("openvino")


@pytest.mark.parametrize("target,min_iou", [("openvino-fp32", 0.999),
                                            pytest.param("openvino-fp16", 0.99, marks=pytest.mark.slow),
                                            pytest.param("openvino-int8", 0.97, marks=pytest.mark.slow)])
def test_student_variants_pass_gate(student_artifacts, portraits, target, min_iou):
    art = student_artifacts(target)
    assert_agrees(art, STUDENT, portrait_inputs(portraits), min_iou)  # OpenVINO here vs ORT on the source
    assert art.options["inference_precision"] == "f32"
    assert set(art.files) == {"model", "weights"}


def test_fp32_runs_in_f32_unless_bf16_is_asked(student_artifacts, portraits):
    art = student_artifacts("openvino-fp32")
    x = {"image": as_input(portraits[0][:1])}
    ref = edgekit.load(student_artifacts("onnx-fp32").path).run(x)["mask"]
    f32 = edgekit.load(art.path).run(x)["mask"]
    bf16 = edgekit.load(art.path, delegate="cpu@bf16").run(x)["mask"]
    assert np.abs(f32 - ref).max() < 1e-4
    assert np.abs(bf16 - ref).max() > 10 * np.abs(f32 - ref).max()  # the hint really changed precision


@pytest.mark.slow
def test_int8_on_real_looking_inputs(student_artifacts, portraits):
    assert_agrees(student_artifacts("openvino-int8"), STUDENT, portrait_inputs(portraits, 12), 0.97)


@pytest.mark.slow
def test_accuracy_control_mode(student_artifacts, portraits):
    art = student_artifacts("openvino-int8", options={"nncf_mode": "accuracy_control"})
    assert art.options["nncf_mode"] == "accuracy_control"
    assert_agrees(art, STUDENT, portrait_inputs(portraits, 12), 0.97)


def test_devices_and_placement(student_artifacts):
    art = student_artifacts("openvino-fp32")
    for device in ("cpu", "auto", "hetero:cpu", "auto:cpu"):
        p = edgekit.load(art.path, delegate=device).placement()
        assert p.ops_per_unit.get("cpu", 0) > 50, (device, p)
    with pytest.raises(DeviceError, match="available: cpu"):
        edgekit.load(art.path, delegate="gpu")
    with pytest.raises(DeviceError, match="NPU is not present"):
        edgekit.load(art.path, delegate="hetero:npu,cpu")
    with pytest.raises(InputError, match="hetero:gpu,cpu"):
        edgekit.load(art.path, delegate="hetero")
