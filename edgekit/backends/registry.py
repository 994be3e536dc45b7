"""The one backend registry: the built-in declarations, and third parties through the ``edgekit.backends``
entry-point group (each entry point names a :class:`~edgekit.backends.declaration.Backend`). A format
registered twice is an error. Converter and session classes are imported only when first used.
"""

from __future__ import annotations

import importlib
import importlib.metadata

from edgekit.backends.declaration import Backend
from edgekit.errors import EdgekitError, InputError

GROUP = "edgekit.backends"
#: the built-in backends' packages (each ``__init__`` holds its ``BACKEND``)
BUILTIN = ("onnx", "tflite", "openvino", "ncnn", "coreml")

_backends: dict[str, Backend] = {}
_converters: dict = {}


def backends() -> dict[str, Backend]:
    """format -> declaration, built-ins first, then installed plugins (loaded once per process).

    Raises:
        EdgekitError: a plugin's entry point is not a ``Backend``, or registers a format already registered.
    """
    if not _backends:
        found = {}
        for name in BUILTIN:
            found[name] = importlib.import_module(f"edgekit.backends.{name}").BACKEND
        for ep in importlib.metadata.entry_points(group=GROUP):
            backend = ep.load()
            if not isinstance(backend, Backend):
                raise EdgekitError(f"plugin '{ep.value}' ({GROUP}) is not an edgekit Backend declaration")
            if backend.format in found:
                raise EdgekitError(f"plugin '{ep.value}' ({GROUP}) registers format '{backend.format}' twice")
            found[backend.format] = backend
        _backends.update(found)
    return _backends


def backend(fmt: str) -> Backend:
    """The declaration of ``fmt``.

    Raises:
        InputError: no backend declares that format.
    """
    known = backends()
    if fmt not in known:
        raise InputError(f"unknown format '{fmt}'; known: {', '.join(known)}")
    return known[fmt]


def formats() -> list[str]:
    return list(backends())


def all_targets() -> list[str]:
    return [t for b in backends().values() for t in b.targets]


def _load(ref: str):
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


def get(fmt: str):
    """The converter instance for a format.

    Raises:
        InputError: unknown format.
    """
    if fmt not in _converters:
        _converters[fmt] = _load(backend(fmt).converter)()
    return _converters[fmt]


def session_class(fmt: str):
    """The :class:`~edgekit.backends.session.Session` class that runs ``fmt`` artifacts.

    Raises:
        InputError: unknown format.
    """
    return _load(backend(fmt).session)


def open_session(artifact, threads: int = 1, delegate: str = "cpu", spin: bool | None = None):
    """Open a :class:`~edgekit.backends.session.Session` on an :class:`~edgekit.core.artifact.Artifact`.

    ``spin`` (worker threads busy-wait between runs; each runtime's default is off) is passed only when given,
    so a plugin runtime without the setting still opens.

    Raises:
        InputError: ``spin`` was given and the runtime's session has no such setting.
    """
    cls = session_class(artifact.target.format)
    if spin is None:
        return cls.open(artifact, threads=threads, delegate=delegate)
    import inspect

    if "spin" not in inspect.signature(cls.open).parameters:
        raise InputError(f"the {artifact.target.format} runtime has no spin setting")
    return cls.open(artifact, threads=threads, delegate=delegate, spin=bool(spin))


def source_backend(path) -> Backend | None:
    """The backend that reads ``path`` as a source model (by its suffix), or None."""
    suffix = str(path).lower().rpartition(".")[2]
    return next((b for b in backends().values() if f".{suffix}" in b.sources), None)


def extra_of(package: str) -> str | None:
    """The extra of the backend that needs ``package`` (an import name), or None."""
    return next((b.extra for b in backends().values() if package in b.packages), None)
