"""How a device is reached: ``local`` (this machine, one worker process per point) or ``adb``.

Both check, before any work, that everything the profile needs is there, and fail with an error
that names what is missing; neither ever reports a number it did not measure, nor records one under
another name: a delegate is timed with that delegate or refused, and a percentile is stored as what it is.
Every ``adb`` call has a timeout (adb and what it started are killed): a hung device or adb server ends in one
:class:`~edgekit.apps.profiling.device.DeviceLostError` line, and a sweep stops there keeping its finished points.
What is pushed to an Android device is checked with the device's ``sha256sum`` before anything runs, in a
temporary folder removed afterwards.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

from edgekit.apps.profiling.device import DeviceLostError, DeviceProfile
from edgekit.apps.profiling.latency import FRAME_FIELDS
from edgekit.core import subprocesses
from edgekit.errors import DeviceError, EdgekitError, InputError


@dataclass
class Measured:
    p50_ms: float
    p90_ms: float | None           # None where the tool does not report a p90 (see p95_ms)
    peak_memory_mb: float | None
    quality: float | None
    quality_metric: str
    measured_on: str
    detail: dict
    p95_ms: float | None = None

    @property
    def tail(self) -> tuple[str, float]:
        """The tail latency that was measured, under its true name: ``("p90", ms)`` or ``("p95", ms)``."""
        return ("p90", self.p90_ms) if self.p90_ms is not None else ("p95", self.p95_ms)


#: seconds one point's measurement (session load, warm-up, timed runs, quality) may take on this machine
MEASURE_TIMEOUT_S = 600.0


class LocalReach:
    name = "local"
    #: whether the background load runs on the device beside each point (see load.py)
    runs_load = True
    #: whether that load follows the profile's ``load`` settings (else the device's default load)
    profile_load = True

    def check(self, profile: DeviceProfile) -> None:
        from edgekit.backends import registry

        for target in profile.targets:
            fmt = target.split("-")[0]
            registry.get(fmt).check_available()
            for delegate in profile.delegates_for(fmt):
                try:
                    registry.session_class(fmt).check_delegate(delegate)
                except EdgekitError as e:
                    raise DeviceError(f"device profile {profile.id} needs {fmt} on '{delegate}', which this "
                                      f"machine cannot run: {e}") from e

    def measure(self, artifact, delegate: str, threads: int, profile: DeviceProfile, data: Path,
                evaluation: Path | None = None) -> Measured:
        from edgekit.apps.profiling.load import level_for

        level = level_for(profile.load, threads)  # quiet and under this load, interleaved (0 busy: quiet only)
        cmd = [sys.executable, "-m", "edgekit.apps.profiling.worker", str(artifact.path), delegate, str(threads),
               str(profile.runs), str(profile.warmup), str(data), str(level.cpu), str(level.memory),
               "x".join(str(int(v)) for v in profile.camera), *([str(evaluation)] if evaluation else [])]
        res = subprocesses.run(cmd, "measurement worker", timeout=MEASURE_TIMEOUT_S, error=DeviceError)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode != 0 or not lines:
            tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"measurement of {artifact.target} on {delegate} crashed (exit {res.returncode}): {tail}")
        out = json.loads(lines[-1])
        if "error" in out:
            raise DeviceError(out["error"])
        return Measured(out["p50_ms"], out["p90_ms"], out["peak_memory_mb"], out["quality"], out["quality_metric"],
                        "this machine", {"placement": out["placement"], "session_memory_mb": out["session_memory_mb"],
                                         **{k: out.get(k) for k in ("load_p50_ms", "load_p90_ms", "load",
                                                                    "run_options", "p90_ci", "load_p90_ci",
                                                                    *FRAME_FIELDS)}})


#: seconds an adb call may take (pushing a model or a benchmark run takes longer than listing devices)
ADB_TIMEOUT_S = {"devices": 20.0, "shell": 60.0, "push": 120.0, "benchmark": 900.0}

#: LiteRT ``benchmark_model`` flags that run a model on each delegate a profile may name. ``cpu`` is
#: XNNPACK (LiteRT's default), ``cpu-ref`` the built-in kernels only. A delegate without a flag here is
#: refused: it is never timed on the CPU and recorded under its own name.
BENCHMARK_FLAGS = {
    "cpu": ["--use_xnnpack=true"],
    "cpu-ref": ["--use_xnnpack=false"],
    "gpu": ["--use_gpu=true"],
    "nnapi": ["--use_nnapi=true"],
}


class AdbReach:
    """An Android device over adb, timed by LiteRT's ``benchmark_model`` (tflite targets only)."""

    name = "adb"
    #: whether the background load runs on the device beside each point (see load.py)
    runs_load = True
    #: whether that load follows the profile's ``load`` settings (else the device's default load)
    profile_load = True

    def check(self, profile: DeviceProfile) -> None:
        if not shutil.which("adb"):
            raise DeviceError(f"device profile {profile.id} is reached over adb, and adb is not installed "
                              "(Debian: apt-get install adb; or Android platform-tools)")
        serials = connected_devices({**ADB_TIMEOUT_S, **profile.adb.get("timeouts", {})})
        wanted = profile.adb.get("serial")
        if not serials or (wanted and wanted not in serials):
            raise DeviceError(f"no Android device attached{' with serial ' + wanted if wanted else ''} "
                              f"(adb devices lists: {', '.join(serials) or 'none'})")
        tool = Path(profile.adb.get("benchmark_model", ""))
        if not tool.is_file():
            raise DeviceError(f"LiteRT's benchmark_model binary for Android was not found at '{tool}' "
                              "(set adb.benchmark_model in the profile)")
        from edgekit.backends import registry

        formats = {t.split("-")[0] for t in profile.targets}
        bad = [t for t in profile.targets if registry.backend(t.split("-")[0]).device_benchmark != "benchmark_model"]
        if bad:
            able = [b.format for b in registry.backends().values() if b.device_benchmark == "benchmark_model"]
            raise InputError(f"adb profiles time targets with LiteRT's benchmark_model ({', '.join(able)} targets); "
                             f"{', '.join(bad)} cannot be timed this way")
        for fmt in formats:
            for delegate in profile.delegates_for(fmt):
                benchmark_flags(delegate)

    def measure(self, artifact, delegate: str, threads: int, profile: DeviceProfile, data: Path) -> Measured:
        """Push ``benchmark_model`` and the model into a new temporary folder on the device, check with the
        device's ``sha256sum`` that both arrived intact, time the model there, and remove the folder whatever
        happened.

        Raises:
            InputError: ``delegate`` cannot be timed with ``benchmark_model``.
            DeviceLostError: an adb call ran past its timeout, or adb lost the device (a sweep stops there).
            DeviceError: anything else fails on the device (one line); a pushed file did not arrive intact.
        """
        from edgekit.apps.profiling.load import level_for
        from edgekit.core.files import sha256_file

        base = profile.adb.get("remote_dir", "/data/local/tmp/edgekit").rstrip("/") or "/"
        serial = ["-s", profile.adb["serial"]] if profile.adb.get("serial") else []
        limits = {**ADB_TIMEOUT_S, **profile.adb.get("timeouts", {})}
        tool = Path(profile.adb["benchmark_model"])
        flags = benchmark_flags(delegate)  # before anything is pushed
        sent = {"benchmark_model": sha256_file(tool), "model.tflite": sha256_file(Path(artifact.file()))}
        q = shlex.quote(base)
        out = _adb(serial + ["shell", f"mkdir -p {q} && mktemp -d {q}/edgekit.XXXXXXXX"], "shell", limits)
        remote = out.strip().splitlines()[-1].strip() if out.strip() else ""
        if not _ADB_TMP.match(remote):
            raise DeviceError(f"mktemp on the Android device printed {remote!r}, not a folder path")
        failed = True
        try:
            _adb(serial + ["push", str(tool), f"{remote}/benchmark_model"], "push", limits)
            _adb(serial + ["push", str(artifact.file()), f"{remote}/model.tflite"], "push", limits)
            from edgekit.apps.profiling.ssh import compare_sha256

            listing = _adb(serial + ["shell", f"cd {shlex.quote(remote)} && sha256sum benchmark_model model.tflite"],
                           "shell", limits)
            problems = compare_sha256(sent, listing)
            if problems:
                raise DeviceError(f"adb: what was pushed to the Android device did not arrive intact "
                                  f"({'; '.join(problems)}); nothing was run")
            args = [f"{remote}/benchmark_model", f"--graph={remote}/model.tflite", f"--num_threads={threads}",
                    f"--num_runs={profile.runs}", f"--warmup_runs={profile.warmup}",
                    "--report_peak_memory_footprint=true", *flags]
            run = ["shell", "chmod 755 " + shlex.quote(f"{remote}/benchmark_model") + " && "
                   + " ".join(shlex.quote(a) for a in args)]
            timing = parse_benchmark_model(_adb(serial + run, "benchmark", limits))
            loaded, level = None, None
            if profile.load.get("busy", "auto") != 0:  # the same run beside the device's own background load
                cores = _device_cores(serial, limits)
                level = level_for(profile.load, threads, cores)
                if level.busy:
                    _start_device_load(serial, remote, level, limits)
                    try:
                        loaded = parse_benchmark_model(_adb(serial + run, "benchmark", limits))
                    finally:
                        _stop_device_load(serial, remote, limits)
            failed = False
        finally:
            try:
                _adb(serial + ["shell", f"rm -rf -- {shlex.quote(remote)}"], "shell", limits)
            except EdgekitError:
                if not failed:
                    raise
        # benchmark_model cannot return outputs: quality is the artifact's parity on this machine, labelled so
        outputs = (artifact.parity or {}).get("outputs") or [{}]
        local_quality = outputs[0].get("iou")
        # benchmark_model reports p5/median/p95, never p90: the tail is recorded as the p95 it is
        return Measured(timing["median_ms"], None, timing.get("peak_memory_mb"), local_quality,
                        "mask IoU (parity check on this machine)", f"android {serial[-1] if serial else 'device'}",
                        {"benchmark_model": timing, "delegate_flags": flags, "sha256_checked": sorted(sent),
                         **({"load_p50_ms": loaded["median_ms"], "load_p95_ms": loaded["p95_ms"],
                             "load": level.to_dict(), "benchmark_model_under_load": loaded,
                             "load_note": "benchmark_model ran quiet, then beside the load (it cannot be paused "
                                          "between runs, so the two are not interleaved)"} if loaded else {})},
                        p95_ms=timing["p95_ms"])


