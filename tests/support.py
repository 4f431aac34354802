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


def wait_ready(client, server, log: Path | None = None, timeout: float = 300) -> None:
    """Until the `datasetgan serve` process ``server`` answers /readyz (or it died: then fail with its log)."""
    import time

    import httpx

    deadline = time.monotonic() + timeout
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert server.poll() is None and time.monotonic() < deadline, log.read_text() if log else "server died"
        time.sleep(0.5)


def tiny_train_args(limit: int, grid: int = 2, *extra: str) -> list[str]:
    """`datasetgan train` options for a small cpu-tiny network that trains in seconds on a shared CPU
    (no FID, no old snapshots kept), plus ``extra``."""
    return [
        *("--preset cpu-tiny --cbase 256 --cmax 32 --map 1 --batch 8 --fid 0 --threads 1 --keep 0".split()),
        *("--limit", str(limit), "--grid", str(grid), "--no-progress", *extra),
    ]
