"""Ingestion: turn what the user points at (an ONNX file or a PyTorch module) into a prepared,
static-shape, simplified ONNX model with a typed IO spec.

Accepted sources:

* ``model.onnx``: an ONNX file; ``model.yaml`` beside it is read as its model card.
* ``file.py:factory`` or ``package.module:factory``: a Python callable returning a
  ``torch.nn.Module`` (needs ``--input-shape`` unless the module has ``example_input_shape``).
* ``model.pt``: a TorchScript file (needs ``--input-shape``).
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.core.artifact import sha256_file
from edgekit.core.iospec import IOSpec, ModelCard, TensorSpec
from edgekit.errors import ConversionError, InputError

ONNX_DTYPES = {1: "float32", 10: "float16", 11: "float64", 6: "int32", 7: "int64", 2: "uint8", 3: "int8", 9: "bool"}
OPSET = 17
#: the memory budget of one tensor: a model or shape whose inputs, outputs or intermediates would need more
#: is refused before anything is allocated
MAX_TENSOR_BYTES = 2 * 1024**3
BUDGET_TEXT = "2 GiB per tensor"
#: bytes per element of ONNX tensor types (others: 8)
ONNX_ITEMSIZE = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4, 13: 8, 16: 2}


@dataclass
class SourceModel:
    """A model ready for every converter: prepared ONNX on disk plus its IO spec and card."""

    path: str
    kind: str
    sha256: str
    onnx_path: Path
    model: Any  # onnx.ModelProto (prepared)
    io: IOSpec
    card: ModelCard
    input_shapes: dict[str, tuple[int, ...]]
    torch_module: Any = None
    notes: list[str] = field(default_factory=list)
    #: ``reference(threads=1)`` -> the parity reference Session, for sources that are not ONNX themselves (a
    #: backend's source loader sets it: the original model in its own runtime); None: ONNX Runtime on ``onnx_path``
    reference: Any = None
    #: what the parity gate compares against (recorded in the parity report)
    reference_label: str = "ONNX Runtime fp32"

    def describe(self) -> dict:
        return {"path": self.path, "kind": self.kind, "sha256": self.sha256,
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()}}


def parse_input_shapes(values: list[str] | tuple[str, ...] | None) -> dict[str, tuple[int, ...]]:
    """Parse ``name:1x3x256x256`` (or bare ``1x3x256x256`` for a single-input model) values.

    Raises:
        InputError: a value that is not NAME:DxDx..., a dim of 0, a name given twice, or a shape whose
            float32 tensor would exceed the memory budget (:data:`MAX_TENSOR_BYTES`).
    """
    shapes: dict[str, tuple[int, ...]] = {}
    if isinstance(values, str):
        values = [values]
    for v in values or ():
        if not isinstance(v, str):
            raise InputError(f"bad --input-shape {v!r}: expected a string NAME:1x3xHxW")
        name, sep, dims = v.rpartition(":")
        if not re.fullmatch(r"[0-9]{1,12}(x[0-9]{1,12}){0,11}", dims):
            raise InputError(f"bad --input-shape '{v}': expected NAME:1x3xHxW")
        key = name if sep else ""
        if key in shapes:
            raise InputError(f"--input-shape gives {'input ' + repr(name) if key else 'a bare shape'} twice")
        shapes[key] = check_shape(tuple(int(d) for d in dims.split("x")), f"--input-shape '{v}'")
    return shapes


def check_shape(shape, what: str, itemsize: int = 4) -> tuple[int, ...]:
    """A tensor shape of positive ints whose tensor fits the memory budget.

    Raises:
        InputError: a dim that is not a positive integer, or a tensor over :data:`MAX_TENSOR_BYTES`.
    """
    try:
        dims = tuple(shape)
    except TypeError as e:
        raise InputError(f"{what}: shape {shape!r} is not a list of dims") from e
    if not dims or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in dims):
        bad = next((d for d in dims if isinstance(d, bool) or not isinstance(d, int) or d < 1), None)
        raise InputError(f"{what}: every dim must be a positive integer (got {bad!r} in {list(dims)})"
                         if dims else f"{what}: empty shape")
    size = itemsize
    for d in dims:
        size *= d
    if size > MAX_TENSOR_BYTES:
        raise InputError(f"{what}: a tensor of shape {'x'.join(map(str, dims))} needs {_gib(size)}, over the "
                         f"memory budget of {BUDGET_TEXT}; refused before allocating it")
    return dims


def _gib(n: int) -> str:
    return f"{n / 1024**3:.3g} GiB" if n < 1024**5 else f"{n:.3g} bytes"


def load_source(source: Any, workdir: Path, input_shapes: dict | None = None,
                card: ModelCard | None = None, simplify: bool = True) -> SourceModel:
    """Load, check, fix dims, infer shapes and simplify ``source`` into ``workdir/source.onnx``."""
    input_shapes = dict(input_shapes or {})
    workdir = Path(workdir)
    torch_module = None
    if _is_torch_module(source):
        torch_module, path, kind = source, f"<{type(source).__name__}>", "torch"
    elif isinstance(source, (str, Path)) and (loader := _source_loader(source)) is not None:
        return loader(source, workdir, input_shapes, card, simplify)  # a backend reads its own format
    elif isinstance(source, (str, Path)) and _looks_like_onnx(source):
        path, kind = str(source), "onnx"
    elif isinstance(source, (str, Path)):
        torch_module, path, kind = _load_torch_reference(str(source)), str(source), "torch"
    else:
        raise InputError(f"cannot use {type(source).__name__} as a model: give an ONNX path or a torch module")

    if card is None:
        card = ModelCard.beside(path) if kind == "onnx" else ModelCard()
    if torch_module is not None:
        onnx_file = workdir / "exported.onnx"
        export_torch(torch_module, onnx_file, _torch_input_shape(torch_module, input_shapes, card))
        sha = sha256_file(onnx_file)
        model = _load_onnx(onnx_file)
    else:
        sha = sha256_file(path)
        model = _load_onnx(Path(path))

    if not model.graph.output:
        raise InputError(f"{path} has no outputs: there is nothing to convert or compare")
    model, shapes = fix_input_shapes(model, input_shapes, card)
    model = prepare(model, simplify)
    _check_prepared(model, path, card)
    prepared = workdir / "source.onnx"
    _save(model, prepared)
    return SourceModel(path=path, kind=kind, sha256=sha, onnx_path=prepared, model=model,
                       io=io_spec(model, card), card=card, input_shapes=shapes, torch_module=torch_module)


def original_session(source: str | Path):
    """``source`` run as it is, in its own framework: the backend that reads its suffix runs it without
    converting (a ``.tflite`` in LiteRT); an ONNX model in ONNX Runtime.

    Raises:
        InputError: the model cannot be read.
    """
    import tempfile

    from edgekit.backends.registry import source_backend

    backend = source_backend(source)
    if backend is not None and backend.source_original:
        module, _, attr = backend.source_original.partition(":")
        return getattr(importlib.import_module(module), attr)(source)
    from edgekit.backends.onnx.session import OrtSession

    with tempfile.TemporaryDirectory() as work:
        src = load_source(source, Path(work), None)
        return src.reference() if src.reference is not None else OrtSession.reference(src)


def _source_loader(source):
    """The source loader of the backend that reads ``source``'s suffix (its declaration's ``sources``), or None."""
    from edgekit.backends.registry import source_backend

    backend = source_backend(source)
    if backend is None or not backend.source_loader:
        return None
    module, _, attr = backend.source_loader.partition(":")
    return getattr(importlib.import_module(module), attr)


def _looks_like_onnx(source) -> bool:
    p = Path(source)
    if p.suffix.lower() == ".onnx":
        if not p.exists():
            raise InputError(f"model file not found: {p}")
        if p.is_dir():
            raise InputError(f"{p} is a directory, not an ONNX file")
        return True
    if p.suffix.lower() in (".pt", ".pth", ".ts") or ":" in str(source):
        return False
    if not p.exists():
        raise InputError(f"model file not found: {p}")
    return True  # any other existing file: try ONNX and report if it is not


def _load_onnx(path: Path):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError, OSError, UnicodeDecodeError) as e:
        raise InputError(f"{path} is not a readable ONNX model (truncated or another format): {e}") from e
    if model.ir_version <= 0 or not model.graph.node or not model.opset_import:
        raise InputError(f"{path} is not an ONNX model (no graph, IR version or opset found)")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as e:
        raise InputError(f"{path} is not a valid ONNX model: {str(e).splitlines()[0]}") from e
    return model


def _graph_inputs(model):
    inits = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in inits]


def fix_input_shapes(model, shapes: dict, card: ModelCard):
    """Make every input dim static from ``shapes`` (flag), then the card's default; else raise."""
    inputs = _graph_inputs(model)
    if not inputs:
        raise InputError("the model has no inputs: its outputs are constants, there is nothing to convert or check")
    shapes = {k: check_shape(v, f"input shape for '{k}'" if k else "input shape") for k, v in shapes.items()}
    if "" in shapes:
        if len(inputs) != 1:
            raise InputError("--input-shape without a name needs a single-input model; use NAME:1x3xHxW")
        if inputs[0].name in shapes:
            raise InputError(f"--input-shape gives input '{inputs[0].name}' twice (once without its name)")
        shapes[inputs[0].name] = shapes.pop("")
    unknown = set(shapes) - {i.name for i in inputs}
    if unknown:
        raise InputError(f"--input-shape names unknown input(s) {sorted(unknown)}; inputs are "
                         f"{[i.name for i in inputs]}")
    fixed: dict[str, tuple[int, ...]] = {}
    changed = False
    for inp in inputs:
        dims = inp.type.tensor_type.shape.dim
        current = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in dims)
        want = shapes.get(inp.name) or (None if all(current) else card.default_shape(inp.name))
        if want is None:
            if not all(current):
                shown = "x".join(str(d.dim_value) if d.HasField("dim_value") else "?" for d in dims)
                what = "a dim of 0" if any(d.HasField("dim_value") and d.dim_value == 0 for d in dims) \
                    else "dynamic dims"
                raise InputError(f"input '{inp.name}' has {what} ({shown}); pass --input-shape {inp.name}:1x3xHxW")
            fixed[inp.name] = check_shape(current, f"input '{inp.name}'",
                                          ONNX_ITEMSIZE.get(inp.type.tensor_type.elem_type, 8))
            continue
        if len(want) != len(current):
            raise InputError(f"--input-shape for '{inp.name}' has rank {len(want)}, model expects {len(current)}")
        for d, (cur, new) in enumerate(zip(current, want)):
            if cur is not None and cur != new and d == 1:
                raise InputError(f"input '{inp.name}' has {cur} channels; --input-shape asks for {new}")
        check_shape(want, f"input '{inp.name}'", ONNX_ITEMSIZE.get(inp.type.tensor_type.elem_type, 8))
        for d, v in zip(dims, want):
            d.ClearField("dim_param")
            d.dim_value = v
        changed = changed or tuple(want) != current
        fixed[inp.name] = tuple(want)
    if changed:  # stale intermediate shapes would contradict the new input dims
        del model.graph.value_info[:]
        for out in model.graph.output:
            for d in out.type.tensor_type.shape.dim:
                d.Clear()
    return model, fixed


