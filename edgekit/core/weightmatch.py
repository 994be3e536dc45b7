"""Which layer of a converted model is which ONNX node: matched by identical weights.

Converters rename and fuse layers, but a convolution's or a matrix product's weights survive conversion
(possibly transposed to the backend's layout, possibly rounded to fp16). Keep-float (mixed precision) and
the numeric debugger use this to find, in the backend's own graph, the layer that computes an ONNX node.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: ONNX op types whose second input is a weight tensor worth matching on
WEIGHTED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def onnx_weights(model, names: Iterable[str] | None = None) -> dict[str, np.ndarray]:
    """Weighted ONNX node name -> its float32 weight (nodes whose weight is an initializer), optionally only
    the ``names`` given."""
    from onnx import numpy_helper

    wanted = None if names is None else set(names)
    inits = {i.name: i for i in model.graph.initializer}
    return {n.name: numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
            for n in model.graph.node
            if n.op_type in WEIGHTED_OPS and len(n.input) > 1 and n.input[1] in inits
            and (wanted is None or n.name in wanted)}


def layouts_of(w: np.ndarray) -> list[np.ndarray]:
    """``w`` flattened in every layout a backend stores it: as is, transposed (2-D), OHWI and IHWO (4-D:
    TFLite's conv and depthwise filters)."""
    if w.ndim == 4:
        return [w.ravel(), w.transpose(0, 2, 3, 1).ravel(), w.transpose(1, 2, 3, 0).ravel()]
    if w.ndim == 2:
        return [w.ravel(), w.T.ravel()]
    return [w.ravel()]


def match_by_weights(reference: dict[str, np.ndarray], layers: Iterable[tuple[str, np.ndarray]],
                     atol: float = 1e-6, rtol: float = 0.0) -> dict[str, str]:
    """ONNX node name -> name of the first backend layer whose weight equals the node's in some layout.

    ``layers`` yields ``(layer name, weight array)``; ``atol``/``rtol`` allow for the backend's rounding
    (fp16 storage needs about 2e-3). Nodes with no matching layer are left out, never guessed.
    """
    candidates = {name: layouts_of(w) for name, w in reference.items()}
    out: dict[str, str] = {}
    for layer, weight in layers:
        flat = np.asarray(weight, np.float32).ravel()
        for name, forms in candidates.items():
            if name not in out and any(f.size == flat.size and np.allclose(f, flat, atol=atol, rtol=rtol)
                                       for f in forms):
                out[name] = layer
    return out
