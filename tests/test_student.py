"""The bundled student: size limits, and its quality on a held-out synthetic set."""

import json

import numpy as np
import onnx

import edgekit
from edgekit.core.parity import mask_iou
from edgekit.core.samples.synthetic import dataset
from tests.conftest import STUDENT, as_input


def test_size_limits():
    assert STUDENT.stat().st_size < 1_000_000
    m = onnx.load(str(STUDENT))
    params = sum(int(np.prod(i.dims)) for i in m.graph.initializer)
    assert params <= 150_000
    dims = m.graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in dims] == [1, 3, "height", "width"]


def test_held_out_mask_iou(student_artifacts):
    recorded = json.loads((STUDENT.parent / "metrics.json").read_text())
    for h, w in ((256, 256), (144, 256)):
        art = student_artifacts("onnx-fp32", input_shapes={"image": (1, 3, h, w)})
        sess = edgekit.load(art.path, threads=2)
        imgs, masks = dataset(24, h, w, seed=20261126)  # never used for training
        x = as_input(imgs)
        ious = [mask_iou(sess.run({"image": x[i:i + 1]})["mask"][0, 0] > 0.5, masks[i] > 0.5) for i in range(len(x))]
        assert np.mean(ious) >= 0.85, (h, w, np.mean(ious))
        assert recorded["held_out"][f"{h}x{w}"]["iou"] >= 0.85
