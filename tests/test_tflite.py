"""TFLite targets on the real converters (onnx2tf, litert-torch) and the real LiteRT interpreter."""

import numpy as np
import pytest

import edgekit
from edgekit.errors import DeviceError
from tests.conftest import STUDENT
from tests.reference import assert_agrees, portrait_inputs, random_inputs

pytest.importorskip("ai_edge_litert")
pytestmark = pytest.mark.slow  # every test here converts with onnx2tf or litert-torch (tens of seconds)


@pytest.mark.parametrize("target,min_iou", [("tflite-fp32", 0.999), ("tflite-fp16", 0.99),
                                            ("tflite-int8-dynamic", 0.97), ("tflite-int8", 0.97)])
def test_student_variants_pass_gate(student_artifacts, portraits, target, min_iou):
    art = student_artifacts(target)
    # tflite-int8 of a model with squeeze-excite layers: onnx2tf float32, then ai-edge-quantizer (those layers float)
    assert art.route == ("onnx2tf+ai-edge-quantizer" if target == "tflite-int8" else "onnx2tf")
    got = assert_agrees(art, STUDENT, portrait_inputs(portraits), min_iou)  # LiteRT here vs ORT on the source
    assert art.io.inputs[0].layout == "NHWC" and art.io.inputs[0].shape == (1, 256, 256, 3)
    assert art.source_io.inputs[0].layout == "NCHW"
    if target == "tflite-fp32":
        assert got.max_abs < 1e-4


def test_full_int8_on_real_looking_inputs(student_artifacts, portraits):
    assert_agrees(student_artifacts("tflite-int8"), STUDENT, portrait_inputs(portraits, 12), 0.97)


def test_int8_io_dtype(student_artifacts, portraits):
    art = student_artifacts("tflite-int8", options={"io_dtype": "int8"})
    inp, out = art.io.inputs[0], art.io.outputs[0]
    assert inp.dtype == "int8" and out.dtype == "int8" and inp.quant and out.quant
    assert_agrees(art, STUDENT, portrait_inputs(portraits), 0.97)  # (de)quantized IO computes the same mask
    y = edgekit.load(art.path).run({"image": np.zeros((1, 3, 256, 256), np.float32)})["mask"]
    assert y.dtype == np.float32 and y.shape == (1, 1, 256, 256)


def test_placement_reports_xnnpack_and_cpu_kernels(student_artifacts):
    art = student_artifacts("tflite-fp32")
    p = edgekit.load(art.path).placement()
    assert p.ops_per_unit["cpu:xnnpack"] > 20
    ref = edgekit.load(art.path, delegate="cpu-ref").placement()
    assert set(ref.ops_per_unit) == {"cpu:builtin"}
    assert sum(ref.ops_per_unit.values()) == sum(p.ops_per_unit.values())


def test_gpu_delegate_missing_is_an_error(student_artifacts, tmp_path):
    art = student_artifacts("tflite-fp32")
    with pytest.raises(DeviceError, match="only the CPU"):
        edgekit.load(art.path, delegate="gpu")
    with pytest.raises(DeviceError, match="not found"):
        edgekit.load(art.path, delegate=f"gpu={tmp_path}/libnothing.so")
    fake = tmp_path / "libfake.so"
    fake.write_bytes(b"\x7fELF not really")
    with pytest.raises(DeviceError, match="cannot load gpu delegate"):
        edgekit.load(art.path, delegate=f"gpu={fake}")


def test_pytorch_source_uses_litert_torch(workdir):
    torch = pytest.importorskip("torch")
    pytest.importorskip("litert_torch")
    from edgekit.zoo.portrait_seg import build

    model = build()
    model.load_state_dict(torch.load(STUDENT.with_suffix(".pt"), weights_only=True))
    for target in ("tflite-fp32", "tflite-int8"):
        # the student takes (pixel / 255 - 0.5) / 0.5: the "signed" preset; int8 refuses to guess it
        art = edgekit.convert(model, target, workdir / f"torch-{target}", input_shapes={"": (1, 3, 128, 128)},
                              preprocess="signed")
        assert art.route == "litert-torch"
        assert art.io.inputs[0].layout == "NCHW"
        # LiteRT here against the PyTorch module itself, on inputs the gate did not use
        sess = edgekit.load(art.path)
        (name,), (out,) = [t.name for t in art.source_io.inputs], [t.name for t in art.source_io.outputs]
        for sample in random_inputs(art.source_io, n=2):
            with torch.no_grad():
                ref = model.eval()(torch.from_numpy(sample[name])).numpy()
            got = sess.run(sample)[out].reshape(ref.shape)
            iou = ((got > 0.5) & (ref > 0.5)).sum() / max(1, ((got > 0.5) | (ref > 0.5)).sum())
            assert iou >= (0.999 if target == "tflite-fp32" else 0.97), (target, iou)
            if target == "tflite-fp32":
                assert np.abs(got - ref).max() < 1e-4


def test_landscape_needs_and_gets_the_layout_repair(student_artifacts):
    """At 144x256 onnx2tf mixes up the layout after a Resize whose C equals W; the gate catches it and
    the retry with a post-process transpose passes."""
    art = student_artifacts("tflite-fp32", input_shapes={"image": (1, 3, 144, 256)})
    assert assert_agrees(art, STUDENT, random_inputs(art.source_io, n=2)).max_abs < 1e-4  # layout really right
    assert art.options.get("onnx2tf_transpose") and any("first attempt failed" in n for n in art.notes)
