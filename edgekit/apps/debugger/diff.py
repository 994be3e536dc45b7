"""``edgekit diff``: the error of every intermediate tensor of an artifact against its fp32 ONNX reference.

The reference (the artifact's stored ``reference.onnx``, or a model the user gives) runs in ONNX Runtime with
every node output exposed; the artifact runs in its own runtime with every tensor that runtime can expose
(:meth:`~edgekit.backends.session.Session.taps`). Runtime tensors are aligned to reference nodes

1. by name, where the converter kept the ONNX tensor names (ONNX Runtime, OpenVINO);
2. by weights, for weighted layers (a convolution's weights survive conversion, possibly transposed to the
   runtime's layout, rounded to fp16 or quantized), then through the activations the runtime says it fused;
3. by structure: a runtime op whose inputs are already aligned is the reference node of a compatible op type
   fed by the same tensors (only when exactly one such node exists).

Reference nodes left unaligned are listed with the reason, never guessed. NHWC tensors are put back in NCHW
before they are compared. Per aligned layer: max and mean absolute error, cosine and SQNR, *cumulative*
(the artifact runs end to end) and, where the runtime can cut a sub-model, *isolated* (the layer fed the
reference's values for its inputs). The final outputs computed with the taps are compared with an untapped
run, so a runtime whose fusion changed when tensors were exposed is reported (observer effect).
"""

from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgekit.errors import InputError, RuntimeUnavailableError

#: SQNR reported for identical tensors (no error at all)
SQNR_EXACT = 200.0
#: by default the isolated error is measured for layers whose cumulative SQNR is below the threshold + this
ISOLATED_MARGIN_DB = 10.0
#: ONNX ops whose weights (second input, an initializer) identify a layer across formats
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")

Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------------- reference graph


@dataclass
class RefNode:
    index: int
    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    weight: np.ndarray | None = None


@dataclass
class RefGraph:
    """The reference ONNX graph, in its (topological) node order."""

    nodes: list[RefNode]
    inputs: list[str]
    constants: set[str]

    def __post_init__(self):
        self.by_output = {o: n for n in self.nodes for o in n.outputs}
        self.consumers: dict[str, list[RefNode]] = {}
        for n in self.nodes:
            for i in n.inputs:
                self.consumers.setdefault(i, []).append(n)

    def live_inputs(self, node: RefNode) -> set[str]:
        """The inputs of ``node`` that are computed (not initializers or constants)."""
        return {i for i in node.inputs if i and i not in self.constants}

    def descendants(self, tensor: str) -> set[str]:
        """Every tensor computed from ``tensor``."""
        seen, stack = set(), [tensor]
        while stack:
            for n in self.consumers.get(stack.pop(), []):
                for o in n.outputs:
                    if o not in seen:
                        seen.add(o)
                        stack.append(o)
        return seen


def read_graph(path: Path) -> RefGraph:
    """Read the reference ONNX graph (nodes in order, weights of weighted nodes).

    Raises:
        InputError: the file is not a readable ONNX model.
    """
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except (OSError, ValueError, onnx.onnx_cpp2py_export.checker.ValidationError) as e:
        raise InputError(f"cannot read the reference model {path}: {e}") from e
    inits = {i.name: i for i in model.graph.initializer}
    constants = set(inits)
    nodes = []
    for k, n in enumerate(model.graph.node):
        if n.op_type == "Constant":
            constants.update(n.output)
            continue
        weight = None
        if n.op_type in WEIGHTED and len(n.input) > 1 and n.input[1] in inits:
            weight = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        nodes.append(RefNode(k, n.name or n.output[0], n.op_type, tuple(n.input), tuple(o for o in n.output if o),
                             weight))
    return RefGraph(nodes, [i.name for i in model.graph.input if i.name not in inits], constants)


def weight_layouts(w: np.ndarray) -> list[np.ndarray]:
    """``w`` flattened in every layout a runtime may store it: as is, transposed (2-D), OHWI, IHWO and IOHW
    (4-D: channels-last filters, depthwise filters, transposed convolutions)."""
    if w.ndim == 4:
        return [w.ravel(), w.transpose(0, 2, 3, 1).ravel(), w.transpose(1, 2, 3, 0).ravel(),
                w.transpose(1, 0, 2, 3).ravel()]
    if w.ndim == 2:
        return [w.ravel(), w.T.ravel()]
    return [w.ravel()]


