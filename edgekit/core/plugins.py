"""Third-party backends and kernels through entry points; a name registered twice is an error.

Entry points are installed package metadata (the user chose to install the plugin): their values are
imported. Names read from a file a user was handed (a pipeline YAML, a recipe) are never imported: they
are looked up in a registry filled from code and from these entry points.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable

from edgekit.errors import EdgekitError

_done: set[str] = set()


def load_entry_points(group: str, registry: dict[str, str], on_load: Callable[[str, object], None] | None = None,
                      what: str = "format"):
    """Add the ``group`` entry points to ``registry`` (name -> "module:attr"), once per process.

    Raises:
        EdgekitError: a plugin registers a ``what`` (format, kernel) that is already registered.
    """
    if group in _done:
        return
    _done.add(group)
    for ep in importlib.metadata.entry_points(group=group):
        if ep.name in registry:
            raise EdgekitError(f"plugin '{ep.value}' ({group}) registers {what} '{ep.name}' twice")
        registry[ep.name] = ep.value
        if on_load:
            on_load(ep.name, ep.load())
