"""Core ML targets: real coremltools conversions; numbers checked by edgekit's MIL evaluator off macOS."""

import platform

import numpy as np
import pytest

import edgekit
from edgekit.errors import ParityError, RuntimeUnavailableError

pytest.importorskip("onnx2torch")  # imports torchvision, which must load before coremltools' TensorFlow


@pytest.fixture(scope="session")
def mil():
    from edgekit.backends.coreml import mil_reference

    return mil_reference


@pytest.mark.parametrize("target,min_iou", [("coreml-fp32", 0.999), ("coreml-fp16", 0.99), ("coreml-w8", 0.97),
                                            ("coreml-w6", 0.97), ("coreml-w4", 0.97)])
def test_student_variants_pass_verified_gate(student_artifacts, target, min_iou):
    art = student_artifacts(target)
    assert art.parity["passed"] and art.parity["outputs"][0]["iou"] >= min_iou
    if platform.system() != "Darwin":
        assert "MIL reference evaluator" in art.parity["verified_by"]
        assert "not Apple" in art.parity["verified_by"]
    if target == "coreml-fp32":
        assert art.parity["outputs"][0]["max_abs"] < 1e-4


def test_package_spec(student_artifacts, mil):
    from edgekit.backends.coreml.converter import import_coremltools

    ct = import_coremltools()
    for target, weight_op in (("coreml-fp16", None), ("coreml-w8", "constexpr_affine_dequantize"),
                              ("coreml-w6", "constexpr_lut_to_dense")):
        art = student_artifacts(target)
        spec = ct.models.MLModel(str(art.file()), skip_model_load=True).get_spec()
        assert spec.WhichOneof("Type") == "mlProgram" and spec.specificationVersion >= 7  # iOS16+
        assert [i.name for i in spec.description.input] == ["image"]
        assert list(spec.description.input[0].type.multiArrayType.shape) == [1, 3, 256, 256]
        assert [o.name for o in spec.description.output] == ["mask"]
        assert "edgekit.preprocessing" in spec.description.metadata.userDefined
        ops = {op.op_type for op in mil.load_program(art.file()).functions["main"].operations}
        assert "conv" in ops and "upsample_bilinear" in ops
        if weight_op:
            assert weight_op in ops
    assert student_artifacts("coreml-w6").size_bytes < 0.5 * student_artifacts("coreml-fp32").size_bytes


def test_image_input_folds_normalization(student_artifacts):
    art = student_artifacts("coreml-fp16", options={"input_type": "image"})
    assert art.io.inputs[0].value_range == (0.0, 255.0) and art.source_io.inputs[0].mean == (0.5, 0.5, 0.5)
    assert art.parity["passed"] and art.parity["outputs"][0]["iou"] >= 0.99


def test_prediction_needs_macos(student_artifacts):
    if platform.system() == "Darwin":
        pytest.skip("this machine can predict with Core ML")
    with pytest.raises(RuntimeUnavailableError, match="needs macOS"):
        edgekit.load(student_artifacts("coreml-fp16").path)


def test_validate_uses_the_evaluator_and_catches_drift(student_artifacts):
    report = edgekit.validate(student_artifacts("coreml-w8").path, samples=4)
    assert report.passed and "MIL" in report.verified_by


def test_unknown_op_is_unverified_not_passed(workdir):
    torch = pytest.importorskip("torch")

    class Atan(torch.nn.Module):
        example_input_shape = (1, 3, 16, 16)

        def forward(self, x):
            return torch.atan(x)

    with pytest.raises(ParityError, match="unverified.*atan"):
        edgekit.convert(Atan(), "coreml-fp16", workdir / "atan")
    assert not (workdir / "atan").exists()


def test_mil_kernels_against_torch(mil):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 4, 5, 6)).astype(np.float32)
    w = rng.standard_normal((4, 2, 3, 3)).astype(np.float32)
    got = mil.KERNELS["conv_transpose"]({"x": x, "weight": w, "bias": None, "strides": [2, 2], "dilations": [1, 1],
                                          "groups": 1, "pad": [1, 1, 1, 1]})
    ref = torch.nn.functional.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(w), stride=2, padding=1)
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-5)
    ps = mil.KERNELS["pixel_shuffle"]({"x": x, "upscale_factor": 2})
    np.testing.assert_allclose(ps, torch.nn.functional.pixel_shuffle(torch.from_numpy(x), 2).numpy())
