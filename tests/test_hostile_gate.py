"""The parity gate and ingestion under hostile input: non-finite data or models, a broken model card, models
with no or constant outputs, zero and huge dims, bad ``--input-shape`` values. Each ends in one stderr line
and exit 2 (the user's input) before anything is written; what the gate lets through is a tested fact.

The tiny models are built here with ``onnx.helper`` (each converts in well under a second)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.hostile import Case, run_case

UNIT_CARD = "inputs:\n  - name: image\n    value_range: [0.0, 1.0]\n    mean: [0.0]\n    std: [1.0]\n"


def _save(path: Path, nodes, inputs, outputs, inits=()) -> Path:
    import onnx
    from onnx import helper

    graph = helper.make_graph(nodes, path.stem, inputs, outputs, list(inits))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def _vi(name: str, shape):
    from onnx import TensorProto, helper

    return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))


def _relu(tmp: Path, folder: str = "m", shape=(1, 3, 16, 16), card: str | None = None) -> Path:
    """image -> Relu -> y, with an optional model.yaml beside it."""
    from onnx import helper

    path = _save(tmp / folder / "relu.onnx", [helper.make_node("Relu", ["image"], ["y"], name="relu")],
                 [_vi("image", shape)], [_vi("y", shape)])
    if card is not None:
        (path.parent / "model.yaml").write_text(card)
    return path


def _nan_model(tmp: Path, value: float = np.nan, card: str | None = None) -> Path:
    """y = image * NaN (or Inf): the user's model outputs non-finite values on any input."""
    from onnx import helper, numpy_helper

    path = _save(tmp / "m" / "broken.onnx", [helper.make_node("Mul", ["image", "c"], ["y"], name="mul")],
                 [_vi("image", (1, 3, 16, 16))], [_vi("y", (1, 3, 16, 16))],
                 [numpy_helper.from_array(np.array(value, np.float32), "c")])
    if card is not None:
        (path.parent / "model.yaml").write_text(card)
    return path


# ---------------------------------------------------------------- setups: non-finite data and models


def nan_calib(tmp, fx):
    model = _relu(tmp)
    x = np.random.default_rng(0).random((8, 3, 16, 16)).astype(np.float32)
    x[3, 0, 0, 0] = np.nan
    np.save(tmp / "calib.npy", x)
    return ["convert", model, "-t", "onnx-int8", "--calib", "calib.npy", "-o", "out"]


def inf_calib(tmp, fx):
    model = _relu(tmp)
    x = np.random.default_rng(0).random((8, 3, 16, 16))
    x[0, 1, 2, 3] = 1e300  # finite in float64, Inf once in the model's float32
    np.save(tmp / "calib.npy", x)
    return ["convert", model, "-t", "onnx-int8", "--calib", "calib.npy", "-o", "out"]


def nan_model_fp32(tmp, fx):
    return ["convert", _nan_model(tmp), "-t", "onnx-fp32", "--input-shape", "image:1x3x16x16", "-o", "out"]


def inf_model_int8(tmp, fx):
    return ["convert", _nan_model(tmp, np.inf, UNIT_CARD), "-t", "onnx-int8", "-o", "out"]


def nan_reference_validate(tmp, fx):
    from edgekit.core.conversion import convert

    convert(_relu(tmp, "good"), "onnx-fp32", tmp / "art")
    return ["validate", "art", "--reference", _nan_model(tmp)]


def nan_validate_data(tmp, fx):
    from edgekit.core.conversion import convert

    convert(_relu(tmp, "good"), "onnx-fp32", tmp / "art")
    np.save(tmp / "data.npy", np.full((4, 3, 16, 16), np.nan, np.float32))
    return ["validate", "art", "--data", "data.npy"]


# ---------------------------------------------------------------- setups: model card


def _card(text: str):
    def setup(tmp, fx):
        return ["convert", _relu(tmp, card=text), "-t", "onnx-fp32", "-o", "out"]

    return setup


def card_alias_bomb(tmp, fx):
    rows = ["a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]"] + [
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 10)}]" for i in range(8)]
    return ["convert", _relu(tmp, card="\n".join(rows) + "\n"), "-t", "onnx-fp32", "-o", "out"]


