"""The app config a device ships (``profiles/configs/DEVICE.json``, schema ``app-config``).

An app config is a file other people are handed, so it is data to verify, not to trust: it names every file
it will load (the chosen artifact's and the fallback's, ``artifact.json`` included) with its sha256, every
path relative and inside the config's folder, and :func:`load_config` checks all of it before any runtime
opens anything. Its artifacts are shipped in ``DEVICE/`` beside ``DEVICE.json``; :func:`export_config`
writes both whole or not at all, and replaces only its own previous output.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
import tempfile
from pathlib import Path

from edgekit.apps.profiling.choose import Choice
from edgekit.apps.profiling.device import DeviceProfile
from edgekit.apps.profiling.latency import FRAME_FIELDS
from edgekit.apps.profiling.sweep import Point
from edgekit.core import interrupts
from edgekit.core.artifact import MANIFEST, Artifact
from edgekit.core.datafiles import validate_against
from edgekit.core.files import apply_umask, inside, sha256_file, verify_sha256, write_json_atomic
from edgekit.errors import InputError, OutputError

SCHEMA_VERSION = 2
#: marks ``DEVICE/`` beside ``DEVICE.json`` as written by :func:`export_config` (so it may be replaced)
MARKER = ".edgekit-app-config"


def artifact_files(folder: Path) -> dict[str, str]:
    """Every file an artifact folder's session may load, relative to the folder, with its sha256:
    ``artifact.json``, the model files it lists and its stored reference, if any.

    Raises:
        InputError: the folder is not a loadable artifact.
    """
    art = Artifact.load(folder)
    rels = [MANIFEST, *art.files.values()] + ([art.reference] if art.reference else [])
    return {rel: sha256_file(inside(folder, rel, f"artifact {folder}")) for rel in dict.fromkeys(rels)}


def _entry(p: Point, rel: str, folder: Path) -> dict:
    art = Artifact.load(folder)
    # the delegate's name only: a library path (given to profile on the command line) is never written in a file
    return {"target": p.target, "runtime": art.target.format, "delegate": p.delegate.partition("=")[0],
            "threads": p.threads,
            "resolution": [int(p.resolution[0]), int(p.resolution[1])], "artifact": rel,
            "files": artifact_files(folder), "p50_ms": round(p.p50_ms, 3), f"{p.tail_name}_ms": round(p.tail_ms, 3),
            "quality": None if p.quality is None else round(p.quality, 5),
            **({"load_p50_ms": round(p.load_p50_ms, 3), "load_p90_ms": round(p.load_p90_ms, 3), "load": p.load}
               if p.loaded else {}),
            **({"load_p50_ms": round(p.load_p50_ms, 3), "load_p95_ms": round(p.load_p95_ms, 3), "load": p.load}
               if p.load_p95_ms is not None and not p.loaded else {}),
            **({"run_options": p.run_options} if p.run_options else {}),
            **({"audit": p.audit} if p.audit else {}),
            **_frame_entry(p)}


def _frame_entry(p: Point) -> dict:
    """The whole camera frame's numbers of a point (where they were measured) and what its budget was checked
    against."""
    d = {name: (round(v, 3) if isinstance(v, float) else v) for name in FRAME_FIELDS
         if (v := getattr(p, name)) is not None and not name.endswith("_ci")}
    basis, ms, _ = p.budget_basis
    if ms is not None:
        d["budget_basis"] = {"what": basis, "ms": round(ms, 3)}
    if p.degradation is not None:
        d["degradation"] = round(p.degradation, 3)
    if p.sustained:
        d["sustained"] = p.sustained
    return d


def _is_own_folder(folder: Path) -> bool:
    """``DEVICE/`` may be replaced when it holds nothing but artifact folders (and the marker edgekit leaves
    there; configs written before the marker have none): a file of the user's put there keeps it."""
    entries = [e for e in folder.iterdir() if e.name != MARKER]
    return all(e.is_dir() and not e.is_symlink() and (e / MANIFEST).is_file() for e in entries)


def _is_app_config(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"schema_version", "device", "runtime"} <= set(data)


def check_config_location(config_path: Path) -> None:
    """Refuse (before any work) a config path whose ``DEVICE.json`` or ``DEVICE/`` is not edgekit's.

    Raises:
        OutputError: naming what is there.
    """
    _check_replaceable(Path(config_path), Path(config_path).with_suffix(""))


def _check_replaceable(config_path: Path, folder: Path) -> None:
    if config_path.is_symlink() or (config_path.exists() and not (config_path.is_file()
                                                                  and _is_app_config(config_path))):
        raise OutputError(f"{config_path} exists and is not an edgekit app config; refusing to replace it "
                          "(choose another --config-dir)")
    if folder.is_symlink() or (folder.exists() and not (folder.is_dir() and _is_own_folder(folder))):
        raise OutputError(f"{folder} exists and is not the artifact folder of an edgekit app config; refusing "
                          "to replace it (choose another --config-dir)")