def _device_cores(serial: list[str], limits: dict) -> int:
    """The Android device's online CPUs (``nproc``; 1 where it prints nothing sensible)."""
    out = _adb(serial + ["shell", "nproc"], "shell", limits).strip().splitlines()
    return int(out[-1]) if out and out[-1].strip().isdigit() else 1


#: a CPU hog and a memory-bandwidth hog in the device's shell (toybox sh, dd): detached, their pids recorded
_DEVICE_HOGS = {"cpu": "while :; do :; done",
                "memory": "while :; do dd if=/dev/zero of=/dev/null bs=16777216 count=64 2>/dev/null; done"}


def _start_device_load(serial: list[str], remote: str, level, limits: dict) -> None:
    """Start ``level``'s hog processes on the device (pids in ``REMOTE/hogs.pid``)."""
    pids = shlex.quote(f"{remote}/hogs.pid")
    starts = [f"nohup sh -c {shlex.quote(_DEVICE_HOGS[kind])} >/dev/null 2>&1 & echo $! >> {pids}"
              for kind, n in (("cpu", level.cpu), ("memory", level.memory)) for _ in range(n)]
    _adb(serial + ["shell", f": > {pids}; " + "; ".join(starts)], "shell", limits)


def _stop_device_load(serial: list[str], remote: str, limits: dict) -> None:
    """Kill the hogs :func:`_start_device_load` started (their shells and the dd they run)."""
    pids = shlex.quote(f"{remote}/hogs.pid")
    _adb(serial + ["shell", f"for p in $(cat {pids}); do pkill -P $p 2>/dev/null; kill $p 2>/dev/null; done; "
                   f"rm -f {pids}; true"], "shell", limits)


