"""Ctrl-C and SIGTERM that cannot be lost.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to be; when that is a
finalizer (``__del__``, a weakref callback, as converters' temporary files and sessions run during
calibration) the exception is printed as "Exception ignored" and the work goes on. :func:`install`
also remembers the interrupt, and :func:`check` (called before anything is committed, e.g. an
artifact's atomic rename, and while a child tool runs) raises it again, so an interrupted run never
finishes as if it had not been.

SIGTERM (what a CI timeout or ``docker stop`` sends) is handled the same way: it raises :class:`Terminated`,
a ``KeyboardInterrupt``, so every cleanup that runs on Ctrl-C (staging folders, temporary work folders,
converter children's process groups) runs on SIGTERM too; the CLI exits 143 instead of 130.
"""

from __future__ import annotations

import signal
import threading

_interrupted = threading.Event()
_signal: list[int] = []


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: unwind like Ctrl-C (the CLI exits 143)."""


def _on_signal(signum, frame) -> None:
    _signal.append(signum)
    _interrupted.set()
    raise _exception()


def _exception() -> KeyboardInterrupt:
    return Terminated() if signal.SIGTERM in _signal else KeyboardInterrupt()


def install() -> None:
    """Route SIGINT and SIGTERM through edgekit (main thread only; the CLI calls this)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_signal)
        signal.signal(signal.SIGTERM, _on_signal)


def pending() -> bool:
    """Whether Ctrl-C or SIGTERM arrived since :func:`install` (even if its exception was swallowed)."""
    return _interrupted.is_set()


def terminated() -> bool:
    """Whether the interrupt that arrived was SIGTERM."""
    return signal.SIGTERM in _signal


def check() -> None:
    """Raise ``KeyboardInterrupt`` (:class:`Terminated` after SIGTERM) if one arrived since :func:`install`."""
    if _interrupted.is_set():
        raise _exception()


def reset() -> None:
    """Forget an interrupt that was handled (for callers that go on after one, such as a test runner that
    called the CLI in-process)."""
    _interrupted.clear()
    _signal.clear()
