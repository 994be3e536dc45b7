"""``edgekit doctor``: which backends are installed, their versions, the devices they see here."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field

from edgekit.deps import version
from edgekit.errors import EdgekitError
from edgekit.runtimes import registry as runtimes

#: format -> packages it needs (converter and runtime) and the extra that installs them
BACKENDS = {
    "onnx": (("onnx", "onnxruntime", "onnxslim"), "core"),
    "tflite": (("ai_edge_litert", "tensorflow", "onnx2tf", "litert_torch"), "tflite"),
    "openvino": (("openvino", "nncf"), "openvino"),
    "ncnn": (("ncnn", "pnnx"), "ncnn"),
    "coreml": (("coremltools", "onnx2torch"), "coreml"),
    "train": (("torch", "torchvision"), "train"),
}


@dataclass
class BackendStatus:
    name: str
    installed: bool
    packages: dict[str, str | None]
    extra: str
    devices: list[str] = field(default_factory=list)
    note: str = ""


def report() -> list[BackendStatus]:
    """Status of every backend on this machine (imports each installed backend to ask it)."""
    rows = []
    for name, (packages, extra) in BACKENDS.items():
        versions = {p: version(p) for p in packages}
        installed = all(versions.values())
        status = BackendStatus(name, installed, versions, extra)
        if installed and name in runtimes.BUILTIN:
            try:
                status.devices = runtimes.session_class(name).devices()
            except EdgekitError as e:
                status.note = str(e)
        elif not installed:
            missing = [p for p, v in versions.items() if not v]
            status.note = f"missing {', '.join(missing)}: pip install 'edgekit[{extra}]'"
        rows.append(status)
    return rows


def system() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine()}


def to_dict(rows: list[BackendStatus]) -> dict:
    return {"system": system(), "backends": [asdict(r) for r in rows]}
