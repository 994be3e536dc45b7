"""Pipeline definitions (YAML or Python): stages with inputs/outputs and the units they may run on.

    name: my-pipeline
    stages:
      - name: segment
        model: {onnx: artifacts/student-onnx-fp32, ncnn: artifacts/student-ncnn-fp32}   # artifact per format
        inputs: [seg_in]
        outputs: [mask]
        units: [gpu:ncnn, cpu1:onnx, cpu0:onnx]       # preference order = fallback chain
      - name: refine
        kernel: refine_mask                           # a name from edgekit's kernel registry
        inputs: [mask, frame]
        outputs: [alpha]
        units: [cpu0, cpu1]

A model stage may carry its mask between frames instead of running on every one (segmentation reuse,
:mod:`edgekit.apps.video.reuse`): ``reuse: {max_k: 4, min_iou: 0.95}`` (the app config's ``reuse`` fields),
with the frame's luma at the model's resolution as its second input (the ``reuse_luma`` kernel makes it). Its
model must give one channel at the luma's size with values in [0, 1] (a probability, not logits): anything else is
refused with an InputError on the first inference, not failed over to another unit.

A unit name is ``UNIT`` for kernels and ``UNIT:FORMAT`` for models. The frame enters as ``frame``.

A pipeline file is data, never code. It is validated against ``pipeline.schema.json``
(``edgekit schema pipeline``) before anything else happens. ``kernel:`` is a name from
:mod:`edgekit.apps.pipeline.kernels` (the built-ins plus kernels installed plugins register under the
``edgekit.kernels`` entry-point group); a ``module:attr`` string is refused and nothing is imported or
called while the file is loaded, other than the registered kernel's constructor for class kernels.

Paths in a pipeline file (a model's ``source``, the artifact folders) are relative, without ``..``, and
are resolved against the folder of the pipeline file, and must stay inside it (symlinks included). The
bundled pipelines (``profiles/pipelines/``) are edgekit's own files: their paths are resolved against the
edgekit checkout root (which holds ``models/``), so ``edgekit schedule virtual-background`` works from any
directory. A pipeline given as a dict (Python API) resolves against ``root`` (default: the working
directory). Python callers may also build :class:`Stage` objects with callables directly.
"""

from __future__ import annotations

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
    #: segmentation reuse between frames (:class:`~edgekit.apps.video.reuse.MaskReuse`) of a model stage whose
    #: second input is the frame's luma at the model's resolution; None runs the model on every frame
    reuse: Any = None

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


def load_pipeline(source: str | Path | dict, cache: Path = Path("out/pipeline-artifacts"),
                  root: str | Path | None = None) -> PipelineSpec:
    """Read a pipeline (a YAML file or a dict), validated against ``pipeline.schema.json``. A model stage
    gives artifacts per format, or a ``source`` model with ``targets`` (format -> target) and ``shape``,
    converted once per source hash into ``cache``. A kernel that is a class is instantiated with the
    stage's ``params`` (stateful kernels). Relative paths resolve against ``root`` (default: the file's
    folder, see the module docstring).

    Raises:
        InputError: the file cannot be read or parsed, fails the schema, names an unregistered kernel or
            parameters it does not take, a path that leaves its folder or does not exist, or stages that
            cannot run in order.
    """
    from edgekit.apps.pipeline.kernels import lookup, make
    from edgekit.core.datafiles import read_yaml, validate_against

    if isinstance(source, dict):
        raw, what = source, "pipeline"
        base = Path(root) if root is not None else Path.cwd()
    else:
        path = Path(source)
        raw, what = read_yaml(path, "pipeline"), f"pipeline {path.name}"
        base = Path(root) if root is not None else _default_root(path)
    validate_against(raw, "pipeline", what)
    seen: set[str] = set()
    dry = []
    for s in raw["stages"]:  # every check first: nothing is made or converted for a file that is refused
        if s["name"] in seen:
            raise InputError(f"{what}: two stages are named '{s['name']}'")
        seen.add(s["name"])
        if ("kernel" in s) == ("model" in s):
            raise InputError(f"{what}: stage '{s['name']}' needs exactly one of kernel or model")
        if "params" in s and "kernel" not in s:
            raise InputError(f"{what}: stage '{s['name']}' has params but no kernel")
        if "reuse" in s:
            _reuse_budget(s, what)
        formats: dict[str, str] = {}
        if "model" in s:
            _model_paths(s["model"], base, f"{what}: stage '{s['name']}'")
            formats = dict.fromkeys(s["model"]["targets"] if "source" in s["model"] else s["model"], "")
        else:
            lookup(s["kernel"])
        dry.append(Stage(s["name"], list(s["inputs"]), list(s["outputs"]), list(s["units"]), model=formats))
    PipelineSpec(raw["name"], dry).check()
    stages = []
    for s in raw["stages"]:
        params = dict(s.get("params", {}))
        kernel = None
        if "kernel" in s:
            kernel, params = make(s["kernel"], params, len(s["inputs"]), s["name"])
        reuse = None
        if "reuse" in s:
            from edgekit.apps.video.reuse import MaskReuse

            reuse = MaskReuse(_reuse_budget(s, what))
        stages.append(Stage(name=s["name"], inputs=list(s["inputs"]), outputs=list(s["outputs"]),
                            units=list(s["units"]), kernel=kernel,
                            model=_models(s.get("model", {}), cache, base, f"{what}: stage '{s['name']}'"),
                            params=params, reuse=reuse))
    spec = PipelineSpec(raw["name"], stages)
    spec.check()
    return spec


