"""Architectures beyond the student (ConvTranspose2d + PixelShuffle U-Net, LayerNorm + attention +
GELU, torchvision LR-ASPP) through every converter's parity gate."""

import pytest

import edgekit

ARCHS = ["unet", "vit", "lraspp"]
TARGETS = ["tflite-fp32", "openvino-fp32", "ncnn-fp32", "coreml-fp16"]


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
@pytest.mark.parametrize("arch", ARCHS)
def test_architecture_passes_gate(arch_onnx, workdir, arch, target):
    art = edgekit.convert(arch_onnx[arch], target, workdir / "archs" / f"{arch}-{target}", calib_samples=8,
                          held_back=4)
    assert art.parity["passed"]
    o = art.parity["outputs"][0]
    assert o["cosine"] >= (0.999 if target.endswith("fp16") else 0.9999)
