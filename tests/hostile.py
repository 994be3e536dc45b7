"""The table of hostile and broken inputs: each case is a command, the exit code and message it must end
with, the files that must survive unchanged and the files that must not exist afterwards.

Test modules ``tests/test_hostile_*.py`` each define ``CASES`` (a list of :class:`Case`) and run them with
:func:`run_case`; ``benchmarks/hostile_table.py`` collects every ``CASES`` list into README's table.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

#: the classes README counts cases by
CLASSES = ("data loss", "wrong result", "code execution", "escape", "crash", "silent deviation")


@dataclass
class Case:
    """One hostile input.

    ``setup(tmp, fx)`` prepares files under ``tmp`` (the command's working directory) and returns the
    command's arguments (after ``edgekit``); ``fx(name)`` gives a pytest fixture's value (e.g.
    ``fx("tiny_onnx")``). Paths in ``survive``/``absent`` are relative to ``tmp`` (globs allowed in
    ``absent``).
    """

    id: str
    cls: str
    what: str
    setup: Callable[[Path, Callable[[str], object]], list]
    exit_code: int
    message: str
    survive: list[str] = field(default_factory=list)
    absent: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    timeout: float = 300

    def __post_init__(self):
        if self.cls not in CLASSES:
            raise ValueError(f"case {self.id}: class {self.cls!r} not in {CLASSES}")


def _digest(path: Path) -> str:
    if path.is_dir():
        h = hashlib.sha256()
        for f in sorted(path.rglob("*")):
            h.update(str(f.relative_to(path)).encode())
            if f.is_file():
                h.update(f.read_bytes())
        return h.hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def edgekit(*args, cwd=None, env=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    """Run the CLI as a user would, in a child process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "edgekit.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env=full_env, timeout=timeout, stdin=subprocess.DEVNULL, **kw)


def run_case(case: Case, tmp: Path, request) -> subprocess.CompletedProcess:
    """Set the case up in ``tmp``, run it, and check every promise: exit code, one stderr line that holds
    the message and no traceback, survivors unchanged, no absent file, no staging leftovers."""
    args = case.setup(tmp, request.getfixturevalue)
    before = {s: _digest(tmp / s) for s in case.survive}
    res = edgekit(*args, cwd=tmp, env=case.env, timeout=case.timeout)
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    detail = f"{case.id}: exit {res.returncode}\nstderr:\n{res.stderr[-3000:]}"
    assert "Traceback" not in res.stderr, detail
    assert res.returncode == case.exit_code, detail
    if case.exit_code != 0:
        assert len(lines) == 1, detail
        assert case.message in lines[0], detail
    else:
        assert case.message in res.stdout + res.stderr, detail
    for s, digest in before.items():
        assert (tmp / s).exists(), f"{case.id}: {s} was deleted"
        assert _digest(tmp / s) == digest, f"{case.id}: {s} was changed"
    for pattern in case.absent:
        found = list(tmp.glob(pattern))
        assert not found, f"{case.id}: {found} must not exist"
    leftovers = [p for p in tmp.rglob("*") if "edgekit-tmp" in p.name or "edgekit-old" in p.name]
    assert not leftovers, f"{case.id}: staging leftovers {leftovers}"
    return res
