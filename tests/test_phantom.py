"""The procedural cardiac phantom: determinism, masks that match the images, canonical layout."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy import ndimage

from datasetgan.data import load_image_folder, read_labels
from datasetgan.phantom import CLASSES, LV, MYO, RV, phantom_slice, write_phantom_folder


def _digest(folder):
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode() + b"\0" + p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes_and_slices_independent_of_count(tmp_path):
    a = write_phantom_folder(tmp_path / "a", n=6, resolution=32, seed=7)
    b = write_phantom_folder(tmp_path / "b", n=6, resolution=32, seed=7)
    assert _digest(a) == _digest(b)
    c = write_phantom_folder(tmp_path / "c", n=6, resolution=32, seed=8)
    assert (a / "images/phantom_00000.png").read_bytes() != (c / "images/phantom_00000.png").read_bytes()
    # slice i depends on (seed, i) only, not on how many slices are written
    d = write_phantom_folder(tmp_path / "d", n=3, resolution=32, seed=7)
    for i in range(3):
        name = f"phantom_{i:05d}.png"
        assert (d / "images" / name).read_bytes() == (a / "images" / name).read_bytes()
        assert (d / "masks" / name).read_bytes() == (a / "masks" / name).read_bytes()


def test_slices_vary():
    images = [phantom_slice(0, i, 32)[0] for i in range(4)]
    for i in range(1, 4):
        assert np.abs(images[i].astype(int) - images[0].astype(int)).mean() > 5


@pytest.mark.parametrize("resolution", [32, 64])
def test_masks_match_images(resolution):
    lv_brighter = rv_brighter = rv_seen = 0
    n = 24
    for i in range(n):
        image, mask = phantom_slice(3, i, resolution)
        assert image.shape == mask.shape == (resolution, resolution)
        assert image.dtype == mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, RV, MYO, LV}
        # the LV cavity and the myocardium are always present, and the LV is one blob
        assert (mask == LV).sum() > 0 and (mask == MYO).sum() > 0
        assert ndimage.label(mask == LV)[1] == 1
        # the myocardium encloses the LV cavity: LV pixels never touch background or RV
        grown = ndimage.binary_dilation(mask == LV)
        assert not np.any(grown & ((mask == 0) | (mask == RV)))
        # bright blood pools around a dark myocardium, as in cine MRI
        myo = image[mask == MYO].mean()
        lv_brighter += image[mask == LV].mean() > myo + 30
        if (mask == RV).any():
            rv_seen += 1
            rv_brighter += image[mask == RV].mean() > myo + 20
            # the RV crescent touches the myocardium (septum)
            assert np.any(ndimage.binary_dilation(mask == RV) & (mask == MYO))
        # the heart sits inside the body: the image border is mostly dark air or tissue, never blood
        assert mask[0].max() == mask[-1].max() == mask[:, 0].max() == mask[:, -1].max() == 0
    assert lv_brighter >= n - 1
    assert rv_seen >= n // 2 and rv_brighter >= rv_seen - 2


def test_layout_loads_with_data_loader(tmp_path):
    out = write_phantom_folder(tmp_path / "ph", n=5, resolution=32, seed=1)
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"phantom_{i:05d}.png" for i in range(5)]
    assert read_labels(out / "labels.json") == CLASSES
    ds = load_image_folder(out, 32, cache_dir=False)
    assert ds.images.shape == (5, 1, 32, 32) and ds.masks.shape == (5, 32, 32)
    assert [c.name for c in ds.classes] == ["background", "right_ventricle", "myocardium", "left_ventricle"]
    image, mask = phantom_slice(1, 2, 32)
    np.testing.assert_array_equal(ds.images[2, 0], image)
    np.testing.assert_array_equal(ds.masks[2], mask)
    meta = json.loads((out / "phantom.json").read_text())
    assert meta["seed"] == 1 and meta["n"] == 5


def test_cli_make_data(tmp_path):
    from datasetgan.cli import main

    r = CliRunner().invoke(main, ["demo", "--make-data", str(tmp_path / "d"), "--n", "3", "--resolution", "32"])
    assert r.exit_code == 0, r.output
    assert len(list((tmp_path / "d" / "masks").glob("*.png"))) == 3
    assert str(tmp_path / "d") in r.output
    r = CliRunner().invoke(main, ["demo", "--make-data", str(tmp_path / "e"), "--n", "0"])
    assert r.exit_code != 0 and "--n" in r.output and "Traceback" not in r.output
