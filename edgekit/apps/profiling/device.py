"""Device profiles (``profiles/devices/*.yaml``, validated against ``device-profile.schema.json``, read through
:mod:`edgekit.core.datafiles`).

A profile is data: it names delegates (``cpu``, ``gpu``, ``npu``, ...), never a library to load. A delegate
library (``gpu=/path/lib.so``) is loaded only when the user passes it on the command line
(``edgekit profile --delegate-lib gpu=/path/lib.so``): :func:`load_profile` then puts it in place of the
profile's bare ``gpu``. A library path written in the profile itself is refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.core.datafiles import read_yaml, validate_against
from edgekit.errors import DeviceError, InputError


class DeviceLostError(DeviceError):
    """The device stopped answering in the middle of a sweep (it rebooted, the network or the ssh connection
    dropped, adb lost it, or a call ran past its timeout). Nothing about the point being measured is known, so
    the sweep stops at once: the points finished so far are kept for a resume."""


PROFILES_DIR = Path(__file__).resolve().parents[3] / "profiles" / "devices"
CONFIGS_DIR = PROFILES_DIR.parent / "configs"


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
    ssh: dict = field(default_factory=dict)
    camera: tuple[int, int] = (720, 1280)
    models: tuple[str, ...] = ()  # candidate models by catalogue name (edgekit models list)
    #: background load each point is also measured under: {"busy": "auto" | int, "memory": int, "cores": int}
    load: dict = field(default_factory=lambda: {"busy": "auto", "memory": 1})
    path: str = ""

    @property
    def budget_ms(self) -> float:
        """Time the model may take per frame."""
        return 1000.0 / self.fps * self.model_share

    @property
    def max_degradation(self) -> float:
        """The most a chosen point's latency may grow under the background load (``load.max_degradation``)."""
        return float(self.load.get("max_degradation", 2.0))

    def delegates_for(self, fmt: str) -> tuple[str, ...]:
        return self.delegates.get(fmt, ("cpu",))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def parse_delegate_libs(items: list[str] | tuple[str, ...] | dict[str, str] | None) -> dict[str, str]:
    """``["gpu=/path/lib.so", ...]`` (command-line arguments) -> ``{"gpu": "/path/lib.so"}``.

    Raises:
        InputError: an item is not ``UNIT=PATH``, names a unit twice, or the library is not a file.
    """
    if not items:
        return {}
    if isinstance(items, dict):
        items = [f"{k}={v}" for k, v in items.items()]
    libs: dict[str, str] = {}
    for item in items:
        unit, sep, lib = str(item).partition("=")
        if not sep or not unit or not lib or "=" in lib:
            raise InputError(f"--delegate-lib {item}: expected UNIT=PATH (e.g. gpu=/path/libdelegate.so)")
        if unit in libs:
            raise InputError(f"--delegate-lib names '{unit}' twice")
        if not Path(lib).is_file():
            raise InputError(f"--delegate-lib {item}: no file {lib}")
        libs[unit] = str(Path(lib).resolve())  # an absolute path: dlopen never searches for it elsewhere
    return libs


def load_profile(name_or_path: str | Path, delegate_libs: dict[str, str] | list[str] | None = None) -> DeviceProfile:
    """Load a profile by id (``local-cpu``) or path; it must validate against the schema.

    ``delegate_libs`` (unit -> library, from the command line) replaces the profile's bare delegate of that
    unit (``gpu`` -> ``gpu=/path/lib.so``). A library path written in the profile is refused: a file may
    name a delegate, only the user may name code to load.

    Raises:
        InputError: no such profile, invalid YAML or schema, an unknown target, a library path in the
            profile, or a ``delegate_libs`` unit the profile does not use.
    """
    libs = parse_delegate_libs(delegate_libs)
    p = Path(name_or_path)
    if not p.suffix:
        p = PROFILES_DIR / f"{name_or_path}.yaml"
    if not p.is_file():
        raise InputError(f"no device profile '{name_or_path}'; available: {', '.join(available_profiles())}")
    raw = read_yaml(p, "device profile")
    validate_against(raw, "device-profile", f"device profile {p.name}")
    from edgekit.core.target import Target

    for t in raw["targets"]:
        Target.parse(t)
    delegates: dict[str, tuple[str, ...]] = {}
    used: set[str] = set()
    for fmt, names in raw.get("delegates", {}).items():
        for d in names:
            unit, sep, lib = d.partition("=")
            if sep:
                raise InputError(f"device profile {p.name}: delegate '{d}' names a library; a library is loaded "
                                 f"only when given on the command line: write '{unit}' in the profile and pass "
                                 f"--delegate-lib {unit}={lib}")
        delegates[fmt] = tuple(f"{d}={libs[d]}" if d in libs else d for d in names)
        used |= set(names)
    unused = sorted(set(libs) - used)
    if unused:
        raise InputError(f"--delegate-lib {', '.join(unused)}: device profile {p.name} uses no such delegate "
                         f"(it uses {', '.join(sorted(used)) or 'cpu only'})")
    budget = raw["budget"]
    if not all(math.isfinite(budget.get(k, 0.5)) for k in ("fps", "model_share")):
        raise InputError(f"device profile {p.name} is invalid at budget: fps and model_share must be finite numbers")
    return DeviceProfile(
        id=raw["id"], hardware=raw["hardware"], reach=raw["reach"], targets=tuple(raw["targets"]),
        threads=tuple(raw["threads"]), resolutions=tuple(tuple(r) for r in raw["resolutions"]),
        fps=float(budget["fps"]), model_share=float(budget.get("model_share", 0.5)),
        delegates=delegates, description=raw.get("description", ""),
        runs=int(raw.get("runs", 50)), warmup=int(raw.get("warmup", 10)), adb=raw.get("adb", {}),
        ssh=raw.get("ssh", {}),
        camera=tuple(raw.get("camera", (720, 1280))), models=tuple(raw.get("models", ())),
        load={"busy": "auto", "memory": 1, **raw.get("load", {})},
        path=str(p))
