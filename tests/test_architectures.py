"""Architectures beyond the student (ConvTranspose2d + PixelShuffle U-Net, LayerNorm + attention +
GELU, torchvision LR-ASPP) through every converter's parity gate."""

import pytest

import edgekit
from tests.reference import assert_agrees, random_inputs

ARCHS = ["unet", "vit", "lraspp"]
# onnx2tf and coremltools conversions take tens of seconds each: the fast tier keeps OpenVINO and NCNN
TARGETS = [pytest.param("tflite-fp32", marks=pytest.mark.slow), "openvino-fp32", "ncnn-fp32",
           pytest.param("coreml-fp16", marks=pytest.mark.slow)]


@pytest.fixture(scope="session")
def arch_onnx(workdir):
    """Each architecture exported once to ONNX (the file users would have)."""
    pytest.importorskip("torch")
    from edgekit.core.ingest import export_torch
    from edgekit.zoo.testnets import build

    paths = {}
    for name in ARCHS:
        m = build(name)
        paths[name] = workdir / f"arch-{name}.onnx"
        export_torch(m, paths[name], m.example_input_shape)
    return paths


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("arch", ["unet", "vit", pytest.param("lraspp", marks=pytest.mark.slow)])  # the largest
def test_architecture_passes_gate(arch_onnx, workdir, arch, target):
    art = edgekit.convert(arch_onnx[arch], target, workdir / "archs" / f"{arch}-{target}", calib_samples=8,
                          held_back=4)
    # independent of the gate: the artifact in its runtime against ORT on the exported file, on other inputs
    assert_agrees(art, arch_onnx[arch], random_inputs(art.source_io, n=2))
