"""The sweep: for a model and a device profile, convert what is needed (reusing artifacts by source
hash), then measure every resolution x target x delegate x threads point. Finished points are appended
to ``points.jsonl`` as they come, so an interrupted sweep resumes where it stopped."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from edgekit import calibration
from edgekit.artifact import Artifact, sha256_file
from edgekit.errors import EdgekitError
from edgekit.profiling.device import DeviceProfile
from edgekit.profiling.reach import reach_for


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

    @property
    def key(self) -> tuple:
        return (tuple(self.resolution), self.target, self.delegate, self.threads)

    @property
    def ok(self) -> bool:
        return not self.error and self.p90_ms is not None

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
        return cls(**{**d, "resolution": tuple(d["resolution"])})


def load_points(path: Path) -> dict[tuple, Point]:
    if not path.is_file():
        return {}
    points = [Point.from_dict(json.loads(ln)) for ln in path.read_text().splitlines() if ln.strip()]
    return {p.key: p for p in points}


def cached_artifact(model: str | Path, target: str, hw: tuple[int, int], cache: Path) -> Artifact:
    """The artifact for (model, target, resolution), converted once per source hash."""
    from edgekit.conversion import convert

    h, w = hw
    folder = cache / sha256_file(model)[:16] / f"{h}x{w}" / target
    if (folder / "artifact.json").is_file():
        return Artifact.load(folder)
    return convert(model, target, folder, input_shapes={"": (1, 3, h, w)})


def sweep(model: str | Path, profile: DeviceProfile, out_dir: Path, cache: Path | None = None,
          progress: Callable[[str, int, int], None] | None = None) -> list[Point]:
    """Measure every point of ``profile`` for ``model``; returns all points (resumed ones included)."""
    reach = reach_for(profile)
    reach.check(profile)  # fail before any work when something is missing
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = cache or out_dir.parent / "artifacts"
    points_file = out_dir / "points.jsonl"
    done = load_points(points_file)
    plan = [(hw, t, d, n) for hw in profile.resolutions for t in profile.targets
            for d in profile.delegates_for(t.split("-")[0]) for n in profile.threads]
    for i, (hw, target, delegate, threads) in enumerate(plan):
        point = Point(tuple(hw), target, delegate, threads)
        if progress:
            progress(point.label(), i, len(plan))
        if point.key in done:
            continue
        try:
            art = cached_artifact(model, target, hw, cache)
            point.artifact = str(art.path)
            m = reach.measure(art, delegate, threads, profile, _data(model, art, hw, out_dir))
            point.p50_ms, point.p90_ms, point.peak_memory_mb = m.p50_ms, m.p90_ms, m.peak_memory_mb
            point.quality, point.quality_metric, point.measured_on = m.quality, m.quality_metric, m.measured_on
        except EdgekitError as e:
            point.error = str(e)
        with points_file.open("a") as f:
            f.write(json.dumps(point.to_dict()) + "\n")
        done[point.key] = point
    if progress:
        progress("done", len(plan), len(plan))
    return [done[(tuple(hw), t, d, n)] for hw, t, d, n in plan]


def _data(model, art: Artifact, hw: tuple[int, int], out_dir: Path) -> Path:
    """Inputs and fp32 ONNX Runtime reference outputs at this resolution (made once, shared by points)."""
    path = out_dir / "data" / f"{hw[0]}x{hw[1]}.npz"
    if path.is_file():
        return path
    import tempfile

    from edgekit.ingest import load_source
    from edgekit.runtimes.onnxruntime import OrtSession

    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as work:
        src = load_source(model, Path(work), {"": (1, 3, *hw)})
        samples = calibration.samples(src.io, None, n=12, seed=2024)
        ref = OrtSession.reference(src)
        outs = [ref.run(s) for s in samples]
    arrays = {f"in:{k}": np.concatenate([s[k] for s in samples]) for k in samples[0]}
    arrays.update({f"ref:{k}": np.concatenate([o[k] for o in outs]) for k in outs[0]})
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
    return path
