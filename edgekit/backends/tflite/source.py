"""A ``.tflite`` file as a conversion source: read it, bring it to ONNX, and run the original as the reference.

``edgekit convert model.tflite --target T`` and ``edgekit inspect model.tflite`` come here through the tflite
backend's declaration (``sources``/``source_loader``); nothing outside this folder names the format.

* The flatbuffer is read with LiteRT's own schema module (no TensorFlow import): inputs and outputs (names,
  shapes, dtypes, quantization), operators and MediaPipe's custom operators with their options. Every vector
  length is checked against the file's size before it is walked, so a crafted file cannot make the reader
  loop over billions of entries.
* tf2onnx converts it in a child process (its own process group, a timeout, killed with edgekit), on a copy of
  the file made inside the work folder and hashed there, so what is converted is what was hashed.
* Custom operators tf2onnx cannot convert are rewritten into standard ONNX ops from the options stored in the
  flatbuffer (:data:`REWRITES`; MediaPipe's ``Convolution2DTransposeBias`` -> ``ConvTranspose`` with its bias);
  any other custom op is a :class:`~edgekit.errors.ConversionError` that names it.
* The ONNX model keeps the TFLite model's tensor names and layouts: NHWC image inputs and outputs, recorded as
  such in the IO spec. Value range, mean, std, colour order and output kinds come from a model card beside the
  file (``NAME.yaml``, else ``model.yaml``); without one, float inputs are *assumed* ``[0, 1]`` RGB and said so.
* The parity reference of a TFLite source is the original file run by LiteRT (``SourceModel.reference``), so
  the gate proves TFLite -> ONNX -> target. Before anything is converted, the ONNX model itself is checked
  against LiteRT on generated inputs (fp32 tolerance); a mismatch is an error, never a silent drift.
"""

from __future__ import annotations

import os
import struct
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import ConversionError, InputError

SUFFIXES = (".tflite",)
#: larger files are refused before they are read
MAX_BYTES = 1024**3
#: TFLite TensorType -> numpy dtype name
DTYPES = {0: "float32", 1: "float16", 2: "int32", 3: "uint8", 4: "int64", 6: "bool", 7: "int16", 9: "int8",
          10: "float64"}
