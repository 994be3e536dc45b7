"""The numeric debugger (``edgekit diff`` / ``edgekit bisect``): faults injected at a known layer are named.

Each fault is put into a real artifact by the test itself (the artifact's files changed and its
``artifact.json`` re-hashed by the test, or the artifact converted from a hand-modified model and compared
against the original), so the expected layer is known independently of the debugger's alignment.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import copy_tree

pytest.importorskip("onnxruntime")


def _conv_nodes(model_path: Path) -> list:
    import onnx

    model = onnx.load(str(model_path))
    inits = {i.name for i in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type == "Conv" and n.input[1] in inits]


def _victim(model_path: Path):
    """A 3x3 convolution on the main path, in the middle of the model (a squeeze-excitation 1x1 conv's error is
    damped by its gate and may rightly not diverge)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(model_path))
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    convs = [n for n in _conv_nodes(model_path) if inits[n.input[1]].shape[0] >= 8 and inits[n.input[1]].shape[2] == 3]
    return convs[len(convs) // 2]


def _flip(w: np.ndarray) -> np.ndarray:
    """Negate the first half of the output channels (a fault no tolerance accepts)."""
    w = w.copy()
    w[: max(1, w.shape[0] // 2)] *= -1
    return w


def _rehash(folder: Path) -> None:
    """Record the changed files' sha256 in artifact.json (what a tampering test must do by hand)."""
    from edgekit.core.files import sha256_file

    manifest = folder / "artifact.json"
    d = json.loads(manifest.read_text())
    for entry in d["files"].values():
        entry["sha256"] = sha256_file(folder / entry["path"])
    manifest.write_text(json.dumps(d))


def _sqnr(ref: np.ndarray, x: np.ndarray) -> float:
    ref, x = np.asarray(ref, np.float64), np.asarray(x, np.float64)
    err = float(np.sum((ref - x) ** 2))
    return 200.0 if err == 0 else min(200.0, 10 * math.log10(float(np.sum(ref**2)) / err))


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_onnx, workdir):
    from edgekit.core.conversion import convert

    cache = {}

    def get(target: str):
        if target not in cache:
            cache[target] = convert(tiny_onnx, target, workdir / "debugger" / target)
        return cache[target]

    return get


def _onnx_fault(art, where: Path, node) -> Path:
    """A copy of an onnx-* artifact whose ``node`` has half its output channels negated."""
    import onnx
    from onnx import numpy_helper

    folder = copy_tree(art.path, where)
    model = onnx.load(str(folder / "model.onnx"))
    for init in model.graph.initializer:
        if init.name == node.input[1]:
            init.CopyFrom(numpy_helper.from_array(_flip(numpy_helper.to_array(init)), init.name))
            break
    else:
        raise AssertionError(f"{node.input[1]} not in the artifact")
    onnx.save(model, str(folder / "model.onnx"))
    _rehash(folder)
    return folder


@pytest.mark.slow
def test_clean_fp32_artifacts_align_and_match_an_independent_run(tiny_artifacts):
    """Every reference node is aligned or listed with a reason; nothing diverges; the output layer's SQNR is
    the SQNR of the artifact's own outputs against ONNX Runtime on the stored reference."""
    import onnxruntime as ort

    import edgekit
    from edgekit.apps.debugger import diff
    from edgekit.core import calibration

    for target in ("onnx-fp32", "ncnn-fp32", "openvino-fp32", "tflite-fp32"):
        art = tiny_artifacts(target)
        report = diff(art.path, samples=2, seed=7)
        assert report.observer["ok"], report.observer
        assert report.first_diverging is None
        assert len(report.layers) + len(report.unmatched) == report.reference_nodes
        assert all(u["reason"] for u in report.unmatched)
        convs = {n.name for n in _conv_nodes(art.reference_file())}
        aligned = {ly.node for ly in report.layers}
        unmatched = {u["node"]: u["reason"] for u in report.unmatched}
        assert convs <= aligned | set(unmatched)
        assert all(ly.sqnr_db > 80 for ly in report.layers), [(ly.node, ly.sqnr_db) for ly in report.layers]
        # the model output, computed independently
        out_name = art.source_io.outputs[0].name
        rows = [ly for ly in report.layers if ly.tensor == out_name]
        assert rows, f"{target}: the model output {out_name} is not aligned"
        sess = edgekit.load(art.path)
        ref = ort.InferenceSession(str(art.reference_file()), providers=["CPUExecutionProvider"])
        xs = calibration.samples(art.source_io, None, n=2, seed=7)
        r = np.concatenate([ref.run([out_name], x)[0] for x in xs])
        c = np.concatenate([sess.run(x)[out_name] for x in xs])
        sess.close()
        # the debugger measures its tapped run, which differs from the artifact's own run by at most the observer
        # check's difference (LiteRT taps run the built-in kernels, not XNNPACK)
        slack = report.observer["max_abs"]
        assert abs(rows[0].max_abs - float(np.abs(r - c).max())) <= slack + 1e-6, target
        independent = _sqnr(r, c)
        if independent < 100:
            assert rows[0].sqnr_db == pytest.approx(independent, abs=0.5), target
        else:  # float rounding noise: both far above any threshold
            assert rows[0].sqnr_db > 100, target


def test_onnx_fault_is_named_by_diff_bisect_and_the_cli(tiny_artifacts, workdir, capsys):
    from edgekit.apps.debugger import bisect, diff
    from edgekit.cli import main

    art = tiny_artifacts("onnx-fp32")
    node = _victim(art.reference_file())
    folder = _onnx_fault(art, workdir / "debugger" / "onnx-fault", node)
    report = diff(folder, samples=1)
    first = report.first_diverging
    assert first is not None and first.node == node.name, [(ly.node, round(ly.sqnr_db, 1)) for ly in report.layers]
    assert first.matched_by == "name"
    assert first.isolated is not None and first.isolated["sqnr_db"] < 20  # the layer alone is wrong
    before = [ly for ly in report.layers if ly.index < first.index]
    assert before and all(ly.sqnr_db > 80 for ly in before)
    b = bisect(folder, samples=1)
    assert b.first.node == node.name and b.keep_float_node == node.name
    assert b.confirmation is None  # fp32: nothing to keep in float
    capsys.readouterr()
    assert main(["diff", str(folder), "--samples", "1", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["first_diverging_node"] == node.name
    # a fault that reaches the outputs (the last convolution) fails validate, whose error names the command to run
    last = _conv_nodes(art.reference_file())[-1]
    folder2 = _onnx_fault(art, workdir / "debugger" / "onnx-fault-last", last)
    assert main(["validate", str(folder2), "--samples", "2"]) == 6
    assert f"edgekit bisect {folder2}" in capsys.readouterr().err
    assert diff(folder2, samples=1, isolated="none").first_diverging.node == last.name


def test_ncnn_fault_is_found_by_structure(tiny_artifacts, workdir):
    """pnnx keeps no ONNX names: the perturbed layer's weights no longer match, its place in the graph does."""
    import onnx
    from onnx import numpy_helper

    from edgekit.apps.debugger import diff
    from edgekit.backends.ncnn import model as nm

    art = tiny_artifacts("ncnn-fp32")
    node = _victim(art.reference_file())
    ref = onnx.load(str(art.reference_file()))
    w = next(numpy_helper.to_array(i) for i in ref.graph.initializer if i.name == node.input[1]).astype(np.float32)
    folder = copy_tree(art.path, workdir / "debugger" / "ncnn-fault")
    param, binf = folder / art.files["model"], folder / art.files["weights"]
    layers = nm.read(param, binf)
    hit = [ly for ly in layers if "weight" in ly.arrays and ly.arrays["weight"][1].size == w.size
           and np.allclose(ly.arrays["weight"][1], w.ravel(), atol=1e-6)]
    assert len(hit) == 1, "the victim's ncnn layer is not identified by its weights"
    tag, _ = hit[0].arrays["weight"]
    hit[0].arrays["weight"] = (tag, _flip(w).ravel())
    nm.write(layers, param, binf)
    _rehash(folder)
    report = diff(folder, samples=1)
    first = report.first_diverging
    assert first is not None and first.node == node.name, [(ly.node, round(ly.sqnr_db, 1)) for ly in report.layers]
    assert first.runtime_tensor == hit[0].tops[0]
    assert first.matched_by.startswith("structure (weights differ")


@pytest.mark.slow
def test_openvino_fault_against_the_original_reference(tiny_onnx, workdir):
    """An artifact converted from a hand-modified model, compared with --reference the original one."""
    pytest.importorskip("openvino")
    import onnx
    from onnx import numpy_helper

    from edgekit.apps.debugger import diff
    from edgekit.core.conversion import convert

    src = workdir / "debugger" / "modified"
    src.mkdir(parents=True)
    shutil.copy(tiny_onnx.parent / "model.yaml", src / "model.yaml")
    model = onnx.load(str(tiny_onnx))
    import tempfile

    from edgekit.core.ingest import load_source

    with tempfile.TemporaryDirectory() as tmp:  # name the victim as the prepared (simplified) graph names it
        prepared = load_source(str(tiny_onnx), Path(tmp), {})
        node = _victim(prepared.onnx_path)
        onnx.save(prepared.model, str(src / "tiny.onnx"))
    model = onnx.load(str(src / "tiny.onnx"))
    for init in model.graph.initializer:
        if init.name == node.input[1]:
            init.CopyFrom(numpy_helper.from_array(_flip(numpy_helper.to_array(init)), init.name))
    onnx.save(model, str(src / "tiny.onnx"))
    art = convert(src / "tiny.onnx", "openvino-fp32", workdir / "debugger" / "openvino-modified")
    report = diff(art.path, reference=tiny_onnx, samples=2)
    first = report.first_diverging
    assert first is not None and first.node == node.name, [(ly.node, round(ly.sqnr_db, 1)) for ly in report.layers]
    assert first.matched_by == "name"
    assert first.isolated is not None and first.isolated["sqnr_db"] < 20


@pytest.mark.slow
def test_int8_bisect_confirms_the_culprit_by_keeping_it_in_float(tiny_artifacts, workdir):
    """A corrupted int8 weight: bisect names the layer, and the re-conversion keeping it in float passes."""
    import onnx
    from onnx import numpy_helper

    from edgekit.apps.debugger import bisect

    art = tiny_artifacts("onnx-int8")
    node = _victim(art.reference_file())
    folder = copy_tree(art.path, workdir / "debugger" / "int8-fault")
    model = onnx.load(str(folder / "model.onnx"))
    quantized = f"{node.input[1]}_quantized"
    for init in model.graph.initializer:
        if init.name == quantized:
            q = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(np.clip(_flip(q.astype(np.int16)), -127, 127).astype(q.dtype),
                                                  init.name))
            break
    else:
        pytest.fail(f"no {quantized} in the int8 artifact")
    onnx.save(model, str(folder / "model.onnx"))
    _rehash(folder)
    report = bisect(folder, samples=2)
    assert report.first is not None and report.first.node == node.name
    assert report.keep_float_node == node.name
    c = report.confirmation
    assert c is not None and c["kept"] and c["passed_after"] is True, c


def test_a_runtime_without_taps_says_so():
    from edgekit.backends.session import Session, TapsUnavailableError
    from edgekit.core.iospec import IOSpec
    from edgekit.errors import RuntimeUnavailableError

    class Plain(Session):
        def _run_native(self, inputs):
            return {}

    s = Plain(IOSpec((), ()), IOSpec((), ()), 1, "cpu")
    for call in (s.tap_points, lambda: s.taps({}), lambda: s.chunk_inputs("x"), lambda: s.run_chunk("x", {})):
        with pytest.raises(TapsUnavailableError, match="Plain"):
            call()
    assert issubclass(TapsUnavailableError, RuntimeUnavailableError)


# ------------------------------------------------------------------------------------------ stage attribution


@pytest.fixture(scope="session")
def staged_int8(tiny_onnx, workdir):
    """The tiny student as onnx-int8 with every conversion step's product kept."""
    from edgekit.core.conversion import convert

    return convert(tiny_onnx, "onnx-int8", workdir / "debugger" / "staged-onnx-int8", keep_stages=True)


def _flip_initializer(path: Path, name: str) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name == name)
    w = numpy_helper.to_array(init)
    flipped = np.clip(_flip(w.astype(np.int16)), -127, 127).astype(w.dtype) if w.dtype == np.int8 else _flip(w)
    init.CopyFrom(numpy_helper.from_array(flipped, name))
    onnx.save(model, str(path))


def _scale_initializer(path: Path, name: str, factor: float) -> None:
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    init = next(i for i in model.graph.initializer if i.name == name)
    init.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(init) * factor).astype(np.float32), name))
    onnx.save(model, str(path))


