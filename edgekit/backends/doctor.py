"""``edgekit doctor``: which backends are installed, their versions, the devices they see here (all from the
backends' declarations)."""

from __future__ import annotations

import platform
from dataclasses import asdict, dataclass, field

from edgekit.backends import registry
from edgekit.core.deps import TOOLS, version
from edgekit.errors import EdgekitError


@dataclass
class BackendStatus:
    name: str
    runtime: str
    installed: bool
    packages: dict[str, str | None]
    extra: str
    devices: list[str] = field(default_factory=list)
    note: str = ""


def report() -> list[BackendStatus]:
    """Status of every declared backend (plugins included) and of the training tools on this machine;
    imports each installed backend's session to ask it for devices."""
    rows = []
    entries = [(b.format, b.runtime, b.packages, b.extra, True) for b in registry.backends().values()]
    entries += [(name, name, packages, extra, False) for name, (packages, extra) in TOOLS.items()]
    for name, runtime, packages, extra, is_backend in entries:
        versions = {p: version(p) for p in packages}
        installed = all(versions.values())
        status = BackendStatus(name, runtime, installed, versions, extra)
        if installed and is_backend:
            try:
                status.devices = registry.session_class(name).devices()
            except EdgekitError as e:
                status.note = str(e)
        elif not installed:
            missing = [p for p, v in versions.items() if not v]
            status.note = f"missing {', '.join(missing)}: pip install 'edgekit[{extra}]'"
        rows.append(status)
    return rows


def system() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine()}


def to_dict(rows: list[BackendStatus]) -> dict:
    return {"system": system(), "backends": [asdict(r) for r in rows]}