def export_config(profile: DeviceProfile, choice: Choice, config_path: Path, model_sha256: str | None = None) -> Path:
    """Write the app config and ship the chosen (and fallback) artifacts in ``DEVICE/`` beside it.

    Both appear whole or not at all (staged beside, then renamed); an existing ``DEVICE.json``/``DEVICE/``
    is replaced only when it is edgekit's own previous output. With ``model_sha256`` every shipped artifact
    must have been converted from that model.

    Raises:
        InputError: nothing was chosen, or a chosen artifact is another model's.
        OutputError: the config or its folder exists and is not edgekit's, or cannot be written.
    """
    if choice.chosen is None:
        raise InputError(f"no app config for {profile.id}: {choice.why}")
    config_path = Path(config_path)
    folder = config_path.with_suffix("")
    points = [p for p in (choice.chosen, choice.fallback) if p is not None]
    for p in points + [p for p, _ in choice.ladder]:
        source = Artifact.load(p.artifact).source.get("sha256")
        if model_sha256 is not None and source != model_sha256:
            raise InputError(f"the artifact for {p.label()} ({p.artifact}) was converted from another model "
                             f"(sha256 {str(source)[:12]}, asked for {model_sha256[:12]}); refusing to ship it")
    try:
        config_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OutputError(f"cannot write to {config_path.parent}: {e.strerror or e}") from e
    _check_replaceable(config_path, folder)
    try:
        staging = Path(tempfile.mkdtemp(dir=config_path.parent, prefix=f".{folder.name}.edgekit-tmp-"))
    except OSError as e:
        raise OutputError(f"cannot write to {config_path.parent}: {e.strerror or e}") from e
    old = folder.with_name(f".{folder.name}.edgekit-old-{os.getpid()}")
    moved = False
    try:
        apply_umask(staging, directory=True)
        (staging / MARKER).write_text(json.dumps({"config": config_path.name}) + "\n")
        rels = []
        for p in points:
            h, w = p.resolution
            name = f"{p.target}-{h}x{w}"
            if rels and rels[0][1] == name:  # the fallback is the same artifact, run another way
                name += "-fallback"
            shutil.copytree(p.artifact, staging / name)
            rels.append((p, name))
        entries = {role: _entry(p, f"{folder.name}/{name}", staging / name)
                   for role, (p, name) in zip(("runtime", "fallback"), rels)}
        ladder = []
        for p, reason in choice.ladder:  # a rung running a shipped artifact another way shares its folder
            name = next((n for q, n in rels if q.artifact == p.artifact), None)
            if name is None:
                h, w = p.resolution
                name = f"{p.target}-{h}x{w}"
                if any(n == name for _, n in rels):
                    name += f"-rung{len(ladder) + 1}"
                shutil.copytree(p.artifact, staging / name)
                rels.append((p, name))
            ladder.append({**_entry(p, f"{folder.name}/{name}", staging / name), "reason": reason})
        config = build_config(profile, choice, entries["runtime"], entries.get("fallback"), ladder)
        interrupts.check()  # a swallowed Ctrl-C must not let the config be published
        if folder.exists():
            os.replace(folder, old)
            moved = True
        os.replace(staging, folder)
        try:
            write_json_atomic(config_path, config)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
    except BaseException as e:
        shutil.rmtree(staging, ignore_errors=True)
        if moved and not folder.exists():
            os.replace(old, folder)
        if isinstance(e, OSError):
            raise OutputError(f"cannot write the app config {config_path}: {e.strerror or e}") from e
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)
    return config_path


def build_config(profile: DeviceProfile, choice: Choice, runtime: dict, fallback: dict | None,
                 ladder: list[dict] | None = None) -> dict:
    """The config dict for the chosen point, given its runtime, fallback and ladder entries (validated against
    the published schema).

    Raises:
        InputError: the result does not validate.
    """
    p = choice.chosen
    art = Artifact.load(p.artifact)
    src_in, native_in = art.source_io.inputs[0], art.io.inputs[0]
    h, w = p.resolution
    config = {
        "schema_version": SCHEMA_VERSION,
        "device": profile.id,
        "generated": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "model": {"name": Path(str(art.source.get("path", "model"))).stem, "source_sha256": art.source["sha256"],
                  "licence": _licence(art.source["sha256"]),
                  **({"task_quality": {"iou": round(p.task_iou, 5), "boundary_f": round(p.task_boundary_f, 5),
                                       "on": p.task_on}} if p.task_iou is not None else {})},
        "input": {"name": native_in.name, "shape": [int(d) for d in native_in.shape], "layout": native_in.layout,
                  "dtype": native_in.dtype, "height": h, "width": w},
        "runtime": runtime,
        "fallback": fallback,
        "ladder": ladder or [],
        "measured": {"p50_ms": round(p.p50_ms, 3), f"{p.tail_name}_ms": round(p.tail_ms, 3),  # p95 over adb
                     "budget_ms": round(choice.budget_ms, 3), "peak_memory_mb": p.peak_memory_mb,
                     "quality": p.quality, "quality_metric": p.quality_metric, "measured_on": p.measured_on,
                     **_frame_entry(p)},
        "preprocessing": {"color": src_in.color, "value_range": list(src_in.value_range), "mean": list(src_in.mean),
                          "std": list(src_in.std), "resize": f"resize the camera frame to {w}x{h} (area)"},
        "why": choice.why + _audit_why(runtime, fallback),
    }
    validate_against(config, "app-config", f"app config for {profile.id}")
    return config