def prepare(model, simplify: bool = True):
    """Shape inference and simplification (onnxslim); the result has static output shapes."""
    import onnx

    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except onnx.shape_inference.InferenceError as e:
        raise InputError(f"shape inference failed with the given input shapes: {e}") from e
    check_tensor_sizes(model)  # before simplification folds constants (which allocates them)
    if simplify:
        import onnxslim

        try:
            model = onnxslim.slim(model)
        except Exception as e:  # onnxslim raises bare exceptions from many passes
            raise ConversionError(f"onnxslim could not simplify the model: {e}") from e
    return model


def check_tensor_sizes(model) -> None:
    """Refuse a model whose inferred outputs or intermediates exceed the per-tensor memory budget.

    Raises:
        InputError: naming the tensor, its shape and the budget.
    """
    for vi in [*model.graph.value_info, *model.graph.output]:
        tt = vi.type.tensor_type
        dims = [d.dim_value for d in tt.shape.dim if d.HasField("dim_value")]
        if not dims or len(dims) != len(tt.shape.dim) or any(d < 1 for d in dims):
            continue
        size = ONNX_ITEMSIZE.get(tt.elem_type, 8)
        for d in dims:
            size *= d
        if size > MAX_TENSOR_BYTES:
            raise InputError(f"tensor '{vi.name}' of shape {'x'.join(map(str, dims))} would need {_gib(size)}, "
                             f"over the memory budget of {BUDGET_TEXT}; refused before running the model")


