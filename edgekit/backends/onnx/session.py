"""ONNX Runtime session: the reference runtime and the runtime of ``onnx-*`` artifacts."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgekit.backends.onnx import BACKEND
from edgekit.backends.session import Placement, Session, Tap, TapsUnavailableError, check_threads
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
                 delegate: str = "cpu", spin: bool = False):
        ort = require("onnxruntime")
        super().__init__(native_io, source_io, check_threads(threads), delegate)
        self.check_delegate(delegate)
        provider = PROVIDERS[delegate]
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        # spinning worker threads hold their cores between runs: with other work on the device, 2 threads on 2
        # cores ran 2x slower than 1 (TOOLCHAIN.md); off unless asked for (benchmarks/bench_contention.py)
        self.spin = bool(spin)
        self.thread_options = {"intra_op_num_threads": threads, "inter_op_num_threads": 1,
                               "session.intra_op.allow_spinning": "1" if spin else "0",
                               "session.inter_op.allow_spinning": "1" if spin else "0"}
        for key in ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning"):
            so.add_session_config_entry(key, self.thread_options[key])
        so.log_severity_level = 3
        self._n_nodes = None
        self._sess = ort.InferenceSession(str(model_path), so, providers=[provider])
        self._model_path = model_path

    @classmethod
    def open(cls, artifact, threads: int = 1, delegate: str = "cpu", spin: bool = False) -> OrtSession:
        return cls(artifact.file("model"), artifact.io, artifact.source_io, threads, delegate, spin)

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

    def _kernel_times_native(self, inputs: dict[str, np.ndarray], runs: int) -> list:
        from edgekit.backends.onnx.kerneltimes import ort_kernel_times  # a second session, profiler on

        return ort_kernel_times(self._model_path, inputs, self.threads, self.thread_options,
                                PROVIDERS[self.delegate], runs)

    def audit(self, target, kept_layers: tuple[str, ...] = ()):
        """Per node of the graph ORT really runs: a quantized kernel, or float compute between Q/DQ pairs."""
        from edgekit.backends.onnx.audit import audit_ort

        return audit_ort(self._model_path, target, PROVIDERS[self.delegate], self.delegate, set(kept_layers))

    def placement(self) -> Placement:
        if self._n_nodes is None:
            import onnx

            self._n_nodes = len(onnx.load(str(self._model_path), load_external_data=False).graph.node)
        # ONNX Runtime assigns every node to the single provider we allowed
        return Placement(device=self.delegate, ops_per_unit={self.delegate: self._n_nodes},
                         detail={"provider": PROVIDERS[self.delegate]})

    # ---- numeric debugger taps (edgekit diff)

    def tap_points(self) -> list[Tap]:
        """Every node output of the model, by its ONNX name. In a QDQ (int8) model the value the next layer
        really gets is the QuantizeLinear output: it is tapped (dequantized) under the float tensor's name."""
        if getattr(self, "_tap_list", None) is None:
            self._tap_list, self._tap_dequant = _ort_taps(self._model_path)
        return list(self._tap_list)

    def _taps_native(self, inputs: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        taps = self.tap_points()
        if getattr(self, "_tap_sess", None) is None:
            self._tap_sess = self._session_with_outputs([t.name for t in taps])
        finals = [o.name for o in self._sess.get_outputs()]
        names = finals + [t.name for t in taps if t.name not in finals]
        values = dict(zip(names, self._tap_sess.run(names, inputs)))
        tensors = {}
        for t in taps:
            v = values[t.name]
            if t.name in self._tap_dequant:
                scale, zp, _ = self._tap_dequant[t.name]
                v = (v.astype(np.float32) - zp) * scale
            tensors[t.name] = np.asarray(v, np.float32)
        return {n: values[n] for n in finals}, tensors

    def chunk_inputs(self, output: str, among: set[str] | None = None) -> list[str]:
        """The nearest tapped tensors in ``among`` (default: every tap), or model inputs, upstream of ``output``."""
        return _ort_chunk_inputs(self._chunk_graph(), output, {t.name for t in self.tap_points()} if among is None
                                 else set(among))

    def run_chunk(self, output: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """Cut the model from ``feeds`` to ``output`` (``onnx.utils.Extractor``) and run it in ONNX Runtime."""
        self.tap_points()
        return _ort_run_chunk(self._chunk_graph(), output, feeds, self._tap_dequant)

    def _chunk_graph(self) -> dict:
        """The model with inferred shapes, its producers and an ``onnx.utils.Extractor``, read once."""
        if getattr(self, "_chunk_cache", None) is None:
            import onnx
            from onnx.utils import Extractor

            model = onnx.load(str(self._model_path))
            try:
                model = onnx.shape_inference.infer_shapes(model)
            except (onnx.shape_inference.InferenceError, ValueError) as e:
                raise TapsUnavailableError(f"ONNX Runtime: cannot infer the shapes of {self._model_path.name}: "
                                           f"{e}") from e
            self._chunk_cache = {"producer": {o: n for n in model.graph.node for o in n.output},
                                 "inits": {i.name for i in model.graph.initializer},
                                 "inputs": {i.name for i in model.graph.input}, "extractor": Extractor(model)}
        return self._chunk_cache

    def _session_with_outputs(self, names: list[str]):
        import onnx

        ort = require("onnxruntime")
        model = onnx.load(str(self._model_path))
        have = {o.name for o in model.graph.output}
        model.graph.output.extend(onnx.ValueInfoProto(name=n) for n in names if n not in have)
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.threads
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), so, providers=[PROVIDERS[self.delegate]])


