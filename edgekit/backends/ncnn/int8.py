"""ncnn's int8 scheme, implemented in edgekit (no ncnn2table/ncnn2int8 can be installed here).

What ncnn documents and its runtime expects:

* weights: per output channel (per group for depthwise) symmetric int8,
  ``scale = 127 / max|w|``, stored with the int8 tag; the layer gets ``8=int8_scale_term``
  (2 for Convolution/InnerProduct, 1 for ConvolutionDepthWise) and its ``.bin`` entry is followed by
  the weight scales and the bottom blob scale, which ``load_model`` reads;
* activations: one scale per layer input, ``127 / threshold``, the threshold calibrated on data by
  KL divergence (2048-bin histogram of |x| folded to 128 levels, as ncnn2table's ``kl``) or ACIQ
  (Gaussian clipping from the blob's max and size, as ncnn2table's ``aciq``);
* the same scales written as an ncnn2table calibration table (``model.table``).

The stock ncnn runtime then runs the model with ``use_int8_inference``: the parity gate compares
what it computes with the ONNX Runtime fp32 reference, so the scheme is verified by ncnn itself.
Layers in ``job.keep_float`` (ONNX node names, mapped to ncnn layers by their weights) stay float.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from edgekit.backends.converter import ConversionJob
from edgekit.backends.ncnn import model as nm
from edgekit.core.deps import require

QUANTIZABLE = {"Convolution": 2, "ConvolutionDepthWise": 1, "InnerProduct": 2}
BINS, LEVELS = 2048, 128


def quantize_ncnn(job: ConversionJob, param: Path, binf: Path, workdir: Path) -> dict:
    """Quantize the fp32 ``param``/``bin`` in place; write ``model.table``; return the options used."""
    layers = nm.read(param, binf)
    mapped = map_onnx_nodes(job, layers)
    from edgekit.backends.onnx.converter import pooled_layers

    # squeeze-excite 1x1 convolutions stay float (backends/onnx/converter.py: pooled_layers)
    pooled = [n for n in pooled_layers(job.source.model) if n in mapped and n not in job.keep_float] \
        if job.options.get("pooled_layers", "float") == "float" else []
    keep = set(mapped.get(n) for n in (*job.keep_float, *pooled)) - {None}
    targets = [ly for ly in layers if ly.type in QUANTIZABLE and ly.name not in keep]
    method = job.options.get("calibration_method", "kl")
    inputs = [spec.name for spec in job.source.io.inputs]
    blob_scales = calibrate(param, binf, [ly.bottoms[0] for ly in targets], job.calibration, inputs, method)
    table = []
    for ly in targets:
        groups = int(ly.params.get(7, 1)) if ly.type == "ConvolutionDepthWise" else int(ly.params[0])
        tag, w = ly.arrays["weight"]
        w = w.reshape(groups, -1)
        absmax = np.abs(w).max(axis=1)
        wscale = np.where(absmax > 0, 127.0 / np.maximum(absmax, 1e-30), 1.0).astype(np.float32)
        q = np.clip(np.round(w * wscale[:, None]), -127, 127).astype(np.int8)
        ly.arrays["weight"] = (nm.TAG_INT8, q.ravel())
        ly.arrays["weight_scales"] = (-1, wscale)
        ly.arrays["bottom_scales"] = (-1, np.array([blob_scales[ly.bottoms[0]]], np.float32))
        nm.set_param(ly, 8, QUANTIZABLE[ly.type])
        table.append(f"{ly.name}_param_0 " + " ".join(f"{v:.6g}" for v in wscale))
    table += [f"{ly.name} {blob_scales[ly.bottoms[0]]:.6g}" for ly in targets]
    nm.write(layers, param, binf)
    (workdir / "model.table").write_text("\n".join(table) + "\n")
    # read back what was written: a kept layer is one whose weights are still float
    written = {ly.name: ly for ly in nm.read(param, binf)}
    kept = [n for n in job.keep_float if n in mapped and mapped[n] in written
            and written[mapped[n]].arrays["weight"][0] != nm.TAG_INT8]
    floats = [n for n in pooled if mapped[n] in written and written[mapped[n]].arrays["weight"][0] != nm.TAG_INT8]
    out = {"calibration_method": method, "int8_layers": len(targets),
           "float_layers": sorted(mapped[n] for n in (*kept, *floats)), "kept_float": kept,
           "calibration_samples": len(job.calibration)}
    if floats:
        out["pooled_float_layers"] = floats
    return out


def map_onnx_nodes(job: ConversionJob, layers: list[nm.Layer]) -> dict[str, str]:
    """ONNX weighted node name -> ncnn layer name, matched by identical weights."""
    from edgekit.core.weightmatch import match_by_weights, onnx_weights

    return match_by_weights(onnx_weights(job.source.model),
                            ((ly.name, ly.arrays["weight"][1]) for ly in layers if ly.type in QUANTIZABLE))


def calibrate(param: Path, binf: Path, blobs: list[str], samples, input_names: list[str], method: str) -> dict:
    """Activation scale (127 / threshold) of each blob, from the fp32 net on calibration samples."""
    ncnn = require("ncnn")
    net = ncnn.Net()
    net.opt.use_fp16_storage = net.opt.use_fp16_packed = net.opt.use_fp16_arithmetic = False
    net.opt.lightmode = False  # keep intermediate blobs: extracting a consumed one crashes in light mode
    net.load_param(str(param))
    net.load_model(str(binf))
    unique = sorted(set(blobs))
    acts: dict[str, list[np.ndarray]] = {b: [] for b in unique}
    for s in samples:
        ex = net.create_extractor()
        arrays = [np.ascontiguousarray(s[name][0]) for name in input_names]  # alive while ncnn reads them
        for i, arr in enumerate(arrays):
            ex.input(f"in{i}", ncnn.Mat(arr).clone())
        for b in unique:
            _, mat = ex.extract(b)
            acts[b].append(np.abs(np.array(mat)).ravel())
    scales = {}
    for b, values in acts.items():
        absmax = max(float(v.max()) for v in values)
        if absmax == 0:
            scales[b] = 1.0
            continue
        if method == "aciq":
            threshold = min(absmax, aciq_clip(absmax, values[0].size))
        else:
            hist = sum(np.histogram(v, bins=BINS, range=(0, absmax))[0] for v in values)
            threshold = kl_threshold(hist.astype(np.float64), absmax / BINS)
        scales[b] = 127.0 / threshold
    return scales


def kl_threshold(hist: np.ndarray, bin_width: float, levels: int = LEVELS) -> float:
    """The clipping threshold minimizing KL(P || Q) between the clipped and the quantized histogram."""
    best_i, best_kl = len(hist), math.inf
    for i in range(levels, len(hist) + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        edges = (np.arange(levels) * i // levels).astype(np.int64)
        chunk = hist[:i]
        sums = np.add.reduceat(chunk, edges)
        nonzero = np.add.reduceat((chunk > 0).astype(np.float64), edges)
        avg = np.divide(sums, nonzero, out=np.zeros_like(sums), where=nonzero > 0)
        q = np.repeat(avg, np.diff(np.append(edges, i))) * (chunk > 0)
        ps, qs = p.sum(), q.sum()
        if ps == 0 or qs == 0:
            continue
        p, q = p / ps, q / qs
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best_i, best_kl = i, kl
    return (best_i + 0.5) * bin_width


def aciq_clip(absmax: float, n: int, bits: int = 8) -> float:
    """ACIQ Gaussian clipping value, with the standard deviation estimated from the max of n samples."""
    alpha_gaussian = (0, 1.71063519, 2.15159277, 2.55913646, 2.93620062, 3.28691474, 3.6151146, 3.92403714)
    gaussian_const = (0.5 * 0.35) * (1 + math.sqrt(math.pi * math.log(4)))
    std = (absmax * 2 * gaussian_const) / math.sqrt(2 * math.log(max(n, 2)))
    return alpha_gaussian[bits - 1] * std
