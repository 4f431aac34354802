"""The pair factory: seed -> (image, mask, uncertainty), and the writers of generated data sets.

A pair is a pure function of (generator, interpreter, seed, truncation): each seed is rendered alone
(see :mod:`datasetgan.render`) and the interpreter's products are per-image, so a seed gives the same
bytes alone or in any batch. Generated sets are canonical data folders (or WebDataset tar shards)::

    DIR/images/{seed:08d}.png        the image (grayscale or RGB)
    DIR/masks/{seed:08d}.png         class ids (8-bit)
    DIR/overlays/{seed:08d}.png      the image with classes 1..K-1 tinted in their labels.json colours
    DIR/uncertainty/{seed:08d}.png   per-pixel JS divergence, 255 = the largest possible divergence
    DIR/records/{seed:08d}.json      seed, truncation, noise mode, model hashes, uncertainty score
    DIR/labels.json, DIR/manifest.json
"""
from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .atomic import atomic_write_bytes
from .checkpoint import CheckpointError, load_generator
from .data import ClassInfo
from .encoding import KEYS, encode_pair, js_scale, kept_seeds
from .errors import DatasetganError
from .interpreter import load_interpreter, predict_from_logits
from .render import render_one, to_uint8
from .runfolder import RunFolder
from .shards import ShardRequest, generate_shards, write_manifest

FOLDERS = {"image.png": "images", "mask.png": "masks", "overlay.png": "overlays",
           "uncertainty.png": "uncertainty", "json": "records"}
WORK_BYTES = 1 << 28  # the interpreter handles as many images at once as fit in ~256 MB of hidden units


class FactoryError(DatasetganError, ValueError):
    pass


@dataclass
class Pair:
    seed: int
    image: np.ndarray        # uint8 [H, W, C]
    mask: np.ndarray         # uint8 [H, W] class ids
    uncertainty: np.ndarray  # float32 [H, W] JS divergence (nats)
    score: float             # mean JS of the top 10 % pixels
    record: dict


