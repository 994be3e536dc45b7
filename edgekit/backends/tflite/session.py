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

from pathlib import Path

import numpy as np

from edgekit.backends.session import Placement, Session, check_threads
from edgekit.backends.tflite import BACKEND
from edgekit.core.deps import require
from edgekit.core.iospec import IOSpec
from edgekit.errors import DeviceError, InputError


class LiteRTSession(Session):
    delegates = tuple(BACKEND.delegates)

    def __init__(self, model_path: Path, native_io: IOSpec, source_io: IOSpec, threads: int = 1,
                 delegate: str = "cpu"):
        litert = require("ai_edge_litert.interpreter")
        super().__init__(native_io, source_io, check_threads(threads), delegate)
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
            self._it = litert.Interpreter(**kwargs)
            self._it.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise DeviceError(f"LiteRT cannot prepare {model_path.name} with delegate {delegate}: {e}") from e
        self._inputs = {d["name"]: d["index"] for d in self._it.get_input_details()}
        self._outputs = {d["name"]: d["index"] for d in self._it.get_output_details()}
        if lib and self.placement().ops_per_unit.get(self._unit, 0) == 0:
            raise DeviceError(f"{unit} delegate {lib} took none of the model's ops; refusing a silent CPU run")

    @classmethod
    def open(cls, artifact, threads: int = 1, delegate: str = "cpu") -> LiteRTSession:
        return cls(artifact.file("model"), artifact.io, artifact.source_io, threads, delegate)

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
        for name, x in inputs.items():
            self._it.set_tensor(self._inputs[name], x)
        self._it.invoke()
        return {name: self._it.get_tensor(i).copy() for name, i in self._outputs.items()}

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
