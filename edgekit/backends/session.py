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
from edgekit.errors import InputError


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

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release native resources (optional)."""


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
