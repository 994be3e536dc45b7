"""NCNN session for ``ncnn-*`` artifacts: CPU (``cpu``) or Vulkan GPU (``gpu``, ``gpu:N``).

On the GPU path ncnn runs every layer that has a Vulkan implementation on the GPU and the rest on
the CPU; :meth:`placement` counts both. No Vulkan device is a :class:`DeviceError`, never a silent
CPU run. Precision follows the artifact: fp32 artifacts run with fp16 storage/arithmetic off, fp16
artifacts with fp16 storage on; int8 artifacts run with ``use_int8_inference``.

Threads: ncnn's pip wheel runs its layers on GNU OpenMP (libgomp), whose threads spin-wait for the next
parallel region by default. On a device with other work that collapses: 2 threads on 2 busy cores ran a frame
in 80-650 ms against 6-8 ms without spinning (benchmarks/bench_contention.py). libgomp reads its wait policy
once, when it is loaded, so edgekit imports ncnn with ``OMP_WAIT_POLICY=PASSIVE`` (``spin=False``, the default)
or ``ACTIVE`` (``spin=True``), unless the user's environment sets ``OMP_WAIT_POLICY`` (theirs is used).
The policy is fixed for the process from then on: a session asking for the other one runs with the one in
effect and says so in :meth:`run_options` (``spin`` is what really happens). ``opt.openmp_blocktime`` is set
too (it is what ncnn builds on LLVM's OpenMP read).
"""

from __future__ import annotations

import os
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from edgekit.backends.ncnn import BACKEND
from edgekit.backends.session import Placement, Session, Tap, TapsUnavailableError, check_threads, native_stderr_quiet
from edgekit.core.deps import require
from edgekit.core.iospec import IOSpec
from edgekit.errors import DeviceError, InputError

#: libgomp's wait policy for this process, as read when ncnn was loaded (empty until a session loads ncnn)
_wait_policy: list[str] = []


def _import_ncnn(spin: bool):
    """ncnn, loaded (the first time) with libgomp's wait policy for ``spin``; returns (module, policy in effect).

    The policy is what libgomp read when it was loaded: the user's ``OMP_WAIT_POLICY`` if set, else edgekit's
    choice for the first session; ``unknown`` where ncnn was imported before edgekit could set it (a converter
    loaded it without the variable: libgomp then spins, its default).
    """
    if not _wait_policy:
        user = os.environ.get("OMP_WAIT_POLICY")
        if "ncnn" in sys.modules:
            _wait_policy.append((user or "unset").upper())
        else:
            if user is None:
                os.environ["OMP_WAIT_POLICY"] = "ACTIVE" if spin else "PASSIVE"
            try:
                require("ncnn")
            finally:
                if user is None:  # only libgomp needed it; child processes and other libraries keep theirs
                    del os.environ["OMP_WAIT_POLICY"]
            _wait_policy.append((user or ("ACTIVE" if spin else "PASSIVE")).upper())
    return require("ncnn"), _wait_policy[0]