def benchmark_flags(delegate: str) -> list[str]:
    """The ``benchmark_model`` flags that time ``delegate`` on the device.

    Raises:
        InputError: ``benchmark_model`` has no way to run that delegate (it would run on the CPU).
    """
    if delegate not in BENCHMARK_FLAGS:
        raise InputError(f"delegate '{delegate}' cannot be timed over adb with benchmark_model (it would run on "
                         f"the CPU and be recorded as '{delegate}'); adb profiles support "
                         f"{', '.join(BENCHMARK_FLAGS)}")
    return list(BENCHMARK_FLAGS[delegate])


#: what adb prints when it has lost the device (unplugged, rebooting, offline): a sweep stops there
_ADB_LOST = ("no devices/emulators found", "device offline", "device not found", "device unauthorized",
             "closed", "protocol fault", "cannot connect to daemon")
_ADB_TMP = re.compile(r"^/[^\n\0]*/edgekit\.[A-Za-z0-9]{6,}$")


def _adb(args: list[str], kind: str = "shell", limits: dict | None = None) -> str:
    """Run ``adb ARGS`` with the timeout of its ``kind`` (``limits``, default ``ADB_TIMEOUT_S``); on a timeout
    adb and everything it started are killed.

    Raises:
        DeviceLostError: adb does not answer in time, or says it lost the device.
        DeviceError: adb is missing or exits non-zero.
    """
    limit = float((limits or ADB_TIMEOUT_S)[kind])
    what = " ".join(a for a in args[:3] if not a.startswith("/"))[:80]
    try:
        res = subprocesses.run(["adb", *args], f"adb {what}", timeout=limit, error=DeviceError)
    except subprocesses.ToolTimeoutError as e:
        raise DeviceLostError(f"adb {what} did not answer in {limit:g} s (device hung or unplugged?); it was "
                              "stopped") from e
    if res.returncode != 0:
        detail = " ".join((res.stderr.strip() or res.stdout.strip() or "no output").split())[:300]
        cls = DeviceLostError if any(k in detail.lower() for k in _ADB_LOST) else DeviceError
        raise cls(f"adb {what} failed (exit {res.returncode}): {detail}")
    return res.stdout