# ------------------------------------------------------------------------------------------------- metrics


@dataclass
class ErrorStats:
    """Error of one tensor against the reference, accumulated over samples."""

    count: int = 0
    max_abs: float = 0.0
    sum_abs: float = 0.0
    dot: float = 0.0
    ref_sq: float = 0.0
    cand_sq: float = 0.0
    err_sq: float = 0.0

    def add(self, ref: np.ndarray, cand: np.ndarray) -> None:
        r = np.ascontiguousarray(ref, np.float32).ravel()
        c = np.ascontiguousarray(cand, np.float32).ravel()
        d = r - c
        a = np.abs(d)
        self.count += r.size
        self.max_abs = max(self.max_abs, float(a.max()) if a.size else 0.0)
        self.sum_abs += float(a.sum(dtype=np.float64))
        self.dot += float(np.dot(r, c))
        self.ref_sq += float(np.dot(r, r))
        self.cand_sq += float(np.dot(c, c))
        self.err_sq += float(np.dot(d, d))

    @property
    def mean_abs(self) -> float:
        return self.sum_abs / self.count if self.count else 0.0

    @property
    def cosine(self) -> float:
        if self.ref_sq == 0 and self.cand_sq == 0:
            return 1.0
        if self.ref_sq == 0 or self.cand_sq == 0:
            return 0.0
        return float(self.dot / math.sqrt(self.ref_sq * self.cand_sq))

    @property
    def sqnr_db(self) -> float:
        """Signal-to-quantization-noise ratio in dB (:data:`SQNR_EXACT` when the tensors are identical)."""
        if not math.isfinite(self.err_sq):
            return -SQNR_EXACT
        if self.err_sq == 0:
            return SQNR_EXACT
        if self.ref_sq == 0:
            return -SQNR_EXACT
        return float(min(SQNR_EXACT, 10 * math.log10(self.ref_sq / self.err_sq)))

    def to_dict(self) -> dict:
        return {"max_abs": self.max_abs, "mean_abs": self.mean_abs, "cosine": self.cosine, "sqnr_db": self.sqnr_db}


def threshold_for(tolerance_class: str) -> float:
    """Default SQNR threshold (dB) of a tolerance class: the SQNR its cosine limit corresponds to,
    ``-10 log10(2 (1 - min_cosine))`` (fp32 37 dB, fp16 27 dB, int8 14 dB)."""
    from edgekit.core.parity import TOLERANCES

    cos = TOLERANCES[tolerance_class].min_cosine or 0.98
    return -10 * math.log10(2 * (1 - cos))


# -------------------------------------------------------------------------------------------------- report


@dataclass
class LayerDiff:
    """One reference node aligned with one runtime tensor."""

    index: int
    node: str
    op: str
    tensor: str
    runtime_tensor: str
    runtime_op: str
    matched_by: str
    shape: tuple[int, ...]
    max_abs: float
    mean_abs: float
    cosine: float
    sqnr_db: float
    #: the worst SQNR among the aligned layers feeding this one, minus this layer's (how much this layer lost)
    drop_db: float | None = None
    #: the same metrics with this layer fed the reference's inputs (None: not available, see ``isolated_note``)
    isolated: dict | None = None
    isolated_note: str = ""
    first_diverging: bool = False
    #: reference nodes between this layer and the aligned layers feeding it that could not be aligned (an error
    #: that starts in one of them shows first here)
    unaligned_upstream: list[str] = field(default_factory=list)
    #: reference nodes this runtime tensor also computes (a convolution fused with the activation after it): an
    #: error of this layer may be theirs, and no runtime tensor tells them apart
    fused: list[str] = field(default_factory=list)


