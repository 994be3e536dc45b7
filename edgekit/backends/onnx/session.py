"""ONNX Runtime session: the reference runtime and the runtime of ``onnx-*`` artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.backends.onnx import BACKEND
from edgekit.backends.session import Placement, Session, check_threads
from edgekit.core.deps import require
from edgekit.core.iospec import IOSpec
from edgekit.errors import DeviceError, InputError

#: edgekit delegate name -> ONNX Runtime execution provider
PROVIDERS = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
    "nnapi": "NnapiExecutionProvider",
    "qnn": "QNNExecutionProvider",
}


class OrtSession(Session):
    delegates = tuple(BACKEND.delegates)

    def __init__(self, model_path: Path, native_io: IOSpec, source_io: IOSpec, threads: int = 1,
                 delegate: str = "cpu"):
        ort = require("onnxruntime")
        super().__init__(native_io, source_io, check_threads(threads), delegate)
        self.check_delegate(delegate)
        provider = PROVIDERS[delegate]
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # with spinning on, 2 threads on 2 cores ran 2x slower than 1 (TOOLCHAIN.md)
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        so.log_severity_level = 3
        self._n_nodes = None
        self._sess = ort.InferenceSession(str(model_path), so, providers=[provider])
        self._model_path = model_path

    @classmethod
    def open(cls, artifact, threads: int = 1, delegate: str = "cpu") -> OrtSession:
        return cls(artifact.file("model"), artifact.io, artifact.source_io, threads, delegate)

    @classmethod
    def devices(cls) -> list[str]:
        """Delegates whose execution provider this ONNX Runtime build has."""
        ort = require("onnxruntime")
        have = ort.get_available_providers()
        return [k for k, v in PROVIDERS.items() if v in have]

    @classmethod
    def check_delegate(cls, delegate: str) -> None:
        provider = PROVIDERS.get(delegate)
        if provider is None:
            raise InputError(f"unknown ONNX Runtime delegate '{delegate}'; known: {', '.join(PROVIDERS)}")
        if delegate not in cls.devices():
            raise DeviceError(f"ONNX Runtime has no {provider} here; available delegates: {', '.join(cls.devices())}")

    @classmethod
    def reference(cls, source, threads: int = 1) -> OrtSession:
        """An fp32 session on a prepared :class:`~edgekit.core.ingest.SourceModel`."""
        return cls(source.onnx_path, source.io, source.io, threads, "cpu")

    def _run_native(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        names = [o.name for o in self._sess.get_outputs()]
        return dict(zip(names, self._sess.run(names, inputs)))

    def placement(self) -> Placement:
        if self._n_nodes is None:
            import onnx

            self._n_nodes = len(onnx.load(str(self._model_path), load_external_data=False).graph.node)
        # ONNX Runtime assigns every node to the single provider we allowed
        return Placement(device=self.delegate, ops_per_unit={self.delegate: self._n_nodes},
                         detail={"provider": PROVIDERS[self.delegate]})
