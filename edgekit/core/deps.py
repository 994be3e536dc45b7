"""Lazy imports of optional packages, with errors that name the extra to install."""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
from types import ModuleType

from edgekit.errors import MissingDependencyError

#: tools that are not a backend: name -> (import names, the extra that installs them); backends declare theirs
TOOLS = {"train": (("torch", "torchvision"), "train")}


def extra_of(package: str) -> str:
    """The extra that installs ``package`` (an import name): a backend's (from its declaration), a tool's, or
    ``all`` when none declares it."""
    from edgekit.backends import registry

    for packages, extra in TOOLS.values():
        if package in packages:
            return extra
    return registry.extra_of(package) or "all"


#: packages that cannot be expressed as an extra because their wheel pins clash with the rest
NO_DEPS_HINTS = {
    "onnx2tf": "pip install --no-deps onnx2tf==1.29.24 simple_onnx_processing_tools==1.1.32",
    "tf2onnx": "pip install --no-deps tf2onnx==1.17.0",
}

DIST_NAMES = {"ai_edge_litert": "ai-edge-litert", "litert_torch": "litert-torch", "tensorflow": "tensorflow-cpu"}


#: modules to load before a package, because the other order crashes natively
#: (TensorFlow loaded before triton segfaults when torch._dynamo later imports triton)
LOAD_BEFORE = {"tensorflow": ("triton",), "litert_torch": ("triton",), "coremltools": ("torchvision",),
               "ai_edge_quantizer": ("triton",), "tf_keras": ("triton",)}


def require(module: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingDependencyError` naming the extra that provides it."""
    import sys

    top = module.split(".")[0]
    for first in LOAD_BEFORE.get(top, ()):
        if first not in sys.modules and "tensorflow" not in sys.modules and importlib.util.find_spec(first):
            importlib.import_module(first)
    try:
        return importlib.import_module(module)
    except ImportError as e:
        if e.name is not None and e.name.split(".")[0] != top:
            raise  # the package is there but one of its own imports is broken: show that
        raise MissingDependencyError(top, extra_of(top), NO_DEPS_HINTS.get(top)) from e


def require_installed(module: str) -> None:
    """Like :func:`require` but without importing (for packages run in a subprocess)."""
    if importlib.util.find_spec(module) is None:
        top = module.split(".")[0]
        raise MissingDependencyError(top, extra_of(top), NO_DEPS_HINTS.get(top))


def version(package: str) -> str | None:
    """Installed version of ``package`` (import name or distribution name), or None."""
    for name in (DIST_NAMES.get(package), package, package.replace("_", "-")):
        if not name:
            continue
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def tool_versions(*packages: str) -> dict[str, str]:
    """Versions of the given packages that are installed (for ``artifact.json``)."""
    out = {"edgekit": version("edgekit") or "dev"}
    for p in packages:
        v = version(p)
        if v:
            out[p] = v
    return out