def card_huge(tmp, fx):
    return ["convert", _relu(tmp, card="# " + "x" * (2 * 1024 * 1024) + "\nname: big\n"), "-t", "onnx-fp32",
            "-o", "out"]


def labels_output(tmp, fx):
    """Conv to 3 class scores, ArgMax: an integer label map, compared class by class."""
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((3, 3, 1, 1)).astype(np.float32)
    path = _save(tmp / "m" / "labels.onnx",
                 [helper.make_node("Conv", ["image", "w"], ["scores"], name="conv"),
                  helper.make_node("ArgMax", ["scores"], ["labels"], axis=1, keepdims=1, name="argmax")],
                 [_vi("image", (1, 3, 16, 16))],
                 [helper.make_tensor_value_info("labels", TensorProto.INT64, [1, 1, 16, 16])],
                 [numpy_helper.from_array(w, "w")])
    (path.parent / "model.yaml").write_text("outputs:\n  - name: labels\n    kind: labels\n")
    return ["convert", path, "-t", "onnx-fp32", "-o", "out", "--json"]


def card_inspect_typo(tmp, fx):
    return ["inspect", _relu(tmp, card="outputs:\n  - name: y\n    kind: probabilty\n")]


# ---------------------------------------------------------------- setups: ingestion


def no_outputs(tmp, fx):
    from onnx import helper

    path = _save(tmp / "m" / "noout.onnx", [helper.make_node("Relu", ["image"], ["y"], name="relu")],
                 [_vi("image", (1, 3, 16, 16))], [])
    return ["convert", path, "-t", "onnx-fp32", "-o", "out"]


def constant_output(tmp, fx):
    from onnx import helper, numpy_helper

    const = numpy_helper.from_array(np.ones((1, 3, 16, 16), np.float32))
    path = _save(tmp / "m" / "const.onnx", [helper.make_node("Constant", [], ["y"], value=const, name="c")],
                 [_vi("image", (1, 3, 16, 16))], [_vi("y", (1, 3, 16, 16))])
    return ["convert", path, "-t", "onnx-fp32", "-o", "out"]


def constant_output_inspect(tmp, fx):
    args = constant_output(tmp, fx)
    return ["inspect", args[1]]


def batch_zero_model(tmp, fx):
    return ["convert", _relu(tmp, shape=(0, 3, 16, 16)), "-t", "onnx-fp32", "-o", "out"]


def _with_shape(*shapes: str, model_shape=(1, 3, 16, 16)):
    def setup(tmp, fx):
        flags = [a for s in shapes for a in ("--input-shape", s)]
        return ["convert", _relu(tmp, shape=model_shape), "-t", "onnx-fp32", *flags, "-o", "out"]

    return setup


def huge_static_input(tmp, fx):
    return ["convert", _relu(tmp, shape=(1, 3, 65536, 65536)), "-t", "onnx-fp32", "-o", "out"]


def huge_intermediate(tmp, fx):
    from onnx import helper, numpy_helper

    reps = numpy_helper.from_array(np.array([1, 1, 4096, 4096], np.int64), "reps")
    path = _save(tmp / "m" / "tile.onnx", [helper.make_node("Tile", ["image", "reps"], ["t"], name="tile"),
                                           helper.make_node("ReduceMean", ["t"], ["y"], keepdims=1, name="mean")],
                 [_vi("image", (1, 3, 16, 16))], [_vi("y", ("n", "c", "h", "w"))], [reps])
    return ["convert", path, "-t", "onnx-fp32", "-o", "out"]


def torch_huge_example_shape(tmp, fx):
    pytest.importorskip("torch")
    (tmp / "net.py").write_text("import torch\n\n\nclass Net(torch.nn.Module):\n"
                                "    example_input_shape = (1, 3, 100000, 100000)\n\n"
                                "    def forward(self, x):\n        return x.relu()\n\n\n"
                                "def make():\n    return Net()\n")
    return ["convert", "net.py:make", "-t", "onnx-fp32", "-o", "out"]


