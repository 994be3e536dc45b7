"""The one converter registry: built-ins listed here, third parties via the ``edgekit.converters``
entry-point group. Registering a format twice is an error."""

from __future__ import annotations

import importlib

from edgekit.errors import InputError
from edgekit.plugins import load_entry_points

#: format -> "module:Class" of the built-in converters (imported only when used)
BUILTIN = {
    "onnx": "edgekit.converters.onnx:OnnxConverter",
    "tflite": "edgekit.converters.tflite:TFLiteConverter",
    "openvino": "edgekit.converters.openvino:OpenVINOConverter",
    "ncnn": "edgekit.converters.ncnn:NcnnConverter",
    "coreml": "edgekit.converters.coreml:CoreMLConverter",
}

#: format -> precisions, declared here so that parsing a target imports no converter module
PRECISIONS = {
    "onnx": ("fp32", "int8"),
    "tflite": ("fp32", "fp16", "int8-dynamic", "int8"),
    "openvino": ("fp32", "fp16", "int8"),
    "ncnn": ("fp32", "fp16", "int8"),
    "coreml": ("fp32", "fp16", "w8", "w6", "w4"),
}

_instances: dict = {}


def _load_plugins() -> None:
    load_entry_points("edgekit.converters", BUILTIN,
                      on_load=lambda name, cls: PRECISIONS.__setitem__(name, tuple(cls.precisions)))


def formats() -> list[str]:
    _load_plugins()
    return list(BUILTIN)


def all_targets() -> list[str]:
    _load_plugins()
    return [f"{f}-{p}" for f in BUILTIN for p in PRECISIONS[f]]


def get(fmt: str):
    """The converter instance for a format."""
    _load_plugins()
    if fmt not in BUILTIN:
        raise InputError(f"unknown format '{fmt}'; known: {', '.join(BUILTIN)}")
    if fmt not in _instances:
        module, _, cls = BUILTIN[fmt].partition(":")
        _instances[fmt] = getattr(importlib.import_module(module), cls)()
    return _instances[fmt]
