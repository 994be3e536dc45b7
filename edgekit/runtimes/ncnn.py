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

from edgekit.deps import require
from edgekit.errors import DeviceError, InputError
from edgekit.runtimes.base import Placement, Session, check_threads
from edgekit.spec import IOSpec


class NcnnSession(Session):
    delegates = ("cpu", "gpu", "gpu:N")

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

    def _run_native(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ncnn = require("ncnn")
        ex = self._net.create_extractor()
        arrays = {}  # ncnn.Mat wraps numpy memory without a reference: keep the arrays alive
        for spec in self.native_io.inputs:
            x = inputs[spec.name]
            arrays[spec.name] = np.ascontiguousarray(x[0] if x.shape[0] == 1 else x)
            ex.input(spec.name, ncnn.Mat(arrays[spec.name]).clone())
        out = {}
        for spec in self.native_io.outputs:
            ret, mat = ex.extract(spec.name)
            if ret != 0:
                raise InputError(f"ncnn could not compute output {spec.name} (code {ret})")
            out[spec.name] = np.array(mat).reshape([int(d) for d in spec.shape])
        return out

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
        self._net.clear()
