"""Compute units of this machine, named honestly, and how a stage runs on each.

* ``cpu0``, ``cpu1``, ...: one worker per CPU core, pinned to it (``sched_setaffinity``), running
  CPU runtimes with one thread and OpenCV/NumPy kernels.
* ``gpu``: NCNN's Vulkan device. Here that is lavapipe, Mesa's *software* Vulkan driver: it runs on
  the same CPU cores, and reports say so.
* ``npu``: OpenVINO's NPU device, where one exists.
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

    def delegate_for(self, fmt: str) -> str:
        if self.kind == "cpu":
            return "cpu"
        if self.kind == "gpu" and fmt == "ncnn":
            return "gpu"
        if self.kind == "npu" and fmt == "openvino":
            return "npu"
        raise DeviceError(f"unit {self.name} ({self.kind}) cannot run {fmt} models")

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


def local_units() -> dict[str, Unit]:
    """The units this machine has."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    units = {f"cpu{i}": Unit(f"cpu{i}", "cpu", f"CPU core {c}", core=c) for i, c in enumerate(cores)}
    try:
        import ncnn

        with native_stderr_quiet():  # ncnn lists its Vulkan devices on stderr when first asked how many
            gpus = ncnn.get_gpu_count()
        if gpus > 0:
            name = ncnn.get_gpu_info(0).device_name()
            soft = "llvmpipe" in name.lower() or "lavapipe" in name.lower()
            units["gpu"] = Unit("gpu", "gpu", f"Vulkan GPU '{name}'" + (
                " (lavapipe: a software GPU running on the CPU cores)" if soft else ""))
    except ImportError:
        pass
    try:
        import openvino as ov

        if "NPU" in ov.Core().available_devices:
            units["npu"] = Unit("npu", "npu", "OpenVINO NPU")
    except ImportError:
        pass
    return units