def connected_devices(limits: dict | None = None) -> list[str]:
    """Serials of the devices ``adb devices`` lists as ready.

    Raises:
        DeviceError: adb fails or does not answer in time.
    """
    out = _adb(["devices"], "devices", limits)
    return [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip().endswith("device")]


def parse_benchmark_model(text: str) -> dict:
    """Timings (ms) and peak memory (MB) from LiteRT ``benchmark_model`` output.

    The last ``count=... median=... p95=...`` line is the timed runs (the first is warm-up); times
    there are microseconds. benchmark_model prints p5/median/p95 (no p90): each is returned under its
    own name (``p5_ms``, ``median_ms``, ``p95_ms``), and ``p90_ms`` only if a p90 is actually printed.

    Raises:
        DeviceError: no timing line in ``text``.
    """
    rows = re.findall(r"count=(\d+)(.*)", text)
    rows = [(c, rest) for c, rest in rows if "median=" in rest and "avg=" in rest]
    if not rows:
        raise DeviceError("benchmark_model printed no timing line (count=... median=... p95=...)")
    count, rest = rows[-1]
    stats = {k: float(v) for k, v in re.findall(r"\b(avg|median|p\d+)=([\d.]+(?:e[+-]?\d+)?)", rest)}
    out = {"runs": int(count), "mean_ms": stats["avg"] / 1000, "median_ms": stats["median"] / 1000}
    for k, v in stats.items():
        if k.startswith("p"):
            out[f"{k}_ms"] = v / 1000
    if "p95_ms" not in out and "p90_ms" not in out:
        raise DeviceError("benchmark_model printed no tail percentile (p90/p95) in its timing line")
    peak = re.search(r"peak memory footprint \(MB\)[^:]*:\s*([\d.]+)", text, re.IGNORECASE)
    if peak:
        out["peak_memory_mb"] = float(peak.group(1))
    return out


def reach_for(profile: DeviceProfile):
    from edgekit.apps.profiling.ssh import SshReach  # imports Measured from here

    return {"local": LocalReach, "adb": AdbReach, "ssh": SshReach}[profile.reach]()
