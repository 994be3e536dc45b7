"""OpenVINO's per-kernel timings: the model compiled a second time with the same settings and the performance
counters on (``PERF_COUNT``); each executed node of the runtime graph (after the CPU plugin's fusions) with its
time per run (``get_profiling_info``) and the shapes the runtime model gives its inputs and outputs."""

from __future__ import annotations

from edgekit.backends.kerneltimes import KernelTime, conv_record, elems, kind_of, other_record
from edgekit.errors import DeviceError


def _text(value) -> str:
    return value.astype(str) if hasattr(value, "astype") else str(value)


def _shape(port) -> list[int]:
    ps = port.get_partial_shape()
    return [int(d.get_length()) if d.is_static else -1 for d in ps] if ps.rank.is_static else []


def record(name: str, op: str, data_in: list, weights: list, outs: list, ms: list[float]) -> KernelTime:
    """A :class:`KernelTime` from a runtime-graph node: its layer type, data input shapes, constant (weight) input
    shapes and output shapes."""
    if op in ("Convolution", "GroupConvolution") and weights and len(weights[0]) >= 4 and outs:
        w = weights[0]
        if len(w) == 5:  # grouped: [groups, out/groups, in/groups, kh, kw]
            window = elems(w[3:]) or 1
            return conv_record(name, op, data_in, int(w[2]) * window, window, outs[0], ms, elems(w),
                               depthwise=int(w[2]) == 1 and int(w[0]) > 1)
        window = elems(w[2:]) or 1
        return conv_record(name, op, data_in, int(w[1]) * window, window, outs[0], ms, elems(w), depthwise=False)
    if op in ("FullyConnected", "MatMul", "Gemm") and data_in and data_in[0] and outs:
        k = int(data_in[0][-1])
        out = elems(outs[0])
        return KernelTime(name, op, "gemm", float(out * k), float(sum(elems(s) for s in data_in)), float(out),
                          float(sum(elems(s) for s in weights)), k, int(outs[0][-1]) if outs[0] else 0, 1, list(ms))
    return other_record(name, op, kind_of(op), data_in, outs, ms, sum(elems(s) for s in weights))


def ov_kernel_times(compiled, inputs: dict, runs: int = 10, warmup: int = 3) -> list[KernelTime]:
    """Per-kernel times of ``compiled`` (compiled with ``PERF_COUNT``) over ``runs`` runs after ``warmup``.

    Raises:
        DeviceError: OpenVINO failed while profiling.
    """
    try:
        request = compiled.create_infer_request()
        for _ in range(warmup):
            request.infer(inputs)
        per_run: dict[str, list[float]] = {}
        for _ in range(runs):
            request.infer(inputs)
            for info in request.get_profiling_info():
                if str(info.status).endswith("EXECUTED") and not str(info.status).endswith("NOT_EXECUTED"):
                    per_run.setdefault(info.node_name, []).append(info.real_time.total_seconds() * 1000.0)
        graph = compiled.get_runtime_model()
        nodes = [(node, _text(node.get_rt_info()["layerType"])) for node in graph.get_ordered_ops()]
        # a node of a few microseconds is now and then reported NOT_RUN: one of a type executed elsewhere in this
        # graph is a kernel all the same (the structure must not depend on the run); in-place types never execute
        ran = {op for node, op in nodes if node.get_friendly_name() in per_run} - {"Input", "Output", "Const"}
        out = []
        for node, op in nodes:
            name = node.get_friendly_name()
            if name not in per_run and op not in ran:
                continue
            data, weights = [], []
            for i in range(node.get_input_size()):
                src = node.input_value(i).get_node()
                (weights if _text(src.get_rt_info()["layerType"]) == "Const" else data).append(_shape(node.input(i)))
            outs = [_shape(node.output(i)) for i in range(node.get_output_size())]
            out.append(record(name, op, data, weights, outs, per_run.get(name, [])))
    except RuntimeError as e:
        raise DeviceError(f"OpenVINO cannot profile this model: {str(e).splitlines()[0]}") from e
    return out
