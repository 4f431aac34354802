import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import ACDC

from datasetgan.data import DataError, fit_square, load_image_folder, read_labels

LABELS = {
    "classes": [{"id": 0, "name": "background", "color": "#000000"}, {"id": 1, "name": "organ", "color": "#ff0000"}]
}


def make_folder(root: Path, n=3, size=(40, 30), mode="L", with_masks=True, labels=LABELS):
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    if with_masks:
        (root / "masks").mkdir()
    for i in range(n):
        shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
        Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8), mode).save(root / "images" / f"im{i}.png")
        if with_masks:
            m = np.zeros((size[1], size[0]), np.uint8)
            m[5:15, 5:15] = 1
            Image.fromarray(m).save(root / "masks" / f"im{i}.png")
    if labels:
        (root / "labels.json").write_text(json.dumps(labels))
    return root


def test_loads_grayscale_with_masks(tmp_path):
    ds = load_image_folder(make_folder(tmp_path / "d"), 16, cache_dir=tmp_path / "cache")
    assert ds.images.shape == (3, 1, 16, 16) and ds.images.dtype == np.uint8
    assert ds.masks.shape == (3, 16, 16) and set(np.unique(ds.masks)) <= {0, 1}
    assert [c.name for c in ds.classes] == ["background", "organ"]


def test_rgb_and_flat_layout_without_masks(tmp_path):
    root = make_folder(tmp_path / "d", mode="RGB", with_masks=False, labels=None)
    for p in (root / "images").iterdir():  # flat layout: images directly in the folder
        p.rename(root / p.name)
    (root / "images").rmdir()
    ds = load_image_folder(root, 32, cache_dir=False)
    assert ds.images.shape == (3, 3, 32, 32) and ds.masks is None


def test_cache_is_reused_and_invalidated(tmp_path):
    root = make_folder(tmp_path / "d")
    cache = tmp_path / "cache"
    a = load_image_folder(root, 16, cache_dir=cache)
    assert len(list(cache.iterdir())) == 1
    b = load_image_folder(root, 16, cache_dir=cache)
    assert np.array_equal(a.images, b.images)
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(root / "images" / "im0.png")
    c = load_image_folder(root, 16, cache_dir=cache)
    assert len(list(cache.iterdir())) == 2 and not np.array_equal(a.images, c.images)


def test_fit_crop_and_pad():
    a = np.arange(12).reshape(3, 4)
    assert fit_square(a, "crop").shape == (3, 3)
    assert np.array_equal(fit_square(a, "crop"), a[:, 0:3])
    p = fit_square(a, "pad")
    assert p.shape == (4, 4) and np.array_equal(p[0:3], a) and not p[3].any()


def test_empty_folder(tmp_path):
    (tmp_path / "e").mkdir()
    with pytest.raises(DataError, match="no PNG or JPEG"):
        load_image_folder(tmp_path / "e", 16, cache_dir=False)


def test_truncated_file_named(tmp_path):
    root = make_folder(tmp_path / "d")
    f = root / "images" / "im1.png"
    f.write_bytes(f.read_bytes()[:60])
    with pytest.raises(DataError, match="im1.png"):
        load_image_folder(root, 16, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("meta.json"))


def test_unreadable_file_named(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "images" / "junk.png").write_text("not an image")
    (root / "masks" / "junk.png").write_text("not an image")
    with pytest.raises(DataError, match="junk.png.*cannot read"):
        load_image_folder(root, 16, cache_dir=False)


def test_mask_size_mismatch(tmp_path):
    root = make_folder(tmp_path / "d")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "masks" / "im2.png")
    with pytest.raises(DataError, match="im2.png.*differs"):
        load_image_folder(root, 16, cache_dir=False)


def test_unknown_class_id(tmp_path):
    root = make_folder(tmp_path / "d")
    m = np.zeros((30, 40), np.uint8)
    m[0, 0] = 7
    Image.fromarray(m).save(root / "masks" / "im0.png")
    with pytest.raises(DataError, match=r"im0.png.*\[7\].*labels.json"):
        load_image_folder(root, 16, cache_dir=False)


def test_mixed_channels(tmp_path):
    root = make_folder(tmp_path / "d", with_masks=False)
    Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(root / "images" / "im9.png")
    with pytest.raises(DataError, match="im9.png.*channel"):
        load_image_folder(root, 16, cache_dir=False)


def test_missing_mask_and_bad_labels(tmp_path):
    root = make_folder(tmp_path / "d")
    (root / "masks" / "im1.png").unlink()
    with pytest.raises(DataError, match="im1.png: no mask"):
        load_image_folder(root, 16, cache_dir=False)
    (root / "labels.json").write_text('{"classes": [{"id": 1, "name": "x"}]}')
    with pytest.raises(DataError, match="0..K-1"):
        read_labels(root / "labels.json")


def test_sixteen_bit_images_are_scaled(tmp_path):
    root = tmp_path / "d"
    root.mkdir()
    a = (np.arange(32 * 32).reshape(32, 32) * 40).astype(np.uint16)
    Image.fromarray(a).save(root / "x.png")
    ds = load_image_folder(root, 32, cache_dir=False)
    assert ds.images.min() == 0 and ds.images.max() == 255


@pytest.mark.skipif(not ACDC.is_dir(), reason=f"ACDC data not found at {ACDC}")
def test_acdc_train_loads(tmp_path):
    ds = load_image_folder(ACDC / "train", 32, cache_dir=tmp_path)
    assert ds.images.shape == (1312, 1, 32, 32)
    assert ds.masks.max() <= len(ds.classes) - 1 and len(ds.classes) == 4