def _rehash_stages(folder: Path) -> None:
    from edgekit.core.files import sha256_file

    manifest = folder / "artifact.json"
    d = json.loads(manifest.read_text())
    for entry in [*d["files"].values(), *(f for st in d["stages"] for f in st["files"].values())]:
        entry["sha256"] = sha256_file(folder / entry["path"])
    manifest.write_text(json.dumps(d))


def test_keep_stages_lists_every_product_with_its_sha256(staged_int8):
    from edgekit.backends import registry
    from edgekit.backends.converter import ConversionJob
    from edgekit.core.artifact import Artifact
    from edgekit.core.files import sha256_file

    d = json.loads((staged_int8.path / "artifact.json").read_text())
    names = [st["name"] for st in d["stages"]]
    job = ConversionJob(None, staged_int8.target, [], {})
    assert names == ["source", "simplify", *registry.get("onnx").stages(job)]  # declared by the backend
    for st in d["stages"]:
        for entry in st["files"].values():
            file = (staged_int8.path / entry["path"]).resolve()
            assert staged_int8.path.resolve() in file.parents
            assert entry["sha256"] == sha256_file(file)
    assert d["stages"][-1]["files"] == d["files"]  # the last step is the artifact itself
    assert d["stages"][1]["files"]["model"] == d["reference"]
    art = Artifact.load(staged_int8.path)
    assert len(art.stages) == len(names)