@dataclass
class DiffReport:
    artifact: str
    target: str
    runtime: str
    samples: int
    threshold_db: float
    tolerance_class: str
    layers: list[LayerDiff]
    #: reference nodes with no runtime tensor: ``{node, op, tensor, reason}``
    unmatched: list[dict]
    #: runtime tensors aligned with no reference node
    unmatched_runtime: list[str]
    #: outputs computed with the taps vs an untapped run: ``{max_abs, tolerance, ok}``
    observer: dict
    notes: list[str] = field(default_factory=list)
    reference_nodes: int = 0
    #: runtime runs made: one tapped and one untapped run per sample, one per cut-out layer and sample
    runs: int = 0

    @property
    def first_diverging(self) -> LayerDiff | None:
        return next((ly for ly in self.layers if ly.first_diverging), None)

    def to_dict(self) -> dict:
        first = self.first_diverging
        return {"artifact": self.artifact, "target": self.target, "runtime": self.runtime, "samples": self.samples,
                "tolerance_class": self.tolerance_class, "threshold_db": self.threshold_db,
                "reference_nodes": self.reference_nodes, "matched": len(self.layers),
                "first_diverging_node": first.node if first else None,
                "layers": [asdict(ly) for ly in self.layers], "unmatched": self.unmatched,
                "unmatched_runtime": self.unmatched_runtime, "observer": self.observer, "notes": self.notes}


# ---------------------------------------------------------------------------------------------------- diff


def diff(artifact, reference: str | Path | None = None, data: str | Path | None = None, samples: int = 4,
         seed: int = 4242, threads: int = 1, isolated: str = "low", isolated_samples: int = 1,
         threshold_db: float | None = None, progress: Progress | None = None) -> DiffReport:
    """Compare every intermediate tensor of ``artifact`` with its fp32 reference (see the module docstring).

    ``isolated``: ``"low"`` measures the isolated error of the layers whose cumulative SQNR is below the threshold
    plus :data:`ISOLATED_MARGIN_DB` (each needs a sub-model cut and compiled), ``"all"`` of every layer, ``"none"``
    of none; on the first ``isolated_samples`` samples.

    Raises:
        InputError: the artifact, its reference or the data cannot be used.
        TapsUnavailableError: the artifact's runtime cannot expose intermediate tensors.
    """
    from edgekit.core.artifact import Artifact

    say = progress or (lambda _m: None)
    art = artifact if isinstance(artifact, Artifact) else Artifact.load(artifact)
    if samples < 1:
        raise InputError(f"--samples must be at least 1, got {samples}")
    if isolated not in ("low", "all", "none"):
        raise InputError(f"isolated must be low, all or none, got {isolated!r}")
    with reference_model(art, reference) as (ref_path, io):
        return _diff(art, ref_path, io, data, samples, seed, threads, isolated, isolated_samples, threshold_db, say)


@contextlib.contextmanager
def reference_model(art, reference: str | Path | None):
    """Yield ``(path of the fp32 reference ONNX, the IO spec its inputs follow)``: the artifact's stored
    reference (its sha256 already checked by :meth:`Artifact.load`), or ``reference`` prepared as a source.

    Raises:
        InputError: the artifact stores no reference and none was given, or the given one cannot be read.
    """
    if reference is None:
        if art.reference is None:
            raise InputError(f"artifact {art.path} stores no reference model (made by an older edgekit); pass "
                             "--reference MODEL to compare against one")
        yield art.reference_file(), art.source_io
        return
    from edgekit.core.ingest import load_source

    shapes = {k: tuple(v) for k, v in art.source.get("input_shapes", {}).items()}
    with tempfile.TemporaryDirectory(prefix="edgekit-diff-") as tmp:
        src = load_source(str(reference), Path(tmp), shapes)
        yield src.onnx_path, src.io


