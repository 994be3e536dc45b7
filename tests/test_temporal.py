"""Temporal parity: an artifact that passes every frame but flickers is caught; steady artifacts pass."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np

from edgekit.core.parity import compare_outputs
from edgekit.core.temporal import TEMPORAL_TOLERANCES, clip_samples, compare_temporal


class Flickering:
    """A session that returns its inner session's mask plus noise that changes every frame (what unsteady int8
    rounding near the threshold does), small enough that every frame still agrees with the reference."""

    def __init__(self, inner, sigma: float, seed: int = 0):
        self.inner, self.sigma, self.rng = inner, sigma, np.random.default_rng(seed)
        self.io = inner.io

    def run(self, x):
        out = self.inner.run(x)
        return {k: np.clip(v + self.rng.normal(0, self.sigma, v.shape), 0, 1).astype(np.float32)
                for k, v in out.items()}


def test_flicker_that_every_frame_hides_fails_the_temporal_gate(student_artifacts, student_onnx):
    import edgekit
    from edgekit.backends.onnx.session import OrtSession

    art = student_artifacts("onnx-fp32")
    ref = OrtSession(student_onnx, art.source_io, art.source_io)
    samples, rgb = clip_samples(ref.io, 100)
    ref_outs = [ref.run(s) for s in samples]
    steady = edgekit.load(art.path)
    flicker = Flickering(steady, sigma=0.03)
    cand_outs = [flicker.run(s) for s in samples]
    # independently: every frame's mask agrees with the reference's as the int8 gate asks (IoU >= 0.97)
    ious = []
    for r, c in zip(ref_outs, cand_outs):
        a, b = r["mask"] > 0.5, c["mask"] > 0.5
        ious.append(np.logical_and(a, b).sum() / max(1, np.logical_or(a, b).sum()))
    assert min(ious) >= 0.97
    per_frame = compare_outputs(ref_outs, cand_outs, ref.io, "int8")
    assert per_frame.passed
    report = compare_temporal(ref_outs, cand_outs, ref.io, rgb, "int8")
    assert not report.passed
    assert report.outputs[0].excess_flicker > TEMPORAL_TOLERANCES["int8"][1]
    per_frame.temporal = report  # as edgekit validate --temporal judges it: the whole gate fails
    assert not per_frame.passed and any("temporal" in f for f in per_frame.failures)
    report.enforced = False  # as int8 conversion records it for now: reported, not a refusal
    assert per_frame.passed
    # the artifact itself is as steady as its source
    steady_outs = [steady.run(s) for s in samples]
    assert compare_temporal(ref_outs, steady_outs, ref.io, rgb, "fp32").passed


def test_conversion_records_the_temporal_check_and_validate_runs_it(tiny_onnx, tmp_path):
    import edgekit

    tiny_fp32 = edgekit.convert(str(tiny_onnx), "onnx-fp32", tmp_path / "art")
    temporal = tiny_fp32.parity["temporal"]
    assert temporal["passed"] and temporal["frames"] == 100
    assert temporal["outputs"][0]["dtssd"] < TEMPORAL_TOLERANCES["fp32"][0]
    proc = subprocess.run([sys.executable, "-m", "edgekit.cli", "validate", str(tiny_fp32.path), "--temporal",
                           "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["temporal"]["passed"]
