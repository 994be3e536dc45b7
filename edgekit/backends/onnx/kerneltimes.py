"""ONNX Runtime's per-kernel timings: a second session on the same model with the same thread settings and the
session profiler on (``SessionOptions.enable_profiling``); each node's ``*_kernel_time`` events, after the
warm-up runs, with the shapes the profiler records for them (so a kernel ORT fused or re-laid out in NCHWc blocks
is counted as ORT ran it)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from edgekit.backends.kerneltimes import KernelTime, conv_record, elems, kind_of, other_record
from edgekit.core.deps import require
from edgekit.errors import DeviceError

_CONV = {"Conv", "FusedConv", "NchwcConv", "ConvTranspose"}
_GEMM = {"MatMul", "Gemm", "FusedMatMul", "FusedGemm"}


def _shapes(arg) -> list[list[int]]:
    return [list(next(iter(d.values()))) for d in (arg or []) if isinstance(d, dict) and d]


def record(name: str, op: str, ins: list[list[int]], outs: list[list[int]], ms: list[float]) -> KernelTime:
    """A :class:`KernelTime` from a node's op type and the shapes ORT's profiler gives for it."""
    if op in _CONV and len(ins) > 1 and len(ins[1]) >= 3:
        w = ins[1]
        window = elems(w[2:]) or 1
        data = [ins[0]] + ([ins[3]] if len(ins) > 3 else [])  # a fused Add's second operand is read too
        if op == "ConvTranspose":
            return conv_record(name, op, data, int(w[0]) * window * elems(ins[0][2:]) // max(elems(outs[0][2:]), 1),
                               window, outs[0], ms, elems(w), depthwise=False)
        return conv_record(name, op, data, int(w[1]) * window, window, outs[0] if outs else [], ms, elems(w),
                           depthwise=int(w[1]) == 1 and len(ins[0]) > 1 and int(ins[0][1]) > 1)
    if op in _GEMM and ins and ins[0]:  # the profiler may list the data input only (weights: K x N)
        k = int(ins[0][-1])
        out = elems(outs[0]) if outs else 0
        n = int(outs[0][-1]) if outs and outs[0] else 0
        return KernelTime(name, op, "gemm", float(out * k), float(elems(ins[0])), float(out), float(k * n), k, n, 1,
                          list(ms))
    return other_record(name, op, kind_of(op), ins, outs, ms)


def ort_kernel_times(model_path: Path, inputs: dict, threads: int, thread_entries: dict, provider: str,
                     runs: int = 10, warmup: int = 3) -> list[KernelTime]:
    """Run ``model_path`` ``warmup + runs`` times under ORT's profiler; the kernels of the last ``runs``.

    Raises:
        DeviceError: ORT cannot open the model for profiling or wrote no kernel events.
    """
    ort = require("onnxruntime")
    with tempfile.TemporaryDirectory(prefix="edgekit-ortprof-") as work:
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        for key, value in thread_entries.items():
            if key.startswith("session."):
                so.add_session_config_entry(key, str(value))
        so.log_severity_level = 3
        so.enable_profiling = True
        so.profile_file_prefix = str(Path(work) / "prof")
        try:
            sess = ort.InferenceSession(str(model_path), so, providers=[provider])
            names = [o.name for o in sess.get_outputs()]
            for _ in range(warmup + runs):
                sess.run(names, inputs)
            path = Path(sess.end_profiling())
            events = json.loads(path.read_text())
        except (RuntimeError, ValueError, OSError) as e:  # ORT's own errors are RuntimeError subclasses
            raise DeviceError(f"ONNX Runtime cannot profile {Path(model_path).name}: {str(e).splitlines()[0]}") from e
    times: dict[str, list[float]] = {}
    meta: dict[str, tuple] = {}
    for e in events:
        if not isinstance(e, dict) or e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        name = e["name"][: -len("_kernel_time")]
        args = e.get("args") or {}
        times.setdefault(name, []).append(float(e.get("dur", 0)) / 1000.0)
        meta.setdefault(name, (str(args.get("op_name", "?")), _shapes(args.get("input_type_shape")),
                               _shapes(args.get("output_type_shape"))))
    if not times:
        raise DeviceError(f"ONNX Runtime's profiler wrote no kernel events for {Path(model_path).name}")
    out = []
    for name, ts in times.items():  # in execution order (dicts keep the order of the first run)
        op, ins, outs = meta[name]
        out.append(record(name, op, ins, outs, ts[-runs:]))
    return out
