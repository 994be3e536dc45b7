"""Third-party backends through entry points; a format registered twice is an error."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from edgekit.errors import EdgekitError

_done: set[str] = set()


def load_entry_points(group: str, registry: dict[str, str], on_load: Callable[[str, object], None] | None = None):
    """Add the ``group`` entry points to ``registry`` (format -> "module:Class"), once per process."""
    if group in _done:
        return
    _done.add(group)
    for ep in importlib.metadata.entry_points(group=group):
        if ep.name in registry:
            raise EdgekitError(f"plugin '{ep.value}' ({group}) registers format '{ep.name}' twice")
        registry[ep.name] = ep.value
        if on_load:
            on_load(ep.name, ep.load())
