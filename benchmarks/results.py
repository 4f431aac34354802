"""Benchmark figures, written twice: a ``## `` section of benchmarks/RESULTS.md for people (each script
owns one section and replaces only that) and a JSON file under benchmarks/results/ for programs."""

from __future__ import annotations

import json
from pathlib import Path

from datasetgan.atomic import atomic_write_text

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
RESULTS_DIR = RESULTS.parent / "results"


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


def write_json(name: str, doc: dict, folder: Path = RESULTS_DIR) -> Path:
    """Write ``doc`` to ``benchmarks/results/{name}.json`` (atomically); figures keep their units in
    their key names, and ``doc`` should say the command, date, machine and load average."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    atomic_write_text(path, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return path
