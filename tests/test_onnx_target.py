"""onnx-fp32 / onnx-int8 on the bundled student, through the real parity gate and ONNX Runtime."""

import json

import numpy as np
import pytest

import edgekit
from edgekit.core.artifact import Artifact, sha256_file
from edgekit.errors import InputError, ParityError
from tests.conftest import STUDENT
from tests.reference import assert_agrees, portrait_inputs, random_inputs


def test_fp32_artifact_manifest(student_artifacts, student_onnx, portraits):
    art = student_artifacts("onnx-fp32")
    manifest = json.loads((art.path / "artifact.json").read_text())
    assert manifest["target"] == "onnx-fp32"
    assert manifest["source"]["sha256"] == sha256_file(student_onnx)
    assert manifest["files"]["model"]["sha256"] == sha256_file(art.file())
    assert manifest["io"]["inputs"][0]["shape"] == [1, 3, 256, 256]
    assert manifest["io"]["inputs"][0]["mean"] == [0.5, 0.5, 0.5]
    assert manifest["io"]["outputs"][0]["kind"] == "probability"
    assert "onnxruntime" in manifest["tools"]
    assert manifest["parity"]["samples"] == 40
    # what the manifest claims, checked here: ONNX Runtime on the artifact vs on the source file
    assert assert_agrees(art, student_onnx, portrait_inputs(portraits)).max_abs < 1e-5


@pytest.mark.slow
def test_int8_keeps_mask_iou(student_artifacts, portraits):
    art = student_artifacts("onnx-int8")
    assert_agrees(art, STUDENT, portrait_inputs(portraits, 12), 0.97)  # held-out portraits, ORT on the source
    # most of the weights are stored as int8 (biases, and the squeeze-excite layers float by default, are not)
    import onnx
    from onnx import numpy_helper

    def weights(path, dtype):
        return sum(numpy_helper.to_array(t).size for t in onnx.load(str(path)).graph.initializer
                   if numpy_helper.to_array(t).dtype == dtype and numpy_helper.to_array(t).ndim == 4)

    fp32 = student_artifacts("onnx-fp32")
    assert weights(art.file("model"), np.int8) > 0.5 * weights(fp32.file("model"), np.float32)


def test_landscape_resolution(student_artifacts):
    art = student_artifacts("onnx-fp32", input_shapes={"image": (1, 3, 144, 256)})
    assert art.io.inputs[0].shape == (1, 3, 144, 256)
    assert_agrees(art, STUDENT, random_inputs(art.source_io, n=2))
    out = edgekit.load(art.path).run({"image": np.zeros((1, 3, 144, 256), np.float32)})
    assert out["mask"].shape == (1, 1, 144, 256)


@pytest.mark.slow
def test_validate_again_and_detect_tampering(student_artifacts, workdir):
    art = student_artifacts("onnx-int8")
    edgekit.validate(art.path)  # raises unless the untouched artifact passes
    # shift the last conv's bias of a copy: the mask changes and the gate must fail
    import shutil

    import onnx
    from onnx import numpy_helper

    bad = workdir / "tampered"
    shutil.copytree(student_artifacts("onnx-fp32").path, bad)
    m = onnx.load(str(bad / "model.onnx"))
    last = [n for n in m.graph.node if n.op_type == "Conv"][-1]
    bias = next(i for i in m.graph.initializer if i.name == last.input[2])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) - 3.0, bias.name))
    onnx.save(m, str(bad / "model.onnx"))
    with pytest.raises(InputError, match="does not match its recorded sha256"):  # refused before it is opened
        edgekit.validate(bad)
    import json  # re-record the sha256 (as a forger would): the parity gate must still catch the change

    from edgekit.core.files import sha256_file

    manifest = json.loads((bad / "artifact.json").read_text())
    manifest["files"]["model"]["sha256"] = sha256_file(bad / "model.onnx")
    (bad / "artifact.json").write_text(json.dumps(manifest))
    with pytest.raises(ParityError, match="mask IoU"):
        edgekit.validate(bad)


def test_session_rejects_wrong_shape(student_artifacts):
    sess = edgekit.load(student_artifacts("onnx-fp32").path)
    with pytest.raises(InputError, match="expected"):
        sess.run({"image": np.zeros((1, 3, 64, 64), np.float32)})
    p = sess.placement()
    assert p.ops_per_unit["cpu"] > 10


def test_artifact_load_rejects_incomplete(student_artifacts, workdir):
    import shutil

    broken = workdir / "incomplete"
    shutil.copytree(student_artifacts("onnx-fp32").path, broken)
    (broken / "model.onnx").unlink()
    with pytest.raises(InputError, match="missing"):
        Artifact.load(broken)


def test_torch_module_source(workdir):
    torch = pytest.importorskip("torch")
    from edgekit.zoo.portrait_seg import build

    torch.manual_seed(1)
    art = edgekit.convert(build(width=0.5), "onnx-fp32", workdir / "from-torch", input_shapes={"": (1, 3, 64, 64)})
    assert art.source["kind"] == "torch"
    x = np.random.default_rng(0).standard_normal((1, 3, 64, 64)).astype(np.float32)
    torch.manual_seed(1)
    m = build(width=0.5).eval()
    with torch.no_grad():
        ref = m(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(edgekit.load(art.path).run({"input": x})["output"], ref, atol=1e-5)
