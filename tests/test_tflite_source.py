"""A ``.tflite`` file as a source: MediaPipe's general selfie segmenter (with its custom
``Convolution2DTransposeBias``) converted to several targets, each artifact checked here against the ORIGINAL
``.tflite`` run by LiteRT's own Interpreter on real photos (not through edgekit's sessions or its gate)."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.errors import ParityError
from tests.hostile import edgekit

MODEL = "selfie_segmentation"


@pytest.fixture(scope="session")
def selfie(mediapipe_models):
    return mediapipe_models.model_path(MODEL)


@pytest.fixture(scope="session")
def photos_256(mediapipe_models):
    """The reserved real photos at the model's 256x256, RGB in [0, 1], NHWC (the TFLite model's own input)."""
    import cv2

    from edgekit.core.samples.photos import evaluation_photos

    return np.stack([cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA) for _, img in evaluation_photos()])


def _litert(path, x: np.ndarray) -> np.ndarray:
    """The original model in LiteRT's Interpreter, one image at a time (NHWC in, NHWC out)."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path))
    it.allocate_tensors()
    i, o = it.get_input_details()[0], it.get_output_details()[0]
    out = []
    for img in x:
        it.set_tensor(i["index"], img[None].astype(np.float32))
        it.invoke()
        out.append(it.get_tensor(o["index"]).copy())
    return np.concatenate(out)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0.5, b > 0.5
    return float((a & b).sum() / max(1, (a | b).sum()))


# ---------------------------------------------------------------- reading the file (fast)


def test_read_finds_nhwc_io_and_the_custom_op_options(selfie):
    from edgekit.backends.tflite.source import read

    info = read(selfie)
    assert [(t.name, t.shape, t.dtype) for t in info.inputs] == [("input_1", (1, 256, 256, 3), "float32")]
    assert [(t.name, t.shape) for t in info.outputs] == [("activation_10", (1, 256, 256, 1))]
    (op,) = info.custom_ops
    assert op.code == "Convolution2DTransposeBias"
    import struct

    assert struct.unpack("<3i", op.options[:12]) == (1, 2, 2)  # SAME, stride 2x2
    assert op.inputs[0].shape == (1, 128, 128, 16) and op.outputs[0].shape == (1, 256, 256, 1)
    assert info.ops["Convolution2DTransposeBias"] == 1 and info.ops.get("CONV_2D", 0) > 10


@pytest.mark.parametrize("content, command, message", [
    (b"this is not a model at all, just text", "inspect", "not a TFLite model"),
    (None, "convert", "not a readable TFLite model"),  # the real file cut in half
])
def test_a_bad_tflite_file_is_one_line_exit_2(tmp_path, selfie, content, command, message):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(content if content is not None else selfie.read_bytes()[: selfie.stat().st_size // 2])
    extra = ["--target", "onnx-fp32", "-o", str(tmp_path / "o")] if command == "convert" else []
    res = edgekit(command, str(bad), *extra, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    assert message in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "o").exists()


def test_a_card_beside_the_file_overrides_the_tflite_defaults(tmp_path, selfie):
    """Without a card a float input is assumed [0, 1]; NAME.yaml beside the file states [-1, 1] and the output
    kind (the IO spec reads it; nothing is converted)."""
    from edgekit.backends.tflite.source import card_for, io_spec, read

    model = tmp_path / "seg.tflite"
    model.write_bytes(selfie.read_bytes())
    info = read(model)
    bare = io_spec(info, card_for(model))
    assert bare.inputs[0].layout == "NHWC" and bare.outputs[0].kind == "tensor"
    (tmp_path / "seg.yaml").write_text("inputs:\n  - name: input_1\n    value_range: [-1.0, 1.0]\n"
                                       "outputs:\n  - name: activation_10\n    kind: probability\n")
    carded = io_spec(info, card_for(model))
    assert carded.inputs[0].value_range == (-1.0, 1.0) and carded.outputs[0].kind == "probability"


# ---------------------------------------------------------------- conversions (slow)


@pytest.fixture(scope="session")
def converted(selfie, workdir):
    """{target: Artifact} of the general selfie segmenter, converted once per test run."""
    import edgekit

    done = {}

    def get(target: str):
        if target not in done:
            done[target] = edgekit.convert(selfie, target, workdir / f"mp-{MODEL}-{target}")
        return done[target]

    return get


@pytest.mark.slow
@pytest.mark.parametrize("target, iou_min, max_abs", [
    ("onnx-fp32", 0.995, 1e-3),
    ("openvino-fp32", 0.995, 1e-3),
    ("ncnn-fp32", 0.995, 1e-3),
    pytest.param("onnx-int8", 0.95, None, marks=pytest.mark.xfail(
        strict=True, raises=ParityError,
        reason="known limit: the gate refuses int8 of MediaPipe's selfie segmenter (mask IoU 0.70 on the gate's "
               "generated composites even with all 55 weighted layers kept in float: outside the model's domain "
               "its int8 outputs are wrong outright; README known limits)")),
])
def test_tflite_source_to_target_matches_the_original_in_litert(converted, selfie, photos_256, target, iou_min,
                                                                 max_abs):
    import edgekit

    art = converted(target)
    assert art.parity["reference"] == "the original TFLite model in LiteRT"
    assert art.source_io.inputs[0].layout == "NHWC" and art.source_io.inputs[0].name == "input_1"
    assert any("Convolution2DTransposeBias" in n for n in art.notes)
    ref = _litert(selfie, photos_256)
    sess = edgekit.load(art.path)
    got = np.concatenate([sess.run({"input_1": x[None].astype(np.float32)})["activation_10"] for x in photos_256])
    assert got.shape == ref.shape == (len(photos_256), 256, 256, 1)
    ious = [_iou(g, r) for g, r in zip(got, ref)]
    assert min(ious) >= iou_min, f"{target}: mask IoU vs the original in LiteRT {ious}"
    if max_abs is not None:
        assert float(np.abs(got - ref).max()) <= max_abs
    assert (ref > 0.5).mean() > 0.1  # the photos hold people: the masks compared are not empty


@pytest.mark.slow
def test_inspect_a_tflite_model(selfie, tmp_path):
    res = edgekit("inspect", str(selfie), "--json", cwd=tmp_path, timeout=600)
    assert res.returncode == 0, res.stderr
    import json

    info = json.loads(res.stdout)
    (inp,) = info["io"]["inputs"]
    assert (inp["name"], inp["shape"], inp["layout"]) == ("input_1", [1, 256, 256, 3], "NHWC")
    assert info["op_histogram"].get("ConvTranspose") == 1
    assert not [op for op in info["op_histogram"] if op.startswith("TFL_")]


def test_models_list_names_every_model_with_its_licence(mediapipe_models, tmp_path):
    import json

    res = edgekit("models", "list", "--json", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert set(rows) == {"portrait-seg", *(f"mediapipe:{n}" for n in mediapipe_models.MODELS)}
    for name in mediapipe_models.MODELS:
        row, path = rows[f"mediapipe:{name}"], mediapipe_models.model_path(name)
        assert row["licence"] == "Apache-2.0" and row["size_bytes"] == path.stat().st_size
        from edgekit.backends.tflite.source import read

        h, w = read(path).inputs[0].shape[1:3]  # the resolution listed is the file's own input
        assert row["resolutions"] == [[h, w]]