def _diff(art, ref_path: Path, io, data, n: int, seed: int, threads: int, isolated: str, isolated_samples: int,
          threshold_db: float | None, say: Progress) -> DiffReport:
    from edgekit.backends.onnx.session import OrtSession
    from edgekit.backends.registry import open_session
    from edgekit.core import calibration

    graph = read_graph(ref_path)
    inputs = calibration.samples(io, data, n=n, seed=seed)
    tol_class = art.target.tolerance_class
    thr = threshold_for(tol_class) if threshold_db is None else float(threshold_db)
    ref = OrtSession(ref_path, io, io)
    say(f"opening {art.target} in its runtime")
    notes: list[str] = []
    try:
        sess = open_session(art, threads=threads)
    except RuntimeUnavailableError as e:  # a runtime that cannot run here (Core ML off macOS): its verifier
        from edgekit.backends import registry

        sess = registry.get(art.target.format).verifier(art)
        notes.append(f"the runtime cannot run here ({e}); tensors come from the parity gate's verifier "
                     f"{type(sess).__name__} ({getattr(sess, 'verified_by', 'runtime')})")
    try:
        taps = sess.tap_points()
        stats: dict[str, ErrorStats] = {}
        matches: dict[str, tuple[str, str]] = {}
        unmatched: dict[str, str] = {}
        observer = 0.0
        ref_outs_max = 1.0
        shapes: dict[str, tuple[int, ...]] = {}
        iso: dict[str, ErrorStats] = {}
        iso_notes: dict[str, str] = {}
        kept: list[tuple[dict, dict]] = []  # (input, reference tensors) of the samples the isolated error uses
        for k, x in enumerate(inputs):
            say(f"sample {k + 1}/{len(inputs)}: reference and artifact with every tensor exposed")
            _, ref_vals = ref.taps(x)
            out_t, tap_vals = sess.taps(x)
            plain = sess.run(x)
            for name, y in plain.items():
                observer = max(observer, float(np.max(np.abs(np.asarray(out_t[name], np.float64) - y))))
                ref_outs_max = max(ref_outs_max, float(np.max(np.abs(y))))
            if k == 0:
                say("aligning the runtime's tensors with the reference nodes")
                matches, unmatched = align(graph, taps, tap_vals, ref_vals, sess, io)
                stats = {t: ErrorStats() for t in matches}
                shapes = {name: tuple(int(d) for d in np.shape(v)) for name, v in {**ref_vals, **tap_vals}.items()}
            for tap_name, (tensor, _) in matches.items():
                stats[tap_name].add(ref_vals[tensor], to_reference(tap_vals[tap_name], _tap(taps, tap_name),
                                                                   ref_vals[tensor].shape))
            if isolated != "none" and k < isolated_samples:
                kept.append((x, ref_vals))
        chunk_runs = 0
        if isolated != "none":
            only = {t for t, st in stats.items() if isolated == "all" or st.sqnr_db < thr + ISOLATED_MARGIN_DB}
            say(f"isolated error of {len(only)} layer(s): each cut out and fed the reference's inputs")
            for x, ref_vals in kept:
                chunk_runs += _isolated(sess, taps, matches, ref_vals, x, io, shapes, iso, iso_notes, only)
            for t in set(stats) - only:
                iso_notes[t] = (f"not measured: cumulative SQNR over the threshold + {ISOLATED_MARGIN_DB:.0f} dB "
                                "(--isolated all measures every layer)")
        del kept
        tol = 1e-3 * ref_outs_max
        observer_d = {"max_abs": observer, "tolerance": tol, "ok": observer <= tol}
        if not observer_d["ok"]:
            notes.append(f"observer effect: the run with every tensor exposed differs from the artifact's own run by "
                         f"up to {observer:.3g} (over the fp32 tolerance {tol:.3g}; the runtime fused or chose kernels "
                         "differently with taps), so the errors below describe the tapped run, not exactly the "
                         "artifact's")
        layers = []
        order = {n.outputs[0]: n for n in graph.nodes}
        for tap_name, (tensor, how) in matches.items():
            node = graph.by_output[tensor]
            s = stats[tap_name]
            ly = LayerDiff(node.index, node.name, node.op, tensor, tap_name, _tap(taps, tap_name).op, how,
                           shapes.get(tensor, ()), **s.to_dict())
            if isolated != "none":
                ly.isolated = iso.get(tap_name).to_dict() if tap_name in iso else None
                ly.isolated_note = iso_notes.get(tap_name, "")
            layers.append(ly)
        layers.sort(key=lambda ly: ly.index)
        for ly in layers:
            ly.fused = _fused_into(graph, ly.tensor, unmatched)
        _mark_divergence(graph, layers, thr)
        unmatched_rows = [{"node": order[t].name, "op": order[t].op, "tensor": t, "reason": why}
                          for t, why in unmatched.items() if t in order]
        unmatched_rows.sort(key=lambda r: graph.by_output[r["tensor"]].index)
        matched_taps = set(matches)
        if isolated != "none" and isolated_samples < len(inputs):
            notes.append(f"isolated errors are measured on the first {isolated_samples} sample(s)")
        return DiffReport(str(art.path), str(art.target), type(sess).__name__, len(inputs), thr, tol_class, layers,
                          unmatched_rows, [t.name for t in taps if t.name not in matched_taps], observer_d, notes,
                          reference_nodes=len(graph.nodes),
                          runs=2 * len(inputs) + chunk_runs)
    finally:
        sess.close()
        ref.close()


