"""ncnn's per-layer timings. ncnn's pip wheels are built without its per-layer benchmark, so the layers are timed
from outside: on the session's second net (kept out of light mode, so every computed blob stays), an extractor is
fed the inputs and each layer's first output is extracted in the param file's order (a topological order), each
extract timed; as every input of a layer is already computed, an extract runs exactly that layer (plus the
binding's call, a few microseconds). Outputs are extracted as ncnn keeps them (packed, no layout conversion).
Shapes come from one untimed pass that reads every blob, weights from the layers' params."""

from __future__ import annotations

import time

from edgekit.backends.kerneltimes import KernelTime, conv_record, kind_of, other_record
from edgekit.core.deps import require
from edgekit.errors import DeviceError


def _nchw(array) -> list[int]:
    shape = list(array.shape)
    if len(shape) == 3:
        return [1, *shape]
    if len(shape) == 2:
        return [1, shape[0], 1, shape[1]]
    return [1, shape[0], 1, 1] if len(shape) == 1 else [1, *shape]


def record(layer, data_in: list, outs: list, ms: list[float]) -> KernelTime:
    """A :class:`KernelTime` from an ncnn layer (its params) and the NCHW shapes of its inputs and outputs."""
    p = layer.params
    if layer.type in ("Convolution", "ConvolutionDepthWise") and outs:
        kw = int(p.get(1, 0))
        window = kw * int(p.get(11, kw)) or 1
        cout = int(p.get(0, 0)) or 1
        wds = int(p.get(6, 0))
        dw = layer.type == "ConvolutionDepthWise" and int(p.get(7, 1)) == cout and cout > 1
        return conv_record(layer.name, layer.type, data_in, wds // cout, window, outs[0], ms, wds, depthwise=dw)
    if layer.type in ("InnerProduct", "Gemm", "MatMul") and data_in:
        out = sum(int(_e(s)) for s in outs)
        k = _e(data_in[0]) if layer.type == "InnerProduct" else int(data_in[0][-1])
        return KernelTime(layer.name, layer.type, "gemm", float(out * k), float(sum(_e(s) for s in data_in)),
                          float(out), float(p.get(2, 0)), k, int(p.get(0, 0)), 1, list(ms))
    return other_record(layer.name, layer.type, kind_of(layer.type), data_in, outs, ms)


def _e(shape) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


def ncnn_kernel_times(session, arrays: dict, runs: int = 10, warmup: int = 3) -> list[KernelTime]:
    """Per-layer times of an :class:`~edgekit.backends.ncnn.session.NcnnSession` on ``arrays`` (CHW, float32).

    Raises:
        DeviceError: ncnn could not compute a layer.
    """
    from edgekit.backends.ncnn import model as nm

    ncnn = require("ncnn")
    layers = [ly for ly in nm.read_param(session._files[0]) if ly.type != "Input" and ly.tops]
    values, error = session._extract_blobs(arrays, [t for ly in layers for t in ly.tops])  # shapes, untimed
    if error:
        raise DeviceError(error)
    shapes = {name: _nchw(v) for name, v in values.items()}
    shapes.update({name: _nchw(x) for name, x in arrays.items()})
    net = session._tap_net
    per_layer: list[list[float]] = [[] for _ in layers]
    for r in range(warmup + runs):
        ex = net.create_extractor()
        try:
            for name, x in arrays.items():
                ex.input(name, ncnn.Mat(x).clone())
            for i, ly in enumerate(layers):
                t = time.perf_counter()
                ret, mat = ex.extract(ly.tops[0], 1)
                dt = (time.perf_counter() - t) * 1000.0
                del mat
                if ret != 0:
                    raise DeviceError(f"ncnn could not compute layer {ly.name} (code {ret})")
                if r >= warmup:
                    per_layer[i].append(dt)
        finally:
            ex.clear()
            del ex
    return [record(ly, [shapes[b] for b in ly.bottoms if b in shapes], [shapes[t] for t in ly.tops if t in shapes],
                   ms) for ly, ms in zip(layers, per_layer, strict=True)]
