"""The sweep: for a model and a device profile, convert what is needed (reusing artifacts by source
hash), then measure every resolution x target x delegate x threads point. Finished points are appended
to ``points.jsonl`` as they come, so an interrupted sweep resumes where it stopped.

Each point is keyed by what it measured: the model's sha256, the device profile's content hash and the
edgekit version. A sweep resumed in a folder that holds another model's (or another profile's, or another
version's) points never reuses them: they stay in the file and are ignored, with a note.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from edgekit.apps.profiling.device import DeviceLostError, DeviceProfile
from edgekit.apps.profiling.latency import FRAME_FIELDS
from edgekit.apps.profiling.reach import reach_for
from edgekit.core import calibration
from edgekit.core.artifact import Artifact, sha256_file
from edgekit.errors import EdgekitError, InputError


@dataclass
class Point:
    resolution: tuple[int, int]
    target: str
    delegate: str
    threads: int
    p50_ms: float | None = None
    p90_ms: float | None = None
    peak_memory_mb: float | None = None
    quality: float | None = None
    quality_metric: str = ""
    measured_on: str = ""
    artifact: str = ""
    error: str = ""
    model_sha256: str = ""
    profile_hash: str = ""
    edgekit_version: str = ""
    p95_ms: float | None = None  # where the tool reports p95 and no p90 (LiteRT benchmark_model over adb)
    load_p50_ms: float | None = None  # under the profile's background load (interleaved with the quiet runs)
    load_p90_ms: float | None = None
    load_p95_ms: float | None = None  # under load, where only p95 was measured (benchmark_model over adb)
    load: dict | None = None  # the load measured under: {"cpu": hogs, "memory": bandwidth hogs}
    run_options: dict | None = None  # the session's thread settings (threads, spin, runtime options)
    p90_ci: list[float] | None = None  # 95% confidence intervals of p90 (quiet, under load), ms
    load_p90_ci: list[float] | None = None
    # the whole camera frame (resize, colour, normalize, model, mask upsample; see latency.CameraFrame)
    frame: list[int] | None = None  # camera frame [height, width] timed end to end
    e2e_p50_ms: float | None = None
    e2e_p90_ms: float | None = None
    load_e2e_p50_ms: float | None = None
    load_e2e_p90_ms: float | None = None
    e2e_p90_ci: list[float] | None = None
    load_e2e_p90_ci: list[float] | None = None
    stages_ms: dict | None = None  # p50 per stage of the frame (quiet)
    sustained: dict | None = None  # a sustained run under load (profile --thorough; see sustain.py)
    # task quality: the masks of the whole frame scored on an evaluation set (taskeval.py)
    task_iou: float | None = None
    task_boundary_f: float | None = None
    task_on: str | None = None  # what the evaluation set is ("synthetic composites ...", "labelled folder ...")
    task_set_sha256: str | None = None  # the eval.npz it was scored on (a resumed point on another set is redone)
    model: str = ""  # the model's file name (stem), for reports comparing models
    audit: dict | None = None  # what the point runs as vs what its target intends (core/audit.py: point_audit)

    @property
    def key(self) -> tuple:
        return (tuple(self.resolution), self.target, self.delegate, self.threads)

    @property
    def provenance(self) -> tuple[str, str, str]:
        """What the point measured: (model sha256, device profile content hash, edgekit version)."""
        return (self.model_sha256, self.profile_hash, self.edgekit_version)

    @property
    def ok(self) -> bool:
        return not self.error and self.tail_ms is not None

    @property
    def tail_ms(self) -> float | None:
        """The tail latency the budget is checked against: p90, or p95 where only p95 was measured."""
        return self.p90_ms if self.p90_ms is not None else self.p95_ms

    @property
    def loaded(self) -> bool:
        """Whether the point was also measured under background load."""
        return self.load_p90_ms is not None

    @property
    def rank_quality(self) -> float | None:
        """The quality the choice ranks by: task IoU where it was measured (it compares models), else fidelity
        to the model's own fp32 output."""
        return self.task_iou if self.task_iou is not None else self.quality

    @property
    def rank_metric(self) -> str:
        return f"task IoU on {self.task_on}" if self.task_iou is not None else self.quality_metric

    @property
    def budget_basis(self) -> tuple[str, float | None, list[float] | None]:
        """What the budget is checked against, best first: the whole camera frame's p90 under load, its quiet p90,
        the model's p90 under load, the model's quiet tail. Returns (name, ms, 95% interval)."""
        for name, ms, ci in (("frame p90 under load", self.load_e2e_p90_ms, self.load_e2e_p90_ci),
                             ("frame p90 (quiet)", self.e2e_p90_ms, self.e2e_p90_ci),
                             ("model p90 under load", self.load_p90_ms, self.load_p90_ci),
                             ("model p95 under load", self.load_p95_ms, None),
                             (f"model {self.tail_name} (quiet)", self.tail_ms,
                              self.p90_ci if self.p90_ms is not None else None)):
            if ms is not None:
                return name, ms, ci
        return "nothing measured", None, None

    @property
    def budget_center_ms(self) -> float | None:
        """The p50 measured alongside :attr:`budget_tail_ms` (same run, same load): which of two points is faster
        is a question for the median, far steadier from sweep to sweep than a tail."""
        name = self.budget_basis[0]
        return {"frame p90 under load": self.load_e2e_p50_ms, "frame p90 (quiet)": self.e2e_p50_ms,
                "model p90 under load": self.load_p50_ms, "model p95 under load": self.load_p50_ms}.get(
                    name, self.p50_ms)

    @property
    def budget_tail_ms(self) -> float | None:
        """The latency the budget is checked against (see :attr:`budget_basis`)."""
        return self.budget_basis[1]

    @property
    def budget_tail_ci(self) -> list[float] | None:
        """The 95% confidence interval of :attr:`budget_tail_ms` (None where it was not computed)."""
        return self.budget_basis[2]

    @property
    def degradation(self) -> float | None:
        """How much slower the budget's latency is under load than quiet: the larger of the p50 and p90 ratios,
        of the whole frame where it was timed under load, else of the model alone (None when not measured under
        load). A p50 alone misleads here: on a busy core a short step is either left alone or time-sliced, and
        which one a run of 50 steps saw is a coin toss; the p90 sees the slicing every time."""
        pairs = ((self.load_e2e_p50_ms, self.e2e_p50_ms), (self.load_e2e_p90_ms, self.e2e_p90_ms))
        if self.load_e2e_p90_ms is None:
            pairs = ((self.load_p50_ms, self.p50_ms), (self.load_p90_ms, self.p90_ms))
        ratios = [loaded / quiet for loaded, quiet in pairs if loaded is not None and quiet]
        return max(ratios) if ratios else None

    @property
    def tail_name(self) -> str:
        """What :attr:`tail_ms` is: ``p90`` or ``p95``."""
        return "p90" if self.p90_ms is not None else "p95"

    @property
    def format(self) -> str:
        return self.target.split("-")[0]

    def label(self) -> str:
        h, w = self.resolution
        return f"{self.target} {self.delegate} {self.threads}T {h}x{w}"

    def to_dict(self) -> dict:
        d = asdict(self)
        d["resolution"] = list(self.resolution)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Point:
        """A point from one ``points.jsonl`` line.

        Raises:
            InputError: the line is not a point (unknown or missing fields, wrong types).
        """
        try:
            names = {f.name for f in fields(cls)}
            unknown = set(d) - names
            if unknown:
                raise ValueError(f"unknown field(s) {sorted(unknown)}")
            h, w = d["resolution"]
            p = cls(**{**d, "resolution": (int(h), int(w))})
            if not isinstance(p.threads, int) or not all(isinstance(v, str) for v in (p.target, p.delegate)):
                raise ValueError("target/delegate/threads have the wrong type")
            _check_records(p)
        except (KeyError, TypeError, ValueError) as e:
            raise InputError(f"not a profile point: {e}") from e
        return p


