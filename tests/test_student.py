"""The bundled student: size limits, and its quality on a held-out synthetic set."""

import json

import numpy as np
import onnx
import pytest

import edgekit
from edgekit.apps.train.distill import HELD_OUT_SEED
from edgekit.apps.train.segmentation import boundary_f
from edgekit.core.samples.synthetic import dataset
from tests.conftest import STUDENT, as_input


def test_size_limits():
    assert STUDENT.stat().st_size < 1_000_000
    m = onnx.load(str(STUDENT))
    params = sum(int(np.prod(i.dims)) for i in m.graph.initializer)
    assert params <= 150_000
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [1, 3, "height", "width"]


@pytest.mark.slow
def test_held_out_mask_iou(student_artifacts):
    """metrics.json's held-out numbers are recomputed here from the shipped model (the same 200 never-trained-on
    composites, seed HELD_OUT_SEED), and the model is good on them: IoU is counted as train.py counts it (an
    empty mask predicted empty scores 1) and also over the composites that hold a person only."""
    recorded = json.loads((STUDENT.parent / "metrics.json").read_text())["held_out"]
    for h, w in ((256, 256), (144, 256)):
        art = student_artifacts("onnx-fp32", input_shapes={"image": (1, 3, h, w)})
        sess = edgekit.load(art.path, threads=2)
        n = recorded[f"{h}x{w}"]["n"]
        imgs, masks = dataset(n, h, w, seed=HELD_OUT_SEED)
        x = as_input(imgs)
        pred = [sess.run({"image": x[i:i + 1]})["mask"][0, 0] > 0.5 for i in range(n)]
        truth = [m > 0.5 for m in masks]
        union = np.array([(p | t).sum() for p, t in zip(pred, truth)])
        inter = np.array([(p & t).sum() for p, t in zip(pred, truth)])
        iou = np.where(union == 0, 1.0, inter / np.maximum(union, 1))
        bf = np.mean([boundary_f(p, t) for p, t in zip(pred, truth)])
        assert abs(iou.mean() - recorded[f"{h}x{w}"]["iou"]) < 1e-3, (h, w, iou.mean())
        assert abs(bf - recorded[f"{h}x{w}"]["boundary_f"]) < 1e-3, (h, w, bf)
        person = np.array([t.any() for t in truth])
        assert person.sum() > 0.8 * n and iou[person].mean() >= 0.9, (h, w, iou[person].mean())
