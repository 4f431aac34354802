"""JSON-lines logs (``log.jsonl``): one JSON object a line.

Each line is appended with one ``write`` of the whole line (after a newline if the file's last line
was cut short), so a crash can at most cut the line being written and never glue two lines together;
readers drop a line that is not JSON and say which.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def append(path, row: dict) -> None:
    data = (json.dumps(row) + "\n").encode()
    fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data  # the last line was torn by a crash: start on a line of our own
        while data:
            data = data[os.write(fd, data) :]
    finally:
        os.close(fd)


def read(path) -> tuple[list[dict], list[int]]:
    """The rows of a log, and the numbers (1-based) of the lines dropped as torn or unreadable."""
    path = Path(path)
    if not path.is_file():
        return [], []
    rows, torn = [], []
    for k, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if isinstance(row, dict):
            rows.append(row)
        else:
            torn.append(k)
    return rows, torn