DYN = ("n", 3, "h", "w")
GOOD = ["m/relu.onnx"]

CASES = [
    # non-finite values: each names the side that produced them
    Case("gate-nan-calib-npy", "wrong result", "a .npy of calibration data holding one NaN", nan_calib, 2,
         "calib.npy holds NaN", survive=["calib.npy", *GOOD], absent=["out"]),
    Case("gate-inf-calib-npy", "wrong result", "calibration .npy whose value overflows float32 to Inf", inf_calib, 2,
         "calib.npy holds NaN or infinite", survive=["calib.npy"], absent=["out"]),
    Case("gate-nan-model-fp32", "wrong result", "a source model whose outputs are 100% NaN, to onnx-fp32",
         nan_model_fp32, 2, "the source model itself (the fp32 reference, before any conversion) outputs "
         "non-finite values", survive=["m/broken.onnx"], absent=["out"]),
    Case("gate-inf-model-int8", "wrong result", "a source model whose outputs are Inf, to onnx-int8",
         inf_model_int8, 2, "output 'y' has 30720 non-finite value(s) of 30720", absent=["out"]),
    Case("gate-nan-reference-validate", "wrong result", "validate --reference MODEL where MODEL outputs NaN",
         nan_reference_validate, 2, "the source model itself", survive=["art"]),
    Case("gate-nan-validate-data", "wrong result", "validate --data with an all-NaN .npy", nan_validate_data, 2,
         "data.npy holds NaN", survive=["art", "data.npy"]),
    # the model card is data: validated against its schema, the field named
    Case("card-kind-typo", "wrong result", "model.yaml with `kind: probabilty` (used to skip the IoU gate)",
         _card("outputs:\n  - name: y\n    kind: probabilty\n"), 2,
         "outputs[0].kind: 'probabilty' is not valid; valid values: probability, logits, labels, image, tensor",
         survive=["m/model.yaml"], absent=["out"]),
    Case("card-kind-typo-inspect", "wrong result", "inspect on a model whose card says `kind: probabilty`",
         card_inspect_typo, 2, "outputs[0].kind: 'probabilty' is not valid"),
    Case("card-inputs-strings", "crash", "model.yaml with `inputs: [image]` (was a raw TypeError)",
         _card("inputs: [image]\n"), 2, "inputs[0]: 'image' is not of type 'object'", absent=["out"]),
    Case("card-layout", "wrong result", "model.yaml with `layout: NCWH`",
         _card("inputs:\n  - name: image\n    layout: NCWH\n"), 2, "inputs[0].layout: 'NCWH' is not valid; valid "
         "values: NCHW, NHWC, ANY", absent=["out"]),
    Case("card-field-typo", "silent deviation", "model.yaml with `meen:` (a pre-processing field silently ignored)",
         _card("inputs:\n  - name: image\n    meen: [0.5, 0.5, 0.5]\n"), 2, "'meen' was unexpected", absent=["out"]),
    Case("card-std-zero", "wrong result", "model.yaml with `std: [0, 1, 1]` (a division by zero)",
         _card("inputs:\n  - name: image\n    std: [0, 1, 1]\n"), 2, "inputs[0].std[0]", absent=["out"]),
    Case("card-std-string", "crash", "model.yaml with `std: [a, b, c]`",
         _card("inputs:\n  - name: image\n    std: [a, b, c]\n"), 2, "is not of type 'number'",
         absent=["out"]),
    Case("card-shape-string", "crash", "model.yaml with `shape: [1, 3, H, W]`",
         _card("inputs:\n  - name: image\n    shape: [1, 3, H, W]\n"), 2, "is not of type 'integer'", absent=["out"]),
    Case("card-mean-count", "crash", "model.yaml with five mean values for a 3-channel input",
         _card("inputs:\n  - name: image\n    mean: [0, 0, 0, 0, 0]\n"), 2, "input 'image' mean has 5 values; the "
         "input has 3 channel(s)", absent=["out"]),
    Case("card-unknown-output", "silent deviation", "model.yaml naming an output the model does not have",
         _card("outputs:\n  - name: mask\n    kind: probability\n"), 2, "names output 'mask', which the model does "
         "not have (its outputs: y)", absent=["out"]),
    Case("card-duplicate-name", "silent deviation", "model.yaml naming output y twice with two kinds",
         _card("outputs:\n  - {name: y, kind: image}\n  - {name: y, kind: tensor}\n"), 2,
         "outputs names 'y' more than once", absent=["out"]),
    Case("card-list", "crash", "model.yaml that is a list", _card("- name: y\n"), 2,
         "must be a mapping (name, task, inputs, outputs, ...), got list", absent=["out"]),
    Case("card-yaml-syntax", "crash", "model.yaml with a YAML syntax error", _card("inputs: [\n"), 2,
         "model card model.yaml is not valid YAML at line", absent=["out"]),
    Case("card-yaml-alias-bomb", "crash", "model.yaml with nested YAML aliases (10^9 values once expanded)",
         card_alias_bomb, 2, "YAML aliases (*name) are not accepted", absent=["out"], timeout=60),
    Case("card-std-nan", "wrong result", "model.yaml with `std: [.nan, 1, 1]`",
         _card("inputs:\n  - name: image\n    std: [.nan, 1, 1]\n"), 2,
         "inputs[0].std[0]: numbers must be finite", absent=["out"]),
    Case("card-deep-nesting", "crash", "model.yaml nesting lists 100000 deep",
         _card("extra: " + "[" * 100000 + "]" * 100000 + "\n"), 2, "nested too deeply", absent=["out"]),
    Case("card-huge", "crash", "a 2 MiB model.yaml", card_huge, 2, "configs above 1048576 bytes are refused",
         absent=["out"]),
    Case("card-labels-kind", "wrong result", "an integer label-map output with `kind: labels` (accepted, and "
         "compared class by class)", labels_output, 0, '"agreement": 1.0', survive=["m/labels.onnx"]),
    # ingestion guards
    Case("ingest-no-outputs", "crash", "an ONNX model with no outputs", no_outputs, 2, "has no outputs",
         absent=["out"]),
    Case("ingest-constant-output", "crash", "a model whose only output is a constant (was `min() arg is an empty "
         "sequence`)", constant_output, 2, "every output is a constant", absent=["out"]),
    Case("ingest-constant-output-inspect", "crash", "inspect on a model whose only output is a constant",
         constant_output_inspect, 2, "every output is a constant"),
    Case("ingest-batch-zero", "crash", "a model whose input has batch dim 0", batch_zero_model, 2,
         "input 'image' has a dim of 0 (0x3x16x16)", absent=["out"]),
    Case("ingest-shape-flag-zero", "crash", "--input-shape image:0x3x16x16", _with_shape("image:0x3x16x16",
         model_shape=DYN), 2, "every dim must be a positive integer (got 0", absent=["out"]),
    Case("ingest-shape-flag-huge", "crash", "--input-shape asking for a 1x3x100000x100000 input (1.1 TiB)",
         _with_shape("image:1x3x100000x100000", model_shape=DYN), 2, "over the memory budget of 2 GiB per tensor",
         absent=["out"]),
    Case("ingest-shape-flag-int64-overflow", "crash", "--input-shape with a dim beyond int64",
         _with_shape("image:1x3x99999999999x99999999999", model_shape=DYN), 2, "over the memory budget",
         absent=["out"]),
    Case("ingest-huge-static-input", "crash", "a model whose static input is 1x3x65536x65536 (48 GiB)",
         huge_static_input, 2, "needs 48 GiB, over the memory budget of 2 GiB per tensor", absent=["out"]),
    Case("ingest-torch-huge-example-shape", "crash", "a PyTorch source whose example_input_shape is "
         "1x3x100000x100000 (torch.zeros of 112 GiB was attempted)", torch_huge_example_shape, 2,
         "example_input_shape: a tensor of shape 1x3x100000x100000 needs 112 GiB", absent=["out"]),
    Case("ingest-huge-intermediate", "crash", "a model whose Tile makes a 48 GiB intermediate tensor",
         huge_intermediate, 2, "tensor 't' of shape 1x3x65536x65536 would need 48 GiB", absent=["out"]),
    Case("ingest-shape-flag-garbage", "crash", "--input-shape image:1x3xfoo", _with_shape("image:1x3xfoo",
         model_shape=DYN), 2, "bad --input-shape 'image:1x3xfoo'", absent=["out"]),
    Case("ingest-shape-flag-unicode-digits", "crash", "--input-shape with full-width digits",
         _with_shape("image:１x3x16x16", model_shape=DYN), 2, "bad --input-shape", absent=["out"]),
    Case("ingest-shape-flag-twice", "silent deviation", "--input-shape for the same input twice (last one won)",
         _with_shape("image:1x3x16x16", "image:1x3x32x32", model_shape=DYN), 2, "gives input 'image' twice",
         absent=["out"]),
    Case("ingest-shape-flag-bare-and-named", "silent deviation", "a bare --input-shape and a named one",
         _with_shape("1x3x16x16", "image:1x3x32x32", model_shape=DYN), 2, "gives input 'image' twice",
         absent=["out"]),
]


