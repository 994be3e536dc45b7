"""Files a user hands edgekit are data: paths stay inside their folder, hashes are checked before use,
and what edgekit writes appears whole or not at all, with the user's umask.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path, PurePosixPath

from edgekit.errors import InputError


def sha256_file(path: str | Path) -> str:
    """sha256 of a file, or of a directory (e.g. an .mlpackage): its relative paths and contents."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def inside(folder: str | Path, relative: object, what: str) -> Path:
    """``folder / relative``, refusing anything that could leave ``folder``.

    ``relative`` comes from a file the user was handed (``artifact.json``, an app config), so it must be
    a non-empty relative POSIX path without ``..``, and no symlink on the way may point outside ``folder``.

    Raises:
        InputError: naming ``what`` and the offending path.
    """
    if not isinstance(relative, str) or not relative or "\0" in relative or "\\" in relative:
        raise InputError(f"{what}: path {relative!r} is not a relative path")
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts:
        raise InputError(f"{what}: path '{relative}' leaves its folder (absolute paths and '..' are refused)")
    base = Path(folder).resolve()
    target = (base / pure).resolve()
    if target != base and base not in target.parents:
        raise InputError(f"{what}: path '{relative}' resolves outside {base} (symlink escape refused)")
    return base / pure


def verify_sha256(path: Path, expected: object, what: str) -> None:
    """Refuse a file whose sha256 is not the recorded one (tampered, truncated or swapped).

    Raises:
        InputError: the file is missing, or its sha256 differs from ``expected``.
    """
    if not isinstance(expected, str) or len(expected) != 64:
        raise InputError(f"{what}: no valid sha256 recorded for {path.name}")
    if not path.exists():
        raise InputError(f"{what}: file {path} is missing")
    if sha256_file(path) != expected:
        raise InputError(f"{what}: {path.name} does not match its recorded sha256 (changed, truncated or replaced "
                         "since it was written); refusing to open it")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def apply_umask(path: Path, directory: bool = False) -> None:
    """Give a file made by ``mkstemp``/``mkdtemp`` (0600/0700) the mode the user's umask asks for."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = ""):
    """Yield a temporary sibling of ``path`` to write (by any library: torch.save, savefig, an exporter); it
    replaces ``path`` by a rename when the block ends, and is removed if the block raises. Readers see the old
    file or the new one, never half of one."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.close(fd)
    try:
        yield Path(tmp)
        apply_umask(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: str | Path, data: bytes | str) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def write_json_atomic(path: str | Path, data) -> Path:
    """:func:`write_atomic` of ``data`` as indented JSON with a final newline."""
    return write_atomic(path, json.dumps(data, indent=2) + "\n")
