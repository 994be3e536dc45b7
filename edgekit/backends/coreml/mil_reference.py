"""edgekit's reference evaluator of a saved Core ML ML program (for verification off macOS).

It rebuilds the MIL program from the ``.mlpackage`` with coremltools, then evaluates it op by op
with NumPy/PyTorch kernels written from the MIL op definitions, rounding every fp16 value to fp16
as the program declares. Compressed weights (``constexpr_*`` ops) are expanded with coremltools' own
value inference. An op type without a kernel here makes the program *unverified*: opening the
session raises, naming the op types, so nothing is ever reported as passed that was not computed.

This is edgekit's reference evaluation of the program, not Apple's Core ML runtime.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.backends.session import Placement, Session
from edgekit.core.deps import require
from edgekit.core.iospec import IOSpec
from edgekit.errors import ParityError

VERIFIED_BY = "edgekit MIL reference evaluator (not Apple's Core ML runtime)"


def _t(x):
    torch = require("torch")
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _conv(a):
    torch = require("torch")
    pad = _pads(a)
    x = torch.nn.functional.pad(_t(a["x"]), (pad[2], pad[3], pad[0], pad[1]))
    y = torch.nn.functional.conv2d(x, _t(a["weight"]), None if a.get("bias") is None else _t(a["bias"]),
                                   stride=tuple(a["strides"]), dilation=tuple(a["dilations"]), groups=int(a["groups"]))
    return y.numpy()


def _pads(a) -> list[int]:
    kind = str(a.get("pad_type", "custom"))
    if kind == "custom":
        return [int(v) for v in a["pad"]]
    if kind == "valid":
        return [0, 0, 0, 0]
    k = np.asarray(a["weight"]).shape[2:]
    d, s, size = a["dilations"], a["strides"], np.asarray(a["x"]).shape[2:]
    pads = []
    for i in range(2):
        eff = (k[i] - 1) * d[i] + 1
        total = max((int(np.ceil(size[i] / s[i])) - 1) * s[i] + eff - size[i], 0)
        pads += [total // 2, total - total // 2]
    return pads


def _conv_transpose(a):
    torch = require("torch")
    pad = [int(v) for v in a.get("pad", [0, 0, 0, 0])]
    y = torch.nn.functional.conv_transpose2d(_t(a["x"]), _t(a["weight"]),
                                             None if a.get("bias") is None else _t(a["bias"]),
                                             stride=tuple(a["strides"]), dilation=tuple(a["dilations"]),
                                             groups=int(a["groups"]))
    h, w = y.shape[2], y.shape[3]
    y = y[:, :, pad[0] : h - pad[1], pad[2] : w - pad[3]]
    return y.numpy()


def _scaled_size(x, a) -> tuple[int, int]:
    return (int(round(x.shape[2] * float(a["scale_factor_height"]))),
            int(round(x.shape[3] * float(a["scale_factor_width"]))))


def _upsample_bilinear(a):
    torch = require("torch")
    x = _t(a["x"])
    size = _scaled_size(x, a)
    align = bool(a.get("align_corners", False))
    if not align and not bool(a.get("half_pixel_centers", not align)):
        raise ParityError("upsample_bilinear with neither align_corners nor half_pixel_centers is not evaluated")
    return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=align).numpy()


def _upsample_nearest(a):
    torch = require("torch")
    x = _t(a["x"])
    return torch.nn.functional.interpolate(x, size=_scaled_size(x, a), mode="nearest").numpy()


def _gelu(a):
    x = np.asarray(a["x"], np.float64)
    mode = str(a.get("mode", "EXACT"))
    if mode == "EXACT":
        from math import erf, sqrt

        return (0.5 * x * (1 + np.vectorize(erf)(x / sqrt(2)))).astype(np.float32)
    if mode == "TANH_APPROXIMATION":
        return 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3)))
    return x / (1 + np.exp(-1.702 * x))


def _layer_norm(a):
    x = np.asarray(a["x"], np.float64)
    axes = tuple(int(v) for v in a["axes"])
    mean = x.mean(axis=axes, keepdims=True)
    var = x.var(axis=axes, keepdims=True)
    y = (x - mean) / np.sqrt(var + float(a.get("epsilon", 1e-5)))
    if a.get("gamma") is not None:
        y = y * a["gamma"]
    if a.get("beta") is not None:
        y = y + a["beta"]
    return y


def _softmax(a):
    x = np.asarray(a["x"], np.float64)
    e = np.exp(x - x.max(axis=int(a["axis"]), keepdims=True))
    return e / e.sum(axis=int(a["axis"]), keepdims=True)


def _matmul(a):
    x, y = np.asarray(a["x"]), np.asarray(a["y"])
    if a.get("transpose_x"):
        x = np.swapaxes(x, -1, -2)
    if a.get("transpose_y"):
        y = np.swapaxes(y, -1, -2)
    return np.matmul(x.astype(np.float64), y)


def _slice_by_index(a):
    x = np.asarray(a["x"])
    begin, end = list(a["begin"]), list(a["end"])
    stride = list(a.get("stride") if a.get("stride") is not None else [1] * x.ndim)
    bm = list(a.get("begin_mask") if a.get("begin_mask") is not None else [False] * x.ndim)
    em = list(a.get("end_mask") if a.get("end_mask") is not None else [False] * x.ndim)
    sm = list(a.get("squeeze_mask") if a.get("squeeze_mask") is not None else [False] * x.ndim)
    idx = []
    for i in range(x.ndim):
        b = None if bm[i] else int(begin[i])
        e = None if em[i] else int(end[i])
        idx.append(int(begin[i]) if sm[i] else slice(b, e, int(stride[i])))
    return x[tuple(idx)]


def _pixel_shuffle(a):
    x = np.asarray(a["x"])
    r = int(a["upscale_factor"])
    n, c, h, w = x.shape
    return x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3).reshape(n, c // (r * r), h * r, w * r)


def _reduce(fn):
    def op(a):
        axes = a.get("axes")
        axes = None if axes is None else tuple(int(v) for v in np.atleast_1d(axes))
        return fn(np.asarray(a["x"], np.float64), axis=axes, keepdims=bool(a.get("keep_dims", False)))

    return op


def _cast(a):
    dtype = {"fp16": np.float16, "fp32": np.float32, "int32": np.int32, "bool": np.bool_}[str(a["dtype"])]
    return np.asarray(a["x"]).astype(dtype)


def _concat(a):
    return np.concatenate([np.asarray(v) for v in a["values"]], axis=int(a["axis"]))


def _pool(kind):
    def op(a):
        torch = require("torch")
        pad = _pads({**a, "weight": np.zeros((1, 1, *a["kernel_sizes"])), "dilations": [1, 1]})
        x = torch.nn.functional.pad(_t(a["x"]), (pad[2], pad[3], pad[0], pad[1]),
                                    value=-np.inf if kind == "max" else 0.0)
        k, s = tuple(a["kernel_sizes"]), tuple(a["strides"])
        if kind == "max":
            return torch.nn.functional.max_pool2d(x, k, s).numpy()
        include_pad = not bool(a.get("exclude_padding_from_average"))
        return torch.nn.functional.avg_pool2d(x, k, s, count_include_pad=include_pad).numpy()

    return op


def _pad(a):
    """MIL ``pad``: ``pad`` holds (before, after) pairs for the last N dimensions, first of them first."""
    x = np.asarray(a["x"])
    pairs = np.asarray(a["pad"], np.int64).reshape(-1, 2)
    widths = [(0, 0)] * (x.ndim - len(pairs)) + [(int(b), int(e)) for b, e in pairs]
    mode = str(a.get("mode") if a.get("mode") is not None else "constant")
    if mode == "constant":
        value = a.get("constant_val")
        return np.pad(x, widths, mode="constant", constant_values=0.0 if value is None else float(value))
    if mode not in ("reflect", "replicate"):
        raise ParityError(f"pad mode {mode!r} is not a MIL pad mode")
    return np.pad(x, widths, mode="reflect" if mode == "reflect" else "edge")


KERNELS = {
    "pad": _pad,
    "conv": _conv,
    "conv_transpose": _conv_transpose,
    "linear": lambda a: np.asarray(a["x"], np.float64) @ np.asarray(a["weight"]).T
    + (0 if a.get("bias") is None else a["bias"]),
    "matmul": _matmul,
    "add": lambda a: np.add(a["x"], a["y"]),
    "sub": lambda a: np.subtract(a["x"], a["y"]),
    "mul": lambda a: np.multiply(a["x"], a["y"]),
    "real_div": lambda a: np.divide(a["x"], a["y"]),
    "pow": lambda a: np.power(a["x"], a["y"]),
    "maximum": lambda a: np.maximum(a["x"], a["y"]),
    "minimum": lambda a: np.minimum(a["x"], a["y"]),
    "relu": lambda a: np.maximum(a["x"], 0),
    "relu6": lambda a: np.clip(a["x"], 0, 6),
    "clip": lambda a: np.clip(a["x"], a["alpha"], a["beta"]),
    "thresholded_relu": lambda a: np.where(np.asarray(a["x"]) > a["alpha"], a["x"], 0),
    "sigmoid": lambda a: 1 / (1 + np.exp(-np.asarray(a["x"], np.float64))),
    "sigmoid_hard": lambda a: np.clip(np.asarray(a["x"]) * a["alpha"] + a["beta"], 0, 1),
    "tanh": lambda a: np.tanh(a["x"]),
    "exp": lambda a: np.exp(a["x"]),
    "sqrt": lambda a: np.sqrt(a["x"]),
    "rsqrt": lambda a: 1 / np.sqrt(np.asarray(a["x"], np.float64) + float(a.get("epsilon", 1e-12))),
    "gelu": _gelu,
    "erf": lambda a: np.vectorize(__import__("math").erf)(a["x"]),
    "softmax": _softmax,
    "layer_norm": _layer_norm,
    "reduce_mean": _reduce(np.mean),
    "reduce_sum": _reduce(np.sum),
    "reduce_max": _reduce(np.max),
    "upsample_bilinear": _upsample_bilinear,
    "upsample_nearest_neighbor": _upsample_nearest,
    "concat": _concat,
    "reshape": lambda a: np.reshape(a["x"], [int(v) for v in a["shape"]]),
    "transpose": lambda a: np.transpose(a["x"], [int(v) for v in a["perm"]]),
    "squeeze": lambda a: np.squeeze(a["x"], axis=None if a.get("axes") is None else tuple(int(v) for v in a["axes"])),
    "expand_dims": lambda a: np.expand_dims(a["x"], tuple(int(v) for v in a["axes"])),
    "slice_by_index": _slice_by_index,
    "pixel_shuffle": _pixel_shuffle,
    "cast": _cast,
    "identity": lambda a: np.asarray(a["x"]),
    "avg_pool": _pool("avg"),
    "max_pool": _pool("max"),
}


def load_program(path: Path):
    """The MIL program of a saved ``.mlpackage`` (coremltools rebuilds it from the spec)."""
    from edgekit.backends.coreml.converter import import_coremltools

    ct = import_coremltools()
    from coremltools.converters.mil.frontend.milproto.load import load as milproto_load

    model = ct.models.MLModel(str(path), skip_model_load=True)
    spec = model.get_spec()
    return milproto_load(spec, specification_version=spec.specificationVersion, file_weights_dir=model.weights_dir)


def uncovered_ops(program) -> list[str]:
    ops = {op.op_type for op in program.functions["main"].operations}
    return sorted(o for o in ops if o not in KERNELS and o != "const" and not o.startswith("constexpr_"))


class MILReferenceSession(Session):
    """Evaluates an ML program with edgekit's kernels; raises when an op type has none."""

    verified_by = VERIFIED_BY

    def __init__(self, path: Path, native_io: IOSpec, source_io: IOSpec):
        super().__init__(native_io, source_io, 1, "mil-reference")
        self.program = load_program(path)
        missing = uncovered_ops(self.program)
        if missing:
            raise ParityError(f"Core ML program is unverified off macOS: edgekit's MIL evaluator has no kernel for "
                              f"{', '.join(missing)}")
        self._fn = self.program.functions["main"]
        self._consts = {}
        for op in self._fn.operations:
            if op.op_type == "const" or op.op_type.startswith("constexpr_"):
                # constexpr ops hold compressed weights; coremltools itself expands them
                values = op.materialized_val_inference() if op.op_type.startswith("constexpr_") else op.outputs[0].val
                for var, val in zip(op.outputs, values if isinstance(values, tuple) else (values,)):
                    self._consts[var.name] = np.asarray(val)

    @classmethod
    def open(cls, artifact, threads: int = 1, delegate: str = "mil-reference") -> MILReferenceSession:
        return cls(artifact.file("model"), artifact.io, artifact.source_io)

    def _run_native(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        env = self._evaluate(inputs)
        outputs = zip(self.native_io.outputs, self._fn.outputs)
        return {spec.name: env[var.name].astype(np.float32) for spec, var in outputs}

    def _evaluate(self, inputs: dict[str, np.ndarray], feeds: dict[str, np.ndarray] | None = None,
                  only: set[str] | None = None) -> dict[str, np.ndarray]:
        """Every value of the program (``feeds``: values given for op outputs; ``only``: evaluate just the ops
        with these outputs)."""
        env = dict(self._consts)
        for name, var in self._fn.inputs.items():
            if name in inputs:
                env[var.name] = _round(inputs[name], var)
        for op in self._fn.operations:
            out = op.outputs[0]
            if feeds and out.name in feeds:
                env[out.name] = _round(np.asarray(feeds[out.name]), out)
            if out.name in env or (only is not None and out.name not in only):
                continue
            args = {k: _value(v, env) for k, v in op.inputs.items()}
            env[out.name] = _round(np.asarray(KERNELS[op.op_type](args)), out)
        return env

    # ------------------------------------------------------------------ taps (edgekit diff / bisect)

    def tap_points(self) -> list:
        """Every float op output of the program, in program order (MIL keeps the source's ops unfused)."""
        from coremltools.converters.mil.mil import types

        from edgekit.backends.session import Tap

        taps = []
        for op in self._fn.operations:
            out = op.outputs[0]
            if op.op_type == "const" or op.op_type.startswith("constexpr_") or out.dtype not in (types.fp16,
                                                                                                  types.fp32):
                continue
            weight = None
            if op.op_type in WEIGHTED and "weight" in op.inputs:
                w = op.inputs["weight"]
                value = self._consts.get(w.name, w.val)
                weight = None if value is None else np.asarray(value, np.float32)
            shape = tuple(int(d) for d in out.shape) if all(isinstance(d, int) for d in out.shape) else ()
            taps.append(Tap(out.name, op.op_type, shape, "", (out.name,), MIL_TO_ONNX.get(op.op_type, ()), weight))
        return taps

    def _taps_native(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        env = self._evaluate(inputs)
        outputs = {spec.name: env[var.name].astype(np.float32)
                   for spec, var in zip(self.native_io.outputs, self._fn.outputs)}
        return outputs, {t.name: env[t.name].astype(np.float32) for t in self.tap_points()}

    def _producers(self) -> dict:
        return {o.name: op for op in self._fn.operations for o in op.outputs}

    def chunk_inputs(self, output: str, among: set[str] | None = None) -> list[str]:
        taps = {t.name for t in self.tap_points()}
        among = taps if among is None else among & taps
        producers, inputs = self._producers(), {v.name for v in self._fn.inputs.values()}
        found, seen = [], set()
        stack = [v for v in _vars(producers[output].inputs.values())] if output in producers else []
        while stack:
            var = stack.pop()
            if var.name in seen or var.name in self._consts:
                continue
            seen.add(var.name)
            if var.name in among or var.name in inputs:
                found.append(var.name)
            elif var.name in producers and producers[var.name].op_type != "const":
                stack.extend(_vars(producers[var.name].inputs.values()))
        return sorted(found)

    def run_chunk(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        producers = self._producers()
        needed, stack = set(), [output]
        while stack:
            name = stack.pop()
            if name in needed or name in feeds or name in self._consts or name not in producers:
                continue
            needed.add(name)
            stack.extend(v.name for v in _vars(producers[name].inputs.values()))
        names = {var.name: n for n, var in self._fn.inputs.items()}
        inputs = {names[k]: v for k, v in feeds.items() if k in names}
        return self._evaluate(inputs, feeds, only=needed)[output].astype(np.float32)

    def placement(self) -> Placement:
        return Placement(device="mil-reference", ops_per_unit={"edgekit-mil-reference": len(self._fn.operations)},
                         detail={"note": VERIFIED_BY})


#: MIL ops whose ``weight`` input identifies a layer across formats
WEIGHTED = ("conv", "conv_transpose", "linear")
#: MIL op type -> the ONNX ops it can come from (the debugger's structural matching)
MIL_TO_ONNX = {
    "conv": ("Conv",), "conv_transpose": ("ConvTranspose",), "linear": ("Gemm", "MatMul"), "matmul": ("MatMul",),
    "add": ("Add",), "sub": ("Sub",), "mul": ("Mul",), "real_div": ("Div",), "relu": ("Relu",),
    "relu6": ("Clip",), "clip": ("Clip",), "sigmoid": ("Sigmoid",), "sigmoid_hard": ("HardSigmoid",),
    "tanh": ("Tanh",), "gelu": ("Gelu",), "softmax": ("Softmax",), "layer_norm": ("LayerNormalization",),
    "reduce_mean": ("GlobalAveragePool", "ReduceMean"), "avg_pool": ("AveragePool", "GlobalAveragePool"),
    "max_pool": ("MaxPool",), "upsample_bilinear": ("Resize",), "upsample_nearest_neighbor": ("Resize",),
    "concat": ("Concat",), "pixel_shuffle": ("DepthToSpace",), "reshape": ("Reshape", "Flatten"),
    "transpose": ("Transpose",),
}


def _vars(values):
    for v in values:
        if isinstance(v, (list, tuple)):
            yield from _vars(v)
        elif hasattr(v, "name"):
            yield v


def _value(var, env):
    if isinstance(var, (list, tuple)):
        return [_value(v, env) for v in var]
    if var.name in env:
        return env[var.name]
    if var.val is not None:
        return var.val
    raise ParityError(f"MIL evaluator: no value for {var.name}")


def _round(x: np.ndarray, var) -> np.ndarray:
    """Store a value the way the program's type says (fp16 values are rounded to fp16)."""
    from coremltools.converters.mil.mil import types

    dtype = var.dtype
    if dtype == types.fp16:
        return x.astype(np.float16).astype(np.float32)
    if dtype == types.fp32:
        return x.astype(np.float32)
    return x