#: reasons :func:`align` gives a reference tensor that a runtime computes inside another op's tensor
FUSED_REASONS = ("fused into ", "computed together with ")


def _fused_into(graph: RefGraph, tensor: str, unmatched: dict[str, str]) -> list[str]:
    """The reference nodes upstream of ``tensor`` (through single-input nodes) whose outputs have no tensor of
    their own because the runtime computes them inside ``tensor``'s op, nearest first."""
    out = []
    node = graph.by_output.get(tensor)
    while node is not None:
        live = list(graph.live_inputs(node))
        if len(live) != 1 or not unmatched.get(live[0], "").startswith(FUSED_REASONS):
            break
        node = graph.by_output.get(live[0])
        if node is None:
            break
        out.append(node.name)
    return out


def _tap(taps, name):
    return next(t for t in taps if t.name == name)


def to_reference(value: np.ndarray, tap, shape: tuple[int, ...]) -> np.ndarray | None:
    """A runtime tensor in the reference's layout and shape, or None when it cannot be.

    A tensor the runtime keeps channels-last is transposed back to NCHW; when only its untransposed shape fits
    (a converter that transposed it back itself) it is taken as it is. Dims of 1 may differ (ncnn drops the
    batch, a runtime may flatten ``(1, C, 1, 1)`` to ``(1, C)``); no other reshape is made.
    """
    v = np.asarray(value, np.float32)
    shape = tuple(int(d) for d in shape)
    forms = [v.transpose(0, 3, 1, 2), v] if tap.layout == "NHWC" and v.ndim == 4 else [v]
    for f in forms:
        if tuple(f.shape) == shape:
            return f
    for f in forms:
        if [d for d in f.shape if d != 1] == [d for d in shape if d != 1]:
            return f.reshape(shape)
    return None


def to_runtime(value: np.ndarray, tap, shape: tuple[int, ...]) -> np.ndarray:
    """A reference tensor in the runtime's layout and shape (the inverse of :func:`to_reference`)."""
    v = np.asarray(value, np.float32)
    if tap is not None and tap.layout == "NHWC" and v.ndim == 4 and tuple(v.shape) != tuple(shape):
        v = v.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(v.reshape(shape))


# ---------------------------------------------------------------------------------------------- alignment