def test_stage_attribution_names_the_step_holding_the_fault(staged_int8, workdir, capsys):
    """A fault only in the artifact's own file is the quantization step's; the same fault only in the kept
    rewrite product (the final file clean) is the rewrite step's; the clean artifact names no step."""
    from edgekit.apps.debugger import bisect
    from edgekit.cli import main
    from edgekit.errors import InputError

    clean = bisect(staged_int8.path, samples=2, confirm=False)
    assert clean.stage is None and [r.origin for r in clean.stages.stages] == ["kept"] * 3 + ["artifact"]
    assert all(r.passed for r in clean.stages.stages)
    node = _victim(staged_int8.reference_file())

    final = copy_tree(staged_int8.path, workdir / "debugger" / "stage-final")
    _scale_initializer(final / "model.onnx", f"{node.input[1]}_scale", 10.0)  # a corrupted quantization scale
    _rehash_stages(final)
    b = bisect(final, samples=2, confirm=False)
    assert b.stage == "quantize" and b.first.node == node.name
    assert [r.passed for r in b.stages.stages] == [True, True, True, False]

    early = copy_tree(staged_int8.path, workdir / "debugger" / "stage-early")
    rewrite = json.loads((early / "artifact.json").read_text())["stages"][2]
    assert rewrite["name"] == "rewrite"
    _flip_initializer(early / rewrite["files"]["model"]["path"], node.input[1])
    _rehash_stages(early)
    capsys.readouterr()
    assert main(["bisect", str(early), "--samples", "2", "--no-confirm", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["stage"] == "rewrite" and out["first_diverging_node"] is None  # the artifact itself is clean
    assert out["stages"][2]["first_diverging_node"] == node.name
    assert [s["passed"] for s in out["stages"]] == [True, True, False, True]
    assert main(["bisect", str(final), "--samples", "2", "--no-confirm"]) == 0
    assert "stage: quantize is the first conversion step" in capsys.readouterr().out

    # a kept stage changed after it was recorded is refused before any runtime opens it
    tampered = copy_tree(early, workdir / "debugger" / "stage-tampered")
    _flip_initializer(tampered / rewrite["files"]["model"]["path"], node.input[1])
    with pytest.raises(InputError, match="sha256"):
        bisect(tampered, samples=1, confirm=False)


def test_stages_are_rebuilt_for_an_artifact_that_kept_none(tiny_artifacts, workdir):
    from edgekit.apps.debugger import bisect

    art = tiny_artifacts("onnx-int8")
    assert art.stages is None
    b = bisect(art.path, samples=1, confirm=False)
    rows = [(r.name, r.origin) for r in b.stages.stages]
    assert rows == [("reference", "reference"), ("rewrite", "rebuilt"), ("quantize", "artifact")]
    assert any("rebuilt" in n for n in b.notes)
    only_kept = bisect(art.path, samples=1, confirm=False, rebuild=False)
    assert [r.origin for r in only_kept.stages.stages] == ["reference", "artifact"]


def test_overlay_is_model_explorer_node_data_with_the_diffs_own_numbers(tiny_artifacts, workdir, capsys):
    """--overlay writes Model Explorer's single-graph node data (results keyed by the reference's output tensor
    names, numeric values, ascending thresholds); each value is the layer's SQNR, recomputed here with ONNX
    Runtime on both models with the tensor exposed."""
    import onnx
    import onnxruntime as ort

    from edgekit.cli import main
    from edgekit.core import calibration

    art = tiny_artifacts("onnx-fp32")
    node = _victim(art.reference_file())
    folder = _onnx_fault(art, workdir / "debugger" / "overlay-fault", node)
    path = workdir / "debugger" / "overlay.json"
    capsys.readouterr()
    assert main(["diff", str(folder), "--samples", "2", "--isolated", "none", "--overlay", str(path)]) == 0
    data = json.loads(path.read_text())
    assert set(data) <= {"results", "thresholds", "gradient"} and data["results"]
    ref = onnx.load(str(art.reference_file()))
    outputs = {o for n in ref.graph.node for o in n.output}
    assert set(data["results"]) <= outputs
    assert all(set(v) == {"value"} and isinstance(v["value"], (int, float)) for v in data["results"].values())
    values = [t["value"] for t in data["thresholds"]]
    assert values == sorted(values) and all(isinstance(t["bgColor"], str) for t in data["thresholds"])
    # the victim's output and a tensor before it, recomputed independently
    order = [o for n in ref.graph.node for o in n.output if o in data["results"]]
    checked = [node.output[0], order[0], order[-1]]
    xs = calibration.samples(art.source_io, None, n=2, seed=4242)

    def exposed(path_: Path):
        m = onnx.load(str(path_))
        m.graph.output.extend([onnx.helper.make_empty_tensor_value_info(t) for t in checked])
        return ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])

    r_sess, c_sess = exposed(art.reference_file()), exposed(folder / "model.onnx")
    for t in checked:
        r = np.concatenate([r_sess.run([t], x)[0].ravel() for x in xs])
        c = np.concatenate([c_sess.run([t], x)[0].ravel() for x in xs])
        assert data["results"][t]["value"] == pytest.approx(_sqnr(r, c), abs=0.01), t
    assert data["results"][node.output[0]]["value"] < values[0]  # the broken layer falls in the first colour


