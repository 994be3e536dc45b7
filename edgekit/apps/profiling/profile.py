"""``edgekit profile``: sweep a device, choose, write the app config and the report."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.apps.profiling.appconfig import check_config_location, export_config
from edgekit.apps.profiling.choose import Choice, choose
from edgekit.apps.profiling.device import CONFIGS_DIR, DeviceProfile, load_profile
from edgekit.apps.profiling.matrix import BUNDLED_MODEL
from edgekit.apps.profiling.report import html_report, pareto_png
from edgekit.apps.profiling.sweep import Point, sweep


@dataclass
class ProfileResult:
    profile: DeviceProfile
    points: list[Point]
    choice: Choice
    config_path: Path | None
    report_path: Path
    wall_s: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"device": self.profile.id, "budget_ms": self.choice.budget_ms, "why": self.choice.why,
                "chosen": self.choice.chosen.to_dict() if self.choice.chosen else None,
                "fallback": self.choice.fallback.to_dict() if self.choice.fallback else None,
                "pareto_front": [p.to_dict() for p in self.choice.front],
                "points": [p.to_dict() for p in self.points], "config": str(self.config_path or ""),
                "report": str(self.report_path), "wall_s": self.wall_s, "notes": self.notes}


def profile_device(device: str | Path, model: str | Path | None = None, out_dir: str | Path = "out/profile",
                   config_dir: str | Path | None = None,
                   progress: Callable[[str, int, int], None] | None = None,
                   delegate_libs: dict[str, str] | list[str] | None = None, prune: bool = False,
                   thorough: bool = False, sustained_s: float = 30.0, models: list | tuple = (),
                   eval_data: str | Path | None = None, eval_reference: str | Path | None = None) -> ProfileResult:
    """Sweep ``model`` (default: the bundled student) on ``device`` and write config + report.

    Points already in ``OUT/DEVICE/points.jsonl`` are resumed only when they were measured for this model
    (sha256), this device profile (content hash) and this edgekit version; others are ignored with a note.
    With ``prune``, only the points that could be the choice (or its fallback) by their predicted latency are
    measured (:func:`~edgekit.apps.profiling.predict.pruned_order`); a note says how many measurements it saved.
    With ``thorough``, the chosen point and each ladder rung also run ``sustained_s`` seconds under load
    (:mod:`~edgekit.apps.profiling.sustain`). The app config ships only artifacts converted from ``model``.
    When no point fits the budget the report is still written and ``config_path`` is None.

    ``models`` (names from ``edgekit models list`` or paths; else the profile's ``models``, else ``model``) are
    candidates: each is swept, and when there are several (or ``eval_data``/``eval_reference`` is given) every
    point's masks are scored on an evaluation set (:mod:`~edgekit.apps.profiling.taskeval`) and the choice ranks
    by that task quality; the config ships the chosen model, its fallback and ladder from the same model.

    Raises:
        DeviceError: before measuring anything, when the device or a runtime it needs is missing.
        InputError: the profile or the model cannot be used.
        OutputError: the config location holds something that is not edgekit's previous app config.
    """
    from edgekit.core.artifact import sha256_file
    from edgekit.zoo.mediapipe import resolve

    prof = load_profile(device, delegate_libs)  # libraries only from the caller (--delegate-lib), never the file
    if models:
        paths = [resolve(m) for m in models]
    elif prof.models:
        paths = [resolve(m, allow_path=False) for m in prof.models]  # a profile names models, never files
    else:
        paths = [Path(model or BUNDLED_MODEL)]
    out = Path(out_dir) / prof.id
    notes: list[str] = []
    by_sha: dict[str, Path] = {}
    for p in paths:  # the same model given twice (by name and by path) is swept once
        by_sha.setdefault(sha256_file(p), p)
    if len(by_sha) < len(paths):
        notes.append(f"{len(paths) - len(by_sha)} model(s) given twice were swept once")
    paths = list(by_sha.values())
    config_path = Path(config_dir or CONFIGS_DIR) / f"{prof.id}.json"
    check_config_location(config_path)  # refuse a foreign folder before sweeping, not after
    evaluation = _evaluation(paths, eval_data, eval_reference, out, notes, prof)
    t0 = time.perf_counter()
    points = []
    for sha, path in by_sha.items():
        points += sweep(path, prof, out if len(paths) == 1 else out / f"{path.stem}-{sha[:8]}",
                        cache=Path(out_dir) / "artifacts", progress=progress, notes=notes, prune=prune,
                        evaluation=evaluation)
    wall = time.perf_counter() - t0
    choice = choose(points, prof.budget_ms, prof.camera, prof.max_degradation, prof.targets)
    front, models_line = choice.front, _models_line(points, prof, by_sha) if len(paths) > 1 else ""
    if len(paths) > 1 and choice.chosen is not None:  # a config ships one model: its fallback and ladder too
        choice = choose([p for p in points if p.model_sha256 == choice.chosen.model_sha256], prof.budget_ms,
                        prof.camera, prof.max_degradation, prof.targets)
    if choice.contested is not None:  # within the noise of its runner-up: measure both again, interleaved
        from edgekit.apps.profiling.runoff import runoff

        mine = [p for p in points if p.model_sha256 == choice.chosen.model_sha256]
        again = runoff(choice, mine, prof, by_sha[choice.chosen.model_sha256], out)
        if again is choice:
            notes.append(f"the choice is within the noise of {choice.contested.label()}; {prof.id} is not this "
                         "machine, so no run-off measured them again")
        choice = again
    model = by_sha[choice.chosen.model_sha256] if choice.chosen else paths[0]
    if models_line:
        choice.front = front
        choice.why = f"{models_line}; chose {model.stem}: {choice.why}"
    if thorough:
        from edgekit.apps.profiling.sustain import sustain_choice

        notes += sustain_choice(choice, prof, sustained_s, progress)
    medians = {(q.model_sha256, q.key): q for q in choice.remeasured}  # the report shows what the choice stands on
    shown = [medians.get((q.model_sha256, q.key), q) for q in points]
    png = pareto_png(shown, choice, out / "pareto.png", f"{prof.id}: {model.name}")
    report = html_report(prof, shown, choice, png, out / "report.html", wall, notes)
    written = None
    if choice.chosen is not None:
        written = export_config(prof, choice, config_path, model_sha256=sha256_file(model))
    return ProfileResult(prof, points, choice, written, report, wall, notes)


def _evaluation(paths: list[Path], eval_data, eval_reference, out: Path, notes: list[str],
                prof: DeviceProfile) -> Path | None:
    """The evaluation set's ``eval.npz`` when task quality is wanted (several models, or asked for).

    Raises:
        InputError: task quality is wanted for a device that is not this machine (it is scored where the
            artifacts run, and a remote device returns no outputs to score).
    """
    if len(paths) < 2 and eval_data is None and eval_reference is None:
        return None
    from edgekit.apps.profiling import taskeval
    from edgekit.apps.profiling.reach import reach_for
    from edgekit.errors import InputError

    if reach_for(prof).name != "local":
        raise InputError(f"{prof.id} is reached over {reach_for(prof).name}: comparing models by task quality "
                         "(several --model, --eval-data, --eval-reference) needs the device to be this machine; "
                         "choose the model on this machine, then sweep the device with that one model")
    ev = taskeval.build(eval_data, eval_reference)
    out.mkdir(parents=True, exist_ok=True)
    notes.append(f"quality is task quality: mask IoU (and boundary F) of the whole frame's mask on {ev.label}")
    return ev.save(out / "eval.npz")


def _models_line(points: list[Point], prof: DeviceProfile, by_sha: dict[str, Path]) -> str:
    """Each model's best fitting point, for the ``why`` of a choice among several models."""
    from edgekit.apps.profiling.choose import _q

    best = []
    for sha, path in by_sha.items():
        own = choose([p for p in points if p.model_sha256 == sha], prof.budget_ms, prof.camera,
                     prof.max_degradation, prof.targets).chosen
        best.append(f"{path.stem}: " + (f"{own.label()} {own.rank_metric.split(' on ')[0]} {_q(own.rank_quality)}"
                                        if own else "nothing fits"))
    return f"{len(by_sha)} models compared ({'; '.join(best)})"