class NcnnSession(Session):
    delegates = tuple(BACKEND.delegates)

    def __init__(self, param: Path, weights: Path, native_io: IOSpec, source_io: IOSpec, threads: int = 1,
                 delegate: str = "cpu", precision: str = "fp32", spin: bool = False):
        ncnn, policy = _import_ncnn(spin)
        super().__init__(native_io, source_io, check_threads(threads), delegate)
        # libgomp's policy was fixed when ncnn was loaded: spin is what it really does (PASSIVE never spins)
        self.spin = policy != "PASSIVE"
        self.check_delegate(delegate)
        unit, _, index = delegate.partition(":")
        net = ncnn.Net()
        opt = net.opt
        opt.num_threads = threads  # must be set before load_param
        opt.openmp_blocktime = 20 if self.spin else 0  # ms; read by ncnn builds on LLVM's OpenMP, not libgomp
        self.thread_options = {"num_threads": threads, "OMP_WAIT_POLICY": policy,
                               "openmp_blocktime": opt.openmp_blocktime}
        if self.spin != bool(spin):
            self.thread_options["note"] = (f"spin={bool(spin)} was asked for; libgomp's wait policy is fixed per "
                                           f"process ({policy} when ncnn was loaded), so this session runs with it")
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
        self._files = (param, weights)  # the debugger's taps read the layers
        self._unit = f"gpu:{self.gpu_name}" if unit == "gpu" else "cpu"

    @classmethod
    def open(cls, artifact, threads: int = 1, delegate: str = "cpu", spin: bool = False) -> NcnnSession:
        return cls(artifact.file("model"), artifact.file("weights"), artifact.io, artifact.source_io, threads,
                   delegate, artifact.target.precision, spin)

    @classmethod
    def check_delegate(cls, delegate: str) -> None:
        unit, _, index = delegate.partition(":")
        if unit not in ("cpu", "gpu") or (index and not index.isdigit()):
            raise InputError(f"unknown ncnn delegate '{delegate}'; use cpu, gpu or gpu:N")
        if unit == "gpu":
            count = _import_ncnn(False)[0].get_gpu_count()  # a first import sets libgomp's default policy
            if int(index or 0) >= count:
                raise DeviceError(f"no Vulkan GPU {int(index or 0)} here (ncnn sees {count}); install a Vulkan driver "
                                  "(e.g. Debian's mesa-vulkan-drivers for a software GPU) or use cpu")

    @classmethod
    def devices(cls) -> list[str]:
        ncnn = _import_ncnn(False)[0]
        gpus = [f"gpu:{i} ({ncnn.get_gpu_info(i).device_name()})" for i in range(ncnn.get_gpu_count())]
        return ["cpu", *gpus]

    @classmethod
    def compute_units(cls) -> dict[str, str]:
        """ncnn's first Vulkan device as the ``gpu`` unit (lavapipe said to be a software GPU)."""
        ncnn = _import_ncnn(False)[0]  # loaded (first) with edgekit's default wait policy, as a session would
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

    def _kernel_times_native(self, inputs: dict[str, np.ndarray], runs: int) -> list:
        from edgekit.backends.ncnn.kerneltimes import ncnn_kernel_times  # layer by layer, on the second net

        if self._net is None:
            raise InputError("this ncnn session is closed")
        arrays = {s.name: np.ascontiguousarray(np.asarray(inputs[s.name])[0], dtype=np.float32)
                  for s in self.native_io.inputs}
        return ncnn_kernel_times(self, arrays, runs)

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

    def audit(self, target, kept_layers: tuple[str, ...] = ()):
        """Per layer: int8 (int8_scale_term with int8 inference on) or fp32, from the layers ncnn loaded."""
        from edgekit.backends.ncnn.audit import audit_ncnn

        return audit_ncnn(self, target, set(kept_layers))

    def placement(self) -> Placement:
        layers = [ly for ly in self._net.layers() if ly.type not in ("Input",)]
        if self._unit == "cpu":
            per = Counter({"cpu": len(layers)})
        else:
            per = Counter(self._unit if ly.support_vulkan else "cpu" for ly in layers)
        cpu_only = sorted({ly.type for ly in layers if not ly.support_vulkan}) if self._unit != "cpu" else []
        return Placement(device=self._unit, ops_per_unit=dict(per),
                         detail={"cpu_only_layer_types": ", ".join(cpu_only)})

    # ---- numeric debugger taps (edgekit diff)

    def tap_points(self) -> list[Tap]:
        """Every blob a layer computes (Split copies left out), with the layer's weights for matching; pnnx does
        not keep ONNX names, so the debugger matches these by weights and structure."""
        if getattr(self, "_tap_list", None) is None:
            from edgekit.backends.ncnn import model as nm

            self._tap_layers = nm.read(*self._files)
            self._tap_list = [_ncnn_tap(ly) for ly in self._tap_layers if ly.type not in ("Input", "Split")]
        return list(self._tap_list)

    def _taps_native(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        taps = self.tap_points()
        arrays = {spec.name: np.ascontiguousarray(np.asarray(inputs[spec.name])[0], dtype=np.float32)
                  for spec in self.native_io.inputs}
        values, error = self._extract_blobs(arrays, [s.name for s in self.native_io.outputs] + [t.name for t in taps])
        if error:
            raise InputError(error)
        finals = {s.name: values[s.name].reshape([int(d) for d in s.shape]) for s in self.native_io.outputs}
        return finals, {t.name: values[t.name][None] for t in taps}

    def chunk_inputs(self, output: str, among: set[str] | None = None) -> list[str]:
        """The nearest blobs in ``among`` (default: every tap), or input blobs, upstream of blob ``output``
        (through Split copies to the blob copied)."""
        taps = {t.name for t in self.tap_points()} if among is None else set(among)
        producer = {top: ly for ly in self._tap_layers for top in ly.tops}
        if output not in producer:
            raise TapsUnavailableError(f"ncnn: no layer computes blob {output}")
        found, seen, stack = set(), set(), list(producer[output].bottoms)
        while stack:
            blob = stack.pop()
            if blob in seen:
                continue
            seen.add(blob)
            ly = producer.get(blob)
            if ly is not None and ly.type == "Split":
                stack.append(ly.bottoms[0])
            elif blob in taps or ly is None or ly.type in ("Input", "MemoryData"):
                found.add(blob)
            else:
                stack.extend(ly.bottoms)
        return sorted(found)

    def run_chunk(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Set the fed blobs on an extractor (ncnn then computes only what lies between them and ``output``)."""
        arrays = {name: np.ascontiguousarray(np.asarray(v, np.float32)[0]) for name, v in feeds.items()}
        values, error = self._extract_blobs(arrays, [output])
        if error:
            raise TapsUnavailableError(error)
        return values[output][None]

    def _extract_blobs(self, arrays: dict[str, np.ndarray], blobs: list[str]) -> tuple[dict, str | None]:
        """Like :meth:`_extract` on a second net kept out of light mode (so consumed blobs stay readable)."""
        ncnn = require("ncnn")
        if getattr(self, "_tap_net", None) is None:
            net = ncnn.Net()
            for key in ("num_threads", "use_fp16_storage", "use_fp16_packed", "use_fp16_arithmetic",
                        "use_bf16_storage", "use_int8_inference", "use_vulkan_compute"):
                setattr(net.opt, key, getattr(self._net.opt, key))
            net.opt.lightmode = False
            if net.load_param(str(self._files[0])) != 0 or net.load_model(str(self._files[1])) != 0:
                return {}, f"ncnn cannot load {self._files[0]}"
            self._tap_net = net
        out: dict[str, np.ndarray] = {}
        ex = self._tap_net.create_extractor()
        try:
            for name, x in arrays.items():
                ex.input(name, ncnn.Mat(x).clone())
            for blob in dict.fromkeys(blobs):
                ret, mat = ex.extract(blob)
                if ret != 0:
                    return {}, f"ncnn could not compute blob {blob} (code {ret})"
                out[blob] = np.array(mat, dtype=np.float32, copy=True)
                del mat
            return out, None
        finally:
            ex.clear()
            del ex

    def close(self) -> None:
        if self._net is not None:
            self._net.clear()
            self._net = None
        if getattr(self, "_tap_net", None) is not None:
            self._tap_net.clear()
            self._tap_net = None


#: ncnn layer type -> the ONNX op types it can come from
NCNN_ONNX_OPS = {
    "Convolution": ("Conv",), "ConvolutionDepthWise": ("Conv",), "Deconvolution": ("ConvTranspose",),
    "DeconvolutionDepthWise": ("ConvTranspose",), "InnerProduct": ("Gemm", "MatMul", "Conv"),
    "BinaryOp": ("Add", "Sub", "Mul", "Div", "Pow", "Max", "Min"), "Eltwise": ("Add", "Mul", "Max"),
    "Interp": ("Resize", "Upsample"), "Concat": ("Concat",), "Sigmoid": ("Sigmoid",), "ReLU": ("Relu", "LeakyRelu"),
    "HardSwish": ("HardSwish",), "HardSigmoid": ("HardSigmoid",), "Clip": ("Clip",), "TanH": ("Tanh",),
    "Pooling": ("MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"), "Softmax": ("Softmax",),
    "Reshape": ("Reshape", "Flatten"), "Flatten": ("Flatten", "Reshape"), "Permute": ("Transpose",),
    "Padding": ("Pad",), "Crop": ("Slice",), "Slice": ("Split", "Slice"), "PReLU": ("PRelu",),
    "BatchNorm": ("BatchNormalization",), "Swish": ("Mul",), "GELU": ("Gelu",), "Exp": ("Exp",), "Erf": ("Erf",),
    "Reduction": ("ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin"), "UnaryOp": ("Abs", "Neg", "Exp", "Log",
                                                                                   "Sqrt", "Floor", "Ceil"),
}
#: ncnn's fused activation (param 9 of convolutions and inner products) -> ONNX op types it stands for
NCNN_ACTIVATIONS = {1: ("Relu",), 2: ("LeakyRelu",), 3: ("Clip",), 4: ("Sigmoid",), 6: ("HardSwish",)}


def _ncnn_tap(ly) -> Tap:
    from edgekit.backends.ncnn import model as nm

    weight, fused = None, ()
    if "weight" in ly.arrays:
        tag, w = ly.arrays["weight"]
        weight = np.asarray(w, np.float32)
        if tag == nm.TAG_INT8 and "weight_scales" in ly.arrays:  # per output channel (or group): q = w * scale
            scales = np.asarray(ly.arrays["weight_scales"][1], np.float32)
            weight = (weight.reshape(len(scales), -1) / np.where(scales == 0, 1, scales)[:, None]).ravel()
        fused = NCNN_ACTIVATIONS.get(int(ly.params.get(9, 0)), ())
        if int(ly.params.get(9, 0)) and not fused:
            fused = ("?",)
    return Tap(ly.tops[0], ly.type, (), onnx_ops=NCNN_ONNX_OPS.get(ly.type, ()), weight=weight, fused=fused)
