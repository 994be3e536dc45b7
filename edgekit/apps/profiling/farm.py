"""A device farm: ``edgekit profile --device A --device B ...`` (or ``--farm FARM.yaml``) sweeps several devices at
once, one worker thread per device (the measuring itself runs in worker processes, over ssh or over adb).

Each device is an ordinary :func:`~edgekit.apps.profiling.profile.profile_device` run: its points go to
``OUT/DEVICE/points.jsonl`` and resume on their own, it gets its own report and its own app config
(``CONFIG_DIR/DEVICE.json``). A device that fails (unreachable, lost mid-sweep, a runtime missing) is reported
with its one-line error and never takes the others' results with it; its finished points stay for a resume.
One combined report, ``OUT/farm.json`` and ``OUT/farm.html``, lists every device's outcome.

A farm file (validated against ``farm.schema.json``) lists devices as bundled profile ids or as profile files
relative to the farm file's folder (never outside it), and optionally the model (also inside that folder).
"""

from __future__ import annotations

import html
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.apps.profiling.device import load_profile
from edgekit.errors import EdgekitError, InputError

MAX_DEVICES = 64


class FarmError(EdgekitError):
    """Some devices of a farm failed; the exit code is the first failure's (7 for a device)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass
class DeviceOutcome:
    """One device of a farm: its result, or the one-line error that stopped it."""

    device: str                 # the profile id (or what was given, when the profile could not be read)
    given: str                  # what the user named: an id or a path
    result: object | None = None  # ProfileResult
    error: str = ""
    exit_code: int = 0
    started: float = 0.0        # seconds since the farm started
    finished: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.error

    def to_dict(self) -> dict:
        d = {"device": self.device, "given": self.given, "ok": self.ok, "error": self.error,
             "exit_code": self.exit_code, "started_s": round(self.started, 3), "finished_s": round(self.finished, 3)}
        if self.result is not None:
            r = self.result.to_dict()
            d.update({k: r[k] for k in ("budget_ms", "why", "chosen", "fallback", "config", "report", "wall_s",
                                        "notes")})
            d["points"] = len(r["points"])
            d["points_ok"] = sum(1 for p in self.result.points if p.ok)
        return d


@dataclass
class FarmResult:
    outcomes: list[DeviceOutcome]
    report_json: Path
    report_html: Path
    wall_s: float
    notes: list[str] = field(default_factory=list)

    @property
    def failed(self) -> list[DeviceOutcome]:
        return [o for o in self.outcomes if not o.ok]

    def to_dict(self) -> dict:
        return {"devices": [o.to_dict() for o in self.outcomes], "failed": [o.device for o in self.failed],
                "report": str(self.report_html), "wall_s": round(self.wall_s, 3), "notes": self.notes}


def load_farm(path: str | Path) -> tuple[list[str], Path | None]:
    """The devices (ids or absolute profile paths) and the model (or None) a farm file names.

    Raises:
        InputError: the file is not valid YAML, does not match ``farm.schema.json``, or names a path that
            leaves its folder or is not a file.
    """
    from edgekit.core.datafiles import read_yaml, validate_against
    from edgekit.core.files import inside

    p = Path(path)
    if not p.is_file():
        raise InputError(f"no farm file {p}")
    raw = read_yaml(p, "farm file")
    validate_against(raw, "farm", f"farm file {p.name}")
    devices = []
    for d in raw["devices"]:
        if Path(d).suffix in (".yaml", ".yml", ".json"):
            f = inside(p.parent, d, f"farm file {p.name}")
            if not f.is_file():
                raise InputError(f"farm file {p.name}: device profile {d} is not a file")
            devices.append(str(f))
        else:
            devices.append(d)
    model = None
    if raw.get("model"):
        model = inside(p.parent, raw["model"], f"farm file {p.name}")
        if not model.is_file():
            raise InputError(f"farm file {p.name}: model {raw['model']} is not a file")
    return devices, model


def _libs_for(device: str, libs: dict[str, str]) -> dict[str, str]:
    """The delegate libraries ``device``'s profile uses (a farm's --delegate-lib goes to each device using it)."""
    if not libs:
        return {}
    prof = load_profile(device)
    used = {d for names in prof.delegates.values() for d in names}
    return {unit: lib for unit, lib in libs.items() if unit in used}


def profile_farm(devices: list[str | Path], model: str | Path | None = None, out_dir: str | Path = "out/profile",
                 config_dir: str | Path | None = None, delegate_libs: dict[str, str] | list[str] | None = None,
                 progress: Callable[[str, str, int, int], None] | None = None, prune: bool = False) -> FarmResult:
    """Sweep every device in ``devices`` at once (one worker per device); write ``OUT/farm.json`` and
    ``OUT/farm.html``. A failing device is recorded with its error; the others carry on.

    Raises:
        InputError: no devices, too many, a profile cannot be read, two devices share an id, or a
            ``delegate_libs`` unit no device uses (all before anything is measured).
    """
    from edgekit.apps.profiling.device import parse_delegate_libs
    from edgekit.apps.profiling.profile import profile_device

    if not devices:
        raise InputError("a farm needs at least one device")
    if len(devices) > MAX_DEVICES:
        raise InputError(f"a farm of {len(devices)} devices: at most {MAX_DEVICES}")
    libs = parse_delegate_libs(delegate_libs)
    ids: dict[str, str] = {}
    per_device_libs = []
    for d in devices:
        prof = load_profile(d)  # every profile is read (and validated) before anything is measured
        if prof.id in ids:
            raise InputError(f"two devices of the farm have the id '{prof.id}' ({ids[prof.id]} and {d}); each "
                             "device's points, report and app config are named by its id")
        ids[prof.id] = str(d)
        per_device_libs.append(_libs_for(d, libs))
    unused = sorted(set(libs) - {u for m in per_device_libs for u in m})
    if unused:
        raise InputError(f"--delegate-lib {', '.join(unused)}: no device of the farm uses such a delegate")
    out = Path(out_dir)
    t0 = time.perf_counter()
    outcomes = [DeviceOutcome(pid, str(d)) for pid, d in zip(ids, devices, strict=True)]
    lock = threading.Lock()

    def one(i: int) -> None:
        o = outcomes[i]
        o.started = time.perf_counter() - t0

        def step(label: str, k: int, n: int) -> None:
            if progress:
                with lock:
                    progress(o.device, label, k, n)

        try:
            o.result = profile_device(devices[i], model, out, config_dir, progress=step,
                                      delegate_libs=per_device_libs[i], prune=prune)
        except EdgekitError as e:
            o.error, o.exit_code = " ".join(str(e).split()), e.exit_code
        finally:
            o.finished = time.perf_counter() - t0

    with ThreadPoolExecutor(max_workers=len(devices), thread_name_prefix="edgekit-farm") as pool:
        for f in [pool.submit(one, i) for i in range(len(devices))]:
            f.result()  # a bug (not an EdgekitError) in one worker is raised here, after the others finished
    wall = time.perf_counter() - t0
    notes = []
    here = ("127.0.0.1", "localhost", "::1")
    hosts = [o.device for o in outcomes if o.result is not None and (o.result.profile.reach == "local" or (
        o.result.profile.reach == "ssh" and str(o.result.profile.ssh.get("host")) in here))]
    if len(hosts) > 1:
        notes.append(f"{', '.join(hosts)} are all measured on this machine at the same time: their latencies "
                     "include each other's load")
    result = FarmResult(outcomes, out / "farm.json", out / "farm.html", wall, notes)
    _write_reports(result)
    return result


def _write_reports(result: FarmResult) -> None:
    from edgekit.core.files import write_atomic, write_json_atomic

    result.report_json.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(result.report_json, result.to_dict())
    rows = []
    for o in result.outcomes:
        d = o.to_dict()
        chosen = d.get("chosen") or {}
        what = (f"{chosen.get('target')} {chosen.get('delegate')} {chosen.get('threads')}T "
                f"{'x'.join(map(str, chosen.get('resolution', [])))}" if chosen else "-")
        status = "ok" if o.ok else f"failed (exit {o.exit_code})"
        report = (f'<a href="{html.escape(str(Path(d["report"]).relative_to(result.report_html.parent)))}">report'
                  "</a>" if d.get("report") and Path(d["report"]).is_relative_to(result.report_html.parent) else "")
        rows.append("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in (
            o.device, status, f"{d.get('points_ok', 0)}/{d.get('points', 0)}", what,
            f"{d['budget_ms']:.1f}" if d.get("budget_ms") else "-", d.get("config") or "-",
            o.error or d.get("why", ""))) + f"<td>{report}</td></tr>")
    page = ("<!doctype html><meta charset=utf-8><title>edgekit farm</title>"
            f"<h1>edgekit farm: {len(result.outcomes)} device(s), {len(result.failed)} failed, "
            f"{result.wall_s:.0f} s</h1><table border=1 cellpadding=4><tr><th>device</th><th>status</th>"
            "<th>points ok</th><th>chosen</th><th>budget ms</th><th>app config</th><th>why / error</th><th></th></tr>"
            + "".join(rows) + "</table>"
            + "".join(f"<p>note: {html.escape(n)}</p>" for n in result.notes))
    write_atomic(result.report_html, page.encode())


def farm_lines(result: FarmResult) -> list[str]:
    """What ``edgekit profile`` prints for a farm: one line per device, then the notes and the report."""
    lines = []
    for o in result.outcomes:
        if not o.ok:
            lines.append(f"{o.device}: FAILED (exit {o.exit_code}): {o.error}")
            continue
        r = o.result
        done = sum(1 for p in r.points if p.ok)
        lines.append(f"{o.device}: {done}/{len(r.points)} points ok in {o.finished - o.started:.0f} s; "
                     f"{r.choice.why}; config: {r.config_path or '(none: nothing fits)'}")
    lines += [f"note: {n}" for n in result.notes]
    lines.append(f"farm report: {result.report_html} ({len(result.outcomes) - len(result.failed)} of "
                 f"{len(result.outcomes)} device(s) ok, {result.wall_s:.0f} s)")
    return lines


def farm_error(result: FarmResult) -> FarmError:
    """The one-line error for a farm where some devices failed (exit code: the first failure's)."""
    bad = result.failed
    good = len(result.outcomes) - len(bad)
    return FarmError(f"{len(bad)} of {len(result.outcomes)} device(s) failed: "
                     + "; ".join(f"{o.device}: {o.error}" for o in bad)
                     + f" ({good} other device(s) finished; their results, and every finished point, are kept: "
                     f"see {result.report_html})", bad[0].exit_code)


def run_farm_cli(devices, farm, model, out_dir, config_dir, delegate_libs, as_json, out, err,
                 prune: bool = False) -> None:
    """``edgekit profile`` with several ``--device`` or a ``--farm`` file (``out``/``err``: the CLI's consoles).

    Raises:
        InputError: the farm cannot be read (before anything is measured).
        FarmError: some devices failed (after every device finished and the reports were written).
    """
    import json

    devices = list(devices)
    if farm:
        listed, farm_model = load_farm(farm)
        devices += listed
        model = model or farm_model

    def progress(device: str, label: str, i: int, n: int) -> None:
        if err.is_terminal:
            err.print(f"{device}: {label} ({i}/{n})", highlight=False, soft_wrap=True)

    result = profile_farm(devices, model, out_dir, config_dir, delegate_libs=list(delegate_libs), progress=progress,
                          prune=prune)
    if as_json:
        print(json.dumps(result.to_dict(), indent=2, default=str))
    else:
        for line in farm_lines(result):
            out.print(line, highlight=False, soft_wrap=True, markup=False)
    if result.failed:
        raise farm_error(result)
