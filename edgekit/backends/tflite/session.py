"""LiteRT (ai-edge-litert) session for ``tflite-*`` artifacts.

Delegates: ``cpu`` (XNNPACK, LiteRT's default), ``cpu-ref`` (built-in kernels only, no XNNPACK),
and ``gpu=/path/lib.so`` / ``npu=/path/lib.so`` (an external delegate library). With an external
delegate the default XNNPACK delegate is off, so :meth:`placement` counts exactly the ops the named
delegate took and the ops that fell back to CPU kernels. A delegate that takes no op at all is an
error, never a silent CPU run.

A delegate library is code: it is loaded only from an explicit user argument (``edgekit run --delegate
gpu=/path/lib.so``, ``edgekit profile --delegate-lib gpu=/path/lib.so``, or the Python API's ``delegate=``).
Device profiles and app configs never name one (:func:`edgekit.apps.profiling.device.load_profile` refuses a
library path in a profile), and the path is made absolute before loading so the dynamic loader never
searches its library path for a bare name.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np

from edgekit.backends.session import Placement, Session, Tap, TapsUnavailableError, check_threads, native_stderr_quiet
from edgekit.backends.tflite import BACKEND
from edgekit.core.deps import require
from edgekit.core.iospec import IOSpec
from edgekit.errors import DeviceError, InputError


class LiteRTSession(Session):
    delegates = tuple(BACKEND.delegates)

    def __init__(self, model_path: Path, native_io: IOSpec, source_io: IOSpec, threads: int = 1,
                 delegate: str = "cpu", spin: bool = False):
        litert = require("ai_edge_litert.interpreter")
        super().__init__(native_io, source_io, check_threads(threads), delegate)
        # XNNPACK's thread pool (pthreadpool) waits as it is built to (a short spin, then a futex); LiteRT's Python
        # API sets only the thread count, so ``spin`` cannot be honoured either way and is reported as None
        self.spin = None
        self.thread_options = {"num_threads": threads}
        if spin:
            self.thread_options["note"] = "spin=True was asked for; LiteRT has no spin setting (pthreadpool default)"
        unit, _, lib = delegate.partition("=")
        kwargs: dict = {"model_path": str(model_path), "num_threads": threads}
        lib = str(Path(lib).resolve()) if lib else lib  # dlopen of "x.so" would search the system paths
        self._unit = {"cpu": "cpu:xnnpack", "cpu-ref": "cpu:builtin"}.get(unit, unit)
        if unit == "cpu-ref" or lib:
            kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        self.check_delegate(delegate)
        if unit in ("gpu", "npu"):
            try:
                kwargs["experimental_delegates"] = [litert.load_delegate(lib)]
            except (ValueError, OSError, RuntimeError) as e:
                raise DeviceError(f"cannot load {unit} delegate {lib}: {e}") from e
        try:
            with native_stderr_quiet():  # LiteRT announces its XNNPACK delegate on stderr ("INFO: Created ...")
                self._it = litert.Interpreter(**kwargs)
                self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise DeviceError(f"LiteRT cannot prepare {model_path.name} with delegate {delegate}: {e}") from e
        self._lock = threading.Lock()
        self._inputs = {d["name"]: d["index"] for d in self._it.get_input_details()}
        self._model_path = model_path  # the debugger's taps open a second interpreter on it
        self._outputs = {d["name"]: d["index"] for d in self._it.get_output_details()}
        if lib and self.placement().ops_per_unit.get(self._unit, 0) == 0:
            raise DeviceError(f"{unit} delegate {lib} took none of the model's ops; refusing a silent CPU run")

    @classmethod
    def open(cls, artifact, threads: int = 1, delegate: str = "cpu", spin: bool = False) -> LiteRTSession:
        return cls(artifact.file("model"), artifact.io, artifact.source_io, threads, delegate, spin)

    @classmethod
    def check_delegate(cls, delegate: str) -> None:
        unit, _, lib = delegate.partition("=")
        if unit not in ("cpu", "cpu-ref", "gpu", "npu"):
            raise InputError(f"unknown LiteRT delegate '{delegate}'; use cpu, cpu-ref, gpu=LIB or npu=LIB")
        if unit in ("gpu", "npu") and not lib:
            raise DeviceError(f"no {unit} delegate library given; LiteRT on this machine has only the CPU "
                              f"(cpu, cpu-ref). Pass --delegate {unit}=/path/to/delegate.so")
        if lib and not Path(lib).is_file():
            raise DeviceError(f"{unit} delegate library not found: {lib}")

    @classmethod
    def devices(cls) -> list[str]:
        require("ai_edge_litert.interpreter")
        return ["cpu (XNNPACK)", "cpu-ref", "gpu/npu: pass a delegate library"]

    def _run_native(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with self._lock:  # one interpreter runs one call at a time (LiteRT refuses a second caller mid-invoke)
            for name, x in inputs.items():
                self._it.set_tensor(self._inputs[name], x)
            self._it.invoke()
            return {name: self._it.get_tensor(i).copy() for name, i in self._outputs.items()}

    def audit(self, target, kept_layers: tuple[str, ...] = ()):
        """Per op: taken by XNNPACK / the delegate or run on LiteRT's built-in kernels, and its precision."""
        from edgekit.backends.tflite.audit import audit_litert

        return audit_litert(self, target, bool(kept_layers))

    def placement(self) -> Placement:
        """Ops taken by delegate partitions vs ops run by LiteRT's own CPU kernels."""
        ops = self._it._get_ops_details()
        delegated = _delegated_ops(ops)
        real = [o for o in ops if o["op_name"] != "DELEGATE"]
        partitions = sum(o["op_name"] == "DELEGATE" for o in ops)
        units = {self._unit: len(delegated), "cpu:builtin": len(real) - len(delegated)}
        units = {u: n for u, n in units.items() if n}
        fell_back = sorted({o["op_name"] for o in real if o["index"] not in delegated})
        return Placement(device=self._unit, ops_per_unit=units,
                         detail={"partitions": str(partitions), "cpu_kernel_ops": ", ".join(fell_back)})


    # ---- numeric debugger taps (edgekit diff)

    def tap_points(self) -> list[Tap]:
        """Every float or quantized op output, in execution order, channels-last when 4-D (quantized values
        are dequantized). XNNPACK fuses intermediate tensors away, so taps run LiteRT's built-in kernels with
        every tensor preserved; the debugger compares their final outputs with this session's own run."""
        if getattr(self, "_tap_list", None) is None:
            self._tap_list = _litert_taps(self._tap_interpreter(), self._model_path)
        return list(self._tap_list)

    def _taps_native(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        it = self._tap_interpreter()
        taps = self.tap_points()
        index = {t["name"]: t for t in it.get_tensor_details()}
        for name, x in inputs.items():
            it.set_tensor(self._inputs[name], x)
        it.invoke()
        finals = {name: it.get_tensor(i).copy() for name, i in self._outputs.items()}
        tensors = {}
        for t in taps:
            d = index[t.name]
            v = it.get_tensor(d["index"]).astype(np.float32)
            scale, zp = d["quantization"]
            if np.dtype(d["dtype"]) in (np.int8, np.uint8, np.int16) and scale:
                v = (v - zp) * scale
            tensors[t.name] = v
        return finals, tensors

    def chunk_inputs(self, output: str, among: set[str] | None = None) -> list[str]:
        """The nearest tensors in ``among`` (default: every tap), or model inputs, upstream of ``output``."""
        it = self._tap_interpreter()
        names = {t["index"]: t["name"] for t in it.get_tensor_details()}
        tapped = ({t.name for t in self.tap_points()} if among is None else set(among)) | set(self._inputs)
        producer = {names.get(int(i)): op for op in it._get_ops_details() for i in op["outputs"]}
        if output not in producer:
            raise TapsUnavailableError(f"LiteRT: no op computes {output}")
        found, seen, stack = set(), set(), [int(i) for i in producer[output]["inputs"] if int(i) >= 0]
        while stack:
            name = names.get(stack.pop())
            if name is None or name in seen:
                continue
            seen.add(name)
            if name in tapped:
                found.add(name)
            elif name in producer:
                stack.extend(int(i) for i in producer[name]["inputs"] if int(i) >= 0)
        return sorted(found)

    def _tap_interpreter(self):
        if getattr(self, "_tap_it", None) is None:
            litert = require("ai_edge_litert.interpreter")
            self._tap_it = litert.Interpreter(
                model_path=str(self._model_path), num_threads=self.threads, experimental_preserve_all_tensors=True,
                experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self._tap_it.allocate_tensors()
        return self._tap_it


def _delegated_ops(ops: list[dict]) -> set[int]:
    """Indices of original ops replaced by DELEGATE nodes (walk back from each partition's outputs)."""
    producer = {}
    for o in ops:
        if o["op_name"] != "DELEGATE":
            for t in o["outputs"]:
                producer[int(t)] = o
    taken: set[int] = set()
    for d in (o for o in ops if o["op_name"] == "DELEGATE"):
        boundary = {int(t) for t in d["inputs"]}
        stack = [int(t) for t in d["outputs"]]
        seen: set[int] = set()
        while stack:
            t = stack.pop()
            if t in seen or t in boundary or t not in producer:
                continue
            seen.add(t)
            op = producer[t]
            taken.add(op["index"])
            stack.extend(int(i) for i in op["inputs"] if i >= 0)
    return taken


#: LiteRT builtin op -> the ONNX op types it can come from
LITERT_ONNX_OPS = {
    "CONV_2D": ("Conv",), "DEPTHWISE_CONV_2D": ("Conv",), "TRANSPOSE_CONV": ("ConvTranspose",),
    "FULLY_CONNECTED": ("Gemm", "MatMul", "Conv"), "ADD": ("Add",), "SUB": ("Sub",), "MUL": ("Mul",), "DIV": ("Div",),
    "MAXIMUM": ("Max",), "MINIMUM": ("Min",), "CONCATENATION": ("Concat",), "LOGISTIC": ("Sigmoid",),
    "RELU": ("Relu",), "RELU6": ("Clip",), "RELU_0_TO_1": ("HardSigmoid", "Clip"), "RELU_N1_TO_1": ("Clip",),
    "LEAKY_RELU": ("LeakyRelu",), "HARD_SWISH": ("HardSwish",), "TANH": ("Tanh",), "SOFTMAX": ("Softmax",),
    "RESIZE_BILINEAR": ("Resize", "Upsample"), "RESIZE_NEAREST_NEIGHBOR": ("Resize", "Upsample"),
    "AVERAGE_POOL_2D": ("AveragePool", "GlobalAveragePool"), "MAX_POOL_2D": ("MaxPool", "GlobalMaxPool"),
    "MEAN": ("GlobalAveragePool", "ReduceMean"), "RESHAPE": ("Reshape", "Flatten"), "PAD": ("Pad",), "PADV2": ("Pad",),
    "TRANSPOSE": ("Transpose",), "PRELU": ("PRelu",), "GELU": ("Gelu",), "EXP": ("Exp",), "SQRT": ("Sqrt",),
}
#: LiteRT fused activation (ActivationFunctionType) -> the ONNX op types it stands for
LITERT_ACTIVATIONS = {1: ("Relu",), 2: ("Clip",), 3: ("Clip",), 4: ("Tanh",)}
_WEIGHTED = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV")


def _litert_taps(it, model_path: Path) -> list[Tap]:
    from ai_edge_litert import schema_py_generated as schema

    fused_of = {}
    try:
        model = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model_path.read_bytes(), 0))
        for k, op in enumerate(model.subgraphs[0].operators):
            act = getattr(op.builtinOptions, "fusedActivationFunction", 0) if op.builtinOptions is not None else 0
            fused_of[k] = LITERT_ACTIVATIONS.get(int(act or 0), ("?",) if act else ())
    except (ValueError, TypeError, AttributeError, IndexError):
        fused_of = {}  # unknown: the debugger then says which activation it compared after the layer
    details = {t["index"]: t for t in it.get_tensor_details()}
    # an fp16 model's weights reach the op through a DEQUANTIZE of an fp16 constant: read that constant
    dequantize = {int(o): int(op["inputs"][0]) for op in it._get_ops_details() if op["op_name"] == "DEQUANTIZE"
                  for o in op["outputs"]}
    taps = []
    for op in it._get_ops_details():
        if op["op_name"] == "DELEGATE":
            continue
        weight = None
        if op["op_name"] in _WEIGHTED and len(op["inputs"]) > (2 if op["op_name"] == "TRANSPOSE_CONV" else 1):
            index = int(op["inputs"][2 if op["op_name"] == "TRANSPOSE_CONV" else 1])
            w = details.get(dequantize.get(index, index))
            weight = _dequantized(it, w) if w is not None else None
        for i in op["outputs"]:
            d = details.get(int(i))
            if d is None or np.dtype(d["dtype"]) not in (np.float32, np.float16, np.int8, np.uint8, np.int16):
                continue
            shape = tuple(int(s) for s in d["shape"])
            taps.append(Tap(d["name"], op["op_name"], shape, layout="NHWC" if len(shape) == 4 else "",
                            onnx_ops=LITERT_ONNX_OPS.get(op["op_name"], ()), weight=weight,
                            fused=fused_of.get(op["index"], None if weight is not None else ())))
    return taps


def _dequantized(it, d: dict) -> np.ndarray | None:
    try:
        w = it.get_tensor(d["index"]).astype(np.float32)
    except ValueError:
        return None
    q = d.get("quantization_parameters") or {}
    scales = np.asarray(q.get("scales", []), np.float32)
    if np.dtype(d["dtype"]) in (np.int8, np.uint8) and scales.size:
        zps = np.asarray(q.get("zero_points", np.zeros_like(scales)), np.float32)
        axis = int(q.get("quantized_dimension", 0))
        shape = [1] * w.ndim
        shape[axis] = -1
        w = (w - zps.reshape(shape)) * scales.reshape(shape) if scales.size > 1 else (w - zps[0]) * scales[0]
    return w