def _reuse_budget(s: dict, what: str):
    """A stage's ``reuse`` block as a :class:`~edgekit.apps.video.reuse.ReuseBudget` (checked against the same
    schema as an app config's ``reuse``); only a model stage with two inputs (the model's input, then the frame's
    luma at the model's resolution, e.g. from the ``reuse_luma`` kernel) and one output (the mask) takes one.

    Raises:
        InputError: reuse on a kernel stage, the wrong inputs or outputs, or a block the schema refuses.
    """
    from edgekit.apps.video.reuse import budget_from

    where = f"{what}: stage '{s['name']}'"
    if "model" not in s:
        raise InputError(f"{where}: reuse needs a model stage (it carries the model's mask between frames)")
    if len(s["inputs"]) != 2 or len(s["outputs"]) != 1:
        raise InputError(f"{where}: reuse needs inputs [MODEL_INPUT, LUMA] (LUMA: the frame's luma at the model's "
                         "resolution, e.g. from the reuse_luma kernel) and one output (the mask)")
    return budget_from(s["reuse"], f"{where} reuse")


def _default_root(path: Path) -> Path:
    """The folder a pipeline file's paths are relative to: its own, or the checkout root for bundled ones."""
    from edgekit.apps.pipeline.schedule import BUNDLED

    folder = path.resolve().parent
    return BUNDLED.parents[1] if folder == BUNDLED.resolve() else folder


def _model_paths(model: dict, base: Path, what: str) -> dict[str, Path]:
    """Every path of a model entry, checked: relative, inside ``base``, existing."""
    from edgekit.core.files import inside

    if "source" in model:
        src = inside(base, model["source"], f"{what} model source")
        if not src.is_file():
            raise InputError(f"{what}: model source '{model['source']}' not found in {base}")
        return {"source": src}
    paths = {}
    for fmt, rel in model.items():
        folder = inside(base, rel, f"{what} {fmt} artifact")
        if not folder.is_dir():
            raise InputError(f"{what}: {fmt} artifact folder '{rel}' not found in {base}")
        paths[fmt] = folder
    return paths


def _models(model: dict, cache: Path, base: Path, what: str) -> dict[str, str]:
    if not model:
        return {}
    paths = _model_paths(model, base, what)
    if "source" not in model:
        return {k: str(v) for k, v in paths.items()}
    from edgekit.apps.profiling.sweep import cached_artifact

    h, w = model["shape"][-2:]
    return {fmt: str(cached_artifact(paths["source"], target, (h, w), cache).path)
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
        if stage.reuse is not None:
            stage.reuse.reset()
    return spec
