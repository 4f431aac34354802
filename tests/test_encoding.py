"""The one tar writer and the sharded generation of WebDataset sets (local; Ray in test_raygen.py)."""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from datasetgan.encoding import ShardFile, tar_end, tar_member
from datasetgan.factory import PairFactory, generate
from datasetgan.shards import ShardError


@pytest.fixture(scope="module")
def factory(tiny_run):
    return PairFactory(tiny_run)


def test_tar_writer_equals_webdatasets_own_writer(tmp_path):
    """Our members are byte for byte what webdataset.TarWriter writes with fixed metadata."""
    wds = pytest.importorskip("webdataset")
    members = [
        ("00000007", "image.png", bytes(range(200)) * 3),
        ("00000007", "json", b'{"seed": 7}'),
        ("00000009", "image.png", b"x" * 512),
        ("00000009", "json", b"{}"),
    ]
    ours = b"".join(tar_member(f"{k}.{ext}", d) for k, ext, d in members)
    ours += tar_end(len(ours))
    buf = io.BytesIO()
    with wds.TarWriter(buf, user="", group="", mode=0o644, mtime=0, encoder=False) as w:
        for key, ext, data in members:  # one member per sample keeps our member order
            w.write({"__key__": key, ext: data})
    assert buf.getvalue() == ours


def test_shard_file_is_atomic_and_hashed(tmp_path):
    path = tmp_path / "s.tar"
    with pytest.raises(RuntimeError):
        with ShardFile(path) as shard:
            shard.add(1, [("json", b"{}")])
            raise RuntimeError("killed mid-shard")
    assert not path.exists() and list(tmp_path.iterdir()) == []
    with ShardFile(path) as shard:
        shard.add(1, [("json", b"{}")])
        shard.add(4, [("json", b"[]")])
    data = path.read_bytes()
    assert shard.record == {
        "pairs": 2,
        "bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "first_seed": 1,
        "last_seed": 4,
    }


def test_wds_manifest_resume_and_webdataset_loader(factory, tmp_path):
    wds = pytest.importorskip("webdataset")
    out = tmp_path / "set"
    seeds = [3, 9, 4, 20, 11]
    man = generate(factory, seeds, out, fmt="wds", shard_size=2, prefix="part", batch_size=3)
    assert man["shards"] == ["part-000000.tar", "part-000001.tar", "part-000002.tar"]
    info = man["shard_info"]
    assert [(r["first_seed"], r["last_seed"], r["pairs"]) for r in info] == [(3, 9, 2), (4, 20, 2), (11, 11, 1)]
    for r in info:
        assert hashlib.sha256((out / r["name"]).read_bytes()).hexdigest() == r["sha256"]
    first = {r["name"]: (out / r["name"]).read_bytes() for r in info}

    # a rerun after a lost shard makes that shard only, with the same bytes
    (out / "part-000001.tar").unlink()
    mtime = (out / "part-000000.tar").stat().st_mtime_ns
    again = generate(factory, seeds, out, fmt="wds", shard_size=2, prefix="part", batch_size=1)
    assert (out / "part-000000.tar").stat().st_mtime_ns == mtime
    assert {r["name"]: (out / r["name"]).read_bytes() for r in info} == first
    assert again == man
    with pytest.raises(ShardError, match="same request"):  # another request in the same folder
        generate(factory, seeds, out, fmt="wds", shard_size=3, prefix="part")

    # webdataset's own loader reads the set back
    urls = [str(out / name) for name in man["shards"]]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("l8"))
    assert [s["__key__"] for s in samples] == [f"{s:08d}" for s in seeds]
    for s in samples:
        pair = next(factory.pairs([int(s["__key__"])]))
        assert np.array_equal(s["mask.png"], pair.mask)
        assert s["json"]["uncertainty_score"] == pytest.approx(pair.score)


def test_wds_drop_uncertain_equals_folder_selection(factory, tmp_path):
    seeds = list(range(30, 40))
    folder = generate(factory, seeds, tmp_path / "f", drop_uncertain=0.3)
    shards = generate(factory, seeds, tmp_path / "w", fmt="wds", drop_uncertain=0.3, shard_size=4)
    assert shards["seeds_kept"] == folder["seeds_kept"] and shards["scores"] == folder["scores"]
    assert sum(r["pairs"] for r in shards["shard_info"]) == 7


def test_cli_generate_seed_list(tiny_run, tmp_path):
    env_run = [sys.executable, "-m", "datasetgan", "generate", str(tiny_run)]
    out = tmp_path / "few"
    r = subprocess.run(env_run + ["--seeds", "1,5-9", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    man = json.loads((out / "manifest.json").read_text())
    assert man["seeds_kept"] == [1, 5, 6, 7, 8, 9]
    assert sorted(p.name for p in (out / "images").iterdir()) == [f"{s:08d}.png" for s in (1, 5, 6, 7, 8, 9)]
    for args, msg in (
        (["--seeds", "1,x"], "not a seed"),
        (["--seeds", "1", "--n", "3"], "either --n"),
        (["--n", "2", "--ray", "local"], "--format wds"),
    ):
        r = subprocess.run(env_run + args + ["--out", str(tmp_path / "o")], capture_output=True, text=True)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
