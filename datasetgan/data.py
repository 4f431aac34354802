"""Image folders: loading, validation, square fitting, resizing and a decode-once cache.

Accepted layout (the canonical input format)::

    DATA/                      or    DATA/
      images/a.png                     a.png
      masks/a.png   (optional)         masks/a.png   (optional)
      labels.json   (optional; also looked up in DATA's parent)

Images are PNG or JPEG, grayscale or RGB (all the same). 16-bit and float grayscale images are
scaled to 0..255 by their own minimum and maximum. Masks are label maps (one class id per pixel,
8-bit grayscale or palette PNG) of the same size as their image. Every image is centre-cropped
(``fit="crop"``) or zero-padded (``fit="pad"``) to a square and resized to the training resolution
(Lanczos for images, nearest neighbour for masks). The prepared arrays are cached as ``.npy`` files
keyed by the file list, sizes, modification times and options, so epochs never decode files again.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_path, atomic_write_text
from .errors import DatasetganError

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}
CACHE_VERSION = 1


class DataError(DatasetganError, ValueError):
    """Bad input data; the message names the offending file."""


@dataclass(frozen=True)
class ClassInfo:
    id: int
    name: str
    color: str


@dataclass
class ImageDataset:
    images: np.ndarray  # uint8 [N, C, R, R]
    masks: np.ndarray | None  # uint8 [N, R, R] class ids, or None
    names: list[str]
    classes: list[ClassInfo] = field(default_factory=list)
    root: str = ""

    @property
    def resolution(self) -> int:
        return self.images.shape[-1]

    @property
    def channels(self) -> int:
        return self.images.shape[1]

    def __len__(self) -> int:
        return len(self.names)


# ---------------------------------------------------------------------------------------------
# labels.json

DEFAULT_COLORS = [
    "#000000",
    "#e6194b",
    "#3cb44b",
    "#4363d8",
    "#f58231",
    "#911eb4",
    "#46f0f0",
    "#f032e6",
    "#bcf60c",
    "#fabebe",
    "#008080",
    "#e6beff",
    "#9a6324",
    "#fffac8",
]


def default_classes(n: int) -> list[ClassInfo]:
    return [
        ClassInfo(i, "background" if i == 0 else f"class_{i}", DEFAULT_COLORS[i % len(DEFAULT_COLORS)])
        for i in range(n)
    ]


def read_labels(path) -> list[ClassInfo]:
    """Parse a labels.json: {"classes": [{"id": 0, "name": "background", "color": "#000000"}, ...]}."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
        entries = doc["classes"]
        classes = [
            ClassInfo(int(c["id"]), str(c["name"]), str(c.get("color") or DEFAULT_COLORS[int(c["id"]) % 14]))
            for c in entries
        ]
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise DataError(
            f"{path}: not a valid labels file ({e.__class__.__name__}: {e}); expected "
            '{"classes": [{"id": 0, "name": "background", "color": "#000000"}, ...]}'
        ) from None
    ids = [c.id for c in classes]
    if not classes or sorted(ids) != list(range(len(ids))):
        raise DataError(f"{path}: class ids must be 0..K-1 without gaps or repeats, got {ids}")
    if len(classes) > 256:
        raise DataError(f"{path}: at most 256 classes are supported (8-bit label maps)")
    return sorted(classes, key=lambda c: c.id)


def labels_to_json(classes: list[ClassInfo]) -> str:
    return json.dumps({"classes": [c.__dict__ for c in classes]}, indent=1)


# ---------------------------------------------------------------------------------------------
# Reading and fitting single files


def _open(path: Path) -> Image.Image:
    try:
        with Image.open(path) as im:
            im.load()  # decodes fully, so truncated files fail here
            return im.copy()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise DataError(f"{path}: cannot read image ({e})") from None


def read_image(path: Path) -> np.ndarray:
    """Read an image as uint8 [H, W, C] with C = 1 or 3."""
    im = _open(path)
    if im.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(im, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) / (hi - lo) * 255 if hi > lo else np.zeros_like(a)
        return np.round(a).astype(np.uint8)[..., None]
    if im.mode in ("1", "L", "LA"):
        return np.asarray(im.convert("L"))[..., None]
    if im.mode in ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV"):
        return np.asarray(im.convert("RGB"))
    raise DataError(f"{path}: unsupported image mode {im.mode}")


def read_mask(path: Path) -> np.ndarray:
    """Read a label map as uint8 [H, W] of class ids (grayscale or palette PNG, indices kept)."""
    im = _open(path)
    if im.mode in ("L", "P", "1"):
        return np.asarray(im if im.mode != "1" else im.convert("L"), dtype=np.uint8)
    if im.mode in ("I;16", "I"):
        a = np.asarray(im)
        if a.max() > 255:
            raise DataError(f"{path}: class ids above 255 are not supported")
        return a.astype(np.uint8)
    raise DataError(
        f"{path}: a mask must be a single-channel label map (8-bit grayscale or palette), got mode {im.mode}"
    )


def fit_square(a: np.ndarray, fit: str) -> np.ndarray:
    """Centre-crop or zero-pad an [H, W, ...] array to a square."""
    h, w = a.shape[:2]
    if fit == "crop":
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return a[top : top + s, left : left + s]
    s = max(h, w)
    top, left = (s - h) // 2, (s - w) // 2
    out = np.zeros((s, s) + a.shape[2:], dtype=a.dtype)
    out[top : top + h, left : left + w] = a
    return out


