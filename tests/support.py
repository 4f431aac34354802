"""Helpers shared by several test modules (pytest puts this folder on the import path)."""
from __future__ import annotations

import socket
from pathlib import Path


def find_acdc() -> Path:
    """../shared/data/acdc beside the repository (also from a git worktree one level deeper)."""
    here = Path(__file__).resolve()
    for parent in here.parents[1:]:
        if (parent / "shared/data/acdc/train").is_dir():
            return parent / "shared/data/acdc"
    return here.parents[2] / "shared/data/acdc"


ACDC = find_acdc()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
