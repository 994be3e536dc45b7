"""Temporal parity: an artifact that passes every frame but flickers is caught; steady artifacts pass."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from edgekit.core.parity import compare_outputs
from edgekit.core.temporal import TEMPORAL_TOLERANCES, clip_samples, compare_temporal


class Flickering:
    """A session that returns its inner session's mask plus noise that changes every frame (what unsteady int8
    rounding near the threshold does), small enough that every frame still agrees with the reference."""

    def __init__(self, inner, sigma: float, seed: int = 0):
        self.inner, self.sigma, self.rng = inner, sigma, np.random.default_rng(seed)
        self.io = inner.io

    def __getattr__(self, name):  # anything else (verified_by, close) is the inner session's
        return getattr(self.inner, name)

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
    per_frame.temporal = report  # as conversion and edgekit validate --temporal judge it: the whole gate fails
    assert not per_frame.passed and any("temporal" in f for f in per_frame.failures)
    report.enforced = False  # a report kept for information only would not fail it
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


def test_int8_conversion_enforces_the_temporal_check(tiny_onnx, tmp_path):
    """The tiny student's onnx-int8: its temporal report is part of the gate (enforced) and passes well under the
    int8 tolerance."""
    import edgekit

    steady = edgekit.convert(str(tiny_onnx), "onnx-int8", tmp_path / "steady")
    temporal = steady.parity["temporal"]
    assert temporal["precision_class"] == "int8" and temporal["enforced"] and temporal["passed"]
    assert temporal["outputs"][0]["dtssd"] < TEMPORAL_TOLERANCES["int8"][0] / 3
    assert not any("temporal" in n for n in steady.notes)


@pytest.mark.slow
def test_an_int8_artifact_that_flickers_is_refused_at_conversion(tiny_onnx, tmp_path, monkeypatch):
    """The tiny student's onnx-int8, whose every frame passes, with frame-to-frame flicker on the clip (the
    :class:`Flickering` session around the real artifact, on every attempt): the gate retries keeping layers in
    float, then refuses, and nothing is written."""
    import edgekit
    from edgekit.core import conversion
    from edgekit.errors import ParityError

    check = conversion._TemporalClip.check
    calls = []

    def flickering(self, candidate, precision_class, say):
        calls.append(precision_class)
        return check(self, Flickering(candidate, sigma=0.03), precision_class, say)

    monkeypatch.setattr(conversion._TemporalClip, "check", flickering)
    out = tmp_path / "flickers"
    with pytest.raises(ParityError, match="temporal: (dtSSD|flicker)") as e:
        edgekit.convert(str(tiny_onnx), "onnx-int8", out)
    assert len(calls) > 1 and set(calls) == {"int8"}  # every attempt passed frame by frame, then flickered
    assert "in float" in str(e.value)  # the keep-float retries ran before the refusal
    assert not out.exists()
