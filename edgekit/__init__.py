"""edgekit: convert, validate, run and profile small vision models on edge devices.

    import edgekit
    art = edgekit.convert("student.onnx", "tflite-int8")      # converted and parity-checked
    sess = edgekit.load(art.path, threads=2)                  # a Session on the right runtime
    out = sess.run({"image": x})                              # numpy in, numpy out
    edgekit.validate(art.path)                                # parity gate again, fresh inputs
    edgekit.inspect("student.onnx")                           # IO, MACs, ops, target support
    edgekit.benchmark(art.path, threads=2)                    # latency and outputs on one input

Heavy packages (torch, tensorflow, openvino, coremltools, ncnn) are imported only when used.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["convert", "load", "validate", "inspect", "benchmark", "doctor", "__version__"]

_API = {"convert": "edgekit.api", "load": "edgekit.api", "validate": "edgekit.api", "inspect": "edgekit.api",
        "benchmark": "edgekit.api", "doctor": "edgekit.backends.doctor"}


def __getattr__(name: str):
    if name in _API:
        import importlib

        module = importlib.import_module(_API[name])
        return getattr(module, name if name != "doctor" else "report")
    raise AttributeError(f"module 'edgekit' has no attribute {name!r}")