def _audit_why(runtime: dict, fallback: dict | None) -> str:
    """What the config must say when a shipped point runs otherwise than its target intends (execution audit)."""
    from edgekit.core.audit import describe_point_audit

    said = [f" The {role} ({entry['target']}) does not run as intended: {describe_point_audit(entry['audit'])}."
            for role, entry in (("runtime", runtime), ("fallback", fallback))
            if entry and (entry.get("audit") or {}).get("unintended")]
    return "".join(said)


def _licence(source_sha256: str) -> str:
    """The licence of a model edgekit bundles or fetches (``edgekit models list``), found by its sha256."""
    from edgekit.zoo.mediapipe import catalogue

    for row in catalogue():
        if row["path"] and sha256_file(row["path"]) == source_sha256:
            return row["licence"]
    return "unknown (not a model edgekit bundles or fetches)"


def write_config(config: dict, path: Path) -> Path:
    """Write ``config`` to ``path`` atomically (whole or not at all)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_json_atomic(path, config)


def _check_entry(config: dict, role: str, base: Path, what: str, entry: dict | None = None) -> None:
    """Verify one runtime entry (``config[role]``, or ``entry`` named ``role``): its folder inside the config's,
    every listed file's sha256, and that its ``artifact.json`` loads nothing the config does not list."""
    entry = config[role] if entry is None else entry
    folder = inside(base, entry["artifact"], f"{what}: {role}.artifact")
    files = entry["files"]
    if MANIFEST not in files:
        raise InputError(f"{what}: {role}.files does not list {MANIFEST}")
    for rel, sha in files.items():
        verify_sha256(inside(folder, rel, f"{what}: {role}.files"), sha, f"{what}: {role} artifact")
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        listed = {v["path"]: v.get("sha256") for v in manifest["files"].values()}
        if manifest.get("reference"):
            listed[manifest["reference"]["path"]] = manifest["reference"].get("sha256")
        target, fmt = manifest["target"], manifest["format"]
        source_sha = manifest["source"]["sha256"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{what}: {role} {MANIFEST} is malformed: {e}") from e
    for rel, sha in listed.items():
        inside(folder, rel, f"{what}: {role} {MANIFEST}")
        if files.get(rel) != sha:
            raise InputError(f"{what}: {role} {MANIFEST} names '{rel}', which the app config does not list "
                             "with that sha256; refusing to load it")
    if (target, fmt) != (entry["target"], entry["runtime"]):
        raise InputError(f"{what}: {role} says {entry['target']} on {entry['runtime']}, its artifact is {target}")
    if source_sha != config["model"]["source_sha256"]:
        raise InputError(f"{what}: the {role} artifact was converted from another model (source sha256 "
                         f"{str(source_sha)[:12]}, the config's model is {config['model']['source_sha256'][:12]})")
    entry["artifact_dir"] = str(folder)


def load_config(path: str | Path) -> dict:
    """Read and verify an app config before anything of it is opened.

    It must validate against the schema; every artifact path and file path must be relative and stay inside
    the config's folder; every file listed (primary and fallback, ``artifact.json`` included) must match its
    sha256; each ``artifact.json`` may name only files the config lists with the same sha256; each artifact
    must be the target the config says, converted from the config's model; the same for every rung of its
    ``ladder``. The returned dict gains ``artifact_dir`` (absolute) in ``runtime``, ``fallback``, each rung and
    ``model`` (the runtime's).

    Raises:
        InputError: naming the first field or file that fails.
    """
    p = Path(path)
    what = f"app config {p.name}"
    try:
        config = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"cannot read app config {p}: {e}") from e
    if not isinstance(config, dict):
        raise InputError(f"{what} is not a JSON object")
    if config.get("schema_version") != SCHEMA_VERSION:
        raise InputError(f"{what} has schema_version {config.get('schema_version')!r}; this edgekit reads "
                         f"{SCHEMA_VERSION} (re-run `edgekit profile` to write a config that hashes every file)")
    validate_against(config, "app-config", what)
    base = p.parent
    for role in ("runtime", "fallback"):
        if config[role] is not None and "=" in config[role]["delegate"]:  # code to load, named by a file
            raise InputError(f"{what}: {role}.delegate '{config[role]['delegate']}' names a library; a delegate "
                             "library is loaded only when given on the command line, never from a file")
        if config[role] is not None:
            _check_entry(config, role, base, what)
    for i, rung in enumerate(config.get("ladder", [])):  # every rung is loaded by the same rules
        if "=" in rung["delegate"]:
            raise InputError(f"{what}: ladder[{i}].delegate '{rung['delegate']}' names a library; a delegate "
                             "library is loaded only when given on the command line, never from a file")
        _check_entry(config, f"ladder[{i}]", base, what, rung)
    config["model"]["artifact_dir"] = config["runtime"]["artifact_dir"]
    return config
