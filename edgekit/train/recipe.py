"""Distillation recipes (YAML). Every key has a default; unknown keys are an error."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, is_dataclass
from pathlib import Path

from edgekit.errors import InputError


@dataclass
class DataConfig:
    synthetic: float = 1.0                 # weight of the synthetic compositor (0: off)
    folders: list[dict] = field(default_factory=list)  # [{path, weight, recompose}]
    size: int = 128                        # training crop
    pool: int = 2000                       # synthetic composites pre-generated per process


@dataclass
class TeacherConfig:
    kind: str = "builtin"                  # builtin | module | artifact
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
            values[name] = tuple(value)
        else:
            values[name] = value
    return cls(**values)


def load_recipe(source: str | Path | dict) -> Recipe:
    """A recipe from a YAML file or a dict, checked for unknown keys and impossible combinations."""
    import yaml

    if isinstance(source, dict):
        raw = source
    else:
        try:
            raw = yaml.safe_load(Path(source).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise InputError(f"cannot read recipe {source}: {e}") from e
    recipe = _build(Recipe, raw, "")
    if recipe.mode not in ("offline", "online"):
        raise InputError(f"recipe: mode must be offline or online, not {recipe.mode!r}")
    if recipe.teacher.kind not in ("builtin", "module", "artifact"):
        raise InputError(f"recipe: teacher.kind must be builtin, module or artifact, not {recipe.teacher.kind!r}")
    if recipe.teacher.kind == "artifact" and (recipe.losses.affinity or recipe.losses.attention):
        raise InputError("recipe: an artifact teacher gives outputs only; affinity and attention losses need "
                         "a PyTorch teacher")
    if recipe.teacher.kind == "artifact" and recipe.mode == "online":
        raise InputError("recipe: an artifact teacher cannot be trained (online mode)")
    return recipe