def resize_image(a: np.ndarray, res: int) -> np.ndarray:
    """uint8 [S, S, C] -> uint8 [res, res, C] with Lanczos filtering."""
    if a.shape[0] == res:
        return a
    im = Image.fromarray(a[..., 0] if a.shape[2] == 1 else a)
    out = np.asarray(im.resize((res, res), Image.LANCZOS))
    return out[..., None] if out.ndim == 2 else out


def resize_mask(a: np.ndarray, res: int) -> np.ndarray:
    if a.shape[0] == res:
        return a
    return np.asarray(Image.fromarray(a).resize((res, res), Image.NEAREST))


# ---------------------------------------------------------------------------------------------
# Folders


def list_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
    )


def locate(root) -> tuple[Path, Path | None, Path | None]:
    """(image folder, mask folder or None, labels.json or None) of a data folder."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: not a folder")
    image_dir = root / "images" if (root / "images").is_dir() else root
    mask_dir = root / "masks" if (root / "masks").is_dir() else None
    labels = next((p for p in (root / "labels.json", root.parent / "labels.json") if p.is_file()), None)
    return image_dir, mask_dir, labels


def mask_path_for(mask_dir: Path, image: Path) -> Path | None:
    """The mask with the same stem as ``image`` (PNG preferred), if any."""
    for ext in (".png", image.suffix):
        p = mask_dir / (image.stem + ext)
        if p.is_file():
            return p
    return None


def _cache_key(files: list[Path], options: dict) -> str:
    h = hashlib.sha256(json.dumps({"v": CACHE_VERSION, **options}, sort_keys=True).encode())
    for f in files:
        st = f.stat()
        h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:24]


def default_cache_dir() -> Path:
    base = os.environ.get("DATASETGAN_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "datasetgan"
    )
    return Path(base) / "datasets"


def load_image_folder(
    root, resolution: int, fit: str = "crop", masks: str = "auto", cache_dir=None, limit: int | None = None
) -> ImageDataset:
    """Load, validate and prepare a data folder at ``resolution``.

    masks: "auto" (load them if a masks/ folder exists), "require" (every image needs one), "ignore".
    ``cache_dir=False`` disables the cache. ``limit`` keeps the first N images (sorted by name).
    """
    if fit not in ("crop", "pad"):
        raise DataError(f"fit must be 'crop' or 'pad', got {fit!r}")
    image_dir, mask_dir, labels_path = locate(root)
    files = list_images(image_dir)
    if limit is not None:
        files = files[:limit]
    if not files:
        raise DataError(f"{image_dir}: no PNG or JPEG images found")
    if masks == "require" and mask_dir is None:
        raise DataError(f"{root}: masks are required but there is no masks/ folder")
    use_masks = masks != "ignore" and mask_dir is not None
    mask_files = []
    if use_masks:
        for f in files:
            m = mask_path_for(mask_dir, f)
            if m is None:
                raise DataError(f"{f}: no mask with the same name in {mask_dir}")
            mask_files.append(m)
    classes = read_labels(labels_path) if labels_path else []

    options = {
        "root": str(Path(root).resolve()),
        "res": resolution,
        "fit": fit,
        "masks": use_masks,
        "labels": [c.__dict__ for c in classes],
    }
    key = _cache_key(files + mask_files + ([labels_path] if labels_path else []), options)
    cache = None if cache_dir is False else Path(cache_dir or default_cache_dir()) / key
    if cache is not None and (cache / "meta.json").is_file():
        meta = json.loads((cache / "meta.json").read_text())
        return ImageDataset(
            np.load(cache / "images.npy", allow_pickle=False),
            np.load(cache / "masks.npy", allow_pickle=False) if use_masks else None,
            meta["names"],
            classes,
            str(root),
        )

    images, mask_arrays, channels = [], [], None
    for i, f in enumerate(files):
        a = read_image(f)
        if channels is None:
            channels, first = a.shape[2], f
        elif a.shape[2] != channels:
            raise DataError(
                f"{f}: has {a.shape[2]} channel(s) but {first.name} has {channels}; "
                "all images must be grayscale or all RGB"
            )
        if use_masks:
            m = read_mask(mask_files[i])
            if m.shape != a.shape[:2]:
                raise DataError(
                    f"{mask_files[i]}: mask size {m.shape[1]}x{m.shape[0]} differs from its "
                    f"image's {a.shape[1]}x{a.shape[0]}"
                )
            if classes and int(m.max()) >= len(classes):
                bad = sorted(set(np.unique(m).tolist()) - {c.id for c in classes})
                raise DataError(f"{mask_files[i]}: class id(s) {bad} are not in {labels_path}")
            mask_arrays.append(resize_mask(fit_square(m, fit), resolution))
        images.append(resize_image(fit_square(a, fit), resolution).transpose(2, 0, 1))
    images = np.stack(images)
    masks_arr = np.stack(mask_arrays) if use_masks else None
    if use_masks and not classes:
        classes = default_classes(int(masks_arr.max()) + 1)
    names = [f.stem for f in files]
    if cache is not None:
        _write_cache(cache, images, masks_arr, names)
    return ImageDataset(images, masks_arr, names, classes, str(root))


def _write_cache(cache: Path, images, masks, names) -> None:
    """Arrays first, meta.json last: a cache entry without meta.json is ignored and overwritten."""
    for name, arr in (("images.npy", images), ("masks.npy", masks)):
        if arr is not None:
            with atomic_path(cache / name) as tmp:
                with open(tmp, "wb") as f:
                    np.save(f, arr, allow_pickle=False)
    atomic_write_text(cache / "meta.json", json.dumps({"names": names}))
