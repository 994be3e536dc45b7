"""Background load for profiling under contention: CPU hogs and a memory-bandwidth hog.

A phone running a camera app is never idle: the camera pipeline, the encoder and the UI take cores while
the model runs. A latency measured on an idle device overstates what the app will see, and a runtime whose
worker threads spin-wait for each other (OpenMP, thread pools) can collapse by an order of magnitude once
another process holds one of "its" cores. :class:`BackgroundLoad` recreates that: ``cpu`` busy processes
(a tight integer loop each) and ``memory`` processes that stream a buffer larger than the caches (copying
64 MiB back and forth), so the model also competes for memory bandwidth.

The hogs are separate processes started through :func:`edgekit.core.subprocesses.spawn`: each leads its own
process group, is killed with it when the load stops (or edgekit exits, is interrupted or killed), and on
Linux also asks the kernel to kill it when its parent dies (``PR_SET_PDEATHSIG``), so a hog never outlives
the process that started it. :meth:`BackgroundLoad.pause` / :meth:`~BackgroundLoad.resume` stop and continue
them (SIGSTOP/SIGCONT), so quiet and loaded runs of one session can be interleaved (A, B, A, B...) and the
machine's own noise hits both alike.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass

#: the hog's code: runs in ``python -c``; argv: kind ("cpu" | "memory"), the parent's pid
HOG = r"""
import os, sys
kind, parent = sys.argv[1], int(sys.argv[2])
try:
    import ctypes, signal
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
except (OSError, AttributeError):
    pass
if os.getppid() != parent:
    sys.exit(0)
if kind == "memory":
    a = bytearray(64 << 20)
    b = bytearray(64 << 20)
    while True:
        for _ in range(8):
            b[:] = a
            a[:] = b
        if os.getppid() != parent:
            sys.exit(0)
else:
    while True:
        x = 0
        for _ in range(2_000_000):
            x += 1
        if os.getppid() != parent:
            sys.exit(0)
"""


@dataclass(frozen=True)
class LoadLevel:
    """How much background work runs beside a point: ``cpu`` busy processes and ``memory`` bandwidth hogs."""

    cpu: int
    memory: int = 1

    @property
    def busy(self) -> int:
        return self.cpu + self.memory

    def label(self) -> str:
        return f"{self.cpu} CPU + {self.memory} memory hog(s)"

    def to_dict(self) -> dict:
        return {"cpu": self.cpu, "memory": self.memory}


def default_level(cores: int, threads: int, memory: int = 1) -> LoadLevel:
    """The default load for a point using ``threads`` of ``cores``: as many busy processes as the cores the point
    leaves free, plus one (at least one), of which ``memory`` stream memory and the rest spin on the CPU."""
    busy = max(cores - min(threads, cores), 0) + 1
    memory = min(memory, busy)
    return LoadLevel(cpu=busy - memory, memory=memory)


class BackgroundLoad:
    """Hog processes that run while the load is on. Use as a context manager; always stopped on exit.

    Raises (on start):
        DeviceError: a hog cannot be started.
    """

    def __init__(self, level: LoadLevel):
        self.level = level
        self._procs: list = []
        self._paused = False

    def __enter__(self) -> BackgroundLoad:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    def start(self) -> None:
        from edgekit.core import subprocesses
        from edgekit.errors import DeviceError

        kinds = ["memory"] * self.level.memory + ["cpu"] * self.level.cpu
        try:
            for kind in kinds:
                self._procs.append(subprocesses.spawn([sys.executable, "-c", HOG, kind, str(os.getpid())],
                                                      f"{kind} load", error=DeviceError))
        except BaseException:
            self.stop()
            raise
        self._paused = False
        time.sleep(0.05)  # let them get going

    def _signal(self, sig: int) -> None:
        for p in self._procs:
            try:
                os.killpg(p.pid, sig)
            except (ProcessLookupError, PermissionError):
                pass

    def pause(self) -> None:
        """Stop the hogs (SIGSTOP) without ending them."""
        if self._procs and not self._paused:
            self._signal(signal.SIGSTOP)
            self._paused = True

    def resume(self) -> None:
        """Continue paused hogs (SIGCONT)."""
        if self._procs and self._paused:
            self._signal(signal.SIGCONT)
            self._paused = False
            time.sleep(0.01)

    def stop(self) -> None:
        """Kill every hog's process group and reap it (idempotent)."""
        from edgekit.core import subprocesses

        procs, self._procs = self._procs, []
        for p in procs:
            subprocesses.stop(p)


def level_for(settings: dict, threads: int, cores: int | None = None) -> LoadLevel:
    """The load a device profile's ``load`` settings (``busy``: ``auto`` or a count, ``memory``, ``cores``) put
    beside a point using ``threads``; ``cores`` defaults to the profile's, else this machine's usable CPUs.

    Raises:
        InputError: ``busy`` is neither ``auto`` nor a non-negative integer.
    """
    from edgekit.errors import InputError

    busy, memory = settings.get("busy", "auto"), int(settings.get("memory", 1))
    cores = int(settings.get("cores") or cores or usable_cpus())
    if busy == "auto":
        return default_level(cores, threads, memory)
    if isinstance(busy, bool) or not isinstance(busy, int) or busy < 0:
        raise InputError(f"load busy must be 'auto' or a number of processes, not {busy!r}")
    memory = min(memory, busy)
    return LoadLevel(cpu=busy - memory, memory=memory)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1