class PairFactory:
    """Loads a run's generator and interpreter and makes pairs by seed."""

    def __init__(self, run_dir, device="cpu"):
        run = RunFolder(run_dir)
        for path, hint in ((run.generator, "datasetgan train"), (run.interpreter, "datasetgan interpret")):
            if not path.is_file():
                raise FactoryError(f"{path} does not exist; run `{hint}` first")
        try:
            self.G = load_generator(run.generator, device)
            self.interpreter = load_interpreter(run.interpreter, device)
        except CheckpointError as e:
            raise FactoryError(str(e)) from None
        info = self.interpreter.info
        if info.generator_sha256 != self.G.sha256:
            raise FactoryError(f"{run.interpreter} was trained on generator {info.generator_sha256[:12]}..., "
                               f"but {run.generator} is {self.G.sha256[:12]}...; rerun `datasetgan interpret`")
        if list(info.taps) != list(self.G.feature_taps()):
            raise FactoryError(f"{run.interpreter}: its feature taps do not match the generator's")
        self.run = run
        self.device = device
        self.classes: list[ClassInfo] = list(info.classes)
        self.resolution: int = self.G.cfg.resolution
        self.img_channels: int = self.G.cfg.img_channels
        self.generator_sha256: str = self.G.sha256
        self.interpreter_sha256: str = self.interpreter.sha256
        self.noise_mode: str = info.noise_mode
        self.uncertainty_scale = js_scale(len(self.interpreter.members), len(self.classes))
        hidden = self.interpreter.cfg.hidden[0] * len(self.interpreter.members)
        self.images_per_pass = max(1, WORK_BYTES // (4 * hidden * self.resolution ** 2))

    def record(self, seed: int, truncation: float, score: float) -> dict:
        return {"seed": int(seed), "truncation": float(truncation), "noise_mode": self.noise_mode,
                "resolution": self.resolution, "generator_sha256": self.generator_sha256,
                "interpreter_sha256": self.interpreter_sha256, "uncertainty_score": float(score),
                "uncertainty_scale_nats": self.uncertainty_scale}

    @torch.no_grad()
    def _batch(self, seeds: list[int], truncation: float) -> list[Pair]:
        images, taps = [], []
        for seed in seeds:
            img, t = render_one(self.G, seed, truncation, self.noise_mode, with_taps=True)
            images.append(to_uint8(img)[0])
            taps.append(t)
        pairs = []
        for s in range(0, len(seeds), self.images_per_pass):
            chunk = taps[s: s + self.images_per_pass]
            stacked = {k: torch.cat([t[k] for t in chunk]) for k in chunk[0]}
            pred = predict_from_logits(self.interpreter.fast_logits(stacked))
            for j in range(len(chunk)):
                i = s + j
                score = float(pred.score[j])
                pairs.append(Pair(int(seeds[i]), images[i], pred.mask[j].cpu().numpy(),
                                  pred.js[j].cpu().numpy(), score, self.record(seeds[i], truncation, score)))
        return pairs

    def pairs(self, seeds, truncation: float = 1.0, batch_size: int = 8, should_stop=None):
        """Pairs in seed order, computed lazily ``batch_size`` seeds at a time."""
        seeds = [int(s) for s in seeds]
        if batch_size < 1:
            raise FactoryError("batch_size must be at least 1")
        for s in range(0, len(seeds), batch_size):
            if should_stop is not None and should_stop():
                return
            yield from self._batch(seeds[s: s + batch_size], truncation)


# ---------------------------------------------------------------------------------------------
# Writers


class FolderSink:
    """Writes each pair's files into the canonical folder layout, atomically, one file at a time."""

    def __init__(self, out: Path):
        self.out = out

    def add(self, seed: int, files: dict[str, bytes]) -> None:
        for key, data in files.items():
            atomic_write_bytes(self.out / FOLDERS[key] / f"{seed:08d}.{'json' if key == 'json' else 'png'}", data)


class StagingSink:
    """Holds files on disk until every score is known, so the most uncertain pairs are never published."""

    def __init__(self, out: Path):
        self.dir = out / ".staging"
        self.seeds: list[int] = []

    def add(self, seed: int, files: dict[str, bytes]) -> None:
        for key, data in files.items():
            atomic_write_bytes(self.dir / f"{seed:08d}.{key}", data)
        self.seeds.append(seed)

    def replay(self, seeds, sink) -> None:
        for seed in seeds:
            files = {}
            for key in KEYS:
                p = self.dir / f"{seed:08d}.{key}"
                if p.is_file():
                    files[key] = p.read_bytes()
            sink.add(seed, files)

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def generate(factory: PairFactory, seeds, out, truncation: float = 1.0, batch_size: int = 8,
             fmt: str = "folder", drop_uncertain: float = 0.0, shard_size: int = 1000, include=KEYS,
             progress: bool = False, prefix: str = "shard", workers=None) -> dict:
    """Write the pairs of ``seeds`` into ``out``; returns the manifest (also written as manifest.json).

    ``fmt="wds"`` writes tar shards (see :mod:`datasetgan.shards`; ``workers`` may be a Ray pool)."""
    seeds = [int(s) for s in seeds]
    if len(set(seeds)) != len(seeds):
        raise FactoryError("seeds must be distinct")
    if fmt not in ("folder", "wds"):
        raise FactoryError(f"format must be 'folder' or 'wds', got {fmt!r}")
    if not 0 <= drop_uncertain <= 1:
        raise FactoryError(f"--drop-uncertain must be in [0, 1], got {drop_uncertain}")
    if fmt == "wds":
        req = ShardRequest(seeds, truncation, tuple(k for k in KEYS if k in include), drop_uncertain, shard_size, prefix, batch_size)
        return generate_shards(factory, req, out, workers, progress)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FactoryError(f"{out} exists and is not an empty folder; choose a new output folder")
    out.mkdir(parents=True, exist_ok=True)
    final = FolderSink(out)
    sink = StagingSink(out) if drop_uncertain > 0 else final
    scores: dict[int, float] = {}
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(seeds), desc="generating pairs", unit="pair")
    try:
        for pair in factory.pairs(seeds, truncation, batch_size):
            sink.add(pair.seed, encode_pair(pair, factory.classes, include))
            scores[pair.seed] = pair.score
            if bar is not None:
                bar.update()
    finally:
        if bar is not None:
            bar.close()
    kept = kept_seeds(seeds, [scores[s] for s in seeds], drop_uncertain)
    if sink is not final:
        sink.replay(kept, final)
        sink.remove()
    return write_manifest(out, factory, "folder", truncation, drop_uncertain, seeds, kept, scores, include)


__all__ = ["Pair", "PairFactory", "FactoryError", "generate"]
