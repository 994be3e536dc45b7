"""The app config a device ships (``profiles/configs/DEVICE.json``, schema ``app-config``)."""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path

from edgekit.artifact import Artifact
from edgekit.errors import InputError
from edgekit.profiling.choose import Choice
from edgekit.profiling.device import DeviceProfile, validate_against
from edgekit.profiling.sweep import Point

SCHEMA_VERSION = 1


def _runtime_entry(p: Point, artifact: str) -> dict:
    art = Artifact.load(p.artifact)
    return {"target": p.target, "runtime": art.target.format, "delegate": p.delegate, "threads": p.threads,
            "artifact": artifact, "sha256": _sha(art.file()), "p50_ms": round(p.p50_ms, 3),
            "p90_ms": round(p.p90_ms, 3), "quality": None if p.quality is None else round(p.quality, 5)}


def _ship(p: Point, config_path: Path) -> str:
    """Copy a point's artifact next to the config; return its path relative to the config's folder."""
    h, w = p.resolution
    dest = config_path.with_suffix("") / f"{p.target}-{h}x{w}"
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(p.artifact, dest)
    return os.path.relpath(dest, config_path.parent)


def export_config(profile: DeviceProfile, choice: Choice, config_path: Path) -> Path:
    """Write the app config and ship the chosen (and fallback) artifacts beside it."""
    if choice.chosen is None:
        raise InputError(f"no app config for {profile.id}: {choice.why}")
    config_path.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(config_path.with_suffix(""), ignore_errors=True)  # artifacts of an earlier choice
    chosen = _ship(choice.chosen, config_path)
    fallback = _ship(choice.fallback, config_path) if choice.fallback else None
    return write_config(build_config(profile, choice, chosen, fallback), config_path)


def build_config(profile: DeviceProfile, choice: Choice, chosen_path: str, fallback_path: str | None) -> dict:
    """The config dict for the chosen point (validated against the published schema)."""
    p = choice.chosen
    art = Artifact.load(p.artifact)
    src_in, native_in = art.source_io.inputs[0], art.io.inputs[0]
    h, w = p.resolution
    config = {
        "schema_version": SCHEMA_VERSION,
        "device": profile.id,
        "generated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": {"name": Path(art.source["path"]).stem, "source_sha256": art.source["sha256"],
                  "artifact": chosen_path,
                  "files": {role: {"path": f, "sha256": _sha(art.path / f)} for role, f in art.files.items()}},
        "input": {"name": native_in.name, "shape": [int(d) for d in native_in.shape], "layout": native_in.layout,
                  "dtype": native_in.dtype, "height": h, "width": w},
        "runtime": _runtime_entry(p, chosen_path),
        "fallback": _runtime_entry(choice.fallback, fallback_path) if choice.fallback else None,
        "measured": {"p50_ms": round(p.p50_ms, 3), "p90_ms": round(p.p90_ms, 3),
                     "budget_ms": round(choice.budget_ms, 3), "peak_memory_mb": p.peak_memory_mb,
                     "quality": p.quality, "quality_metric": p.quality_metric, "measured_on": p.measured_on},
        "preprocessing": {"color": src_in.color, "value_range": list(src_in.value_range), "mean": list(src_in.mean),
                          "std": list(src_in.std), "resize": f"resize the camera frame to {w}x{h} (area)"},
        "why": choice.why,
    }
    validate_against(config, "app-config", f"app config for {profile.id}")
    return config


def _sha(path: Path) -> str:
    from edgekit.artifact import sha256_file

    return sha256_file(path)


def write_config(config: dict, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
    return path


def load_config(path: str | Path) -> dict:
    """Read an app config; it must validate and its model files must match their sha256."""
    p = Path(path)
    try:
        config = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read app config {p}: {e}") from e
    validate_against(config, "app-config", f"app config {p.name}")
    for role, f in config["model"]["files"].items():
        file = p.parent / config["model"]["artifact"] / f["path"]
        if not file.exists():
            raise InputError(f"app config {p.name}: model {role} file {file} does not exist")
        if _sha(file) != f["sha256"]:
            raise InputError(f"app config {p.name}: model {role} file {file} does not match its sha256 "
                             "(the artifact changed since the config was written)")
    config["model"]["artifact_dir"] = str(p.parent / config["model"]["artifact"])
    return config
