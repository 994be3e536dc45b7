"""The session API every runtime implements.

Callers always speak the *source* IO spec (the layout and dtype of the original model, usually
float NCHW). The base class converts to the artifact's native IO (NHWC, int8 with scale/zero
point) and back, so validation, calibration and apps' code are the same for every target.
"""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np

from edgekit.core.iospec import IOSpec, TensorSpec, to_layout
from edgekit.errors import InputError, RuntimeUnavailableError


@dataclass
class Placement:
    """Where the parts of a model really ran: ``{unit: number of ops}`` plus fallbacks."""

    device: str
    ops_per_unit: dict[str, int] = field(default_factory=dict)
    detail: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"device": self.device, "ops_per_unit": self.ops_per_unit, "detail": self.detail}


class Session(ABC):
    """Runs one artifact. ``run`` takes and returns ``{name: ndarray}`` in the source's IO spec."""

    #: delegates/devices this runtime knows by name (``cpu`` always first)
    delegates: tuple[str, ...] = ("cpu",)
    #: what the parity report says computed the outputs
    verified_by = "runtime"

    def __init__(self, native_io: IOSpec, source_io: IOSpec, threads: int, delegate: str):
        self.native_io = native_io
        self.io = source_io
        self.threads = threads
        self.delegate = delegate

    @classmethod
    def devices(cls) -> list[str]:
        """Delegates/devices this runtime can use on this machine."""
        return ["cpu"]

    @classmethod
    def compute_units(cls) -> dict[str, str]:
        """Non-CPU compute units this runtime finds here, ``{kind: description}`` (``gpu``, ``npu``), for the
        pipeline scheduler. CPU cores are found once for every backend."""
        return {}

    @classmethod
    def check_delegate(cls, delegate: str) -> None:
        """Raise :class:`~edgekit.errors.DeviceError` when ``delegate`` cannot run here (before any work)."""
        if delegate not in cls.delegates:
            raise InputError(f"unknown delegate '{delegate}'; known: {', '.join(cls.delegates)}")

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run one inference; inputs and outputs follow :attr:`io` (the source model's spec)."""
        native = {}
        for spec, nspec in zip(self.io.inputs, self.native_io.inputs):
            if spec.name not in inputs:
                raise InputError(f"missing input '{spec.name}' (inputs: {[s.name for s in self.io.inputs]})")
            x = np.asarray(inputs[spec.name])
            if spec.is_static and tuple(x.shape) != tuple(spec.shape):
                raise InputError(f"input '{spec.name}' has shape {x.shape}, expected {tuple(spec.shape)}")
            native[nspec.name] = _to_native(x, spec, nspec)
        out = self._run_native(native)
        return {spec.name: _from_native(out[nspec.name], nspec, spec)
                for spec, nspec in zip(self.io.outputs, self.native_io.outputs)}

    @abstractmethod
    def _run_native(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run with inputs already in the artifact's native layout/dtype."""

    def placement(self) -> Placement:
        """Which unit ran which ops. Runtimes that can tell override this."""
        return Placement(device=self.delegate, ops_per_unit={self.delegate: -1},
                         detail={"note": "this runtime does not report per-op placement"})

    def audit(self, target, kept_layers: tuple[str, ...] = ()):
        """Intended vs actual per op (:class:`~edgekit.core.audit.Audit`): where each op ran, in which precision,
        on the fast path or not. ``target`` is the artifact's :class:`~edgekit.core.target.Target`;
        ``kept_layers`` names the layers the conversion kept in float on purpose (the artifact's
        ``float_layers``). Use :func:`edgekit.core.audit.audit_artifact` to audit an artifact.

        Raises:
            AuditError: this runtime cannot report what it ran.
        """
        from edgekit.errors import AuditError

        raise AuditError(f"{type(self).__name__} cannot report what each op ran as here")

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release native resources (optional)."""

    #: whether this session's worker threads spin-wait between runs (None: the runtime has no such setting)
    spin: bool | None = None
    #: the runtime's own thread settings this session applied (option -> value), set by each runtime
    thread_options: dict = {}  # noqa: RUF012 - each session assigns its own dict

    def run_options(self) -> dict:
        """How this session's threads run: ``threads``, ``spin`` (worker threads busy-wait for work; None where
        the runtime cannot say) and every runtime thread setting applied (``thread_options``)."""
        return {"threads": self.threads, "spin": self.spin, "settings": dict(self.thread_options)}

    def kernel_times(self, inputs: dict[str, np.ndarray], runs: int = 10) -> list | None:
        """Per-kernel timings of ``runs`` runs on ``inputs`` (source IO spec), as this runtime reports them after
        its own fusions: a list of :class:`~edgekit.backends.kerneltimes.KernelTime`, or None where this runtime
        cannot time its kernels (latency prediction then fits whole-model points only).

        Raises:
            InputError: a missing input or one of the wrong shape.
            DeviceError: the runtime failed while profiling.
        """
        native = {}
        for spec, nspec in zip(self.io.inputs, self.native_io.inputs):
            if spec.name not in inputs:
                raise InputError(f"missing input '{spec.name}' (inputs: {[s.name for s in self.io.inputs]})")
            native[nspec.name] = _to_native(np.asarray(inputs[spec.name]), spec, nspec)
        return self._kernel_times_native(native, runs)

    def _kernel_times_native(self, inputs: dict[str, np.ndarray], runs: int) -> list | None:
        return None  # runtimes that can time their kernels override this

    # ---- numeric debugger taps (``edgekit diff``): runtimes that can expose intermediate tensors override

    def tap_points(self) -> list[Tap]:
        """The intermediate tensors this runtime can expose, in its execution order.

        Raises:
            TapsUnavailableError: this runtime cannot expose intermediate tensors.
        """
        raise TapsUnavailableError(f"{type(self).__name__} cannot expose intermediate tensors (no taps for this "
                                   "runtime); edgekit diff needs ONNX Runtime, OpenVINO, ncnn or LiteRT")

    def taps(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Run once with every tap exposed: ``(outputs in the source's IO spec, {tap name: float array in the
        runtime's own layout})``. The outputs let callers check that exposing taps changed nothing.

        Raises:
            TapsUnavailableError: this runtime cannot expose intermediate tensors.
            InputError: a missing input or one of the wrong shape.
        """
        native = {}
        for spec, nspec in zip(self.io.inputs, self.native_io.inputs):
            if spec.name not in inputs:
                raise InputError(f"missing input '{spec.name}' (inputs: {[s.name for s in self.io.inputs]})")
            native[nspec.name] = _to_native(np.asarray(inputs[spec.name]), spec, nspec)
        out, tensors = self._taps_native(native)
        outputs = {spec.name: _from_native(out[nspec.name], nspec, spec)
                   for spec, nspec in zip(self.io.outputs, self.native_io.outputs)}
        return outputs, tensors

    def _taps_native(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        self.tap_points()  # raises the typed error when the runtime has no taps
        raise TapsUnavailableError(f"{type(self).__name__} lists taps but cannot run them")

    def run_chunk(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Run only the part of the model that computes tap ``output`` from the taps (or model inputs) in
        ``feeds`` ({tap name: array in the runtime's layout}, as :meth:`chunk_inputs` names them), for the
        debugger's *isolated* error.

        Raises:
            TapsUnavailableError: this runtime cannot cut a sub-model.
        """
        raise TapsUnavailableError(f"{type(self).__name__} cannot run a cut-out part of the model")

    def chunk_inputs(self, output: str, among: set[str] | None = None) -> list[str]:
        """The nearest taps upstream of tap ``output`` that are in ``among`` (default: every tap), or model inputs:
        where the chunk computing ``output`` starts (see :meth:`run_chunk`).

        Raises:
            TapsUnavailableError: this runtime cannot cut a sub-model.
        """
        raise TapsUnavailableError(f"{type(self).__name__} cannot run a cut-out part of the model")


class TapsUnavailableError(RuntimeUnavailableError):
    """A runtime cannot expose intermediate tensors, or cannot cut a sub-model (the message names it)."""


@dataclass
class Tap:
    """One intermediate tensor a runtime can expose (see :meth:`Session.tap_points`)."""

    #: the runtime's name for it (the key :meth:`Session.taps` returns it under)
    name: str
    #: the runtime's op or layer type that produces it
    op: str
    shape: tuple[int, ...]
    #: ``NHWC`` when the runtime keeps this 4-D tensor channels-last (the debugger undoes it), else ``""``
    layout: str = ""
    #: ONNX tensor names the converter kept for it (matched first, by name)
    onnx_names: tuple[str, ...] = ()
    #: ONNX op types this runtime op can come from (for structural matching)
    onnx_ops: tuple[str, ...] = ()
    #: float weight of a weighted op, in the runtime's layout (for matching by weights), else None
    weight: np.ndarray | None = None
    #: ONNX ops the runtime fused into this op after the weighted one (e.g. an activation), when known
    fused: tuple[str, ...] = ()


def _to_native(x: np.ndarray, spec: TensorSpec, native: TensorSpec) -> np.ndarray:
    x = to_layout(x, spec.layout, native.layout)
    x = renormalize(x, spec, native)
    if native.quant and native.dtype in ("int8", "uint8"):
        scale, zp = native.quant
        info = np.iinfo(native.dtype)
        return np.clip(np.round(x / scale) + zp, info.min, info.max).astype(native.dtype)
    return np.ascontiguousarray(x, dtype=native.dtype)


def _from_native(y: np.ndarray, native: TensorSpec, spec: TensorSpec) -> np.ndarray:
    if native.quant and native.dtype in ("int8", "uint8"):
        scale, zp = native.quant
        y = (y.astype(np.float32) - zp) * scale
    y = np.asarray(y, dtype=np.float32) if spec.dtype == "float32" else y
    if y.ndim == 4 and native.layout != spec.layout:
        y = to_layout(y, native.layout, spec.layout)
    return y


def max_threads() -> int:
    """The most threads a session accepts: 4 x this machine's CPU count (more only adds contention)."""
    return 4 * os_cpu_count()


def check_threads(threads: int) -> int:
    """``threads`` when it is an integer in 1..:func:`max_threads`.

    Raises:
        InputError: not an integer, below 1 or above the maximum.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise InputError(f"threads must be a positive integer, got {threads!r}")
    if threads > max_threads():
        raise InputError(f"threads {threads} is more than this machine can use (at most {max_threads()}: 4 x "
                         f"{os_cpu_count()} CPUs)")
    return threads


def os_cpu_count() -> int:
    import os

    return os.cpu_count() or 1


def renormalize(x: np.ndarray, src: TensorSpec, dst: TensorSpec) -> np.ndarray:
    """Re-express an image tensor from ``src``'s pre-processing in ``dst``'s (e.g. normalized -> pixels).

    ``x`` is already in ``dst``'s layout. A no-op when both specs pre-process alike.
    """
    same = (src.mean, src.std, src.value_range, src.color) == (dst.mean, dst.std, dst.value_range, dst.color)
    if same or not dst.is_image:
        return x
    axis = 1 if dst.layout == "NCHW" else 3
    shape = [1, 1, 1, 1]
    shape[axis] = -1

    def vec(v):
        return np.asarray(v, np.float32).reshape(shape)

    lo, hi = src.value_range
    unit = (x * vec(src.std) + vec(src.mean) - lo) / (hi - lo)  # pixels in [0, 1], src colour order
    if src.color != dst.color:
        unit = np.flip(unit, axis=axis)
    lo, hi = dst.value_range
    return ((unit * (hi - lo) + lo - vec(dst.mean)) / vec(dst.std)).astype(np.float32)


@contextmanager
def native_stderr_quiet() -> Iterator[None]:
    """Send what native libraries write to file descriptor 2 to /dev/null for a moment (so a bad input
    still ends in one stderr line)."""
    import sys

    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
