import subprocess
import sys

import pytest
import torch

from datasetgan.checkpoint import CheckpointError, load_generator, load_tensors, save_generator, save_tensors
from datasetgan.networks import Generator, GeneratorConfig
from datasetgan.render import render, seed_latent

SMALL = dict(resolution=32, channel_base=512, channel_max=32, z_dim=32, w_dim=32, mapping_layers=2)


@pytest.fixture
def gen_file(tmp_path):
    torch.manual_seed(3)
    G = Generator(GeneratorConfig(**SMALL))
    for p in G.parameters():  # non-trivial noise strengths, so noise modes matter
        if p.ndim == 0:
            p.data.fill_(0.3)
    path = tmp_path / "g.safetensors"
    save_generator(path, G)
    return G, path


def test_round_trip_is_bit_exact(gen_file):
    G, path = gen_file
    G2 = load_generator(path)
    sd1, sd2 = G.state_dict(), G2.state_dict()
    assert sd1.keys() == sd2.keys()
    for k in sd1:
        assert torch.equal(sd1[k], sd2[k]), k
    tensors, meta = load_tensors(path)
    assert meta["config"]["resolution"] == 32 and len(meta["sha256"]) == 64


def test_truncated_file_is_refused(gen_file):
    _, path = gen_file
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_generator(path)


def test_tampered_file_is_refused(gen_file):
    _, path = gen_file
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="SHA-256"):
        load_generator(path)


def test_missing_sidecar_and_wrong_kind(tmp_path, gen_file):
    _, path = gen_file
    path.with_suffix(".json").unlink()
    with pytest.raises(CheckpointError, match="missing"):
        load_generator(path)
    other = tmp_path / "x.safetensors"
    save_tensors(other, {"a": torch.zeros(2)}, {"kind": "interpreter"})
    with pytest.raises(CheckpointError, match="not a generator"):
        load_generator(other)


def test_no_temp_files_left(gen_file):
    _, path = gen_file
    assert sorted(p.name for p in path.parent.iterdir()) == ["g.json", "g.safetensors"]


@pytest.mark.parametrize("noise_mode", ["const", "seed"])
def test_seed_renders_same_alone_and_in_batch(gen_file, noise_mode):
    G, path = gen_file
    G = load_generator(path)
    batch = render(G, [5, 7, 11, 13], truncation=0.7, noise_mode=noise_mode)
    alone = render(G, [11], truncation=0.7, noise_mode=noise_mode)
    assert torch.equal(batch[2:3], alone)
    assert not torch.equal(batch[0], batch[1])


def test_noise_modes_differ_and_seed_noise_depends_on_seed(gen_file):
    G, path = gen_file
    G = load_generator(path)
    const = render(G, [5], noise_mode="const")
    seeded = render(G, [5], noise_mode="seed")
    assert not torch.equal(const, seeded)
    assert torch.equal(seeded, render(G, [5], noise_mode="seed"))


def test_seed_renders_same_in_another_process(gen_file):
    G, path = gen_file
    here = render(load_generator(path), [42], noise_mode="seed")
    code = (
        "import sys, torch; from datasetgan.checkpoint import load_generator; "
        "from datasetgan.render import render; "
        "img = render(load_generator(sys.argv[1]), [42], noise_mode='seed'); "
        "sys.stdout.write(img.numpy().tobytes().hex())"
    )
    out = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    assert bytes.fromhex(out.stdout) == here.numpy().tobytes()


def test_seed_latent_is_stable():
    assert torch.equal(seed_latent(3, 16), seed_latent(3, 16))
    assert not torch.equal(seed_latent(3, 16), seed_latent(4, 16))