@pytest.mark.slow
def test_coreml_taps_come_from_the_mil_evaluator_off_macos(tiny_onnx, workdir):
    """Off macOS, diff runs a Core ML package through edgekit's MIL evaluator (what its gate used): convolutions
    align by weights, the tapped run's outputs equal the plain run's, and the first convolution's SQNR is that of
    the evaluator's own output of that op against ONNX Runtime."""
    import platform

    import onnx
    import onnxruntime as ort

    from edgekit.apps.debugger import diff
    from edgekit.backends.coreml.mil_reference import MILReferenceSession
    from edgekit.core import calibration
    from edgekit.core.conversion import convert

    if platform.system() == "Darwin":
        pytest.skip("on macOS the debugger uses Core ML itself")
    from edgekit.backends.coreml.converter import import_coremltools
    from edgekit.errors import MissingDependencyError

    try:
        import_coremltools()  # in the order edgekit needs (after torch, TensorFlow hidden)
    except MissingDependencyError:
        pytest.skip("coremltools is not installed")
    art = convert(tiny_onnx, "coreml-fp16", workdir / "debugger" / "coreml-fp16", keep_stages=True)
    report = diff(art.path, samples=1, isolated="none")
    assert report.observer["max_abs"] == 0
    assert any("MILReferenceSession" in n for n in report.notes)
    stem = _conv_nodes(art.reference_file())[0]
    row = next(ly for ly in report.layers if ly.node == stem.name)
    assert row.matched_by == "weights"
    x = calibration.samples(art.source_io, None, n=1, seed=4242)[0]
    sess = MILReferenceSession.open(art)
    _, tensors = sess.taps(x)
    model = onnx.load(str(art.reference_file()))
    model.graph.output.extend([onnx.helper.make_empty_tensor_value_info(stem.output[0])])
    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    r = ref.run([stem.output[0]], x)[0]
    assert row.sqnr_db == pytest.approx(_sqnr(r, tensors[row.runtime_tensor].reshape(r.shape)), abs=0.01)


def test_a_stage_path_leaving_the_artifact_or_an_unknown_format_is_refused(staged_int8, workdir):
    from edgekit.apps.debugger import bisect
    from edgekit.core.artifact import Artifact
    from edgekit.errors import InputError

    bad = copy_tree(staged_int8.path, workdir / "debugger" / "stage-escape")
    d = json.loads((bad / "artifact.json").read_text())
    d["stages"][0]["files"]["model"]["path"] = "../../../etc/passwd"
    (bad / "artifact.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="stage 0-source"):
        Artifact.load(bad)
    odd = copy_tree(staged_int8.path, workdir / "debugger" / "stage-format")
    d = json.loads((odd / "artifact.json").read_text())
    d["stages"][2]["format"] = "evil"
    (odd / "artifact.json").write_text(json.dumps(d))
    with pytest.raises(InputError, match="evil"):
        bisect(odd, samples=1, confirm=False)