def _check_prepared(model, path: str, card: ModelCard) -> None:
    """What simplification leaves must still be a model: inputs, outputs that depend on them, static dims,
    and a card that names only tensors the model has."""
    if not _graph_inputs(model):
        raise InputError(f"{path}: every output is a constant (it does not depend on any input); "
                         "there is nothing to convert or check")
    inputs = {i.name for i in _graph_inputs(model)}
    live = set(inputs)  # tensors computed from an input (nodes are in topological order)
    for n in model.graph.node:
        if n.op_type in ("If", "Loop", "Scan") or any(i in live for i in n.input):  # subgraphs: assume live
            live.update(n.output)
    if not any(o.name in live for o in model.graph.output):
        raise InputError(f"{path}: every output is a constant (none depends on an input); "
                         "there is nothing to convert or check")
    for out in model.graph.output:
        dims = out.type.tensor_type.shape.dim
        if any(d.HasField("dim_value") and d.dim_value == 0 for d in dims):
            shown = "x".join(str(d.dim_value) if d.HasField("dim_value") else "?" for d in dims)
            raise InputError(f"{path}: output '{out.name}' has shape {shown}: an empty tensor cannot be compared")
    for section, names in (("inputs", inputs), ("outputs", {o.name for o in model.graph.output})):
        unknown = sorted(set(getattr(card, section)) - names)
        if unknown:
            raise InputError(f"model card {card.path or ''} names {section[:-1]} {unknown[0]!r}, which the model "
                             f"does not have (its {section}: {', '.join(sorted(names))})")


