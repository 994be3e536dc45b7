"""Device profiles (``profiles/devices/*.yaml``, validated against ``device-profile.schema.json``)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from edgekit.errors import InputError

PROFILES_DIR = Path(__file__).resolve().parents[2] / "profiles" / "devices"
CONFIGS_DIR = PROFILES_DIR.parent / "configs"


def schema(name: str) -> dict:
    """A published JSON Schema: ``device-profile`` or ``app-config``."""
    return json.loads(resources.files("edgekit.schemas").joinpath(f"{name}.schema.json").read_text())


def validate_against(data: dict, name: str, what: str) -> None:
    import jsonschema

    try:
        jsonschema.validate(data, schema(name))
    except jsonschema.ValidationError as e:
        where = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise InputError(f"{what} is invalid at {where}: {e.message}") from e


@dataclass(frozen=True)
class DeviceProfile:
    id: str
    hardware: str
    reach: str
    targets: tuple[str, ...]
    threads: tuple[int, ...]
    resolutions: tuple[tuple[int, int], ...]
    fps: float
    model_share: float = 0.5
    delegates: dict[str, tuple[str, ...]] = field(default_factory=dict)
    description: str = ""
    runs: int = 50
    warmup: int = 10
    adb: dict = field(default_factory=dict)
    camera: tuple[int, int] = (720, 1280)
    path: str = ""

    @property
    def budget_ms(self) -> float:
        """Time the model may take per frame."""
        return 1000.0 / self.fps * self.model_share

    def delegates_for(self, fmt: str) -> tuple[str, ...]:
        return self.delegates.get(fmt, ("cpu",))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """Load a profile by id (``local-cpu``) or path; it must validate against the schema."""
    import yaml

    p = Path(name_or_path)
    if not p.suffix:
        p = PROFILES_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise InputError(f"no device profile '{name_or_path}'; available: {', '.join(available_profiles())}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise InputError(f"cannot parse device profile {p}: {e}") from e
    validate_against(raw, "device-profile", f"device profile {p.name}")
    from edgekit.target import Target

    for t in raw["targets"]:
        Target.parse(t)
    budget = raw["budget"]
    return DeviceProfile(
        id=raw["id"], hardware=raw["hardware"], reach=raw["reach"], targets=tuple(raw["targets"]),
        threads=tuple(raw["threads"]), resolutions=tuple(tuple(r) for r in raw["resolutions"]),
        fps=float(budget["fps"]), model_share=float(budget.get("model_share", 0.5)),
        delegates={k: tuple(v) for k, v in raw.get("delegates", {}).items()}, description=raw.get("description", ""),
        runs=int(raw.get("runs", 50)), warmup=int(raw.get("warmup", 10)), adb=raw.get("adb", {}),
        camera=tuple(raw.get("camera", (720, 1280))), path=str(p))
