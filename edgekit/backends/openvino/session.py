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
from edgekit.backends.session import Placement, Session, Tap, TapsUnavailableError, check_threads
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
                 delegate: str = "cpu", precision: str = "f32", spin: bool = False):
        ov = require("openvino")
        super().__init__(native_io, source_io, check_threads(threads), delegate)
        device_part, _, hint = delegate.partition("@")
        self.precision = hint or precision
        if self.precision not in PRECISIONS:
            raise InputError(f"unknown inference precision '{self.precision}'; use one of {', '.join(PRECISIONS)}")
        self.device = ov_device(device_part)
        core = ov.Core()
        _check_device(core, self.device)
        try:
            self._model = core.read_model(str(model_path))
        except RuntimeError as e:  # a malformed or truncated IR (the files are hash-checked, but may be made so)
            raise InputError(f"OpenVINO cannot read {Path(model_path).name}: {' '.join(str(e).split())[:240]}") from e
        self._model_path = model_path  # the debugger's taps read a copy to add outputs to
        try:
            config = _config_for(self.device, self.precision, threads, list(core.available_devices), spin)
            self._compiled = core.compile_model(self._model, self.device, config)
        except RuntimeError as e:
            raise DeviceError(f"OpenVINO cannot compile for {self.device}: {str(e).splitlines()[0]}") from e
        self._core = core
        self.spin = bool(spin)  # pinned TBB workers wait for "their" core while another process runs on it
        self.thread_options = {k: str(v) for k, v in _cpu_threads(threads, spin).items()}
        if self.device == "CPU":  # what the plugin really applied (pinning's default differs by OS)
            for key in ("INFERENCE_NUM_THREADS", "NUM_STREAMS", "ENABLE_CPU_PINNING"):
                try:
                    self.thread_options[key] = str(self._compiled.get_property(key))
                except RuntimeError:
                    self.thread_options[key] = self.thread_options.get(key, "default") + " (not reported back)"
        self._request = self._compiled.create_infer_request()
        # an output tensor may carry several names once OpenVINO fuses ops (a TFLite source's Transpose -> Sigmoid
        # output is named after both): take the one the artifact's IO spec uses
        wanted = [t.name for t in self.native_io.outputs]
        self._outputs = [next((n for n in wanted if n in o.get_names()), o.get_any_name())
                         for o in self._compiled.outputs]

    @classmethod
    def open(cls, artifact, threads: int = 1, delegate: str = "cpu", spin: bool = False) -> OpenVINOSession:
        return cls(artifact.file("model"), artifact.io, artifact.source_io, threads, delegate,
                   artifact.options.get("inference_precision", "f32"), spin)

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

    def _kernel_times_native(self, inputs: dict[str, np.ndarray], runs: int) -> list:
        from edgekit.backends.openvino.kerneltimes import ov_kernel_times  # compiled again, counters on

        config = _config_for(self.device, self.precision, self.threads, list(self._core.available_devices), self.spin)
        try:
            compiled = self._core.compile_model(self._model, self.device, {**config, "PERF_COUNT": True})
        except RuntimeError as e:
            raise DeviceError(f"OpenVINO cannot compile for {self.device} with counters: "
                              f"{str(e).splitlines()[0]}") from e
        return ov_kernel_times(compiled, inputs, runs)

    def audit(self, target, kept_layers: tuple[str, ...] = ()):
        """Per executed layer: runtime precision and implementation (reference kernels are off the fast path)."""
        from edgekit.backends.openvino.audit import audit_openvino

        return audit_openvino(self, target, set(kept_layers))

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

    # ---- numeric debugger taps (edgekit diff)

    def tap_points(self) -> list[Tap]:
        """Every op output that carries a tensor name (OpenVINO keeps the ONNX tensor names); an output that only
        feeds a FakeQuantize (int8 IRs) is tapped after it, the value the next layer really gets."""
        if getattr(self, "_tap_ports", None) is None:
            self._tap_model = self._core.read_model(str(self._model_path))
            self._tap_ports = _ov_tap_ports(self._tap_model)
        return [t for t, _ in self._tap_ports]

    def _taps_native(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        taps = self.tap_points()
        if getattr(self, "_tap_request", None) is None:
            for t, port in self._tap_ports:  # a name of our own on each tapped port, to find it among the outputs
                port.get_tensor().add_names({f"edgekit-tap:{t.name}"})
            self._tap_model.add_outputs([port for _, port in self._tap_ports])
            config = _config_for(self.device, self.precision, self.threads, list(self._core.available_devices))
            compiled = self._core.compile_model(self._tap_model, self.device, config)
            self._tap_request = compiled.create_infer_request()
            self._tap_index = {n: i for i, o in enumerate(compiled.outputs) for n in o.get_names()}
        res = self._tap_request.infer(inputs)
        idx = self._tap_index
        finals = {name: np.asarray(res[idx[name]]) for name in self._outputs}
        tensors = {t.name: np.asarray(res[idx.get(f"edgekit-tap:{t.name}", idx.get(t.name))], np.float32)
                   for t in taps}
        return finals, tensors

    def chunk_inputs(self, output: str, among: set[str] | None = None) -> list[str]:
        """The nearest tapped tensors in ``among`` (default: every tap), or model inputs, upstream of ``output``."""
        self.tap_points()
        return sorted(_ov_chunk(self._tap_ports, output, among)[1])

    def run_chunk(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Cut a sub-model from ``feeds`` to ``output`` (new Parameters in place of the fed outputs) and run it."""
        ov = require("openvino")
        model = self._core.read_model(str(self._model_path))
        ports = _ov_tap_ports(model)
        target, starts = _ov_chunk(ports, output, set(feeds))
        if set(starts) - set(feeds):
            raise TapsUnavailableError(f"OpenVINO: no value fed for {sorted(set(starts) - set(feeds))}")
        params = []
        for name, port in starts.items():
            x = np.asarray(feeds[name], np.float32)
            p = ov.opset13.parameter(list(x.shape), ov.Type.f32, name=f"feed_{len(params)}")
            for consumer in list(port.get_target_inputs()):
                consumer.replace_source_output(p.output(0))
            params.append((p, x))
        sub = ov.Model([ov.opset13.result(target)], [p for p, _ in params], "chunk")
        config = _config_for(self.device, self.precision, 1, list(self._core.available_devices))
        try:
            compiled = self._core.compile_model(sub, self.device, config)
        except RuntimeError as e:
            raise TapsUnavailableError(f"OpenVINO cannot compile the part of the model computing {output}: "
                                       f"{str(e).splitlines()[0]}") from e
        return np.asarray(compiled.create_infer_request().infer([x for _, x in params])[0], np.float32)


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


def _cpu_threads(threads: int, spin: bool) -> dict:
    """The CPU plugin's thread settings: ``threads`` in one stream; with ``spin`` off, workers are not pinned to
    cores (a pinned worker waits for its core while another process runs there; benchmarks/bench_contention.py)."""
    cfg: dict = {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1}
    if not spin:
        cfg["ENABLE_CPU_PINNING"] = False
    return cfg


def _config_for(device: str, precision: str, threads: int, available: list[str], spin: bool = False) -> dict:
    """Precision (and CPU threads) for a device; virtual devices pass them on to each real one."""

    def real(d: str) -> dict:
        cfg = {"INFERENCE_PRECISION_HINT": precision}
        if d == "CPU":
            cfg.update(_cpu_threads(threads, spin))
        return cfg

    kind, _, rest = device.partition(":")
    if kind not in ("AUTO", "MULTI", "HETERO"):
        return real(device)
    return {"DEVICE_PROPERTIES": {d: real(d) for d in ([d for d in rest.split(",") if d] or available)}}


_OV_SKIP = {"Constant", "Parameter", "Result", "Convert", "FakeQuantize"}


def _ov_tap_ports(model) -> list:
    """[(Tap, output port)] of the named op outputs of an OpenVINO model, in execution order."""
    out = []
    for op in model.get_ordered_ops():
        kind = op.get_type_name()
        if kind in _OV_SKIP:
            continue
        for port in op.outputs():
            names = sorted(port.get_names())
            if not names or not port.get_partial_shape().is_static:
                continue
            consumers = [c.get_node() for c in port.get_target_inputs()]
            tapped, op_name = port, kind
            if consumers and all(c.get_type_name() == "FakeQuantize" for c in consumers) and len(consumers) == 1:
                tapped, op_name = consumers[0].output(0), f"{kind}+FakeQuantize"
            if tapped.get_element_type().is_integral():
                continue
            shape = tuple(int(d) for d in tapped.get_partial_shape().to_shape())
            out.append((Tap(names[0], op_name, shape, onnx_names=tuple(names), onnx_ops=()), tapped))
    return out


def _ov_chunk(ports: list, output: str, among: set[str] | None = None) -> tuple:
    """(output port of tap ``output``, {tap or input name: output port}) of the nearest taps in ``among``
    (default: every tap) or model inputs upstream."""
    by_name = {t.name: port for t, port in ports}
    if output not in by_name:
        raise TapsUnavailableError(f"OpenVINO: no tap named {output}")
    tapped = {(p.get_node().get_friendly_name(), p.get_index()): t.name for t, p in ports
              if among is None or t.name in among}
    target = by_name[output]
    starts, seen = {}, set()
    stack = [v for v in target.get_node().input_values()]
    while stack:
        port = stack.pop()
        node = port.get_node()
        key = (node.get_friendly_name(), port.get_index())
        if key in seen:
            continue
        seen.add(key)
        if key in tapped:
            starts[tapped[key]] = port
        elif node.get_type_name() == "Parameter":
            starts[sorted(port.get_names())[0] if port.get_names() else node.get_friendly_name()] = port
        elif node.get_type_name() != "Constant":
            stack.extend(node.input_values())
    return target, starts
