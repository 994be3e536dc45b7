"""Compute units of this machine, named honestly, and how a stage runs on each.

* ``cpu0``, ``cpu1``, ...: one worker per CPU core, pinned to it (``sched_setaffinity``), running
  CPU runtimes with one thread and OpenCV/NumPy kernels.
* ``gpu``: NCNN's Vulkan device. Here that is lavapipe, Mesa's *software* Vulkan driver: it runs on
  the same CPU cores, and reports say so.
* ``npu``: OpenVINO's NPU device, where one exists.
"""

from __future__ import annotations

import os
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


def local_units() -> dict[str, Unit]:
    """The units this machine has."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    units = {f"cpu{i}": Unit(f"cpu{i}", "cpu", f"CPU core {c}", core=c) for i, c in enumerate(cores)}
    try:
        import ncnn

        if ncnn.get_gpu_count() > 0:
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
