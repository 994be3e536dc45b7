"""How a device is reached: ``local`` (this machine, one worker process per point) or ``adb``.

Both check, before any work, that everything the profile needs is there, and fail with an error
that names what is missing; neither ever reports a number it did not measure.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from edgekit.errors import DeviceError, EdgekitError, InputError
from edgekit.profiling.device import DeviceProfile
from edgekit.runtimes import registry as runtimes


@dataclass
class Measured:
    p50_ms: float
    p90_ms: float
    peak_memory_mb: float | None
    quality: float | None
    quality_metric: str
    measured_on: str
    detail: dict


class LocalReach:
    name = "local"

    def check(self, profile: DeviceProfile) -> None:
        from edgekit.converters import registry

        for target in profile.targets:
            fmt = target.split("-")[0]
            registry.get(fmt).check_available()
            for delegate in profile.delegates_for(fmt):
                try:
                    runtimes.session_class(fmt).check_delegate(delegate)
                except EdgekitError as e:
                    raise DeviceError(f"device profile {profile.id} needs {fmt} on '{delegate}', which this "
                                      f"machine cannot run: {e}") from e

    def measure(self, artifact, delegate: str, threads: int, profile: DeviceProfile, data: Path) -> Measured:
        cmd = [sys.executable, "-m", "edgekit.profiling.worker", str(artifact.path), delegate, str(threads),
               str(profile.runs), str(profile.warmup), str(data)]
        res = subprocess.run(cmd, capture_output=True, text=True)
        lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
        if res.returncode != 0 or not lines:
            tail = (res.stderr.strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"measurement of {artifact.target} on {delegate} crashed (exit {res.returncode}): {tail}")
        out = json.loads(lines[-1])
        if "error" in out:
            raise DeviceError(out["error"])
        return Measured(out["p50_ms"], out["p90_ms"], out["peak_memory_mb"], out["quality"], out["quality_metric"],
                        "this machine", {"placement": out["placement"], "session_memory_mb": out["session_memory_mb"]})


class AdbReach:
    """An Android device over adb, timed by LiteRT's ``benchmark_model`` (tflite targets only)."""

    name = "adb"

    def check(self, profile: DeviceProfile) -> None:
        if not shutil.which("adb"):
            raise DeviceError(f"device profile {profile.id} is reached over adb, and adb is not installed "
                              "(Debian: apt-get install adb; or Android platform-tools)")
        serials = connected_devices()
        wanted = profile.adb.get("serial")
        if not serials or (wanted and wanted not in serials):
            raise DeviceError(f"no Android device attached{' with serial ' + wanted if wanted else ''} "
                              f"(adb devices lists: {', '.join(serials) or 'none'})")
        tool = Path(profile.adb.get("benchmark_model", ""))
        if not tool.is_file():
            raise DeviceError(f"LiteRT's benchmark_model binary for Android was not found at '{tool}' "
                              "(set adb.benchmark_model in the profile)")
        bad = [t for t in profile.targets if not t.startswith("tflite-")]
        if bad:
            raise InputError(f"adb profiles measure tflite targets only; {', '.join(bad)} cannot be timed this way")

    def measure(self, artifact, delegate: str, threads: int, profile: DeviceProfile, data: Path) -> Measured:
        remote = profile.adb.get("remote_dir", "/data/local/tmp/edgekit")
        serial = ["-s", profile.adb["serial"]] if profile.adb.get("serial") else []
        tool = Path(profile.adb["benchmark_model"])
        _adb(serial + ["shell", "mkdir", "-p", remote])
        _adb(serial + ["push", str(tool), f"{remote}/benchmark_model"])
        _adb(serial + ["push", str(artifact.file()), f"{remote}/model.tflite"])
        args = [f"{remote}/benchmark_model", f"--graph={remote}/model.tflite", f"--num_threads={threads}",
                f"--num_runs={profile.runs}", f"--warmup_runs={profile.warmup}", "--report_peak_memory_footprint=true"]
        if delegate.startswith("gpu"):
            args.append("--use_gpu=true")
        out = _adb(serial + ["shell", *args])
        timing = parse_benchmark_model(out)
        # benchmark_model cannot return outputs: quality is the artifact's parity on this machine, labelled so
        local_quality = artifact.parity["outputs"][0]
        return Measured(timing["median_ms"], timing["p90_ms"], timing.get("peak_memory_mb"), local_quality["iou"],
                        "mask IoU (parity check on this machine)", f"android {serial[-1] if serial else 'device'}",
                        {"benchmark_model": timing})


def _adb(args: list[str]) -> str:
    res = subprocess.run(["adb", *args], capture_output=True, text=True)
    if res.returncode != 0:
        raise DeviceError(f"adb {' '.join(args[:2])} failed: {res.stderr.strip() or res.stdout.strip()}")
    return res.stdout


def connected_devices() -> list[str]:
    out = subprocess.run(["adb", "devices"], capture_output=True, text=True).stdout
    return [ln.split()[0] for ln in out.splitlines()[1:] if ln.strip().endswith("device")]


def parse_benchmark_model(text: str) -> dict:
    """Timings (ms) and peak memory (MB) from LiteRT ``benchmark_model`` output.

    The last ``count=... median=... p95=...`` line is the timed runs (the first is warm-up); times
    there are microseconds. benchmark_model prints p5/median/p95; edgekit's p90 slot takes p95 and
    says so.
    """
    rows = re.findall(r"count=(\d+).*?avg=([\d.e+]+).*?median=([\d.e+]+).*?p95=([\d.e+]+)", text)
    if not rows:
        raise DeviceError("benchmark_model printed no timing line (count=... median=... p95=...)")
    count, avg, median, p95 = rows[-1]
    out = {"runs": int(count), "mean_ms": float(avg) / 1000, "median_ms": float(median) / 1000,
           "p90_ms": float(p95) / 1000, "p90_is": "p95"}
    peak = re.search(r"peak memory footprint \(MB\)[^:]*:\s*([\d.]+)", text, re.IGNORECASE)
    if peak:
        out["peak_memory_mb"] = float(peak.group(1))
    return out


def reach_for(profile: DeviceProfile):
    return {"local": LocalReach, "adb": AdbReach}[profile.reach]()