def align(graph: RefGraph, taps, tap_vals: dict, ref_vals: dict, sess, io) -> tuple[dict, dict]:
    """Align runtime taps with reference tensors. Returns ``({tap name: (reference tensor, how)},
    {reference tensor: why it has no runtime tensor})``."""
    from edgekit.backends.session import TapsUnavailableError

    used: dict[str, str] = {}
    matches: dict[str, tuple[str, str]] = {}
    why: dict[str, str] = {}

    def fits(tap, tensor) -> bool:
        return tensor in ref_vals and to_reference(tap_vals[tap.name], tap, ref_vals[tensor].shape) is not None

    def take(tap, tensor, how) -> None:
        matches[tap.name] = (tensor, how)
        used[tensor] = tap.name

    # 1. names the converter kept
    for tap in taps:
        for name in tap.onnx_names:
            if name in ref_vals and name not in used and fits(tap, name):
                take(tap, name, "name")
                break
    # 2. weights (then through the activations the runtime fused after the weighted op)
    weighted = [n for n in graph.nodes if n.weight is not None]
    forms = {n.name: weight_layouts(n.weight) for n in weighted}
    blocked: dict[str, str] = {}  # weight-scaled runtime op -> the reference tensor it stands in for
    for tap in taps:
        if tap.name in matches or tap.weight is None:
            continue
        flat = np.asarray(tap.weight, np.float64).ravel()
        scored, scaled = [], []
        for n in weighted:
            best = max(((_cos(f, flat), _rel(f, flat)) for f in forms[n.name] if f.size == flat.size),
                       default=(-1.0, 1.0))
            if best[0] >= 0.999 and best[1] <= 0.02:  # equal up to fp16 rounding or int8 quantization
                scored.append((best[0], n))
            elif best[0] >= 0.999 and n.outputs[0] not in used:
                scaled.append((best, n))
        scored.sort(key=lambda s: -s[0])
        if not scored and scaled:  # the converter folded a following scale or affine op into these weights
            (_, rel), n = max(scaled, key=lambda s: s[0][0])
            ratio = float(np.linalg.norm(flat) / max(np.linalg.norm(n.weight), 1e-30))
            why.setdefault(n.outputs[0], f"runtime {tap.op} {tap.name} has its weights scaled x{ratio:.3g} (the "
                                         "converter folded a following op into it): not comparable")
            blocked[tap.name] = n.outputs[0]
            continue
        if not scored:
            continue
        if len(scored) > 1 and scored[1][0] > scored[0][0] - 1e-6:
            for _, n in scored[:2]:
                why.setdefault(n.outputs[0], f"weights equal to another layer's; runtime tensor {tap.name} not "
                                             "assigned to either")
            continue
        node = scored[0][1]
        if tap.fused is None:  # the runtime cannot say what it fused: compare along the activation chain
            tensor, how = _by_value(graph, node, tap, tap_vals, ref_vals, used)
            if tensor is not None and fits(tap, tensor):
                take(tap, tensor, how)
            continue
        tensor, fused = node.outputs[0], []
        for op in tap.fused:
            cons = graph.consumers.get(tensor, [])
            if op == "?" or len(cons) != 1 or cons[0].op != op:
                tensor = None
                break
            why.setdefault(tensor, f"fused into {tap.op} {tap.name} by the runtime (no tensor of its own)")
            fused.append(op)
            tensor = cons[0].outputs[0]
        if tensor is None:
            why.setdefault(node.outputs[0], f"weights match runtime {tap.op} {tap.name}, but its fused activation "
                                            f"{'/'.join(tap.fused)} does not follow in the reference")
            continue
        if tensor in used or not fits(tap, tensor):
            continue
        take(tap, tensor, "weights" + (f" (+{'+'.join(fused)} fused)" if fused else ""))
    # 3. structure: a runtime op fed by aligned tensors is the reference node of a compatible op fed by them
    native_inputs = {nspec.name: spec.name for spec, nspec in zip(io.inputs, sess.native_io.inputs)}
    ups: dict[str, list[str] | None] = {}
    for tap in taps:
        try:
            ups[tap.name] = sess.chunk_inputs(tap.name)
        except TapsUnavailableError:  # this runtime cannot say what feeds its tensors: no structural matching
            ups[tap.name] = None
    constant_taps = {t for t, u in ups.items() if u == []}
    by_name = {t.name: t for t in taps}
    changed = True
    while changed:
        changed = False
        for tap in taps:
            if tap.name in matches or tap.name in blocked or not tap.onnx_ops or ups.get(tap.name) is None:
                continue
            feeds = set()
            for u in ups[tap.name]:
                u = _through_layout_ops(u, by_name, ups, matches, native_inputs, constant_taps)
                if u in native_inputs:
                    feeds.add(native_inputs[u])
                elif u in matches:
                    feeds.add(matches[u][0])
                elif u in blocked:  # the op after a folded scale still reads what the reference's next op reads
                    feeds.add(blocked[u])
                elif u not in constant_taps:
                    feeds = None
                    break
            if not feeds:
                continue
            cands = [n for n in graph.nodes if n.op in tap.onnx_ops and n.outputs[0] not in used
                     and not why.get(n.outputs[0], "").startswith(FUSED_REASONS[0])  # inside another runtime op
                     and graph.live_inputs(n) == feeds and fits(tap, n.outputs[0])]
            if len(cands) == 1:
                how = "structure"
                if tap.weight is not None and cands[0].weight is not None:
                    how += f" (weights differ: {_rel_best(cands[0].weight, tap.weight):.2g} relative)"
                tensor, fused = _through_fused(graph, cands[0].outputs[0], tap.fused or [])
                if tensor is None or tensor in used or not fits(tap, tensor):
                    continue
                for t in fused[:-1] if fused else []:
                    why.setdefault(t, f"fused into {tap.op} {tap.name} by the runtime (no tensor of its own)")
                if fused:
                    why.setdefault(cands[0].outputs[0], f"fused into {tap.op} {tap.name} by the runtime (no tensor "
                                                        "of its own)")
                    how += f" (+{'+'.join(tap.fused)} fused)"
                take(tap, tensor, how)
                changed = True
            elif len(cands) > 1:
                for n in cands:
                    why.setdefault(n.outputs[0], f"{len(cands)} reference nodes fit runtime {tap.op} {tap.name} "
                                                 "(same op and inputs); not guessed")
    unmatched = {}
    for n in graph.nodes:
        t = n.outputs[0]
        if t in used:
            continue
        cons = graph.consumers.get(t, [])
        if t not in why and len(cons) == 1 and cons[0].op in ACTIVATIONS and cons[0].outputs[0] in used:
            why[t] = (f"computed together with the {cons[0].op} after it (the runtime's tensor "
                      f"{used[cons[0].outputs[0]]} holds both)")
        unmatched[t] = why.get(t, "no runtime tensor found (fused, renamed or computed differently)")
    return matches, unmatched


