"""The one runtime registry: artifact format -> Session class (imported lazily)."""

from __future__ import annotations

import importlib

from edgekit.errors import InputError
from edgekit.plugins import load_entry_points

BUILTIN = {
    "onnx": "edgekit.runtimes.onnxruntime:OrtSession",
    "tflite": "edgekit.runtimes.litert:LiteRTSession",
    "openvino": "edgekit.runtimes.openvino:OpenVINOSession",
    "ncnn": "edgekit.runtimes.ncnn:NcnnSession",
    "coreml": "edgekit.runtimes.coreml:CoreMLSession",
}


def _load_plugins() -> None:
    load_entry_points("edgekit.runtimes", BUILTIN)


def session_class(fmt: str):
    _load_plugins()
    if fmt not in BUILTIN:
        raise InputError(f"no runtime for format '{fmt}'; known: {', '.join(BUILTIN)}")
    module, _, cls = BUILTIN[fmt].partition(":")
    return getattr(importlib.import_module(module), cls)


def open_session(artifact, threads: int = 1, delegate: str = "cpu"):
    """Open a :class:`~edgekit.runtimes.base.Session` on an :class:`~edgekit.artifact.Artifact`."""
    return session_class(artifact.target.format).open(artifact, threads=threads, delegate=delegate)
