"""Execution audit: intended vs actual per op, recorded at conversion, `--require` for CI, diffs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edgekit.core.audit import Audit, OpRun, compare, describe_moves
from edgekit.errors import AuditError

EDGEKIT = [sys.executable, "-m", "edgekit.cli"]


def _op(i, op="CONV_2D", unit="cpu:xnnpack", precision="int8", intended="int8", fast=True, name=None):
    return OpRun(i, op, name or f"t{i}", unit, "k", precision, "cpu:xnnpack", intended, fast=fast)


def test_deviations_and_require_are_computed_from_intent():
    audit = Audit("LiteRT", "tflite-int8", "cpu", [
        _op(0), _op(1, "HARD_SWISH", unit="cpu:builtin", fast=False),
        _op(2, precision="fp32"),                                   # an int8 conv computed in float
        _op(3, precision="fp32", intended="fp32 (kept)"),           # kept in float on purpose: not a deviation
        _op(4, unit="gpu")])                                        # ran on another unit than asked
    assert [o.index for o in audit.deviating(("fast",))] == [1]
    assert [o.index for o in audit.deviating(("precision",))] == [2]
    assert [o.index for o in audit.deviating(("delegate",))] == [4]
    assert audit.summary()["deviations"] == {"fast": 1, "delegate": 1, "precision": 1}
    with pytest.raises(AuditError, match="1 of 5 ops deviate .*precision.*CONV_2D t2"):
        audit.require(("precision",))
    Audit("x", "t", "cpu", [_op(0), _op(3, precision="fp32", intended="fp32 (kept)")]).require(
        ("fast", "delegate", "precision"))
    assert Audit.from_dict(json.loads(json.dumps(audit.to_dict()))).to_dict() == audit.to_dict()


def test_compare_names_the_ops_that_moved():
    a = Audit("LiteRT", "tflite-int8", "cpu", [_op(0), _op(1, "HARD_SWISH"), _op(2, "HARD_SWISH")])
    b = Audit("LiteRT", "tflite-int8", "cpu", [_op(0), _op(1, "HARD_SWISH", unit="cpu:builtin", fast=False),
                                               _op(2, "HARD_SWISH", unit="cpu:builtin", fast=False)])
    moves = describe_moves(compare(a, b))
    assert moves == ["2 op(s) moved from cpu:xnnpack/int8/fast to cpu:builtin/int8/slow (HARD_SWISH)"]
    assert compare(a, a)["moved"] == []


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([*EDGEKIT, *map(str, args)], capture_output=True, text=True, timeout=600)


@pytest.mark.slow
def test_tflite_int8_audit_recorded_and_required(student_artifacts):
    """The student's int8 HardSwish/ReLU-0-to-1 ops, kept as such (-O hard_activations=keep), are not taken by
    XNNPACK in this LiteRT build: the audit recorded at conversion says so (and names the option that decomposes
    them), equals a fresh audit, and `--require fast` fails on it (exit 8) while LiteRT's reference kernels, asked
    for with cpu-ref, are intended. The default (decomposed) tflite-int8 runs every op on XNNPACK."""
    default = Audit.from_dict(student_artifacts("tflite-int8").audit).summary()
    assert default["off_fast_path"] == {} and default["by_unit"] == {"cpu:xnnpack": default["ops"]}
    art = student_artifacts("tflite-int8", options={"hard_activations": "keep"})
    recorded = Audit.from_dict(art.audit)
    off = recorded.summary()["off_fast_path"]
    assert set(off) <= {"HARD_SWISH", "RELU_0_TO_1"} and off.get("HARD_SWISH", 0) > 0
    assert all("hard_activations=decompose" in o.why for o in recorded.deviating(("fast",)))
    from edgekit.api import audit

    assert audit(art.path).summary() == recorded.summary()
    bad = _run("run", art.path, "--runs", "1", "--audit", "--require", "fast")
    assert bad.returncode == 8 and "HARD_SWISH" in bad.stderr and "Traceback" not in bad.stderr
    ok = _run("run", art.path, "--runs", "1", "--delegate", "cpu-ref", "--audit", "--require", "fast")
    assert ok.returncode == 0, ok.stderr
    # in fp32 XNNPACK takes every op but RELU_0_TO_1 (HardSigmoid's clip); the diff names the HARD_SWISH ops that
    # moved to the reference kernels in int8
    fp32 = Audit.from_dict(student_artifacts("tflite-fp32").audit)
    assert set(fp32.summary()["off_fast_path"]) <= {"RELU_0_TO_1"}
    moves = describe_moves(compare(fp32, recorded))
    assert any("cpu:builtin" in m and "HARD_SWISH" in m for m in moves), moves


@pytest.mark.slow
def test_openvino_audit_reads_the_executed_graph(student_artifacts):
    """OpenVINO's executed graph of the fp32 student: every layer computed in f32 as intended (no precision
    deviation) and the layers on reference implementations (HardSigmoid's Math) named as off the fast path, which
    `--require fast` turns into exit 8."""
    art = student_artifacts("openvino-fp32")
    report = json.loads(_run("audit", art.path, "--json").stdout)
    assert report["summary"]["deviations"]["precision"] == 0
    assert set(report["summary"]["by_precision"]) == {"fp32"}
    refs = [o for o in report["ops"] if o["kernel"].startswith("ref")]
    assert refs and all("fast" in o["deviations"] for o in refs)
    assert _run("run", art.path, "--runs", "1", "--require", "precision").returncode == 0
    bad = _run("run", art.path, "--runs", "1", "--audit", "--require", "fast")
    assert bad.returncode == 8 and refs[0]["op"] in bad.stderr and "Traceback" not in bad.stderr
