"""The profiler records each point's execution audit, and a shipped point that does not run as its target intends
is said so in the app config's ``why`` and in the report (issue 16)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from edgekit.apps.profiling.appconfig import _audit_why
from edgekit.apps.profiling.choose import Choice
from edgekit.apps.profiling.report import html_report
from edgekit.apps.profiling.sweep import Point
from edgekit.core.audit import describe_point_audit, point_audit

SLOW = {"source": "this machine's runtime", "ops": 95, "fast": 71, "deviations": {"fast": 24, "delegate": 0,
        "precision": 0}, "off_fast_path": {"HARD_SWISH": 20, "RELU_0_TO_1": 4}, "unintended": 24}
CLEAN = {**SLOW, "fast": 95, "deviations": {"fast": 0, "delegate": 0, "precision": 0}, "off_fast_path": {},
         "unintended": 0}


def _point(target, audit):
    return Point((256, 256), target, "cpu", 1, p50_ms=5.0, p90_ms=6.0, quality=0.99, audit=audit)


def test_point_audit_record_round_trips_and_reads():
    p = _point("tflite-int8", SLOW)
    assert Point.from_dict(p.to_dict()).audit == SLOW
    assert Point.from_dict({k: v for k, v in p.to_dict().items() if k != "audit"}).audit is None  # older points
    assert describe_point_audit(SLOW) == "24 unintended deviation(s): fast 24 (20 HARD_SWISH, 4 RELU_0_TO_1)"
    assert describe_point_audit(CLEAN) == "as intended (95/95 ops on the fast path)"


def test_recorded_audit_is_used_off_this_machine_and_said_so():
    art = SimpleNamespace(audit={"summary": {"ops": 10, "fast": 8, "deviations": {"fast": 2, "precision": 1},
                                             "off_fast_path": {"Concat": 2}}})
    rec = point_audit(art, "cpu", 2, here=False)
    assert rec["unintended"] == 3 and rec["off_fast_path"] == {"Concat": 2}
    assert rec["source"].startswith("recorded at conversion")
    assert point_audit(SimpleNamespace(audit=None), here=False)["unintended"] is None


def test_config_and_report_say_when_a_shipped_point_deviates(tmp_path):
    runtime = {"target": "tflite-int8", "audit": SLOW}
    fallback = {"target": "onnx-fp32", "audit": CLEAN}
    why = _audit_why(runtime, fallback)
    assert "runtime (tflite-int8) does not run as intended: 24 unintended" in why and "onnx-fp32" not in why
    assert _audit_why({"target": "onnx-fp32", "audit": CLEAN}, None) == ""
    chosen, other = _point("tflite-int8", SLOW), _point("onnx-fp32", CLEAN)
    choice = Choice(chosen, other, [chosen, other], 10.0, "fastest within budget")
    profile = SimpleNamespace(id="dev", description="d", fps=30, model_share=0.3, camera=(720, 1280))
    page = html_report(profile, [chosen, other], choice, tmp_path / "p.png", tmp_path / "r.html", 1.0).read_text()
    assert "Warning:</b> the chosen point tflite-int8 cpu 1T 256x256 does not run as its target intends" in page
    assert "fallback point" not in page  # the fallback runs as intended
    assert "as intended (95/95 ops on the fast path)" in page


@pytest.fixture(scope="module")
def tiny_fp32(tiny_onnx, tmp_path_factory):
    import edgekit

    return edgekit.convert(str(tiny_onnx), "onnx-fp32", tmp_path_factory.mktemp("audit") / "a")


@pytest.mark.parametrize("here", [True, False])
def test_point_audit_of_a_real_artifact(tiny_fp32, here):
    art = tiny_fp32
    rec = point_audit(art, "cpu", 1, here=here)
    assert rec["unintended"] == 0 and rec["ops"] == art.audit["summary"]["ops"]
