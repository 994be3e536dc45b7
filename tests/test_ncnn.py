"""NCNN targets: pnnx export, the real ncnn runtime on CPU and on the Vulkan software GPU (lavapipe)."""

import numpy as np
import pytest

import edgekit
from edgekit.backends.ncnn import model as ncnn_model
from edgekit.errors import DeviceError
from tests.conftest import STUDENT
from tests.reference import assert_agrees, portrait_inputs, random_inputs

ncnn = pytest.importorskip("ncnn")


@pytest.mark.parametrize("target,min_iou", [("ncnn-fp32", 0.999),
                                            pytest.param("ncnn-fp16", 0.99, marks=pytest.mark.slow)])
def test_student_variants_pass_gate(student_artifacts, portraits, target, min_iou):
    art = student_artifacts(target)
    assert art.route == "pnnx"
    assert_agrees(art, STUDENT, portrait_inputs(portraits), min_iou)  # in ncnn here, against ORT on the source
    assert [t.name for t in art.io.inputs] == ["in0"] and art.source_io.inputs[0].name == "image"


@pytest.mark.slow
def test_fp16_weights_halve_the_file(student_artifacts):
    assert student_artifacts("ncnn-fp16").file("weights").stat().st_size < \
        0.6 * student_artifacts("ncnn-fp32").file("weights").stat().st_size


def test_vulkan_gpu_matches_cpu(student_artifacts, portraits):
    if ncnn.get_gpu_count() == 0:
        pytest.fail("no Vulkan device: `make setup` installs mesa-vulkan-drivers (lavapipe) for this test")
    art = student_artifacts("ncnn-fp32")
    x = {"image": ((portraits[0][:2] - 0.5) / 0.5).transpose(0, 3, 1, 2).astype(np.float32)}
    cpu = edgekit.load(art.path)
    cpu2 = edgekit.load(art.path, threads=2)
    gpu = edgekit.load(art.path, delegate="gpu")
    for i in range(2):
        xi = {"image": x["image"][i:i + 1]}
        a, b = cpu.run(xi)["mask"], gpu.run(xi)["mask"]
        assert np.abs(a - b).max() < 5e-3
        # the GPU really computed: ncnn's CPU kernels give the same bits at any thread count, so a silent
        # fall-back to the CPU would too; Vulkan shaders round differently on most pixels
        assert np.array_equal(a, cpu2.run(xi)["mask"])
        assert (a != b).mean() > 0.1
    p = gpu.placement()
    layers = [ly for ly in ncnn_model.read(art.file("model"), art.file("weights")) if ly.type != "Input"]
    assert p.device == f"gpu:{ncnn.get_gpu_info(0).device_name()}"
    assert p.ops_per_unit[p.device] + p.ops_per_unit.get("cpu", 0) == len(layers)
    assert p.ops_per_unit[p.device] > 50


def test_missing_vulkan_device_is_an_error(student_artifacts):
    with pytest.raises(DeviceError, match="no Vulkan GPU 7"):
        edgekit.load(student_artifacts("ncnn-fp32").path, delegate="gpu:7")


@pytest.mark.slow
def test_int8_runs_on_stock_ncnn(student_artifacts, portraits):
    from edgekit.core.parity import mask_iou
    from tests.conftest import as_input

    art = student_artifacts("ncnn-int8")
    assert_agrees(art, STUDENT, portrait_inputs(portraits), 0.97)
    layers = ncnn_model.read(art.file("model"), art.file("weights"))
    quantized = [ly for ly in layers if ly.params.get(8)]
    assert len(quantized) == art.options["int8_layers"] > 20
    conv = next(ly for ly in quantized if ly.type == "Convolution")
    assert conv.arrays["weight"][0] == ncnn_model.TAG_INT8 and conv.arrays["weight"][1].dtype == np.int8
    assert conv.arrays["weight_scales"][1].shape == (int(conv.params[0]),)
    table = art.file("table").read_text().splitlines()
    assert len(table) == 2 * len(quantized) and table[0].startswith(f"{quantized[0].name}_param_0 ")
    # each quantized layer's weights take 1 byte instead of 4 (the squeeze-excite layers, float by default, do not)
    int8_weights = sum(ly.arrays["weight"][1].size for ly in quantized)
    fp32 = student_artifacts("ncnn-fp32")
    saved = fp32.file("weights").stat().st_size - art.file("weights").stat().st_size
    assert saved >= 0.9 * 3 * int8_weights and int8_weights > 0.5 * sum(
        ly.arrays["weight"][1].size for ly in ncnn_model.read(fp32.file("model"), fp32.file("weights"))
        if "weight" in ly.arrays)
    # int8 inference really happens: turning it off changes the numbers
    q = edgekit.load(art.path)
    x = {"image": as_input(portraits[0][:1])}
    ref = edgekit.load(student_artifacts("onnx-fp32").path).run(x)["mask"]
    got = q.run(x)["mask"]
    assert mask_iou(ref > 0.5, got > 0.5) > 0.9 and np.abs(ref - got).max() > 1e-3


def test_kl_threshold_clips_outliers():
    from edgekit.backends.ncnn.int8 import aciq_clip, kl_threshold

    rng = np.random.default_rng(0)
    x = np.abs(np.concatenate([rng.standard_normal(100_000), [40.0]]))
    hist, edges = np.histogram(x, bins=2048, range=(0, x.max()))
    t = kl_threshold(hist.astype(np.float64), edges[1])
    assert 2.0 < t < 10.0  # far below the 40.0 outlier, above the bulk
    assert 0 < aciq_clip(40.0, x.size) < 40.0


@pytest.mark.slow
def test_param_bin_roundtrip(student_artifacts, tmp_path):
    for target in ("ncnn-fp32", "ncnn-fp16", "ncnn-int8"):
        art = student_artifacts(target)
        layers = ncnn_model.read(art.file("model"), art.file("weights"))
        ncnn_model.write(layers, tmp_path / "m.param", tmp_path / "m.bin")
        assert (tmp_path / "m.bin").read_bytes() == art.file("weights").read_bytes()


@pytest.mark.slow
def test_pnnx_pad_gap_is_repaired(mediapipe_models, workdir):
    """MediaPipe's face detector (TFLite -> ONNX with tf2onnx) has channel Pads that pnnx leaves as a
    layer ncnn does not know; edgekit rewrites them as ncnn Padding and the result matches ORT."""
    import subprocess
    import sys

    import edgekit

    onnx_path = workdir / "face_detection.onnx"
    res = subprocess.run([sys.executable, "-m", "tf2onnx.convert", "--tflite",
                          str(mediapipe_models.model_path("face_detection_short_range")), "--output", str(onnx_path),
                          "--opset", "13"], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-500:]
    art = edgekit.convert(onnx_path, "ncnn-fp32", workdir / "fd-ncnn", calib_samples=4, held_back=2)
    repaired = [n for n in art.notes if "Pad -> Padding" in n]
    assert len(repaired) >= 5
    got = assert_agrees(art, onnx_path, random_inputs(art.source_io, n=2))  # ncnn here vs ORT on the ONNX file
    assert got.cosine > 0.9999
    assert "Pad " not in art.file("model").read_text()
