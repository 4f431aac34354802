"""Atomic file writes: write a temporary file in the same folder, fsync, then rename over the target.

A reader therefore sees either the old file or the new one, never a half-written file, even if the
writer is killed mid-write.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    # mkstemp makes the file private (0600); give the result the mode an ordinary file would have.
    os.chmod(tmp, path.stat().st_mode & 0o777 if path.exists() else 0o644)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def remove_stale_temps(folder, names: str = "*", min_age_s: float = 0.0, recursive: bool = False) -> list[Path]:
    """Remove the temporary files that writers killed mid-write left in ``folder`` (those of targets
    matching ``names``, at least ``min_age_s`` old, so a concurrent writer's file survives)."""
    import time

    removed = []
    folder = Path(folder)
    found = (folder.rglob if recursive else folder.glob)(f".{names}.tmp") if folder.is_dir() else []
    for tmp in found:
        with contextlib.suppress(FileNotFoundError):
            if time.time() - tmp.stat().st_mtime >= min_age_s:
                tmp.unlink()
                removed.append(tmp)
    return removed
