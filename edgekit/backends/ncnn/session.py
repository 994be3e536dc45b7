"""NCNN session for ``ncnn-*`` artifacts: CPU (``cpu``) or Vulkan GPU (``gpu``, ``gpu:N``).

On the GPU path ncnn runs every layer that has a Vulkan implementation on the GPU and the rest on
the CPU; :meth:`placement` counts both. No Vulkan device is a :class:`DeviceError`, never a silent
CPU run. Precision follows the artifact: fp32 artifacts run with fp16 storage/arithmetic off, fp16
artifacts with fp16 storage on; int8 artifacts run with ``use_int8_inference``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from edgekit.backends.ncnn import BACKEND
from edgekit.backends.session import Placement, Session, check_threads, native_stderr_quiet
from edgekit.core.deps import require
from edgekit.core.iospec import IOSpec
from edgekit.errors import DeviceError, InputError


class NcnnSession(Session):
    delegates = tuple(BACKEND.delegates)

    def __init__(self, param: Path, weights: Path, native_io: IOSpec, source_io: IOSpec, threads: int = 1,
                 delegate: str = "cpu", precision: str = "fp32"):
        ncnn = require("ncnn")
        super().__init__(native_io, source_io, check_threads(threads), delegate)
        self.check_delegate(delegate)
        unit, _, index = delegate.partition(":")
        net = ncnn.Net()
        opt = net.opt
        opt.num_threads = threads  # must be set before load_param
        fp16 = precision == "fp16"
        opt.use_fp16_storage = opt.use_fp16_packed = fp16
        opt.use_fp16_arithmetic = False
        opt.use_bf16_storage = False
        opt.use_int8_inference = precision == "int8"
        self.gpu_name = ""
        if unit == "gpu":
            dev = int(index or 0)
            opt.use_vulkan_compute = True
            net.set_vulkan_device(dev)
            self.gpu_name = ncnn.get_gpu_info(dev).device_name()
        if net.load_param(str(param)) != 0 or net.load_model(str(weights)) != 0:
            raise InputError(f"ncnn cannot load {param}")
        self._net = net
        self._unit = f"gpu:{self.gpu_name}" if unit == "gpu" else "cpu"

    @classmethod
    def open(cls, artifact, threads: int = 1, delegate: str = "cpu") -> NcnnSession:
        return cls(artifact.file("model"), artifact.file("weights"), artifact.io, artifact.source_io, threads,
                   delegate, artifact.target.precision)

    @classmethod
    def check_delegate(cls, delegate: str) -> None:
        unit, _, index = delegate.partition(":")
        if unit not in ("cpu", "gpu") or (index and not index.isdigit()):
            raise InputError(f"unknown ncnn delegate '{delegate}'; use cpu, gpu or gpu:N")
        if unit == "gpu":
            count = require("ncnn").get_gpu_count()
            if int(index or 0) >= count:
                raise DeviceError(f"no Vulkan GPU {int(index or 0)} here (ncnn sees {count}); install a Vulkan driver "
                                  "(e.g. Debian's mesa-vulkan-drivers for a software GPU) or use cpu")

    @classmethod
    def devices(cls) -> list[str]:
        ncnn = require("ncnn")
        gpus = [f"gpu:{i} ({ncnn.get_gpu_info(i).device_name()})" for i in range(ncnn.get_gpu_count())]
        return ["cpu", *gpus]

    @classmethod
    def compute_units(cls) -> dict[str, str]:
        """ncnn's first Vulkan device as the ``gpu`` unit (lavapipe said to be a software GPU)."""
        ncnn = require("ncnn")
        with native_stderr_quiet():  # ncnn lists its Vulkan devices on stderr when first asked how many
            gpus = ncnn.get_gpu_count()
        if gpus == 0:
            return {}
        name = ncnn.get_gpu_info(0).device_name()
        soft = "llvmpipe" in name.lower() or "lavapipe" in name.lower()
        note = " (lavapipe: a software GPU running on the CPU cores)" if soft else ""
        return {"gpu": f"Vulkan GPU '{name}'{note}"}

    def _run_native(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run ncnn. Shapes are checked before ncnn sees them, and no ncnn object outlives this call.

        An Extractor (or a Mat it returned) that is still alive when the Net is cleared makes ncnn abort with
        "pool allocator destroyed too early" and a segfault: an exception raised while they were locals kept
        them alive in its traceback until after ``close()``. So every ncnn object lives in :meth:`_extract`,
        which returns plain arrays or an error message, and errors are raised only here.

        Raises:
            InputError: an input of the wrong shape, or an output ncnn computes with another shape than the
                artifact declares.
        """
        if self._net is None:
            raise InputError("this ncnn session is closed")
        arrays = {}
        for spec in self.native_io.inputs:
            x = np.asarray(inputs[spec.name])
            want = tuple(int(d) for d in spec.shape)
            if tuple(x.shape) != want:
                raise InputError(f"input '{spec.name}' has shape {tuple(x.shape)}; the ncnn artifact takes {want}")
            if want[0] != 1:
                raise InputError(f"input '{spec.name}': ncnn runs a batch of 1, the artifact declares {want}")
            # ncnn.Mat wraps numpy memory without a reference: keep the arrays alive (and float32, contiguous)
            arrays[spec.name] = np.ascontiguousarray(x[0], dtype=np.float32)
        out, error = self._extract(arrays)
        if error:
            raise InputError(error)
        return out

    def _extract(self, arrays: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], str | None]:
        ncnn = require("ncnn")
        out: dict[str, np.ndarray] = {}
        ex = self._net.create_extractor()
        try:
            for name, x in arrays.items():
                ex.input(name, ncnn.Mat(x).clone())
            for spec in self.native_io.outputs:
                ret, mat = ex.extract(spec.name)
                if ret != 0:
                    return {}, f"ncnn could not compute output {spec.name} (code {ret})"
                y = np.array(mat, dtype=np.float32, copy=True)
                del mat
                want = [int(d) for d in spec.shape]
                if y.size != int(np.prod(want)):
                    return {}, (f"ncnn computed output {spec.name} with shape {tuple(y.shape)}; the artifact declares "
                                f"{tuple(want)} (the artifact does not match its model)")
                out[spec.name] = y.reshape(want)
            return out, None
        finally:
            ex.clear()
            del ex

    def placement(self) -> Placement:
        layers = [ly for ly in self._net.layers() if ly.type not in ("Input",)]
        if self._unit == "cpu":
            per = Counter({"cpu": len(layers)})
        else:
            per = Counter(self._unit if ly.support_vulkan else "cpu" for ly in layers)
        cpu_only = sorted({ly.type for ly in layers if not ly.support_vulkan}) if self._unit != "cpu" else []
        return Placement(device=self._unit, ops_per_unit=dict(per),
                         detail={"cpu_only_layer_types": ", ".join(cpu_only)})

    def close(self) -> None:
        if self._net is not None:
            self._net.clear()
            self._net = None
