"""Distillation recipes (YAML). Every key has a default. A recipe is validated against
``recipe.schema.json`` (``edgekit schema recipe``: types and ranges, unknown keys refused) before any
training starts, so ``steps: 0``, ``steps: ten`` or ``kl: "lots"`` is one line naming the field.

A recipe is data: a teacher given as code (``teacher.kind: module``, ``teacher.module: pkg.mod:factory``)
is imported only when the same reference is given on the command line (``--teacher-module``); from the
file alone it is refused. Weights named by a recipe (``teacher.checkpoint``, ``student.init``) are loaded
as state dicts with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from edgekit.errors import InputError


@dataclass
class DataConfig:
    synthetic: float = 1.0                 # weight of the synthetic compositor (0: off)
    folders: list[dict] = field(default_factory=list)  # [{path, weight, recompose}]
    unlabeled: list[dict] = field(default_factory=list)  # [{path (folder or video), weight, every}]: teacher-labelled
    size: int = 128                        # training crop
    pool: int = 2000                       # synthetic composites pre-generated per process


@dataclass
class TeacherConfig:
    kind: str = "builtin"                  # builtin | module | artifact | model
    model: str = ""                        # kind=model: a name from `edgekit models list`, run in its framework
    width: float = 2.0                     # builtin teacher: the student architecture, wider
    module: str = ""                       # kind=module: "pkg.mod:factory" returning a torch.nn.Module
    checkpoint: str = ""                   # teacher weights; a builtin teacher is trained first when missing
    artifact: str = ""                     # kind=artifact: an edgekit artifact run by a Session (output only)
    train_steps: int = 1500                # steps to train a builtin teacher that has no checkpoint
    lr: float = 4e-3                       # peak learning rate of that teacher training


@dataclass
class StudentConfig:
    width: float = 1.0
    init: str = ""                         # start from these weights


@dataclass
class LossConfig:
    gt: float = 1.0                        # BCE + Dice against the exact masks
    kl: float = 0.0                        # pixelwise KL on class probabilities (temperature below)
    affinity: float = 0.0                  # pairwise affinity on pooled features (stages 3, 4)
    attention: float = 0.0                 # attention transfer (stages 1-4)
    temperature: float = 2.0
    affinity_pool: int = 16


@dataclass
class EvalConfig:
    every: int = 0                         # 0: only at the end
    samples: int = 200
    size: tuple[int, int] = (256, 256)
    real_photos: bool = True               # also IoU vs MediaPipe on the reserved real photos


@dataclass
class Recipe:
    name: str = "distill"
    seed: int = 0
    mode: str = "offline"                  # offline (frozen teacher) | online (trained together)
    steps: int = 1000
    batch: int = 16
    lr: float = 4e-3
    checkpoint_every: int = 200
    output: str = "out/distill"
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    losses: LossConfig = field(default_factory=LossConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict:
        return asdict(self)


def _build(cls, raw: dict, where: str):
    if not isinstance(raw, dict):
        raise InputError(f"recipe: '{where}' must be a mapping")
    known = {f.name: f for f in fields(cls)}
    unknown = set(raw) - set(known)
    if unknown:
        raise InputError(f"recipe: unknown key(s) {sorted(unknown)} in '{where}'; known: {sorted(known)}")
    values = {}
    for name, value in raw.items():
        default = getattr(cls(), name)
        if is_dataclass(default):
            values[name] = _build(type(default), value, f"{where}.{name}".strip("."))
        elif isinstance(default, tuple):
            values[name] = tuple(int(v) if isinstance(v, float) else v for v in value)
        elif type(default) is int and isinstance(value, float):  # the schema accepted 10.0 as an integer
            values[name] = int(value)
        elif type(default) is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)
        else:
            values[name] = value
    return cls(**values)


def _finite(value, what: str, where: str = "") -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise InputError(f"{what} is invalid at {where.strip('/') or '(top level)'}: {value} is not a finite number")
    if isinstance(value, dict):
        for k, v in value.items():
            _finite(v, what, f"{where}/{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _finite(v, what, f"{where}/{i}")


def load_recipe(source: str | Path | dict, teacher_module: str | None = None) -> Recipe:
    """A recipe from a YAML file or a dict, validated against ``recipe.schema.json`` (types, ranges,
    unknown keys) and checked for impossible combinations.

    ``teacher_module`` is the ``--teacher-module`` command-line argument: a recipe *file* whose teacher is
    code (``teacher.kind: module``) is refused unless it is given (it then replaces ``teacher.module``).
    A dict is the Python caller's own: its ``teacher.module`` is taken as given.

    Raises:
        InputError: the file cannot be read, is not valid YAML, fails the schema (the field is named), holds
            a non-finite number, combines options that cannot work together, or names a teacher module that
            was not given on the command line.
    """
    from edgekit.core.datafiles import read_yaml, validate_against

    if isinstance(source, dict):
        raw, what = source, "recipe"
    else:
        raw, what = read_yaml(source, "recipe"), f"recipe {Path(source).name}"
        raw = {} if raw is None else raw
    validate_against(raw, "recipe", what)
    _finite(raw, what)
    recipe = _build(Recipe, raw, "")
    if teacher_module:
        if recipe.teacher.kind != "module":
            raise InputError(f"--teacher-module {teacher_module}: {what} has teacher.kind "
                             f"'{recipe.teacher.kind}', not 'module'")
        recipe.teacher.module = teacher_module
    elif recipe.teacher.kind == "module" and not isinstance(source, dict):
        raise InputError(f"{what}: teacher.module '{recipe.teacher.module}' is code to import; a recipe file "
                         f"cannot run code: pass it on the command line (--teacher-module "
                         f"{recipe.teacher.module or 'PKG.MOD:FACTORY'})")
    if recipe.teacher.kind == "module" and not recipe.teacher.module:
        raise InputError(f"{what}: teacher.kind 'module' needs teacher.module (--teacher-module PKG.MOD:FACTORY)")
    kind = recipe.teacher.kind
    if kind == "artifact" and not recipe.teacher.artifact:
        raise InputError(f"{what}: teacher.kind 'artifact' needs teacher.artifact (an artifact folder)")
    if kind == "model" and not recipe.teacher.model:
        raise InputError(f"{what}: teacher.kind 'model' needs teacher.model (a name from `edgekit models list`)")
    if kind in OUTPUT_ONLY and (recipe.losses.affinity or recipe.losses.attention):
        raise InputError(f"recipe: an {kind} teacher gives outputs only; affinity and attention losses need "
                         "a PyTorch teacher")
    if kind in OUTPUT_ONLY and recipe.mode == "online":
        raise InputError(f"recipe: an {kind} teacher cannot be trained (online mode)")
    if recipe.data.unlabeled and kind not in OUTPUT_ONLY:
        raise InputError(f"{what}: data.unlabeled is labelled by the teacher, which must then be a model or an "
                         f"artifact (teacher.kind model|artifact), not '{kind}'")
    if recipe.data.synthetic == 0 and not recipe.data.folders and not recipe.data.unlabeled:
        raise InputError(f"{what}: no training data (data.synthetic is 0, data.folders and data.unlabeled empty)")
    _not_reserved(recipe, what)
    return recipe


#: teachers run by a Session: outputs only, frozen
OUTPUT_ONLY = ("artifact", "model")


def _not_reserved(recipe: Recipe, what: str) -> None:
    """The photos packages ship are reserved for evaluation: no training source may be (or hold) them."""
    from edgekit.core.samples.photos import cache_dir

    reserved = cache_dir().resolve()
    for section in ("folders", "unlabeled"):
        for i, entry in enumerate(getattr(recipe.data, section)):
            path = Path(entry["path"]).expanduser().resolve()
            if path == reserved or reserved in path.parents:
                raise InputError(f"{what}: data.{section}[{i}] ({entry['path']}) holds the photos reserved for "
                                 "evaluation; they are never training data")