def _ort_taps(path: Path) -> tuple[list[Tap], dict[str, tuple]]:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    try:
        inferred = onnx.shape_inference.infer_shapes(model).graph
    except (onnx.shape_inference.InferenceError, ValueError):
        inferred = model.graph
    shapes = {}
    for vi in [*inferred.value_info, *inferred.output, *inferred.input]:
        dims = vi.type.tensor_type.shape.dim
        shapes[vi.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in dims)
    inits = {i.name: i for i in model.graph.initializer}
    finals = {o.name for o in model.graph.output}
    quantized_by = {n.input[0]: n for n in model.graph.node if n.op_type == "QuantizeLinear"}
    taps, dequant = [], {}
    for node in model.graph.node:
        if node.op_type in ("QuantizeLinear", "DequantizeLinear", "Constant"):
            continue
        weight = None
        if len(node.input) > 1 and node.input[1] in inits:
            weight = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        for out in node.output:
            if not out:
                continue
            q = quantized_by.get(out)
            if q is not None and out not in finals and len(q.input) > 1 and q.input[1] in inits:
                scale = float(numpy_helper.to_array(inits[q.input[1]]).ravel()[0])
                zpa = numpy_helper.to_array(inits[q.input[2]]) if len(q.input) > 2 else np.zeros(1, np.uint8)
                dequant[q.output[0]] = (scale, float(zpa.ravel()[0]), zpa.dtype)
                taps.append(Tap(q.output[0], f"{node.op_type}+QuantizeLinear", shapes.get(out, ()),
                                onnx_names=(out,), onnx_ops=(node.op_type,), weight=weight))
            else:
                taps.append(Tap(out, node.op_type, shapes.get(out, ()), onnx_names=(out,), onnx_ops=(node.op_type,),
                                weight=weight))
    return taps, dequant


def _ort_chunk_inputs(graph: dict, output: str, tapped: set[str]) -> list[str]:
    producer, inits, graph_inputs = graph["producer"], graph["inits"], graph["inputs"]
    start = producer.get(output)
    if start is None:
        raise InputError(f"no node computes {output}")
    found, stack, seen = [], list(start.input), set()
    while stack:
        t = stack.pop()
        if not t or t in seen or t in inits:
            continue
        seen.add(t)
        if t in tapped or t in graph_inputs:
            found.append(t)
        elif t in producer:
            stack.extend(producer[t].input)
    return sorted(found)


def _ort_run_chunk(graph: dict, output: str, feeds: dict[str, np.ndarray], dequant: dict[str, tuple]) -> np.ndarray:
    import onnx

    ort = require("onnxruntime")
    # a fed tap that is a QuantizeLinear output takes its value in int8 (the runtime's representation)
    values = {}
    for name, v in feeds.items():
        if name in dequant:
            scale, zp, dtype = dequant[name]
            info = np.iinfo(dtype)
            values[name] = np.clip(np.round(v / scale) + zp, info.min, info.max).astype(dtype)
        else:
            values[name] = np.asarray(v, np.float32)
    try:
        sub = graph["extractor"].extract_model(list(values), [output])
    except (KeyError, ValueError, onnx.shape_inference.InferenceError) as e:
        raise TapsUnavailableError(f"ONNX Runtime: cannot cut the model at {output}: {e}") from e
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(sub.SerializeToString(), so, providers=["CPUExecutionProvider"])
    y = sess.run([output], values)[0]
    if output in dequant:
        scale, zp, _ = dequant[output]
        y = (y.astype(np.float32) - zp) * scale
    return np.asarray(y, np.float32)