#: tolerance of the TFLite -> ONNX step (fp32: the same maths in another runtime)
STEP_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Tensor:
    """One tensor of a TFLite subgraph."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    quant: tuple[float, int] | None = None


@dataclass(frozen=True)
class CustomOp:
    """A custom operator: its code, its raw options (``custom_options`` bytes) and its tensors."""

    code: str
    options: bytes
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]


@dataclass(frozen=True)
class TFLiteModel:
    """What :func:`read` found in a ``.tflite`` file."""

    path: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    ops: dict[str, int]
    custom_ops: tuple[CustomOp, ...] = ()
    description: str = ""
    subgraphs: int = 1
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- reading the flatbuffer


def read(path: str | Path) -> TFLiteModel:
    """Read a ``.tflite`` file's IO, operators and custom operators (without TensorFlow).

    Raises:
        InputError: the file is missing, too large, not a TFLite flatbuffer, or malformed.
    """
    return parse(_read_bytes(Path(path)), str(path))


def _read_bytes(p: Path) -> bytes:
    if not p.is_file():
        raise InputError(f"model file not found: {p}")
    size = p.stat().st_size
    if size > MAX_BYTES:
        raise InputError(f"{p} is {size / 1024**3:.1f} GiB; TFLite sources above {MAX_BYTES // 1024**3} GiB are "
                         "refused")
    try:
        return p.read_bytes()
    except OSError as e:
        raise InputError(f"cannot read {p}: {e.strerror or e}") from e


def parse(buf: bytes, where: str) -> TFLiteModel:
    """:func:`read` on bytes already read (``where`` names them in errors).

    Raises:
        InputError: not a TFLite flatbuffer, or malformed.
    """
    if len(buf) < 16 or buf[4:8] != b"TFL3":
        raise InputError(f"{where} is not a TFLite model (no TFL3 flatbuffer identifier)")
    try:
        return _parse(buf, where)
    except InputError:
        raise
    except (IndexError, ValueError, TypeError, struct.error, UnicodeDecodeError, AttributeError) as e:
        raise InputError(f"{where} is not a readable TFLite model (malformed flatbuffer: {e})") from e


def _parse(buf: bytes, where: str) -> TFLiteModel:
    from ai_edge_litert import schema_py_generated as schema

    limit = len(buf) // 4  # no vector in the file can hold more entries than it has 4-byte words

    def count(n: int, what: str) -> int:
        if n < 0 or n > limit:
            raise InputError(f"{where} is not a readable TFLite model ({what} claims {n} entries)")
        return n

    m = schema.Model.GetRootAs(buf, 0)
    codes = []
    for i in range(count(m.OperatorCodesLength(), "operator codes")):
        c = m.OperatorCodes(i)
        custom = c.CustomCode()
        code = max(int(c.BuiltinCode()), int(c.DeprecatedBuiltinCode()))
        codes.append(custom.decode("utf-8", "replace") if custom else _builtin_name(schema, code))
    n_sub = count(m.SubgraphsLength(), "subgraphs")
    if n_sub < 1:
        raise InputError(f"{where} has no subgraph: there is no model in it")
    sg = m.Subgraphs(0)
    n_tensors = count(sg.TensorsLength(), "tensors")

    def tensor(i: int) -> Tensor:
        if not 0 <= i < n_tensors:
            raise InputError(f"{where} is not a readable TFLite model (tensor index {i} of {n_tensors})")
        t = sg.Tensors(i)
        shape = tuple(int(d) for d in (t.ShapeAsNumpy() if t.ShapeLength() else ()))
        if t.ShapeSignatureLength() and any(int(d) < 0 for d in t.ShapeSignatureAsNumpy()):
            shape = tuple(-1 if int(s) < 0 else d for d, s in zip(shape, t.ShapeSignatureAsNumpy()))
        q = t.Quantization()
        quant = None
        if q is not None and q.ScaleLength() == 1 and q.ZeroPointLength() == 1:
            quant = (float(q.Scale(0)), int(q.ZeroPoint(0)))
        return Tensor(name=(t.Name() or b"").decode("utf-8", "replace"), shape=shape,
                      dtype=DTYPES.get(int(t.Type()), f"tflite-type-{int(t.Type())}"), quant=quant)

    inputs = tuple(tensor(int(sg.Inputs(i))) for i in range(count(sg.InputsLength(), "inputs")))
    outputs = tuple(tensor(int(sg.Outputs(i))) for i in range(count(sg.OutputsLength(), "outputs")))
    ops: Counter = Counter()
    custom: list[CustomOp] = []
    for i in range(count(sg.OperatorsLength(), "operators")):
        op = sg.Operators(i)
        idx = int(op.OpcodeIndex())
        if not 0 <= idx < len(codes):
            raise InputError(f"{where} is not a readable TFLite model (operator code {idx} of {len(codes)})")
        ops[codes[idx]] += 1
        if m.OperatorCodes(idx).CustomCode():
            options = bytes(op.CustomOptionsAsNumpy()) if op.CustomOptionsLength() else b""
            ins = tuple(tensor(int(op.Inputs(j))) for j in range(count(op.InputsLength(), "op inputs"))
                        if int(op.Inputs(j)) >= 0)
            outs = tuple(tensor(int(op.Outputs(j))) for j in range(count(op.OutputsLength(), "op outputs")))
            custom.append(CustomOp(codes[idx], options, ins, outs))
    if not inputs or not outputs:
        raise InputError(f"{where} has no {'inputs' if not inputs else 'outputs'}: there is nothing to convert "
                         "or compare")
    desc = (m.Description() or b"").decode("utf-8", "replace")
    return TFLiteModel(where, inputs, outputs, dict(ops.most_common()), tuple(custom), desc, n_sub)


def _builtin_name(schema, code: int) -> str:
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if isinstance(v, int)}
    return names.get(code, f"BUILTIN_{code}")


# ---------------------------------------------------------------- custom operators


def _conv2d_transpose_bias(op: CustomOp, node, inits: dict, helper, numpy_helper) -> tuple[list, list, str]:
    """MediaPipe's ``Convolution2DTransposeBias``: inputs x (NHWC), weights (O, kh, kw, I), bias (O); options
    a ``TfLiteTransposeConvParams`` (int32 padding: 1 SAME, 2 VALID; stride_w; stride_h). Rewritten as
    NHWC -> NCHW, ``ConvTranspose`` with the bias and explicit pads from the TFLite output shape, -> NHWC."""
    if len(op.options) < 12 or len(node.input) != 3:
        raise ConversionError(f"custom op {op.code} '{node.output[0]}' has {len(op.options)} bytes of options and "
                              f"{len(node.input)} inputs; expected 12 bytes (padding, strides) and 3 inputs")
    padding, sw, sh = struct.unpack("<3i", op.options[:12])
    x, w, b = node.input
    if w not in inits or b not in inits:
        raise ConversionError(f"custom op {op.code} '{node.output[0]}': its weights or bias are not constants")
    weights = numpy_helper.to_array(inits[w])
    if weights.ndim != 4 or padding not in (1, 2) or sw < 1 or sh < 1:
        raise ConversionError(f"custom op {op.code} '{node.output[0]}': weights of shape {weights.shape}, padding "
                              f"{padding}, strides {sw}x{sh} are not a 2-D transposed convolution edgekit knows")
    _, kh, kw, _ = weights.shape
    in_shape, out_shape = op.inputs[0].shape, op.outputs[0].shape  # NHWC
    pads = []
    for size_in, size_out, k, s in ((in_shape[1], out_shape[1], kh, sh), (in_shape[2], out_shape[2], kw, sw)):
        total = (size_in - 1) * s + k - size_out
        if total < 0:
            raise ConversionError(f"custom op {op.code} '{node.output[0]}': output size {size_out} cannot come from "
                                  f"input {size_in}, kernel {k}, stride {s}")
        pads.append((total // 2, total - total // 2))
    base = node.output[0]
    w_name = f"{base}__weights_iohw"
    new_inits = [numpy_helper.from_array(np.ascontiguousarray(weights.transpose(3, 0, 1, 2)), w_name)]
    nodes = [
        helper.make_node("Transpose", [x], [f"{base}__nchw_in"], perm=[0, 3, 1, 2], name=f"{base}__to_nchw"),
        helper.make_node("ConvTranspose", [f"{base}__nchw_in", w_name, b], [f"{base}__nchw_out"], name=base,
                         strides=[sh, sw], kernel_shape=[kh, kw],
                         pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]]),
        helper.make_node("Transpose", [f"{base}__nchw_out"], [base], perm=[0, 2, 3, 1], name=f"{base}__to_nhwc"),
    ]
    how = f"{op.code} '{base}' -> ConvTranspose (stride {sh}x{sw}, {'SAME' if padding == 1 else 'VALID'})"
    return nodes, new_inits, how


#: custom op code -> rewrite into standard ONNX ops
REWRITES = {"Convolution2DTransposeBias": _conv2d_transpose_bias}


def rewrite_custom_ops(model, info: TFLiteModel) -> tuple[object, list[str]]:
    """Replace the nodes tf2onnx left for TFLite custom ops (``TFL_<code>``) with standard ONNX ops.

    Raises:
        ConversionError: a custom op edgekit has no rewrite for (named), or options it cannot read.
    """
    from onnx import helper, numpy_helper

    by_output = {op.outputs[0].name: op for op in info.custom_ops if op.outputs}
    inits = {i.name: i for i in model.graph.initializer}
    nodes, notes = [], []
    for node in model.graph.node:
        if not node.op_type.startswith("TFL_"):
            nodes.append(node)
            continue
        code = node.op_type[4:]
        op = by_output.get(node.output[0])
        if code not in REWRITES or op is None:
            known = ", ".join(REWRITES)
            raise ConversionError(f"{Path(info.path).name}: TFLite op {code} ('{node.output[0]}') has no ONNX "
                                  f"equivalent in tf2onnx and no rewrite in edgekit (rewritten custom ops: {known})")
        new_nodes, new_inits, how = REWRITES[code](op, node, inits, helper, numpy_helper)
        nodes.extend(new_nodes)
        model.graph.initializer.extend(new_inits)
        notes.append(f"custom op {how}")
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    return model, notes


#: element-wise ops that commute with a transpose (a Transpose -> op -> inverse Transpose sandwich is the op)
_ELEMENTWISE = {"HardSwish", "HardSigmoid", "Relu", "Sigmoid", "Tanh", "LeakyRelu", "Clip", "Elu", "Selu", "Abs",
                "Neg", "Exp", "Sqrt"}


def drop_transpose_sandwiches(model) -> int:
    """Remove ``Transpose(p) -> element-wise op -> Transpose(p^-1)`` chains tf2onnx leaves around ops its
    layout optimizer does not know (e.g. HardSwish): the op then reads the first transpose's input and its
    consumers read the op. Returns how many were removed."""
    consumers: Counter = Counter(i for n in model.graph.node for i in n.input)
    outputs = {o.name for o in model.graph.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    removed: set[int] = set()
    renames: dict[str, str] = {}
    for node in model.graph.node:
        if node.op_type != "Transpose" or not node.input or node.input[0] not in producer or node.output[0] in outputs:
            continue
        mid = producer[node.input[0]]
        if mid.op_type not in _ELEMENTWISE or len(mid.output) != 1 or consumers[mid.output[0]] != 1 \
                or mid.output[0] in outputs:
            continue
        first = producer.get(mid.input[0]) if mid.input else None
        if first is None or first.op_type != "Transpose" or consumers[first.output[0]] != 1 \
                or id(first) in removed or first.output[0] in outputs:
            continue
        p1 = next((list(a.ints) for a in first.attribute if a.name == "perm"), None)
        p2 = next((list(a.ints) for a in node.attribute if a.name == "perm"), None)
        if not p1 or not p2 or len(p1) != len(p2) or [p1[i] for i in p2] != list(range(len(p1))):
            continue
        mid.input[0] = first.input[0]
        renames[node.output[0]] = mid.output[0]
        removed.update((id(first), id(node)))
    if not removed:
        return 0
    kept = [n for n in model.graph.node if id(n) not in removed]
    for n in kept:
        for i, name in enumerate(n.input):
            n.input[i] = renames.get(name, name)
    del model.graph.node[:]
    model.graph.node.extend(kept)
    return len(removed) // 2


# ---------------------------------------------------------------- TFLite -> ONNX


def to_onnx(tflite: Path, dest: Path, info: TFLiteModel, opset: int) -> list[str]:
    """Convert ``tflite`` to ONNX at ``dest`` (tf2onnx in a child process, then custom ops rewritten).

    Returns notes on what was rewritten.

    Raises:
        ConversionError: tf2onnx failed or timed out, or a custom op has no rewrite.
        MissingDependencyError: tf2onnx is not installed.
    """
    import onnx

    from edgekit.core import subprocesses
    from edgekit.core.deps import require_installed

    require_installed("tf2onnx")  # imported by the child only (it imports TensorFlow)
    raw = dest.with_name(dest.stem + ".tf2onnx.onnx")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "edgekit.backends.tflite.source", str(tflite), str(raw), str(opset)]
    res = subprocesses.run(cmd, "tf2onnx", env=env, error=ConversionError)
    if res.returncode != 0 or not raw.is_file():
        lines = [ln.strip() for ln in (res.stderr or "").splitlines() if ln.strip() and "WARNING" not in ln]
        why = lines[-1][-300:] if lines else f"exit status {res.returncode}"
        raise ConversionError(f"tf2onnx could not convert {Path(info.path).name}: {why}")
    try:
        model = onnx.load(str(raw))
    except (OSError, ValueError, RuntimeError) as e:
        raise ConversionError(f"tf2onnx wrote an unreadable ONNX model for {Path(info.path).name}: {e}") from e
    model, notes = rewrite_custom_ops(model, info)
    dropped = drop_transpose_sandwiches(model)
    if dropped:
        notes.append(f"removed {dropped} transpose pair(s) around element-wise ops that tf2onnx left")
    _rename_io(model, info)
    del model.graph.value_info[:]  # shapes of rewired tensors changed; shape inference recomputes them all
    onnx.save(model, str(dest))
    raw.unlink(missing_ok=True)
    return notes


def _rename_io(model, info: TFLiteModel) -> None:
    """Give the ONNX graph's inputs and outputs the TFLite model's tensor names (tf2onnx may add suffixes)."""
    pairs = [(vi, t) for vi, t in zip(_graph_inputs(model), info.inputs)] + \
            [(vi, t) for vi, t in zip(model.graph.output, info.outputs)]
    for vi, t in pairs:
        if vi.name == t.name or not t.name:
            continue
        old = vi.name
        for n in model.graph.node:
            for i, name in enumerate(n.input):
                if name == old:
                    n.input[i] = t.name
            for i, name in enumerate(n.output):
                if name == old:
                    n.output[i] = t.name
        vi.name = t.name


def _graph_inputs(model):
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


# ---------------------------------------------------------------- IO spec, card, reference


def card_for(path: Path):
    """The model card of a TFLite file: ``NAME.yaml`` beside it (several models may share a folder), else
    ``model.yaml``, else an empty card.

    Raises:
        InputError: the card is not valid.
    """
    from edgekit.core.iospec import ModelCard

    own = path.with_suffix(".yaml")
    return ModelCard.load(own) if own.is_file() else ModelCard.beside(path)


def io_spec(info: TFLiteModel, card):
    """The TFLite model's IO as edgekit's spec: its names, shapes and dtypes; 4-D tensors with spatial dims are
    NHWC (TFLite's layout), others ``ANY``; quantization of integer tensors; then the card's fields.

    Raises:
        InputError: the card gives an input more mean/std values than it has channels.
    """
    from edgekit.core.ingest import carded
    from edgekit.core.iospec import IOSpec, TensorSpec

    def spec(t: Tensor, is_input: bool) -> TensorSpec:
        image = len(t.shape) == 4 and t.shape[1] > 1 and t.shape[2] > 1
        base = TensorSpec(name=t.name, shape=t.shape, dtype=t.dtype, layout="NHWC" if image else "ANY",
                          kind="tensor", quant=t.quant if t.dtype in ("int8", "uint8", "int16") else None)
        return carded(card, base, is_input)

    return IOSpec(tuple(spec(t, True) for t in info.inputs), tuple(spec(t, False) for t in info.outputs))


def reference_session(tflite: Path, io, threads: int = 1):
    """The original TFLite model in LiteRT (XNNPACK, which runs MediaPipe's custom ops), taking and returning
    tensors in the source's layout (the TFLite model's own).

    Raises:
        DeviceError: LiteRT cannot prepare the model.
        MissingDependencyError: ai-edge-litert is not installed.
    """
    from edgekit.backends.tflite.session import LiteRTSession

    return LiteRTSession(tflite, io, io, threads=threads, delegate="cpu")


def original(path: str | Path, threads: int = 1):
    """The TFLite model as it is, in LiteRT, with its IO spec (names, NHWC, the card's pre-processing): no
    conversion.

    Raises:
        InputError: the file is not a TFLite model, or its card is invalid.
        MissingDependencyError: ai-edge-litert is not installed.
    """
    path = Path(path)
    return reference_session(path, io_spec(read(path), card_for(path)), threads)


def _check_step(onnx_path: Path, tflite: Path, io, samples: int = 2) -> float:
    """Max abs difference of the ONNX model against the original in LiteRT on generated inputs in each input's
    value range.

    Raises:
        ConversionError: the ONNX model does not compute what the TFLite model computes (fp32 tolerance).
    """
    from edgekit.backends.onnx.session import OrtSession

    rng = np.random.default_rng(0)
    ref, ort = reference_session(tflite, io), OrtSession(onnx_path, io, io, 1, "cpu")
    worst = 0.0
    try:
        for _ in range(samples):
            feeds = {}
            for t in io.inputs:
                lo, hi = t.value_range
                if t.dtype.startswith("float"):
                    feeds[t.name] = rng.uniform(lo, hi, t.shape).astype(t.dtype)
                else:
                    info = np.iinfo(t.dtype)
                    feeds[t.name] = rng.integers(info.min, info.max, t.shape, endpoint=True).astype(t.dtype)
            a, b = ref.run(feeds), ort.run(feeds)
            for t in io.outputs:
                x, y = np.asarray(a[t.name], np.float64), np.asarray(b[t.name], np.float64)
                if x.shape != y.shape:
                    raise ConversionError(f"TFLite -> ONNX: output '{t.name}' has shape {y.shape} in ONNX, "
                                          f"{x.shape} in LiteRT")
                diff = float(np.max(np.abs(x - y))) if x.size else 0.0
                limit = STEP_TOLERANCE * max(1.0, float(np.max(np.abs(x))) if x.size else 1.0)
                if not diff <= limit:
                    raise ConversionError(f"TFLite -> ONNX: output '{t.name}' differs from the original in LiteRT "
                                          f"by {diff:.3g} (fp32 tolerance {limit:.3g}); the converted model is wrong")
                worst = max(worst, diff)
    finally:
        for s in (ref, ort):
            close = getattr(s, "close", None)
            if close:
                close()
    return worst


def load(source, workdir: Path, input_shapes: dict | None = None, card=None, simplify: bool = True):
    """The tflite backend's source loader: a ``.tflite`` file as a prepared ONNX
    :class:`~edgekit.core.ingest.SourceModel` whose parity reference is the original file in LiteRT.

    Raises:
        InputError: not a readable TFLite model, more than one subgraph, dynamic dims, an ``--input-shape``
            other than the file's (given NHWC, or NCHW as for other sources), or a bad model card.
        ConversionError: tf2onnx failed, a custom op has no rewrite, or the ONNX model does not match LiteRT.
        MissingDependencyError: tf2onnx or ai-edge-litert is not installed.
    """
    from edgekit.core import ingest
    from edgekit.core.files import sha256_file

    path = Path(source)
    workdir = Path(workdir)
    buf = _read_bytes(path)  # parsed, copied and hashed from one read: what is checked is what is converted
    info = parse(buf, str(path))
    copy = workdir / "source.tflite"
    copy.write_bytes(buf)
    sha = sha256_file(copy)
    if info.subgraphs != 1:
        raise InputError(f"{path} has {info.subgraphs} subgraphs; edgekit converts single-subgraph TFLite models")
    for t in info.inputs:
        if any(d < 1 for d in t.shape):
            raise InputError(f"{path}: input '{t.name}' has dynamic dims ({'x'.join(map(str, t.shape))}); edgekit "
                             "converts TFLite models with fixed input shapes")
    for key, shape in (input_shapes or {}).items():
        t = next((t for t in info.inputs if t.name == key), info.inputs[0] if key == "" else None)
        if t is None:
            raise InputError(f"--input-shape names unknown input '{key}'; inputs are {[t.name for t in info.inputs]}")
        nchw = (t.shape[0], t.shape[3], t.shape[1], t.shape[2]) if len(t.shape) == 4 else t.shape
        if tuple(shape) not in (t.shape, nchw):  # NCHW, as every other source's image inputs are given, is fine
            raise InputError(f"{path}: a TFLite model's input shapes are fixed in the file ('{t.name}' is "
                             f"{'x'.join(map(str, t.shape))}, NHWC); --input-shape asks for "
                             f"{'x'.join(map(str, shape))}")
    if card is None:
        card = card_for(path)
    io = io_spec(info, card)
    raw = workdir / "tflite.onnx"
    notes = to_onnx(copy, raw, info, ingest.OPSET)
    model = ingest.prepare(ingest._load_onnx(raw), simplify)
    ingest._check_prepared(model, str(path), card)
    prepared = workdir / "source.onnx"
    ingest._save(model, prepared)
    worst = _check_step(prepared, copy, io)
    notes.append(f"TFLite -> ONNX (tf2onnx): max abs difference to the original in LiteRT {worst:.2g} on generated "
                 "inputs; the parity gate compares the artifact with the original in LiteRT")
    src = ingest.SourceModel(path=str(path), kind="tflite", sha256=sha, onnx_path=prepared, model=model, io=io,
                             card=card, input_shapes={t.name: t.shape for t in info.inputs}, notes=notes)
    src.reference = lambda threads=1: reference_session(copy, src.io, threads)
    src.reference_label = "the original TFLite model in LiteRT"
    return src


def _child(argv: list[str]) -> int:
    """``python -m edgekit.backends.tflite.source IN.tflite OUT.onnx OPSET``: tf2onnx, in its own process."""
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    import onnx
    import tf2onnx

    model, _ = tf2onnx.convert.from_tflite(argv[0], opset=int(argv[2]))
    onnx.save(model, argv[1])
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
