"""OpenVINO session for ``openvino-*`` artifacts.

Devices: ``cpu``, ``gpu``, ``npu``, ``auto``, ``hetero:gpu,cpu`` (any OpenVINO device string, case
insensitive). The inference precision is explicit: on CPUs with bf16 support OpenVINO would run
fp32 IRs in bf16 by default, so edgekit sets ``INFERENCE_PRECISION_HINT`` (default ``f32``, or the
artifact's recorded choice; ``cpu@bf16`` picks another). :meth:`placement` uses ``query_model``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from edgekit.backends.openvino import BACKEND
from edgekit.backends.session import Placement, Session, check_threads
from edgekit.core.deps import require
from edgekit.core.iospec import IOSpec
from edgekit.errors import DeviceError, InputError

PRECISIONS = ("f32", "bf16", "f16")


def ov_device(delegate: str) -> str:
    """edgekit delegate (``hetero:gpu,cpu``) -> OpenVINO device string (``HETERO:GPU,CPU``)."""
    return delegate.upper()


class OpenVINOSession(Session):
    delegates = tuple(BACKEND.delegates)

    def __init__(self, model_path: Path, native_io: IOSpec, source_io: IOSpec, threads: int = 1,
                 delegate: str = "cpu", precision: str = "f32"):
        ov = require("openvino")
        super().__init__(native_io, source_io, check_threads(threads), delegate)
        device_part, _, hint = delegate.partition("@")
        self.precision = hint or precision
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown inference precision '{self.precision}'; use one of {', '.join(PRECISIONS)}")
        self.device = ov_device(device_part)
        core = ov.Core()
        _check_device(core, self.device)
        self._model = core.read_model(str(model_path))
        try:
            config = _config_for(self.device, self.precision, threads, list(core.available_devices))
            self._compiled = core.compile_model(self._model, self.device, config)
        except RuntimeError as e:
            raise DeviceError(f"OpenVINO cannot compile for {self.device}: {str(e).splitlines()[0]}") from e
        self._core = core
        self._request = self._compiled.create_infer_request()
        self._outputs = [o.get_any_name() for o in self._compiled.outputs]

    @classmethod
    def open(cls, artifact, threads: int = 1, delegate: str = "cpu") -> OpenVINOSession:
        return cls(artifact.file("model"), artifact.io, artifact.source_io, threads, delegate,
                   artifact.options.get("inference_precision", "f32"))

    @classmethod
    def check_delegate(cls, delegate: str) -> None:
        _check_device(require("openvino").Core(), ov_device(delegate.partition("@")[0]))

    @classmethod
    def devices(cls) -> list[str]:
        ov = require("openvino")
        core = ov.Core()
        return [f"{d.lower()} ({core.get_property(d, 'FULL_DEVICE_NAME')})" for d in core.available_devices]

    @classmethod
    def compute_units(cls) -> dict[str, str]:
        """OpenVINO's NPU, where one exists, as the ``npu`` unit."""
        return {"npu": "OpenVINO NPU"} if "NPU" in require("openvino").Core().available_devices else {}

    def _run_native(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        res = self._request.infer(inputs)
        return {name: np.asarray(res[i]) for i, name in enumerate(self._outputs)}

    def placement(self) -> Placement:
        target = self.device.split(":")[0]
        if target in ("HETERO", "CPU", "GPU", "NPU"):
            q = self._core.query_model(self._model, self.device)
            per = Counter(v.lower() for v in q.values())
        else:  # AUTO/MULTI pick a device at run time; report what it chose
            chosen = self._compiled.get_property("EXECUTION_DEVICES")
            per = Counter({", ".join(d.lower() for d in chosen): len(self._model.get_ops())})
        return Placement(device=self.device.lower(), ops_per_unit=dict(per),
                         detail={"inference_precision": self.precision})


def _check_device(core, device: str) -> None:
    available = list(core.available_devices)
    kind, _, rest = device.partition(":")
    if kind in ("AUTO", "MULTI", "HETERO"):
        if kind == "HETERO" and not rest:
            raise InputError("HETERO needs its devices in order, e.g. hetero:gpu,cpu")
        wanted = [d for d in rest.split(",") if d]
    else:
        wanted = [device]
    missing = [d for d in wanted if d not in available and d.split(".")[0] not in available]
    if missing:
        raise DeviceError(f"OpenVINO device {', '.join(missing)} is not present here; available: "
                          f"{', '.join(d.lower() for d in available)}")


def _config_for(device: str, precision: str, threads: int, available: list[str]) -> dict:
    """Precision (and CPU threads) for a device; virtual devices pass them on to each real one."""

    def real(d: str) -> dict:
        cfg = {"INFERENCE_PRECISION_HINT": precision}
        if d == "CPU":
            cfg["INFERENCE_NUM_THREADS"] = threads
        return cfg

    kind, _, rest = device.partition(":")
    if kind not in ("AUTO", "MULTI", "HETERO"):
        return real(device)
    return {"DEVICE_PROPERTIES": {d: real(d) for d in ([d for d in rest.split(",") if d] or available)}}
