"""Compute units of this machine, named honestly, and how a stage runs on each.

* ``cpu0``, ``cpu1``, ...: one worker per CPU core, pinned to it (``sched_setaffinity``), running
  CPU runtimes with one thread and OpenCV/NumPy kernels.
* ``gpu``, ``npu``: what the installed backends find here (each backend's session answers
  :meth:`~edgekit.backends.session.Session.compute_units`; e.g. ncnn's Vulkan device, which here is lavapipe,
  Mesa's *software* Vulkan driver running on the same CPU cores, and reports say so).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from edgekit.errors import DeviceError


@dataclass(frozen=True)
class Unit:
    name: str
    kind: str            # cpu | gpu | npu
    description: str
    core: int | None = None
    #: formats whose backend found this unit (CPU units run every format)
    formats: tuple[str, ...] = ()

    def delegate_for(self, fmt: str) -> str:
        """The delegate that runs ``fmt`` on this unit, from the backend's declaration.

        Raises:
            DeviceError: the format's backend cannot run on this unit.
        """
        from edgekit.backends import registry

        delegate = registry.backend(fmt).delegate_for(self.kind)
        if delegate is None or (self.kind != "cpu" and fmt not in self.formats):
            raise DeviceError(f"unit {self.name} ({self.kind}) cannot run {fmt} models")
        return delegate

    def enter(self) -> None:
        """Called in the unit's worker thread: pin CPU workers to their core."""
        if self.core is not None and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {self.core})


@contextmanager
def unit_execution() -> Iterator[None]:
    """Kernels as the units run them: OpenCV on one thread (the units are the parallelism, one worker
    per core; OpenCV's own pool would oversubscribe the cores) and one shared malloc heap
    (:func:`share_one_heap`). Costs, the sequential baseline and the pipelined run all execute under
    this, so the plan's numbers are the ones the run sees."""
    import cv2

    share_one_heap()
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        yield
    finally:
        cv2.setNumThreads(before)


_M_ARENA_MAX = -8  # glibc mallopt parameter


def share_one_heap() -> bool:
    """Make glibc's malloc use one heap for all threads (``MALLOC_ARENA_MAX=1``), unless the user set
    ``MALLOC_ARENA_MAX`` themselves. Why: with a heap per thread, a 720p buffer made on one unit and
    freed on another goes back to the OS and is faulted in again; measured here, 300-1500 page faults
    per frame and stages up to 2-3x slower than alone. One heap keeps the buffers warm (0 faults).
    Process-wide and one-way (glibc fixes its arena limit on first use); a no-op off glibc. Returns
    whether the setting is in effect."""
    import ctypes
    import platform

    if "MALLOC_ARENA_MAX" in os.environ:
        return os.environ["MALLOC_ARENA_MAX"] == "1"
    if platform.libc_ver()[0] != "glibc":
        return False
    return bool(ctypes.CDLL(None).mallopt(_M_ARENA_MAX, 1))


def local_units() -> dict[str, Unit]:
    """The units this machine has."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    units = {f"cpu{i}": Unit(f"cpu{i}", "cpu", f"CPU core {c}", core=c) for i, c in enumerate(cores)}
    from edgekit.backends import registry
    from edgekit.errors import MissingDependencyError

    for fmt in registry.formats():
        try:
            found = registry.session_class(fmt).compute_units()
        except (ImportError, MissingDependencyError):
            continue  # the backend is not installed: it finds nothing
        for kind, description in found.items():
            if kind in units:
                unit = units[kind]
                units[kind] = Unit(unit.name, unit.kind, unit.description, unit.core, (*unit.formats, fmt))
            else:
                units[kind] = Unit(kind, kind, description, formats=(fmt,))
    return units
