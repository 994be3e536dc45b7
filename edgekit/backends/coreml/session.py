"""Core ML session (coremltools) for ``coreml-*`` artifacts.

Compute units: ``cpu`` (CPU_ONLY), ``gpu`` (CPU_AND_GPU), ``npu`` (CPU_AND_NE), ``all``. Prediction
needs Apple's Core ML framework, i.e. macOS; elsewhere opening a session is a clear error, and
``edgekit validate`` uses edgekit's MIL reference evaluator instead (see its report).
"""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from edgekit.backends.coreml import BACKEND
from edgekit.backends.session import Placement, Session, check_threads
from edgekit.core.iospec import IOSpec
from edgekit.errors import InputError, RuntimeUnavailableError

COMPUTE_UNITS = {"cpu": "CPU_ONLY", "gpu": "CPU_AND_GPU", "npu": "CPU_AND_NE", "all": "ALL"}


class CoreMLSession(Session):
    delegates = tuple(BACKEND.delegates)

    def __init__(self, path: Path, native_io: IOSpec, source_io: IOSpec, threads: int = 1, delegate: str = "cpu"):
        super().__init__(native_io, source_io, check_threads(threads), delegate)
        self.check_delegate(delegate)
        from edgekit.backends.coreml.converter import import_coremltools

        ct = import_coremltools()
        self._model = ct.models.MLModel(str(path), compute_units=getattr(ct.ComputeUnit, COMPUTE_UNITS[delegate]))

    @classmethod
    def open(cls, artifact, threads: int = 1, delegate: str = "cpu") -> CoreMLSession:
        return cls(artifact.file("model"), artifact.io, artifact.source_io, threads, delegate)

    @classmethod
    def check_delegate(cls, delegate: str) -> None:
        if delegate not in COMPUTE_UNITS:
            raise InputError(f"unknown Core ML compute unit '{delegate}'; use {', '.join(COMPUTE_UNITS)}")
        if platform.system() != "Darwin":
            raise RuntimeUnavailableError(
                f"Core ML prediction needs macOS (this is {platform.system()}); the package's numbers were checked "
                "by edgekit's MIL reference evaluator (edgekit validate), not by Apple's runtime")

    @classmethod
    def devices(cls) -> list[str]:
        if platform.system() != "Darwin":
            return ["none (prediction needs macOS; conversion and MIL verification work here)"]
        return list(COMPUTE_UNITS)

    def _run_native(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: np.asarray(v) for k, v in self._model.predict(inputs).items()}

    def placement(self) -> Placement:
        return Placement(device=self.delegate, ops_per_unit={COMPUTE_UNITS[self.delegate]: -1},
                         detail={"note": "Core ML chooses the unit per op within the allowed compute units"})
