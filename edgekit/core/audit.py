"""Execution audit: what the user intended (precision, delegate) against what each op actually ran as.

Each backend's session answers :meth:`~edgekit.backends.session.Session.audit` with one :class:`OpRun` per
op, read from the runtime itself (LiteRT's delegate partitions and tensor types, OpenVINO's executed graph,
ONNX Runtime's optimized graph, ncnn's layers, Core ML's MIL program). This module compares them with the
intention and names every deviation:

* ``fast``: the op ran off the runtime's fast path (LiteRT's reference kernels instead of XNNPACK, an
  OpenVINO ``ref`` implementation);
* ``delegate``: the op ran on another unit than the delegate asked for (the CPU instead of the GPU);
* ``precision``: the op ran in another precision than intended (an "int8" convolution computed in f32).

Layers the conversion kept in float on purpose are intended float: they are listed, never counted as
deviations.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field

from edgekit.errors import AuditError

KINDS = ("fast", "delegate", "precision")


@dataclass
class OpRun:
    """One op as the runtime ran it."""

    index: int
    op: str                      # the op type in the runtime's own words (CONV_2D, Convolution, QLinearConv)
    name: str                    # the runtime's name of the op or of its output tensor
    unit: str                    # where it ran (cpu:xnnpack, cpu:builtin, CPU, GPU)
    kernel: str                  # the kernel/implementation the runtime reports (jit_avx512_I8, MLAS, ref_any)
    precision: str               # what it computed in: int8, fp16, bf16, fp32
    intended_unit: str
    intended_precision: str
    fast: bool = True
    why: str = ""                # the runtime's reason, or what edgekit can say, when it deviates

    def deviations(self) -> list[str]:
        out = []
        if not self.fast:
            out.append("fast")
        if self.unit.split(":")[0] != self.intended_unit.split(":")[0]:
            out.append("delegate")
        if self.precision != self.intended_precision and not self.intended_precision.endswith("(kept)"):
            out.append("precision")
        return out


@dataclass
class Audit:
    """Intended vs actual for every op of one session."""

    runtime: str
    target: str
    delegate: str
    ops: list[OpRun] = field(default_factory=list)
    #: what the runtime cannot tell here (e.g. Core ML's per-op units need macOS)
    limits: list[str] = field(default_factory=list)

    def deviating(self, kinds: tuple[str, ...] = KINDS) -> list[OpRun]:
        return [o for o in self.ops if set(o.deviations()) & set(kinds)]

    def summary(self) -> dict:
        """Counts: ops, on the fast path, in the intended precision, on the intended unit, by kind of deviation."""
        kinds = Counter(k for o in self.ops for k in o.deviations())
        return {"ops": len(self.ops), "fast": sum(o.fast for o in self.ops),
                "deviations": {k: kinds.get(k, 0) for k in KINDS},
                "by_precision": dict(Counter(o.precision for o in self.ops)),
                "by_unit": dict(Counter(o.unit for o in self.ops)),
                "off_fast_path": dict(Counter(o.op for o in self.ops if not o.fast))}

    def require(self, kinds: tuple[str, ...]) -> None:
        """Raise when any op deviates in one of ``kinds`` (for CI: ``edgekit run --audit --require fast``).

        Raises:
            AuditError: naming the deviating ops (the first few) and how many there are.
        """
        unknown = set(kinds) - set(KINDS)
        if unknown:
            raise AuditError(f"unknown --require {', '.join(sorted(unknown))}; use {', '.join(KINDS)}")
        bad = self.deviating(kinds)
        if bad:
            first = "; ".join(f"{o.op} {o.name}: {', '.join(o.deviations())} ({o.why or o.kernel})" for o in bad[:3])
            raise AuditError(f"{len(bad)} of {len(self.ops)} ops deviate from {self.target} on {self.delegate} "
                             f"({', '.join(kinds)}): {first}" + (" ..." if len(bad) > 3 else ""))

    def to_dict(self) -> dict:
        return {"runtime": self.runtime, "target": self.target, "delegate": self.delegate,
                "summary": self.summary(), "limits": self.limits,
                "ops": [{**asdict(o), "deviations": o.deviations()} for o in self.ops]}

    @classmethod
    def from_dict(cls, d: dict) -> Audit:
        ops = [OpRun(**{k: v for k, v in o.items() if k != "deviations"}) for o in d.get("ops", [])]
        return cls(d["runtime"], d["target"], d["delegate"], ops, list(d.get("limits", [])))


def audit_artifact(artifact, session) -> Audit:
    """The audit of ``session`` (opened on ``artifact``), with the artifact's kept-float layers as intended.

    Raises:
        AuditError: the session's runtime cannot report what it ran.
    """
    kept = tuple(str(n) for n in (artifact.options.get("float_layers") or ()))
    return session.audit(artifact.target, kept)


def intended_precision(precision: str, quantized: bool, kept: bool = False) -> str:
    """What a target intends its compute ops to run in: ``int8`` for quantized targets (``fp32 (kept)`` for a
    layer kept in float on purpose), ``fp16`` or ``fp32`` otherwise."""
    if quantized:
        return "fp32 (kept)" if kept else "int8"
    return "fp16" if precision == "fp16" else "fp32"


def compare(a: Audit, b: Audit) -> dict:
    """What changed from audit ``a`` to audit ``b`` (two artifacts, or one artifact under two toolchains).

    Ops are matched by name where both have it, else by position among ops of the same type. Returns counts
    and the ops that moved: ``{"moved": [{op, name, from, to}], "a": summary, "b": summary}``.
    """
    def key(o: OpRun) -> tuple[str, str, str]:
        return o.unit, o.precision, "fast" if o.fast else "slow"

    by_name = {o.name: o for o in b.ops}
    by_type: dict[str, list[OpRun]] = {}
    for o in b.ops:
        by_type.setdefault(o.op, []).append(o)
    seen: Counter = Counter()
    moved = []
    for o in a.ops:
        other = by_name.get(o.name)
        if other is None:
            same = by_type.get(o.op, [])
            other = same[seen[o.op]] if seen[o.op] < len(same) else None
            seen[o.op] += 1
        if other is not None and key(o) != key(other):
            moved.append({"op": o.op, "name": o.name, "from": "/".join(key(o)), "to": "/".join(key(other))})
    return {"moved": moved, "a": a.summary(), "b": b.summary()}


def describe_moves(diff: dict) -> list[str]:
    """One line per (from, to) pair: "7 ops moved from cpu:xnnpack/int8/fast to cpu:builtin/int8/slow (HARD_SWISH)"."""
    groups: dict[tuple[str, str], list[str]] = {}
    for m in diff["moved"]:
        groups.setdefault((m["from"], m["to"]), []).append(m["op"])
    return [f"{len(ops)} op(s) moved from {src} to {dst} ({', '.join(sorted(set(ops)))})"
            for (src, dst), ops in groups.items()]


def point_audit(artifact, delegate: str = "cpu", threads: int = 1, here: bool = True) -> dict:
    """A short record of what a profiled point runs as, for ``points.jsonl``, the report and the app config:
    ``{"source", "ops", "fast", "deviations": {kind: n}, "off_fast_path": {op: n}, "unintended": n}``.

    ``here``: the point runs on this machine, so its runtime is asked now (with the point's delegate and threads);
    otherwise (a remote device) the audit recorded in ``artifact.json`` at conversion is used and said to be that.
    Never raises for an audit the runtime cannot give: the record then holds ``error``.
    """
    from edgekit.errors import EdgekitError

    try:
        if here:
            from edgekit.api import audit as audit_of

            summary, source = audit_of(artifact, threads=threads, delegate=delegate.partition("=")[0]).summary(), \
                "this machine's runtime"
        else:
            recorded = (artifact.audit or {}).get("summary")
            if not recorded:
                return {"source": "none: not run here and none recorded at conversion", "unintended": None}
            summary, source = recorded, "recorded at conversion (another machine than the device)"
    except EdgekitError as e:
        return {"source": "error", "error": str(e), "unintended": None}
    deviations = {k: int(v) for k, v in (summary.get("deviations") or {}).items()}
    return {"source": source, "ops": summary.get("ops"), "fast": summary.get("fast"), "deviations": deviations,
            "off_fast_path": dict(summary.get("off_fast_path") or {}), "unintended": sum(deviations.values())}


def describe_point_audit(record: dict | None) -> str:
    """One line for a point's audit record: ``"24 op(s) deviate: fast 24 (20 HARD_SWISH, 4 RELU_0_TO_1)"``."""
    if not record:
        return "not audited"
    if record.get("error"):
        return f"audit failed: {record['error']}"
    if record.get("unintended") is None:
        return record.get("source", "not audited")
    if not record["unintended"]:
        return f"as intended ({record.get('fast')}/{record.get('ops')} ops on the fast path)"
    kinds = ", ".join(f"{k} {n}" for k, n in record["deviations"].items() if n)
    off = ", ".join(f"{n} {op}" for op, n in record.get("off_fast_path", {}).items())
    return f"{record['unintended']} unintended deviation(s): {kinds}" + (f" ({off})" if off else "")
