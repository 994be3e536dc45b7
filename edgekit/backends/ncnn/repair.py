"""Repairs of known pnnx gaps in the ``.param`` it writes.

pnnx sometimes leaves an ONNX ``Pad`` as a bare ``Pad`` layer that ncnn does not know (seen on
TFLite-origin models, e.g. BlazeFace's channel padding). pnnx's own graph (``model.pnnx.param``)
still records the pads, so the layer is rewritten as ncnn's ``Padding``: ONNX pads
``[n0, c0, h0, w0, n1, c1, h1, w1]`` -> ``0=h0 1=h1 2=w0 3=w1 4=mode 5=value 7=c0 8=c1``.
"""

from __future__ import annotations

import re
from pathlib import Path

from edgekit.errors import UnsupportedOpError

MODES = {"constant": 0, "edge": 1, "replicate": 1, "reflect": 2}


def _pnnx_pads(pnnx_param: Path) -> dict[str, dict]:
    out = {}
    for line in pnnx_param.read_text().splitlines():
        parts = line.split()
        if len(parts) > 1 and parts[0] == "Pad":
            attrs = dict(re.findall(r"(\w+)=(\([^)]*\)|\S+)", line))
            out[parts[1]] = attrs
    return out


def repair_pads(ncnn_param: Path, pnnx_param: Path) -> list[str]:
    """Rewrite unknown ``Pad`` layers as ``Padding``; returns notes naming what was repaired."""
    lines = ncnn_param.read_text().split("\n")
    if not any(ln.startswith("Pad ") for ln in lines):
        return []
    pads = _pnnx_pads(pnnx_param) if pnnx_param.is_file() else {}
    notes = []
    for k, line in enumerate(lines):
        parts = line.split()
        if not parts or parts[0] != "Pad":
            continue
        name = parts[1]
        attrs = pads.get(name)
        values = [int(v) for v in attrs["pads"].strip("()").split(",")] if attrs and "pads" in attrs else None
        if values is None or len(values) != 8 or values[0] or values[4]:
            raise UnsupportedOpError("Pad", name, "ncnn", "pnnx left it unconverted and its pads are not a 4-D "
                                     "NCHW padding edgekit can rewrite")
        n0, c0, h0, w0, n1, c1, h1, w1 = values
        mode = MODES.get(attrs.get("mode", "constant").strip("'\""), 0)
        value = float(attrs.get("value", "0").strip("'\"") or 0)
        nb, nt = int(parts[2]), int(parts[3])
        blobs = parts[4 : 4 + nb + nt]
        params = f"0={h0} 1={h1} 2={w0} 3={w1} 4={mode} 5={value} 7={c0} 8={c1}"
        lines[k] = f"{'Padding':<24} {name:<24} {nb} {nt} {' '.join(blobs)} {params}"
        notes.append(f"repaired pnnx layer {name}: Pad -> Padding (pads {values})")
    ncnn_param.write_text("\n".join(lines))
    return notes