# the cases that took longest when this file was timed alone with --durations=0 (the fast tier skips them)
SLOW = {"ingest-torch-huge-example-shape", "card-labels-kind", "card-unknown-output", "card-mean-count",
        "ingest-constant-output-inspect", "ingest-constant-output", "card-duplicate-name", "card-std-nan",
        "gate-nan-model-fp32"}


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.slow) if c.id in SLOW else c for c in CASES],
                         ids=lambda c: c.id)
def test_hostile(case, tmp_path, request):
    run_case(case, tmp_path, request)


def test_parse_input_shapes_raises_only_input_errors():
    """Any string (or non-string) ends in a shape or an InputError."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from edgekit.core.ingest import parse_input_shapes
    from edgekit.errors import InputError

    alphabet = st.sampled_from(list("0123456789x:image_-１ "))

    @settings(max_examples=300, deadline=None)
    @given(st.lists(st.one_of(st.text(alphabet, max_size=40), st.text(max_size=20), st.integers(), st.none()),
                    max_size=3))
    def parse(values):
        try:
            shapes = parse_input_shapes(values)
        except InputError:
            return
        for dims in shapes.values():
            assert dims and all(isinstance(d, int) and d >= 1 for d in dims)

    parse()


@pytest.mark.slow
def test_model_card_parser_raises_only_input_errors(tmp_path):
    """Any YAML text or data ends in a card (whose values then apply to a tensor spec) or an InputError."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from edgekit.core.iospec import ModelCard, TensorSpec
    from edgekit.errors import InputError

    leaf = st.one_of(st.none(), st.booleans(), st.integers(-5, 300), st.floats(allow_nan=True),
                     st.sampled_from(["image", "y", "NCHW", "NHWC", "probability", "labels", "RGB", "BGR"]),
                     st.text(max_size=8))
    keys = st.sampled_from(["name", "task", "inputs", "outputs", "shape", "layout", "color", "kind", "mean", "std",
                            "value_range", "resolutions", "description"])
    data = st.recursive(leaf, lambda kids: st.one_of(st.lists(kids, max_size=4),
                                                     st.dictionaries(keys, kids, max_size=5)), max_leaves=20)
    card_file = tmp_path / "model.yaml"

    def use(card: ModelCard) -> None:
        for name in ("image", "y"):
            card.apply(TensorSpec(name, (1, 3, 8, 8)), True)
            card.apply(TensorSpec(name, (1, 3, 8, 8)), False)
            card.default_shape(name)

    @settings(max_examples=300, deadline=None)
    @given(data)
    def from_data(raw):
        try:
            use(ModelCard.from_dict(raw, "fuzz.yaml"))
        except InputError:
            pass

    @settings(max_examples=200, deadline=None)
    @given(st.text(alphabet=st.sampled_from(list("inputs:- name[]{}&*,0.1\n kind'\"")), max_size=80))
    def from_text(text):
        card_file.write_text(text)
        try:
            use(ModelCard.load(card_file))
        except InputError:
            pass

    from_data()
    from_text()
