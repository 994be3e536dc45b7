"""Core ML targets: real coremltools conversions; numbers checked by edgekit's MIL evaluator off macOS."""

import json
import platform
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.core.files import sha256_file
from edgekit.errors import InputError, ParityError, RuntimeUnavailableError
from tests.conftest import STUDENT
from tests.reference import assert_agrees, portrait_inputs

pytest.importorskip("onnx2torch")  # imports torchvision, which must load before coremltools' TensorFlow


@pytest.fixture(scope="session")
def mil():
    from edgekit.backends.coreml import mil_reference

    return mil_reference


@pytest.mark.parametrize("target,min_iou", [("coreml-fp32", 0.999), ("coreml-fp16", 0.99), ("coreml-w8", 0.97),
                                            ("coreml-w6", 0.97), ("coreml-w4", 0.97)])
@pytest.mark.slow
def test_student_variants_pass_verified_gate(student_artifacts, portraits, target, min_iou):
    art = student_artifacts(target)
    if platform.system() != "Darwin":
        assert "MIL reference evaluator" in art.parity["verified_by"]
        assert "not Apple" in art.parity["verified_by"]
    # independent of the gate: the program evaluated here on held-out portraits against ORT on the source
    got = assert_agrees(art, STUDENT, portrait_inputs(portraits, 2), min_iou)
    if target == "coreml-fp32":
        assert got.max_abs < 1e-4, got


@pytest.mark.slow
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


@pytest.mark.slow
def test_image_input_folds_normalization(student_artifacts, portraits):
    art = student_artifacts("coreml-fp16", options={"input_type": "image"})
    assert art.io.inputs[0].value_range == (0.0, 255.0) and art.source_io.inputs[0].mean == (0.5, 0.5, 0.5)
    # the folded normalization computes what the source does: same source-convention input, same mask
    assert_agrees(art, STUDENT, portrait_inputs(portraits, 2), 0.99)


@pytest.mark.slow
def test_prediction_needs_macos(student_artifacts):
    if platform.system() == "Darwin":
        pytest.skip("this machine can predict with Core ML")
    with pytest.raises(RuntimeUnavailableError, match="needs macOS"):
        edgekit.load(student_artifacts("coreml-fp16").path)


def _negate_largest_int8_blob(weight_bin: Path) -> None:
    """Flip the sign of the biggest int8 weight blob of an ML program's weight.bin (the layout coremltools
    writes: a 64-byte header, then per blob a 64-byte record: 0xDEADBEEF, dtype, size, offset)."""
    data = bytearray(weight_bin.read_bytes())
    blobs, i = [], 0
    while (i := data.find(struct.pack("<I", 0xDEADBEEF), i)) >= 0:
        blobs.append(struct.unpack("<IQQ", data[i + 4:i + 24]))
        i += 4
    _, size, offset = max((b for b in blobs if b[0] == 4), key=lambda b: b[1])  # MIL blob dtype 4: int8
    w = np.frombuffer(bytes(data[offset:offset + size]), np.int8).astype(np.int16)
    data[offset:offset + size] = np.clip(-w, -127, 127).astype(np.int8).tobytes()
    weight_bin.write_bytes(bytes(data))


@pytest.mark.slow
def test_validate_uses_the_evaluator_and_catches_drift(student_artifacts, workdir):
    good = student_artifacts("coreml-w8")
    report = edgekit.validate(good.path, samples=4)
    assert report.passed and "MIL" in report.verified_by
    # real drift: a copy whose largest quantized weight tensor changed sign
    bad = workdir / "coreml-drift"
    shutil.copytree(good.path, bad)
    _negate_largest_int8_blob(next((bad / good.files["model"]).rglob("weight.bin")))
    with pytest.raises(InputError, match="does not match its recorded sha256"):  # refused before it is opened
        edgekit.validate(bad, samples=4)
    manifest = json.loads((bad / "artifact.json").read_text())  # re-record the sha256, as a forger would
    manifest["files"]["model"]["sha256"] = sha256_file(bad / good.files["model"])
    (bad / "artifact.json").write_text(json.dumps(manifest))
    with pytest.raises(ParityError, match="mask IoU"):  # the evaluator runs the changed weights: the gate fails
        edgekit.validate(bad, samples=4)


@pytest.mark.slow
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
    # pad: MIL pairs run over the last dims first-to-last; torch's list runs last dim first
    for mode, torch_mode, value in (("constant", "constant", 0.5), ("reflect", "reflect", None),
                                    ("replicate", "replicate", None)):
        got = mil.KERNELS["pad"]({"x": x, "pad": np.array([1, 2, 0, 3], np.int32), "mode": mode,
                                  "constant_val": value})
        ref = torch.nn.functional.pad(torch.from_numpy(x), (0, 3, 1, 2), mode=torch_mode,
                                      **({"value": value} if value is not None else {}))
        np.testing.assert_array_equal(got, ref.numpy())
    assert mil.KERNELS["pad"]({"x": x, "pad": np.array([0, 0, 2, 0, 0, 0], np.int32)}).shape == (1, 4, 7, 6)