def _through_fused(graph: RefGraph, tensor: str, ops: list[str]) -> tuple[str | None, list[str]]:
    """``tensor`` followed through the single-consumer activations ``ops`` a runtime op fused after it: (the last
    tensor, the tensors passed on the way), or (None, []) when the reference does not have that chain."""
    passed = []
    for op in ops:
        cons = graph.consumers.get(tensor, [])
        if op == "?" or len(cons) != 1 or cons[0].op != op:
            return None, []
        passed.append(tensor)
        tensor = cons[0].outputs[0]
    return tensor, passed


#: ONNX ops that only move data; a runtime op that can only be one of these and has no reference node (TFLite's
#: explicit PAD before a convolution, onnx2tf's transposes) is looked through when matching by structure
LAYOUT_OPS = {"Pad", "Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze"}


def _through_layout_ops(name: str, by_name: dict, ups: dict, matches: dict, native_inputs: dict,
                        constant_taps: set[str] = frozenset()) -> str:
    """``name``, or the tensor an unaligned single-input data-movement op named ``name`` reads (recursively; inputs
    computed from constants only, such as a pad value, do not count)."""
    seen = set()
    while (name not in matches and name not in native_inputs and name in by_name and name not in seen
           and by_name[name].onnx_ops and set(by_name[name].onnx_ops) <= LAYOUT_OPS and ups.get(name) is not None
           and len([u for u in ups[name] if u not in constant_taps]) == 1):
        seen.add(name)
        name = next(u for u in ups[name] if u not in constant_taps)
    return name


#: activations a runtime may fuse into the weighted op before them
ACTIVATIONS = ("Relu", "Clip", "LeakyRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "PRelu", "Elu")


def _by_value(graph: RefGraph, node: RefNode, tap, tap_vals: dict, ref_vals: dict, used: dict):
    """For a weight-matched op whose fused activation the runtime does not report: the node's output or one
    of the single-consumer activations after it, whichever the runtime's tensor is closest to (on the first
    sample); the choice is named in the result."""
    chain, tensor = [(node.outputs[0], [])], node.outputs[0]
    while True:
        cons = graph.consumers.get(tensor, [])
        if len(cons) != 1 or cons[0].op not in ACTIVATIONS:
            break
        tensor = cons[0].outputs[0]
        chain.append((tensor, [*chain[-1][1], cons[0].op]))
    scored = []
    for t, ops in chain:
        if t in used or t not in ref_vals:
            continue
        v = to_reference(tap_vals[tap.name], tap, ref_vals[t].shape)
        if v is not None:
            scored.append((_cos(np.asarray(ref_vals[t], np.float64).ravel(), np.asarray(v, np.float64).ravel()),
                           t, ops))
    if not scored:
        return None, ""
    _, t, ops = max(scored, key=lambda s: s[0])
    if len(chain) == 1:
        return t, "weights"
    return t, "weights" + (f" (+{'+'.join(ops)} fused, chosen by value)" if ops else " (no fused activation, "
                                                                                    "chosen by value)")


def _rel(ref: np.ndarray, x: np.ndarray) -> float:
    """Relative L2 difference of ``x`` from ``ref``."""
    ref = np.asarray(ref, np.float64)
    return float(np.linalg.norm(ref - x) / max(float(np.linalg.norm(ref)), 1e-30))


def _rel_best(ref: np.ndarray, x: np.ndarray) -> float:
    flat = np.asarray(x, np.float64).ravel()
    return min((_rel(f, flat) for f in weight_layouts(ref) if f.size == flat.size), default=float("inf"))


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, np.float64)
    na, nb = float(a @ a), float(b @ b)
    if na == 0 or nb == 0:
        return 1.0 if na == nb else 0.0
    return float(a @ b) / math.sqrt(na * nb)