def carded(card, base: TensorSpec, is_input: bool) -> TensorSpec:
    """``base`` (what the model file says) with the model card's overrides applied.

    Raises:
        InputError: the card's per-channel mean/std does not fit the input's channel count.
    """
    out = card.apply(base, is_input)
    if is_input and out.is_image:
        for key in set(card.inputs.get(base.name, {})) & {"mean", "std"}:
            n = len(getattr(out, key))
            if n not in (1, out.channels):
                raise InputError(f"model card {card.path or ''}: input '{base.name}' {key} has {n} values; the "
                                 f"input has {out.channels} channel(s)")
    return out


def io_spec(model, card: ModelCard) -> IOSpec:
    """IO spec of an ONNX model, with pre-processing fields from its card."""

    def spec(vi, is_input: bool) -> TensorSpec:
        tt = vi.type.tensor_type
        shape = tuple(d.dim_value if d.dim_value > 0 else (d.dim_param or "?") for d in tt.shape.dim)
        layout = "NCHW" if len(shape) == 4 else "ANY"
        base = TensorSpec(name=vi.name, shape=shape, dtype=ONNX_DTYPES.get(tt.elem_type, "float32"),
                          layout=layout, kind="tensor")
        return carded(card, base, is_input)

    return IOSpec(tuple(spec(i, True) for i in _graph_inputs(model)),
                  tuple(spec(o, False) for o in model.graph.output))


def _save(model, path: Path) -> None:
    import onnx

    onnx.save(model, str(path))


# ---------------------------------------------------------------- PyTorch sources


def _is_torch_module(obj) -> bool:
    mod = type(obj).__module__
    if not mod.startswith("torch") and not hasattr(obj, "forward"):
        return False
    try:
        import torch
    except ImportError:
        return False
    return isinstance(obj, torch.nn.Module)


def _load_torch_reference(ref: str):
    from edgekit.core.deps import require

    torch = require("torch")
    p = Path(ref)
    if p.suffix in (".pt", ".pth", ".ts"):
        if not p.is_file():
            raise InputError(f"model file not found: {p}")
        try:
            return torch.jit.load(str(p), map_location="cpu").eval()
        except RuntimeError as e:
            raise InputError(f"{p} is not a TorchScript file (save modules with torch.jit.save): {e}") from e
    target, sep, attr = ref.rpartition(":")
    if not sep or not attr:
        raise InputError(f"cannot read '{ref}': expected an .onnx/.pt file or module.path:factory")
    try:
        if target.endswith(".py"):
            spec = importlib.util.spec_from_file_location(Path(target).stem, target)
            if spec is None or not Path(target).is_file():
                raise InputError(f"python file not found: {target}")
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
        obj = getattr(module, attr)
    except (ImportError, AttributeError, SyntaxError) as e:
        raise InputError(f"cannot import '{ref}': {e}") from e
    made = obj() if callable(obj) and not isinstance(obj, torch.nn.Module) else obj
    if not isinstance(made, torch.nn.Module):
        raise InputError(f"'{ref}' did not give a torch.nn.Module (got {type(made).__name__})")
    return made.eval()


def _torch_input_shape(module, shapes: dict, card: ModelCard) -> tuple[int, ...]:
    if shapes:
        if len(shapes) != 1:
            raise InputError("PyTorch sources take a single input; pass one --input-shape")
        return check_shape(next(iter(shapes.values())), "--input-shape")
    shape = getattr(module, "example_input_shape", None) or card.default_shape("input")
    if not shape:
        raise InputError("a PyTorch source needs --input-shape 1x3xHxW (or an example_input_shape attribute)")
    return check_shape(tuple(shape), "the PyTorch source's example_input_shape")


def export_torch(module, path: Path, shape: tuple[int, ...], input_name: str = "input",
                 output_names: list[str] | None = None, dynamic_hw: bool = False) -> None:
    """Export a module to ONNX (TorchScript exporter, opset 17)."""
    from edgekit.core.deps import require

    torch = require("torch")
    x = torch.zeros(*shape)
    if output_names is None:
        with torch.no_grad():
            y = module.eval()(x)
        n = len(y) if isinstance(y, (tuple, list)) else 1
        output_names = ["output"] if n == 1 else [f"output{i}" for i in range(n)]
    dyn = None
    if dynamic_hw:
        dyn = {input_name: {2: "height", 3: "width"}}
        for o in output_names or ["output"]:
            dyn[o] = {2: "height", 3: "width"}
    try:
        with torch.no_grad():
            torch.onnx.export(module.eval(), (x,), str(path), input_names=[input_name],
                              output_names=output_names, opset_version=OPSET, dynamic_axes=dyn, dynamo=False)
    except (RuntimeError, TypeError, ValueError) as e:
        raise ConversionError(f"torch.onnx.export failed: {e}") from e

