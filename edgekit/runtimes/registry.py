"""The one runtime registry: artifact format -> Session class (imported lazily)."""

from __future__ import annotations

import importlib
import importlib.metadata

from edgekit.errors import EdgekitError, InputError

BUILTIN = {
    "onnx": "edgekit.runtimes.onnxruntime:OrtSession",
    "tflite": "edgekit.runtimes.litert:LiteRTSession",
    "openvino": "edgekit.runtimes.openvino:OpenVINOSession",
    "ncnn": "edgekit.runtimes.ncnn:NcnnSession",
    "coreml": "edgekit.runtimes.coreml:CoreMLSession",
}
_loaded = False


def _load_plugins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    for ep in importlib.metadata.entry_points(group="edgekit.runtimes"):
        if ep.name in BUILTIN:
            raise EdgekitError(f"runtime plugin '{ep.value}' registers format '{ep.name}' twice")
        BUILTIN[ep.name] = ep.value


def session_class(fmt: str):
    _load_plugins()
    if fmt not in BUILTIN:
        raise InputError(f"no runtime for format '{fmt}'; known: {', '.join(BUILTIN)}")
    module, _, cls = BUILTIN[fmt].partition(":")
    return getattr(importlib.import_module(module), cls)


def open_session(artifact, threads: int = 1, delegate: str = "cpu"):
    """Open a :class:`~edgekit.runtimes.base.Session` on an :class:`~edgekit.artifact.Artifact`."""
    return session_class(artifact.target.format).open(artifact, threads=threads, delegate=delegate)
