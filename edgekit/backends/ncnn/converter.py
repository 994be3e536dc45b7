"""NCNN targets: ``ncnn-fp32``, ``ncnn-fp16`` (fp16 weights) and ``ncnn-int8``, exported with pnnx.

pnnx runs in a subprocess on the prepared ONNX model. Known pnnx gaps are repaired on the emitted
``.param`` (:mod:`edgekit.backends.ncnn.repair`), and the result is always loaded by the real
ncnn runtime before the conversion counts: pnnx can exit 0 with a graph ncnn refuses.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from edgekit.backends.converter import BaseConverter, ConversionJob, ConvertedModel
from edgekit.core import subprocesses
from edgekit.core.deps import require, require_installed, tool_versions
from edgekit.core.iospec import IOSpec, TensorSpec
from edgekit.errors import ConversionError, UnsupportedOpError

UNSUPPORTED = frozenset({"Loop", "If", "Scan", "NonMaxSuppression", "Unique"})


class NcnnConverter(BaseConverter):
    format = "ncnn"
    supports_keep_float = True

    def check_available(self) -> None:
        require_installed("pnnx")
        require("ncnn")

    def op_support(self, op_type: str) -> bool | None:
        return op_type not in UNSUPPORTED

    def alternatives(self, job: ConversionJob) -> list[dict]:
        return [{"calibration_method": "aciq"}] if job.target.is_quantized else []

    def stages(self, job: ConversionJob) -> tuple[str, ...]:
        return {"fp32": ("export",), "fp16": ("export", "fp16")}.get(job.target.precision, ("export", "quantize"))

    def convert(self, job: ConversionJob, workdir: Path) -> ConvertedModel:
        if job.stages_dir is not None and job.target.precision == "fp16":  # pnnx's fp32 export, kept apart
            plain = workdir / ".export"
            plain.mkdir()
            p32, b32, _ = export_pnnx(job, plain, fp16=False)
            job.keep_stage("export", {"model": p32, "weights": b32}, "fp32", ncnn_io(job.source.io))
            shutil.rmtree(plain)
        param, binf, notes = export_pnnx(job, workdir, fp16=job.target.precision == "fp16")
        if job.target.is_quantized:
            job.keep_stage("export", {"model": param, "weights": binf}, "fp32", ncnn_io(job.source.io))
        options = {"weights": "fp16" if job.target.precision == "fp16" else "fp32"}
        kept: tuple[str, ...] = ()
        if job.target.is_quantized:
            from edgekit.backends.ncnn.int8 import quantize_ncnn

            options.update(quantize_ncnn(job, param, binf, workdir))
            kept = tuple(options.pop("kept_float"))
            if options.get("pooled_float_layers"):
                notes.append(f"{len(options['pooled_float_layers'])} layer(s) fed by a global pooling computed in "
                             "float (squeeze-excite: negligible cost, and their narrow calibrated ranges saturate on "
                             "inputs unlike the calibration set; -O pooled_layers=int8 quantizes them)")
        io = ncnn_io(job.source.io)
        _check_loads(param, binf)
        return ConvertedModel(files={"model": param.name, "weights": binf.name, **(
            {"table": "model.table"} if (workdir / "model.table").is_file() else {})}, io=io, route="pnnx",
            tools=tool_versions("pnnx", "ncnn", "onnx"), options=options, notes=notes, kept_float=kept)


def export_pnnx(job: ConversionJob, workdir: Path, fp16: bool) -> tuple[Path, Path, list[str]]:
    """Run pnnx on the prepared ONNX; returns (param, bin, repair notes) in ``workdir``."""
    work = workdir / ".pnnx"
    work.mkdir()
    model = work / "model.onnx"
    onnx = require("onnx")
    m = onnx.load(str(job.source.onnx_path))
    m.ir_version = min(m.ir_version, 8)  # pnnx's bundled ONNX Runtime reads IR <= 13; opset 17 needs only 8
    onnx.save(m, str(model))
    shapes = ",".join("[" + ",".join(str(d) for d in t.shape) + "]" for t in job.source.io.inputs)
    exe = shutil.which("pnnx") or str(Path(sys.executable).parent / "pnnx")
    cmd = [exe, str(model), f"inputshape={shapes}", f"fp16={int(fp16)}"]
    res = subprocesses.run(cmd, "pnnx", cwd=work)  # own process group, timeout, killed on interrupt
    log = res.stdout + res.stderr
    param, binf = work / "model.ncnn.param", work / "model.ncnn.bin"
    if res.returncode != 0 or not param.is_file() or not binf.is_file():
        lines = [ln for ln in log.strip().splitlines() if ln.strip()]
        raise ConversionError(f"pnnx failed: {lines[-1] if lines else 'no output'}")
    from edgekit.backends.ncnn.repair import repair_pads

    notes = repair_pads(param, work / "model.pnnx.param")
    for line in log.splitlines():
        if "unsupported" in line.lower():
            notes.append(f"pnnx: {line.strip()}")
    final_param, final_bin = workdir / "model.param", workdir / "model.bin"
    os.replace(param, final_param)
    os.replace(binf, final_bin)
    shutil.rmtree(work)
    return final_param, final_bin, notes


def ncnn_io(source_io: IOSpec) -> IOSpec:
    """pnnx names blobs in0, in1, ... and out0, out1, ... in the source's order."""

    def rename(specs, prefix):
        return tuple(TensorSpec.from_dict({**t.to_dict(), "name": f"{prefix}{i}"}) for i, t in enumerate(specs))

    return IOSpec(rename(source_io.inputs, "in"), rename(source_io.outputs, "out"))


def _check_loads(param: Path, binf: Path) -> None:
    ncnn = require("ncnn")
    net = ncnn.Net()
    if net.load_param(str(param)) != 0:
        unknown = _unknown_layers(param)
        if unknown:
            layer_type, name = unknown[0]
            raise UnsupportedOpError(layer_type, name, "ncnn", "pnnx left a layer ncnn does not know")
        raise ConversionError(f"ncnn cannot load {param.name}")
    if net.load_model(str(binf)) != 0:
        raise ConversionError(f"ncnn cannot load weights {binf.name}")


def _unknown_layers(param: Path) -> list[tuple[str, str]]:
    ncnn = require("ncnn")
    out = []
    for line in param.read_text().splitlines()[2:]:
        parts = line.split()
        if len(parts) < 2:
            continue
        if ncnn.layer_to_index(parts[0]) < 0:
            out.append((parts[0], parts[1]))
    return out
