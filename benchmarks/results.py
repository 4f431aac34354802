"""benchmarks/RESULTS.md: each benchmark script owns one ``## `` section and replaces only that."""
from __future__ import annotations

from pathlib import Path

from datasetgan.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


def write_section(text: str, path: Path = RESULTS) -> None:
    """Replace the section whose heading is the first line of ``text``, or append it."""
    heading = text.splitlines()[0]
    if not heading.startswith("## "):
        raise ValueError(f"a section starts with a '## ' heading, got {heading!r}")
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    body = text.rstrip("\n") + "\n"
    start = old.find(heading + "\n")
    if start < 0:
        new = old.rstrip("\n") + "\n\n" + body
    else:
        end = old.find("\n## ", start + len(heading))
        new = old[:start] + body + (old[end:] if end >= 0 else "")
    atomic_write_text(path, new)
