"""Ctrl-C that cannot be lost.

Python turns SIGINT into ``KeyboardInterrupt`` wherever the main thread happens to be; when that is a
finalizer (``__del__``, a weakref callback, as converters' temporary files and sessions run during
calibration) the exception is printed as "Exception ignored" and the work goes on. :func:`install`
also remembers the interrupt, and :func:`check` (called before anything is committed, e.g. an
artifact's atomic rename) raises it again, so an interrupted run never finishes as if it had not been.
"""

from __future__ import annotations

import signal
import threading

_interrupted = threading.Event()


def _on_sigint(signum, frame) -> None:
    _interrupted.set()
    raise KeyboardInterrupt


def install() -> None:
    """Route SIGINT through edgekit (main thread only; the CLI calls this)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _on_sigint)


def check() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C arrived since :func:`install`, even if it was swallowed."""
    if _interrupted.is_set():
        raise KeyboardInterrupt