# ----------------------------------------------------------------------------------------- isolated error


def _isolated(sess, taps, matches: dict, ref_vals: dict, x: dict, io, shapes: dict, iso: dict, notes: dict,
              only: set[str]) -> int:
    """Run each aligned layer alone, fed the reference's values, where the runtime can cut a sub-model; returns
    the number of cut-out runs made."""
    runs = 0
    from edgekit.backends.session import TapsUnavailableError, _to_native

    native = {nspec.name: _to_native(np.asarray(x[spec.name]), spec, nspec)
              for spec, nspec in zip(io.inputs, sess.native_io.inputs)}
    by_name = {t.name: t for t in taps}
    for tap_name, (tensor, _) in matches.items():
        if tap_name in notes or tap_name not in only:
            continue
        try:
            starts = sess.chunk_inputs(tap_name, set(matches))
        except TapsUnavailableError as e:
            notes[tap_name] = str(e)
            continue
        feeds = {}
        for u in starts:
            if u in native:
                feeds[u] = native[u]
            elif u in matches:
                feeds[u] = to_runtime(ref_vals[matches[u][0]], by_name.get(u), shapes[u])
            else:
                feeds = None
                notes[tap_name] = f"input {u} of this layer is not aligned with the reference"
                break
        if feeds is None:
            continue
        try:
            runs += 1
            y = sess.run_chunk(tap_name, feeds)
        except TapsUnavailableError as e:
            notes[tap_name] = str(e)
            continue
        cand = to_reference(y, by_name[tap_name], ref_vals[tensor].shape)
        if cand is None:
            notes[tap_name] = f"the cut-out layer computed shape {tuple(np.shape(y))}"
            continue
        iso.setdefault(tap_name, ErrorStats()).add(ref_vals[tensor], cand)
    return runs


# --------------------------------------------------------------------------------------------- divergence


def _order(graph: RefGraph):
    return lambda t: graph.by_output[t].index if t in graph.by_output else -1


def _mark_divergence(graph: RefGraph, layers: list[LayerDiff], thr: float) -> None:
    """Set ``drop_db`` of each layer, and flag the first layer whose SQNR falls below ``thr`` and either is
    wrong on its own (its isolated SQNR is below ``thr`` too) or stays low (the median SQNR of the aligned layers
    computed from it is below ``thr``)."""
    by_tensor = {ly.tensor: ly for ly in layers}
    producers = {}
    for ly in layers:  # the aligned layers feeding each layer (through unaligned nodes)
        seen, stack, feeding = set(), list(graph.live_inputs(graph.by_output[ly.tensor])), set()
        while stack:
            t = stack.pop()
            if t in seen:
                continue
            seen.add(t)
            if t in by_tensor:
                feeding.add(t)
            elif t in graph.by_output:
                stack.extend(graph.live_inputs(graph.by_output[t]))
        producers[ly.tensor] = feeding
        ly.unaligned_upstream = [graph.by_output[t].name for t in sorted(seen - feeding, key=_order(graph))
                                 if t in graph.by_output]
        if feeding:
            ly.drop_db = min(by_tensor[t].sqnr_db for t in feeding) - ly.sqnr_db
    for ly in layers:
        if ly.sqnr_db >= thr:
            continue
        alone = ly.isolated is not None and ly.isolated["sqnr_db"] < thr  # wrong even when fed the reference
        later = [by_tensor[t].sqnr_db for t in graph.descendants(ly.tensor) if t in by_tensor]
        if alone or not later or float(np.median(later)) < thr:
            ly.first_diverging = True
            return
