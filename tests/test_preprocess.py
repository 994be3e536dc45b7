"""Pre-processing: presets, where it came from, the first-layer check, and the ncnn param reader/writer."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

import edgekit
from edgekit.core import preprocess as pp
from edgekit.core.calibration import normalize
from edgekit.core.iospec import IOSpec, TensorSpec
from edgekit.errors import ConversionError, InputError
from tests.reference import assert_agrees, random_inputs

H = W = 32


def spec_for(preset: str) -> TensorSpec:
    return TensorSpec("image", (1, 3, H, W), **pp.Stated(preset=preset).fields(3))


# ---------------------------------------------------------------- presets and flags


@pytest.mark.parametrize("preset,pixel,expected", [
    ("imagenet", (255, 0, 128), ((1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225)),
    ("unit", (255, 0, 51), (1.0, 0.0, 0.2)),
    ("signed", (255, 0, 51), (1.0, -1.0, -0.6)),
    ("raw255", (255, 0, 51), (255.0, 0.0, 51.0)),
])
def test_presets_give_the_right_numbers(preset, pixel, expected):
    rgb01 = np.array(pixel, np.float32).reshape(1, 1, 1, 3) / 255.0
    x = normalize(rgb01, replace(spec_for(preset), shape=(1, 3, 1, 1)))
    np.testing.assert_allclose(x.reshape(3), expected, rtol=1e-5, atol=1e-5)


def test_flags_override_the_preset_and_are_checked():
    s = pp.parse("imagenet", mean="0.5", std="0.5,0.5,0.5", color="bgr")
    f = s.fields(3)
    assert f["mean"] == (0.5, 0.5, 0.5) and f["std"] == (0.5, 0.5, 0.5) and f["color"] == "BGR"
    assert f["value_range"] == (0.0, 1.0) and s.source() == "preset imagenet + flags"
    assert pp.parse({"value_range": [0, 255]}).source() == "flags"
    for bad, match in [({"preset": "caffe"}, "unknown --preprocess"), ({"std": "0"}, "must not be 0"),
                       ({"value_range": "1,0"}, "LOW < HIGH"), ({"mean": "a,b,c"}, "numbers"),
                       ({"mean": "nan"}, "finite"), ({"color": "RGBA"}, "RGB or BGR"), ({"scale": 2}, "unknown key")]:
        with pytest.raises(InputError, match=match):
            pp.parse(bad)
    with pytest.raises(InputError, match="2 values; the input has 3"):
        pp.parse(mean="0.1,0.2").fields(3)


def test_resolve_records_where_it_came_from():
    io = IOSpec((TensorSpec("image", (1, 3, H, W)), TensorSpec("aux", (1, 10), layout="ANY")), ())

    class Card:
        inputs = {"image": {"mean": [0.5] * 3, "std": [0.5] * 3}}

    assert [t.preprocessing for t in pp.resolve(io, None, pp.Stated()).inputs] == ["assumed", "not an image"]
    assert pp.resolve(io, Card(), pp.Stated()).inputs[0].preprocessing == "card"
    over = pp.resolve(io, Card(), pp.parse("imagenet")).inputs[0]
    assert over.preprocessing == "preset imagenet (over the model card)" and over.std == (0.229, 0.224, 0.225)


# ---------------------------------------------------------------- first-layer check


def _bn_model(trained_on: str, fold: bool = False):
    """conv -> BatchNorm -> ReLU -> pool -> linear, the batch norm's running statistics being those of the
    conv's output on natural-image-like inputs pre-processed as ``trained_on`` (as training would leave them)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from edgekit.core.samples import natural

    rng = np.random.default_rng(0)
    w = rng.standard_normal((16, 3, 3, 3)).astype(np.float32) * 0.3
    x = normalize(natural.dataset(16, H, W, seed=5), spec_for(trained_on))
    y = pp._conv_outputs(helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]), {"w": w}, x)
    mean, var = y.mean(axis=(0, 2, 3)).astype(np.float32), y.var(axis=(0, 2, 3)).astype(np.float32)
    fc = rng.standard_normal((10, 16)).astype(np.float32)
    inits = {"fc": fc, "fcb": np.zeros(10, np.float32)}
    if fold:  # what exporters do: the batch norm disappears into the convolution
        a = 1 / np.sqrt(var + 1e-5)
        inits.update(w=w * a[:, None, None, None], cb=-mean * a)
        nodes = [helper.make_node("Conv", ["image", "w", "cb"], ["bn"], pads=[1, 1, 1, 1])]
    else:
        inits.update(w=w, g=np.ones(16, np.float32), b=np.zeros(16, np.float32), m=mean, v=var)
        nodes = [helper.make_node("Conv", ["image", "w"], ["c"], pads=[1, 1, 1, 1]),
                 helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"])]
    nodes += [helper.make_node("Relu", ["bn"], ["r"]), helper.make_node("GlobalAveragePool", ["r"], ["p"]),
              helper.make_node("Flatten", ["p"], ["f"]),
              helper.make_node("Gemm", ["f", "fc", "fcb"], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "bn", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, H, W])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


@pytest.fixture(scope="module")
def imagenet_model(tmp_path_factory) -> Path:
    import onnx

    folder = tmp_path_factory.mktemp("bn")
    onnx.save(_bn_model("imagenet"), str(folder / "net.onnx"))
    return folder / "net.onnx"


def _portraits(spec):
    from edgekit.core.samples.synthetic import dataset

    return normalize(dataset(8, H, W, seed=1)[0], spec)


def test_first_layer_check_sees_imagenet_training():
    model = _bn_model("imagenet")
    unit = pp.check_first_layer(model, spec_for("unit"), _portraits(spec_for("unit")))
    assert unit.status == "mismatch" and unit.best == "imagenet" and "imagenet" in unit.reason
    assert unit.scale["stated"] < 0.5 < unit.scale["imagenet"] < 2.0  # [0,1] has ~1/4.4 the spread
    right = pp.check_first_layer(model, spec_for("imagenet"), _portraits(spec_for("imagenet")))
    assert right.status == "consistent" and right.best == "imagenet"
    raw = pp.check_first_layer(_bn_model("raw255"), spec_for("unit"), _portraits(spec_for("unit")))
    assert raw.status == "mismatch" and raw.best == "raw255"


def test_first_layer_check_says_not_checked_when_folded():
    c = pp.check_first_layer(_bn_model("imagenet", fold=True), spec_for("unit"), _portraits(spec_for("unit")))
    assert c.status == "not checked" and "folded" in c.reason


def test_int8_with_the_wrong_preprocessing_is_refused(imagenet_model, tmp_path):
    with pytest.raises(InputError, match=r"first-layer check.*mismatch.*--preprocess imagenet.*--confirm-preprocess"):
        edgekit.convert(imagenet_model, "onnx-int8", tmp_path / "a", preprocess="unit", calib_samples=8,
                        held_back=4)
    assert not (tmp_path / "a").exists()
    art = edgekit.convert(imagenet_model, "onnx-int8", tmp_path / "b", preprocess="unit", calib_samples=8,
                          held_back=4, confirm_preprocess=True)
    assert any("warning: first-layer check" in n and "confirmed" in n for n in art.notes)


def test_imagenet_preprocessing_is_recorded_and_checked(imagenet_model, tmp_path):
    art = edgekit.convert(imagenet_model, "onnx-int8", tmp_path / "a", preprocess="imagenet", calib_samples=8,
                          held_back=4)
    inp = art.source_io.inputs[0]
    assert inp.preprocessing == "preset imagenet" and inp.mean == (0.485, 0.456, 0.406)
    assert art.parity["input_check"][0]["status"] == "consistent"
    assert art.parity["data"] == {"calibration": "generated portraits (8)",
                                  "held_back": "1/f colour fields + textures (4)"}
    assert any("calibrated and validated on generated images" in n for n in art.notes)
    import json

    recorded = json.loads((art.path / "artifact.json").read_text())
    assert recorded["source_io"]["inputs"][0]["preprocessing"] == "preset imagenet"
    assert recorded["parity"]["data"]["held_back"] == "1/f colour fields + textures (4)"


def test_fp32_warns_but_goes_on(imagenet_model, tmp_path):
    art = edgekit.convert(imagenet_model, "onnx-fp32", tmp_path / "a", calib_samples=4, held_back=2)
    assert art.source_io.inputs[0].preprocessing == "assumed"
    assert art.parity["input_check"][0]["status"] == "mismatch"
    assert any(n.startswith("assumed pre-processing for input 'image'") for n in art.notes)
    assert any(n.startswith("warning: first-layer check") for n in art.notes)


def test_user_images_are_partly_held_back(imagenet_model, tmp_path):
    import cv2

    from edgekit.core.samples.natural import dataset

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, img in enumerate(dataset(12, 40, 40, seed=9)):
        cv2.imwrite(str(folder / f"{i:02d}.png"), (img[..., ::-1] * 255).astype(np.uint8))
    art = edgekit.convert(imagenet_model, "onnx-int8", tmp_path / "a", calib=folder, preprocess="imagenet",
                          calib_samples=8, held_back=4)
    assert art.parity["data"] == {"calibration": "your images from photos/ (8)",
                                  "held_back": "your images from photos/ (2) + 1/f colour fields + textures (2)"}
    assert art.parity["samples"] == 12
    assert not any("generated images" in n for n in art.notes)


# ---------------------------------------------------------------- ncnn params


def test_param_values_of_every_kind():
    from edgekit.backends.ncnn import model as nm

    assert nm.parse_param("0=16") == (0, 16)
    assert nm.parse_param("1=1.000000e-05") == (1, 1e-05)
    assert nm.parse_param("3=-0.5") == (3, -0.5)
    assert nm.parse_param("-23303=3,0.1,2,3.5") == (3, [0.1, 2, 3.5])
    assert nm.parse_param('6="1,1,//(256,0n),0n"') == (6, nm.ParamString("1,1,//(256,0n),0n"))
    assert nm.tokenize('Reshape r 1 1 a b 0=1 6="x y, z" 1=2') == ["Reshape", "r", "1", "1", "a", "b", "0=1",
                                                                  '6="x y, z"', "1=2"]
    for key, value in [(0, 7), (1, 0.1), (2, 1e-7), (3, [1, 2, 3]), (4, [0.25, 1e30]), (6, nm.ParamString("a,b"))]:
        assert nm.parse_param(nm.format_param(key, value)) == (key, value)
    assert nm.format_param(1, 3.0) == "1=3.0"  # a float stays a float for ncnn
    for bad in ["0=abc", "x=1", '6="open', "-23300=3,1,2", "7"]:
        with pytest.raises(ConversionError):
            nm.parse_param(bad)


@pytest.fixture(scope="module")
def aspp_onnx(tmp_path_factory) -> Path:
    """torchvision's DeepLabV3 head (ASPP): pnnx writes its pooling branch's Reshape with a string param."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ncnn")
    from torchvision.models.segmentation.deeplabv3 import DeepLabHead

    from edgekit.core.ingest import export_torch

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("aspp") / "aspp.onnx"
    export_torch(torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), DeepLabHead(16, 2)).eval(), path,
                 (1, 3, 32, 32))
    return path


@pytest.mark.slow
def test_pnnx_params_round_trip(aspp_onnx, tmp_path):
    import ncnn

    from edgekit.backends.ncnn import model as nm

    art = edgekit.convert(aspp_onnx, "ncnn-fp32", tmp_path / "fp32")
    param, binf = art.file("model"), art.file("weights")
    layers = nm.read(param, binf)
    assert any(isinstance(v, nm.ParamString) for ly in layers for v in ly.params.values())
    nm.write(layers, tmp_path / "rt.param", tmp_path / "rt.bin")
    assert (tmp_path / "rt.bin").read_bytes() == binf.read_bytes()
    again = nm.read(tmp_path / "rt.param", tmp_path / "rt.bin")
    assert [(ly.type, ly.name, ly.bottoms, ly.tops, ly.params) for ly in again] == \
           [(ly.type, ly.name, ly.bottoms, ly.tops, ly.params) for ly in layers]

    def run(p, b):
        net = ncnn.Net()
        assert net.load_param(str(p)) == 0 and net.load_model(str(b)) == 0
        ex = net.create_extractor()
        x = np.random.default_rng(0).random((3, 32, 32), dtype=np.float32)
        ex.input("in0", ncnn.Mat(x).clone())
        y = np.array(ex.extract("out0")[1])
        ex.clear()
        del ex
        net.clear()
        return y

    np.testing.assert_array_equal(run(param, binf), run(tmp_path / "rt.param", tmp_path / "rt.bin"))


@pytest.mark.slow
def test_deeplab_head_converts_to_ncnn_int8(aspp_onnx, tmp_path):
    art = edgekit.convert(aspp_onnx, "ncnn-int8", tmp_path / "int8", preprocess="imagenet", calib_samples=8,
                          held_back=4)
    assert art.options["int8_layers"] > 0
    # ncnn's int8 kernels here against ORT on the float head (2 output classes: logits, compared by cosine)
    assert_agrees(art, aspp_onnx, random_inputs(art.source_io, n=8))


def _photos(folder: Path, n: int = 8) -> Path:
    import cv2

    from edgekit.core.samples.natural import dataset

    folder.mkdir()
    for i, img in enumerate(dataset(n, 40, 40, seed=9)):
        cv2.imwrite(str(folder / f"{i:02d}.png"), (img[..., ::-1] * 255).astype(np.uint8))
    return folder


def test_calib_images_alone_need_the_model_to_confirm(tmp_path):
    """--calib images without a stated pre-processing are fed as [0, 1]: accepted for int8 only when the first
    layer confirms that scale."""
    import onnx

    photos = _photos(tmp_path / "photos")
    for name, trained_on, fold in [("unit", "unit", False), ("imagenet", "imagenet", False),
                                   ("folded", "unit", True)]:
        onnx.save(_bn_model(trained_on, fold=fold), str(tmp_path / f"{name}.onnx"))
    art = edgekit.convert(tmp_path / "unit.onnx", "onnx-int8", tmp_path / "a", calib=photos, calib_samples=6,
                          held_back=2)
    assert art.parity["input_check"][0]["status"] == "consistent"
    assert art.source_io.inputs[0].preprocessing == "assumed"
    with pytest.raises(InputError, match="mismatch.*--preprocess imagenet"):
        edgekit.convert(tmp_path / "imagenet.onnx", "onnx-int8", tmp_path / "b", calib=photos, calib_samples=6,
                        held_back=2)
    with pytest.raises(InputError, match="cannot confirm it .not checked: no batch norm follows"):
        edgekit.convert(tmp_path / "folded.onnx", "onnx-int8", tmp_path / "c", calib=photos, calib_samples=6,
                        held_back=2)
    art = edgekit.convert(tmp_path / "folded.onnx", "onnx-int8", tmp_path / "c", calib=photos, calib_samples=6,
                          held_back=2, confirm_preprocess=True)
    assert art.parity["input_check"][0]["status"] == "not checked"
    assert not (tmp_path / "b").exists()


def test_torch_source_first_layer_is_checked(tmp_path):
    """A PyTorch module keeps its batch norm (the ONNX export folds it): the check reads it from the module."""
    torch = pytest.importorskip("torch")
    from edgekit.core.samples.natural import dataset

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.BatchNorm2d(8, momentum=None),
                              torch.nn.ReLU(), torch.nn.Conv2d(8, 1, 1))
    net.example_input_shape = (1, 3, H, W)
    x = normalize(dataset(16, H, W, seed=3), spec_for("imagenet"))
    net.train()
    with torch.no_grad():
        net(torch.from_numpy(x))  # BatchNorm's running statistics become those of ImageNet-normalized input
    net.eval()
    with pytest.raises(InputError, match="mismatch.*--preprocess imagenet"):
        edgekit.convert(net, "onnx-int8", tmp_path / "a", preprocess="unit", calib_samples=4, held_back=2)
    art = edgekit.convert(net, "onnx-int8", tmp_path / "b", preprocess="imagenet", calib_samples=4, held_back=2)
    assert art.parity["input_check"][0]["status"] == "consistent"


def test_gate_data_families(tmp_path):
    from edgekit.core import calibration

    np.save(tmp_path / "x.npy", np.random.default_rng(0).random((20, 3, 16, 16), dtype=np.float32))
    stated = IOSpec((TensorSpec("image", (1, 3, 16, 16), preprocessing="card"),), ())
    g = calibration.gate_data(stated, tmp_path / "x.npy", 16, 8)
    assert g.in_model_space and len(g.calibration) == 16 and len(g.held_back) == 8
    assert g.describe["held_back"] == "your .npy x.npy (4) + 1/f colour fields + textures (4)"
    # nothing states how pixels map to this model space: only the user's own samples are held back
    assumed = IOSpec((TensorSpec("image", (1, 3, 16, 16), preprocessing="assumed"),), ())
    g = calibration.gate_data(assumed, tmp_path / "x.npy", 16, 8)
    assert g.describe == {"calibration": "your .npy x.npy (15)", "held_back": "your .npy x.npy (5)"}
    generated = calibration.gate_data(stated, None, 4, 2)
    assert generated.describe == {"calibration": "generated portraits (4)",
                                  "held_back": "1/f colour fields + textures (2)"}
    # deterministic for a seed: the same artifact is judged on the same inputs
    again = calibration.gate_data(stated, None, 4, 2)
    assert all(np.array_equal(a["image"], b["image"]) for a, b in zip(generated.held_back, again.held_back))
