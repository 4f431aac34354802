"""The layout of a run folder: every stage reads and writes its files through these paths.

RUN/
  generator.safetensors, generator.json     the generator used downstream (EMA weights)
  training/                                 snapshots, log.jsonl, sample grids, curves.png
  annotations/                              the annotation set (see datasetgan.annotations)
  interpreter.safetensors, interpreter.json the style interpreter ensemble
  generated/                                generated data sets
  bench/                                    segmenter benchmark results
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunFolder:
    root: Path

    def __init__(self, root):
        object.__setattr__(self, "root", Path(root))

    @property
    def generator(self) -> Path:
        return self.root / "generator.safetensors"

    @property
    def training(self) -> Path:
        return self.root / "training"

    @property
    def annotations(self) -> Path:
        return self.root / "annotations"

    @property
    def interpreter(self) -> Path:
        return self.root / "interpreter.safetensors"

    @property
    def generated(self) -> Path:
        return self.root / "generated"

    @property
    def bench(self) -> Path:
        return self.root / "bench"

    def require(self, path: Path, stage_hint: str) -> Path:
        """``path`` if it exists, else a FileNotFoundError saying which stage makes it."""
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist; run `{stage_hint}` first")
        return path
