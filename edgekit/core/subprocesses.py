"""Child tools (onnx2tf, pnnx, ``pip download``) run through one helper that cannot leave them behind.

Each child starts in its own process group (so a terminal's Ctrl-C reaches only edgekit, which then decides),
gets a timeout, and on timeout, Ctrl-C, SIGTERM or any error the whole group is killed before the error
propagates, so no converter keeps running as an orphan after edgekit has stopped.

The timeouts are generous defaults per tool; ``EDGEKIT_TOOL_TIMEOUT`` (seconds) overrides them all.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from pathlib import Path

from edgekit.core import interrupts
from edgekit.errors import ConversionError, EdgekitError

#: seconds a tool may run before its process group is killed
TIMEOUTS = {"onnx2tf": 1800.0, "pnnx": 900.0, "pip download": 600.0}
DEFAULT_TIMEOUT = 1800.0
#: how often the wait wakes up to notice an interrupt swallowed elsewhere
_POLL_S = 0.5


class ToolTimeoutError(ConversionError):
    """A child tool ran past its timeout and was stopped (its whole process group killed)."""

    def __init__(self, tool: str, timeout: float):
        self.tool, self.timeout = tool, timeout
        super().__init__(f"{tool} did not finish within {timeout:.0f} s and was stopped (set EDGEKIT_TOOL_TIMEOUT "
                         "to allow longer)")


def timeout_for(tool: str) -> float:
    """The timeout (seconds) for ``tool``: ``EDGEKIT_TOOL_TIMEOUT`` if set, else the tool's default.

    Raises:
        EdgekitError: ``EDGEKIT_TOOL_TIMEOUT`` is not a positive number.
    """
    env = os.environ.get("EDGEKIT_TOOL_TIMEOUT")
    if env is None:
        return TIMEOUTS.get(tool, DEFAULT_TIMEOUT)
    try:
        value = float(env)
    except ValueError:
        value = -1.0
    if not value > 0 or value == float("inf"):
        raise EdgekitError(f"EDGEKIT_TOOL_TIMEOUT must be a positive number of seconds, not {env!r}")
    return value


def run(cmd: list[str], tool: str, *, cwd: str | Path | None = None, env: dict | None = None,
        timeout: float | None = None, error: type[EdgekitError] = ConversionError,
        capture: bool = True) -> subprocess.CompletedProcess:
    """Run ``cmd`` to completion in its own process group and return its (text) output.

    With ``capture=False`` the child writes to edgekit's own stdout/stderr (a training run's progress).

    A non-zero exit status is returned, not raised: callers read the tool's log to say what went wrong.

    Raises:
        ToolTimeoutError: the tool ran longer than ``timeout`` (default :func:`timeout_for`); its group was killed.
        KeyboardInterrupt: Ctrl-C or SIGTERM (:class:`~edgekit.core.interrupts.Terminated`); the group was killed.
        EdgekitError: ``error`` (by default :class:`~edgekit.errors.ConversionError`) when the tool cannot start.
    """
    limit = timeout_for(tool) if timeout is None else timeout
    interrupts.check()
    try:
        pipe = subprocess.PIPE if capture else None
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=pipe, stderr=pipe,
                                text=True, errors="replace", start_new_session=True)
    except OSError as e:
        raise error(f"cannot start {tool}: {e.strerror or e}") from e
    try:
        out, err = _wait(proc, limit, tool)
    except BaseException:
        kill_group(proc)
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _wait(proc: subprocess.Popen, limit: float, tool: str) -> tuple[str, str]:
    import time

    deadline = time.monotonic() + limit
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ToolTimeoutError(tool, limit)
        try:
            return proc.communicate(timeout=min(_POLL_S, left))
        except subprocess.TimeoutExpired:
            interrupts.check()  # an interrupt swallowed by a finalizer still stops the tool


def kill_group(proc: subprocess.Popen) -> None:
    """Kill ``proc``'s whole process group (it leads one: see :func:`run`) and reap ``proc``."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError, OSError):
        proc.kill()
    with contextlib.suppress(subprocess.TimeoutExpired, OSError, ValueError):
        proc.communicate(timeout=10)


#: background children started by :func:`spawn` that are still alive (killed at exit)
_spawned: set[subprocess.Popen] = set()
_atexit_hooked: list[bool] = []


def spawn(cmd: list[str], tool: str, *, error: type[EdgekitError] = EdgekitError) -> subprocess.Popen:
    """Start ``cmd`` in the background in its own process group (output discarded) and return it.

    The child is remembered: :func:`kill_group` ends it, and every one still alive when edgekit exits (normally,
    on Ctrl-C or SIGTERM) is killed with its group by an ``atexit`` hook. A child that must not outlive a
    SIGKILLed edgekit asks the kernel for that itself (the profiler's load does, with ``PR_SET_PDEATHSIG``).

    Raises:
        EdgekitError: ``error`` when the child cannot start.
    """
    interrupts.check()
    try:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        raise error(f"cannot start {tool}: {e.strerror or e}") from e
    if not _atexit_hooked:
        import atexit

        atexit.register(_kill_spawned)
        _atexit_hooked.append(True)
    _spawned.add(proc)
    return proc


def stop(proc: subprocess.Popen) -> None:
    """Kill a child of :func:`spawn` with its process group and reap it (idempotent)."""
    kill_group(proc)
    _spawned.discard(proc)


def _kill_spawned() -> None:
    for proc in list(_spawned):
        stop(proc)
