"""Pipeline definitions (YAML or Python): stages with inputs/outputs and the units they may run on.

    stages:
      - name: segment
        model: {onnx: out/student-onnx-fp32, ncnn: out/student-ncnn-fp32}   # artifact per format
        inputs: [seg_in]
        outputs: [mask]
        units: [gpu:ncnn, cpu1:onnx, cpu0:onnx]       # preference order = fallback chain
      - name: refine
        kernel: edgekit.video.kernels:refine_mask     # a function of the stage's inputs
        inputs: [mask, frame]
        outputs: [alpha]
        units: [cpu0, cpu1]

A unit name is ``UNIT`` for kernels and ``UNIT:FORMAT`` for models. The frame enters as ``frame``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgekit.errors import InputError


@dataclass
class Stage:
    name: str
    inputs: list[str]
    outputs: list[str]
    units: list[str]
    kernel: Callable | None = None
    model: dict[str, str] = field(default_factory=dict)  # format -> artifact directory
    params: dict[str, Any] = field(default_factory=dict)  # extra keyword arguments of a kernel

    @property
    def is_model(self) -> bool:
        return bool(self.model)

    def unit_of(self, choice: str) -> str:
        return choice.split(":")[0]

    def format_of(self, choice: str) -> str | None:
        return choice.split(":")[1] if ":" in choice else None


@dataclass
class PipelineSpec:
    name: str
    stages: list[Stage]

    def check(self) -> None:
        """Stages in a runnable order: each input produced earlier (or the frame)."""
        have = {"frame"}
        for s in self.stages:
            missing = [i for i in s.inputs if i not in have]
            if missing:
                raise InputError(f"stage '{s.name}' needs {missing}, which no earlier stage produces")
            if not s.units:
                raise InputError(f"stage '{s.name}' lists no units")
            for u in s.units:
                if s.is_model and s.format_of(u) not in s.model:
                    raise InputError(f"stage '{s.name}': unit '{u}' needs a model for format "
                                     f"'{s.format_of(u)}' (have {sorted(s.model)})")
                if not s.is_model and ":" in u:
                    raise InputError(f"stage '{s.name}' is a kernel; its units take no format ('{u}')")
            have.update(s.outputs)


def resolve_kernel(ref: str) -> Callable:
    module, _, name = ref.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise InputError(f"cannot import kernel '{ref}': {e}") from e


def load_pipeline(source: str | Path | dict, cache: Path = Path("out/pipeline-artifacts")) -> PipelineSpec:
    """Read a pipeline. A model stage gives artifacts per format, or a ``source`` model with
    ``targets`` (format -> target) and ``shape``, converted once per source hash into ``cache``.
    A kernel that is a class is instantiated with the stage's ``params`` (stateful kernels)."""
    import yaml

    raw = source if isinstance(source, dict) else yaml.safe_load(Path(source).read_text())
    stages = []
    for s in raw.get("stages", []):
        params = dict(s.get("params", {}))
        kernel = resolve_kernel(s["kernel"]) if "kernel" in s else None
        if isinstance(kernel, type):
            kernel, params = kernel(**params), {}
        stages.append(Stage(name=s["name"], inputs=list(s.get("inputs", [])), outputs=list(s.get("outputs", [])),
                            units=list(s.get("units", [])), kernel=kernel, model=_models(s.get("model", {}), cache),
                            params=params))
    spec = PipelineSpec(raw.get("name", "pipeline"), stages)
    spec.check()
    return spec


def _models(model: dict, cache: Path) -> dict[str, str]:
    if "source" not in model:
        return {k: str(v) for k, v in model.items()}
    from edgekit.profiling.sweep import cached_artifact

    h, w = model["shape"][-2:]
    return {fmt: str(cached_artifact(model["source"], target, (h, w), cache).path)
            for fmt, target in model["targets"].items()}


def reset_state(kernel) -> None:
    """Forget what a stateful kernel (smoother, denoiser, tracker, ...) carried over from earlier frames.
    A bound method's state is its object's."""
    kernel = getattr(kernel, "__self__", kernel)
    for attr in ("previous", "curves", "box"):
        if hasattr(kernel, attr):
            setattr(kernel, attr, None)
    if getattr(kernel, "filter", None) is not None:
        kernel.filter.reset()


def reset_stages(spec: PipelineSpec) -> PipelineSpec:
    """Reset every stateful kernel of ``spec`` so a run starts from frame 0's state; returns ``spec``."""
    for stage in spec.stages:
        reset_state(stage.kernel)
    return spec
