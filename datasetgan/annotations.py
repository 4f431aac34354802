"""The annotation set: generated seed images, real images projected into the generator, and the
label maps painted on them.

    RUN/annotations/
      labels.json                       classes (same format as a data folder's labels.json)
      seed_00000042.json                record: seed, truncation, noise mode, generator hash, state
      seed_00000042.png                 the rendered image (as annotated)
      seed_00000042.mask.png            the label map (8-bit, one class id per pixel), once saved
      .seed_00000042.pending.json       the record a save is writing (only while it runs, or if killed)
      history/seed_00000042.<time>.mask.png   earlier versions of the mask
      real_00000003.json                a real image (kind "real": real, projected): its file name,
                                        reconstruction PSNR and SSIM, generator hash, state
      real_00000003.png                 its reconstruction, rendered exactly from the projection
      real_00000003.original.png        the real image (at the generator's resolution)
      real_00000003.projection.safetensors + .json   its w+ and noise maps (datasetgan.projector)
      real_00000003.mask.png            its expert mask (nearest-neighbour resized), editable

An item id is ``seed_`` or ``real_`` + 8 digits and nothing else, so an id can never name a path
outside the set. Every write is atomic; saving a mask first copies the previous version into ``history/``.
A mask and its record are one unit: the record holds the mask's SHA-256 and a save writes its new record
first as a pending record (``weightfiles.write_unit``), so a reader of a save killed between the mask
and the record takes the pending record: it sees the old (mask, state) or the new one, never a mix.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import json
import os
import re
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .atomic import atomic_write_bytes, atomic_write_text
from .data import ClassInfo, labels_to_json, read_labels
from .errors import DatasetganError
from .png import png_bytes
from .seeds import check_seed
from .weightfiles import interrupted, write_unit

ITEM_ID = re.compile(r"(seed|real)_[0-9]{8}", re.ASCII)  # not \d, which also matches non-ASCII digits
STATES = ("todo", "pre-annotated", "done")


class AnnotationError(DatasetganError, ValueError):
    pass


def item_id(seed: int) -> str:
    try:
        return f"seed_{check_seed(seed):08d}"
    except ValueError as e:
        raise AnnotationError(str(e)) from None


def check_item_id(value: str) -> str:
    if not isinstance(value, str) or not ITEM_ID.fullmatch(value):
        raise AnnotationError(f"invalid item id {value!r}: expected seed_ or real_ followed by 8 digits")
    return value


@dataclass
class AnnotationRecord:
    seed: int  # the seed; for a real image, its number in the set
    truncation: float
    noise_mode: str  # "projection" for a real image (its noise maps are stored with it)
    generator_sha256: str
    resolution: int
    state: str = "todo"  # todo | pre-annotated | done
    source: str = ""  # "human", "import", "model:<name>", "expert" ...
    updated: float = 0.0
    kind: str = "seed"  # seed | real (a real image, projected)
    real_name: str = ""  # a real image's file name
    psnr: float | None = None  # a real image's reconstruction quality (dB; SSIM in [0, 1])
    ssim: float | None = None
    mask_sha256: str = ""  # the mask saved with this record (save_mask)

    @property
    def id(self) -> str:
        return f"real_{self.seed:08d}" if self.kind == "real" else item_id(self.seed)


def decode_mask_png(data: bytes, resolution: int, num_classes: int) -> np.ndarray:
    """Validate PNG bytes as a label map of the given size and class count; uint8 [R, R]."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.format != "PNG":
                raise AnnotationError(f"a mask must be a PNG, got {im.format}")
            im.load()
            if im.mode not in ("L", "P"):
                raise AnnotationError(f"a mask must be an 8-bit label map (mode L or P), got mode {im.mode}")
            mask = np.array(im, dtype=np.uint8)
    except AnnotationError:
        raise
    except Exception as e:  # Pillow raises many types for bad bytes
        raise AnnotationError(f"not a readable PNG ({e.__class__.__name__}: {e})") from None
    if mask.shape != (resolution, resolution):
        raise AnnotationError(f"mask is {mask.shape[1]}x{mask.shape[0]}, expected {resolution}x{resolution}")
    if mask.size and int(mask.max()) >= num_classes:
        bad = sorted(int(v) for v in np.unique(mask) if v >= num_classes)
        raise AnnotationError(f"unknown class id(s) {bad}; classes are 0..{num_classes - 1}")
    return mask


def record_json(rec: AnnotationRecord) -> str:
    return json.dumps(asdict(rec), indent=1)