def _count(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _check_records(p: Point) -> None:
    """The nested records a report and an app config read (load, stages, audit, sustained run) have the shape
    edgekit writes: a points file is data, and a wrong shape must be one line, not a traceback later.

    Raises:
        ValueError: naming the field.
    """
    if p.load is not None and not (isinstance(p.load, dict) and all(_count(p.load.get(k)) for k in ("cpu", "memory"))):
        raise ValueError("load must be {cpu: count, memory: count}")
    if p.stages_ms is not None and not (isinstance(p.stages_ms, dict)
                                        and all(isinstance(k, str) and _number(v) for k, v in p.stages_ms.items())):
        raise ValueError("stages_ms must map stage names to milliseconds")
    a = p.audit
    if a is not None:
        ok = isinstance(a, dict) and (a.get("unintended") is None or _count(a.get("unintended")))
        for key in ("deviations", "off_fast_path"):
            v = a.get(key, {}) if ok else None
            ok = ok and isinstance(v, dict) and all(isinstance(k, str) and _count(n) for k, n in v.items())
        ok = ok and all(isinstance(a.get(k, ""), str) for k in ("source", "error"))
        if not ok:
            raise ValueError("audit must be {source, unintended: count or null, deviations: {kind: count}, "
                             "off_fast_path: {op: count}}")
    s = p.sustained
    if s is not None:
        ok = isinstance(s, dict) and _number(s.get("seconds")) and _number(s.get("window_s")) \
            and isinstance(s.get("what"), str) and isinstance(s.get("windows"), list) \
            and all(isinstance(w, dict) and _number(w.get("p90_ms")) for w in s["windows"]) \
            and (s.get("drift_p90") is None or _number(s.get("drift_p90")))
        if not ok:
            raise ValueError("sustained must be {seconds, window_s, what, windows: [{p90_ms}], drift_p90}")


def edgekit_version() -> str:
    from edgekit import __version__

    return __version__


def profile_hash(profile: DeviceProfile) -> str:
    """sha256 of a device profile's content (every field but where it was read from)."""
    d = {k: v for k, v in asdict(profile).items() if k != "path"}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()


def load_points(path: Path, provenance: tuple[str, str, str] | None = None,
                notes: list[str] | None = None, by_model: bool = False) -> dict[tuple, Point]:
    """Points of ``points.jsonl`` by key. With ``provenance``, only points measured for that (model sha256,
    profile hash, edgekit version); the others stay in the file, are ignored and counted in ``notes``, as
    are lines that are not points (a line cut short by an interrupt). ``by_model``: keyed by
    ``(model sha256, *key)``, so several models' points in one file are all kept (latency prediction)."""
    if not path.is_file():
        return {}
    points, bad, foreign = {}, 0, 0
    for ln in path.read_text().splitlines():
        if not ln.strip():
            continue
        try:
            d = json.loads(ln)
            p = Point.from_dict(d if isinstance(d, dict) else {})
        except (ValueError, InputError):
            bad += 1
            continue
        if provenance is not None and p.provenance != provenance:
            foreign += 1
            continue
        points[(p.model_sha256, *p.key) if by_model else p.key] = p
    if notes is not None and foreign:
        notes.append(f"{path}: {foreign} point(s) measured for another model, device profile or edgekit version "
                     "were ignored (kept in the file, not reused)")
    if notes is not None and bad:
        notes.append(f"{path}: {bad} line(s) that are not points were ignored")
    return points


def cached_artifact(model: str | Path, target: str, hw: tuple[int, int], cache: Path) -> Artifact:
    """The artifact for (model, target, resolution), converted once per source hash."""
    from edgekit.core.conversion import convert

    h, w = hw
    folder = cache / sha256_file(model)[:16] / f"{h}x{w}" / target
    with _folder_lock(folder):  # the devices of a farm share the cache: one conversion per folder at a time
        if (folder / "artifact.json").is_file():
            return Artifact.load(folder)
        return convert(model, target, folder, input_shapes={"": (1, 3, h, w)})


_LOCKS: dict[Path, threading.Lock] = {}
_LOCKS_LOCK = threading.Lock()


def _folder_lock(folder: Path) -> threading.Lock:
    with _LOCKS_LOCK:
        return _LOCKS.setdefault(folder.resolve(), threading.Lock())


def sweep(model: str | Path, profile: DeviceProfile, out_dir: Path, cache: Path | None = None,
          progress: Callable[[str, int, int], None] | None = None, notes: list[str] | None = None,
          prune: bool = False, evaluation: Path | None = None) -> list[Point]:
    """Measure every point of ``profile`` for ``model``; returns all points (resumed ones included).

    With ``evaluation`` (an ``eval.npz`` of :mod:`~edgekit.apps.profiling.taskeval`), each point's masks are also
    scored on it (task quality); a resumed point scored on another set, or on none, is measured again.

    With ``prune``, only the points whose predicted latency could make them the choice (or its fallback) are
    measured (see :func:`~edgekit.apps.profiling.predict.pruned_order`); the others are returned unmeasured,
    their error saying why, and a note says how many measurements were saved.

    Only points of ``points.jsonl`` measured for this model, this profile's content and this edgekit
    version are resumed; why others were ignored goes to ``notes``.

    Raises:
        InputError: the model is not a file.
        DeviceError: the device or a runtime the profile needs is missing (before any work).
        DeviceLostError: the device stopped answering mid-sweep (rebooted, connection dropped, a call timed
            out): raised at once, in one line saying how many points finished; they stay in ``points.jsonl``
            and the same call resumes from them.
    """
    model = Path(model)
    if not model.is_file():
        raise InputError(f"model not found: {model}")
    reach = reach_for(profile)
    reach.check(profile)  # fail before any work when something is missing
    custom = {k: v for k, v in profile.load.items() if (k, v) not in (("busy", "auto"), ("memory", 1))}
    if reach.runs_load and not reach.profile_load and custom and profile.load.get("busy") != 0 and notes is not None:
        notes.append(f"{profile.id} is reached over {reach.name}: the device runs edgekit's default load (busy "
                     f"processes = its cores - threads + 1, one streaming memory); the profile's load settings "
                     f"{custom} apply to this machine only")
    if not reach.runs_load and profile.load.get("busy", "auto") != 0 and notes is not None:
        notes.append(f"{profile.id} is reached over {reach.name}: edgekit does not run the background load there "
                     "yet, so its points are measured quiet only and the choice checks the quiet tail latency")
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = cache or out_dir.parent / "artifacts"
    points_file = out_dir / "points.jsonl"
    ident = (sha256_file(model), profile_hash(profile), edgekit_version())
    done = load_points(points_file, ident, notes)
    if evaluation is not None and reach.name != "local":
        raise InputError(f"{profile.id} is reached over {reach.name}: task quality is scored only on this machine")
    eval_sha = sha256_file(evaluation) if evaluation is not None else None
    stale = [k for k, p in done.items() if p.task_set_sha256 != eval_sha]  # scored on another set, or on none
    for k in stale:
        del done[k]
    if stale and notes is not None:
        notes.append(f"{points_file}: {len(stale)} point(s) scored on another evaluation set (or on none, or "
                     "not scored where scores are wanted now) are measured again")
    extra = {"evaluation": evaluation} if evaluation is not None else {}
    own = (cache / ident[0][:16]).resolve()
    strays = [k for k, p in done.items() if p.artifact and own not in Path(p.artifact).resolve().parents]
    for k in strays:  # a resumed point names an artifact outside this model's cache: measure it again
        del done[k]
    if strays and notes is not None:
        notes.append(f"{points_file}: {len(strays)} point(s) naming an artifact outside {own} are measured again")
    if points_file.is_file() and points_file.stat().st_size:
        with points_file.open("rb+") as f:  # a line cut short by an interrupt must not swallow the next point
            f.seek(-1, 2)
            if f.read(1) != b"\n":
                f.write(b"\n")
    plan = [(tuple(hw), t, d, n) for hw in profile.resolutions for t in profile.targets
            for d in profile.delegates_for(t.split("-")[0]) for n in profile.threads]
    counter = {"i": 0}

    def measure(key: tuple) -> Point:
        hw, target, delegate, threads = key
        point = Point(tuple(hw), target, delegate, threads, model_sha256=ident[0], profile_hash=ident[1],
                      edgekit_version=ident[2], model=model.stem)
        if progress:
            progress(point.label(), counter["i"], len(plan))
        counter["i"] += 1
        if point.key in done:
            return done[point.key]
        try:
            art = cached_artifact(model, target, hw, cache)
            point.artifact = str(art.path)
            m = reach.measure(art, delegate, threads, profile, _data(model, ident[0], hw, out_dir), **extra)
            point.p50_ms, point.p90_ms, point.peak_memory_mb = m.p50_ms, m.p90_ms, m.peak_memory_mb
            point.p95_ms = getattr(m, "p95_ms", None)
            point.load_p50_ms, point.load_p90_ms = m.detail.get("load_p50_ms"), m.detail.get("load_p90_ms")
            point.load_p95_ms = m.detail.get("load_p95_ms")
            point.load, point.run_options = m.detail.get("load"), m.detail.get("run_options")
            point.p90_ci, point.load_p90_ci = m.detail.get("p90_ci"), m.detail.get("load_p90_ci")
            for name in FRAME_FIELDS:
                setattr(point, name, m.detail.get(name))
            point.task_set_sha256 = eval_sha
            point.quality, point.quality_metric, point.measured_on = m.quality, m.quality_metric, m.measured_on
            from edgekit.core.audit import point_audit

            point.audit = point_audit(art, delegate, threads, here=reach.name == "local")
            if reach.name == "local":  # the runtime's per-kernel timings, for latency prediction (predict.py)
                from edgekit.apps.profiling.predict import profile_kernels

                profile_kernels(art, point, out_dir, notes)
        except DeviceLostError as e:  # nothing is known about this point: it is not recorded, the sweep stops
            kept = sum(1 for k in done if k in set(plan))
            raise DeviceLostError(f"{profile.id}: the device stopped answering at point {plan.index(key) + 1} of "
                                  f"{len(plan)} ({point.label()}); {kept} of {len(plan)} point(s) finished and are "
                                  f"kept in {points_file}: run the same command again to resume from them ({e})") from e
        except EdgekitError as e:
            point.error = str(e)
        with points_file.open("a") as f:
            f.write(json.dumps(point.to_dict()) + "\n")
        done[point.key] = point
        return point

    if not prune:
        for key in plan:
            measure(key)
    else:
        _pruned(model, profile, plan, done, measure, cache, notes)
    if progress:
        progress("done", len(plan), len(plan))
    return [done[key] for key in plan]


def _pruned(model: Path, profile: DeviceProfile, plan: list[tuple], done: dict, measure, cache: Path,
            notes: list[str] | None) -> None:
    """``--prune``: measure the points :func:`~edgekit.apps.profiling.predict.pruned_order` picks; the others go
    into ``done`` as points that were not measured (their error says why), never into ``points.jsonl``."""
    from edgekit.apps.profiling import predict

    resumed = {k for k in plan if k in done}

    def quality_hint(key):
        try:
            art = cached_artifact(model, key[1], key[0], cache)
        except EdgekitError:
            return None
        return ((art.parity or {}).get("outputs") or [{}])[0].get("iou")

    log = predict.pruned_order(plan, measure, quality_hint, lambda key: predict.vector(
        predict.model_features(model, key[0])), profile.budget_ms, profile.camera)
    newly = sum(1 for k in log.measured if k not in resumed)
    unmeasured = [k for k in plan if k not in done]
    for key in unmeasured:
        hw, target, delegate, threads = key
        done[key] = Point(hw, target, delegate, threads,
                          error=f"not measured (--prune): {log.skipped.get(key, 'not needed for the choice')}")
    if notes is not None:
        notes.append(f"--prune: {newly} point(s) measured, {len(resumed)} resumed, {len(unmeasured)} of {len(plan)} "
                     "not measured (predicted over the budget, or outranked by measured points: each one's error "
                     f"says which): {len(unmeasured)} measurement(s) saved")


def _data(model, model_sha256: str, hw: tuple[int, int], out_dir: Path) -> Path:
    """Inputs and fp32 ONNX Runtime reference outputs of this model at this resolution (made once per model
    sha256, shared by its points)."""
    path = out_dir / "data" / f"{model_sha256[:16]}-{hw[0]}x{hw[1]}.npz"
    if path.is_file():
        return path
    import tempfile

    from edgekit.backends.onnx.session import OrtSession
    from edgekit.core.ingest import load_source

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        src = load_source(model, Path(work), {"": (1, 3, *hw)})
        samples = calibration.samples(src.io, None, n=12, seed=2024)
        ref = src.reference() if src.reference is not None else OrtSession.reference(src)  # a TFLite source: LiteRT
        outs = [ref.run(s) for s in samples]
    arrays = {f"in:{k}": np.concatenate([s[k] for s in samples]) for k in samples[0]}
    arrays.update({f"ref:{k}": np.concatenate([o[k] for o in outs]) for k in outs[0]})
    tmp = path.with_name(f".{path.stem}.edgekit-tmp.npz")
    try:
        np.savez(tmp, **arrays)
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