class AnnotationSet:
    def __init__(self, folder):
        self.dir = Path(folder)

    # -- classes ------------------------------------------------------------------------------
    @property
    def labels_path(self) -> Path:
        return self.dir / "labels.json"

    def classes(self) -> list[ClassInfo]:
        return read_labels(self.labels_path)

    def set_classes(self, classes: list[ClassInfo]) -> None:
        atomic_write_text(self.labels_path, labels_to_json(classes))

    # -- items --------------------------------------------------------------------------------
    def path(self, item: str, kind: str) -> Path:
        """kind: 'record' | 'image' | 'mask' | 'original' | 'projection' (real images) | 'pending'.
        The id is validated, so the path stays inside the set."""
        check_item_id(item)
        return (
            self.dir
            / {
                "record": f"{item}.json",
                "image": f"{item}.png",
                "mask": f"{item}.mask.png",
                "original": f"{item}.original.png",
                "projection": f"{item}.projection.safetensors",
                "pending": f".{item}.pending.json",
            }[kind]
        )

    def ids(self) -> list[str]:
        if not self.dir.is_dir():
            return []
        return sorted(p.stem for p in self.dir.glob("*.json") if ITEM_ID.fullmatch(p.stem))

    def record(self, item: str) -> AnnotationRecord:
        p = self.path(item, "record")
        if not p.is_file():
            raise AnnotationError(f"no item {item} in {self.dir}")
        rec = AnnotationRecord(**json.loads(p.read_text()))
        try:  # a save killed after its mask, before its record: the pending record is the mask's
            new = AnnotationRecord(**json.loads(self.path(item, "pending").read_text()))
        except (OSError, ValueError, TypeError):
            return rec
        return new if interrupted(self.path(item, "mask"), rec.mask_sha256, new.mask_sha256) else rec

    def records(self) -> list[AnnotationRecord]:
        return [self.record(i) for i in self.ids()]

    def write_record(self, rec: AnnotationRecord) -> None:
        atomic_write_text(self.path(rec.id, "record"), record_json(rec))

    def add_item(self, rec: AnnotationRecord, image: np.ndarray) -> None:
        """Store a rendered image (uint8 [R, R] or [R, R, 3]) and its record; image first."""
        atomic_write_bytes(self.path(rec.id, "image"), png_bytes(image))
        self.write_record(rec)

    def image(self, item: str) -> np.ndarray:
        return np.asarray(Image.open(self.path(item, "image")))

    def mask(self, item: str) -> np.ndarray | None:
        p = self.path(item, "mask")
        return np.asarray(Image.open(p), dtype=np.uint8) if p.is_file() else None

    @contextlib.contextmanager
    def locked(self):
        """Hold the set's lock: an exclusive flock on its folder, so saves by several threads or
        processes (``datasetgan serve`` and ``datasetgan annotate`` on one run) take turns."""
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # releases the lock

    def save_mask(self, item: str, mask: np.ndarray, state: str = "done", source: str = "human") -> None:
        """Save a label map, keeping the previous one in history/. The mask and the record are one
        unit (see the module's notes), written under the set's lock so they come from one save."""
        if state not in STATES:
            raise AnnotationError(f"state must be one of {STATES}")
        mask = np.asarray(mask, dtype=np.uint8)
        with self.locked():
            rec = self.record(item)
            decode_mask_png(png_bytes(mask), rec.resolution, len(self.classes()))  # same checks as the API
            target = self.path(item, "mask")
            if target.is_file():
                history = self.dir / "history"
                history.mkdir(exist_ok=True)
                atomic_write_bytes(history / f"{item}.{time.time_ns()}.mask.png", target.read_bytes())
            data = png_bytes(mask)
            rec.state, rec.source, rec.updated = state, source, time.time()
            rec.mask_sha256 = hashlib.sha256(data).hexdigest()
            write_unit(target, data, self.path(item, "record"), record_json(rec), self.path(item, "pending"))

    def annotated(self, include_pre_annotated: bool = False) -> list[AnnotationRecord]:
        """Items whose mask is finished (optionally also unedited pre-annotations)."""
        ok = ("done", "pre-annotated") if include_pre_annotated else ("done",)
        return [r for r in self.records() if r.state in ok and self.path(r.id, "mask").is_file()]


def render_items(
    aset: AnnotationSet,
    G,
    seeds,
    truncation: float = 1.0,
    noise_mode: str = "const",
    classes: list[ClassInfo] | None = None,
) -> list[str]:
    """Render ``seeds`` with ``G`` into the set (skipping seeds already there); returns their ids."""
    from .render import render_one, to_uint8

    if classes is not None:
        aset.set_classes(classes)
    elif not aset.labels_path.is_file():
        raise AnnotationError(f"{aset.labels_path} is missing: give the classes (a labels.json)")
    sha = getattr(G, "sha256", "")
    ids = []
    for seed in seeds:
        rec = AnnotationRecord(int(seed), float(truncation), noise_mode, sha, G.cfg.resolution)
        if not aset.path(rec.id, "record").is_file():
            img = to_uint8(render_one(G, seed, truncation, noise_mode))[0]
            aset.add_item(rec, img[..., 0] if img.shape[2] == 1 else img)
        ids.append(rec.id)
    return ids
