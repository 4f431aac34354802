"""GPU readiness: the pipeline on ``cuda``, run with ``pytest -m gpu`` (skipped without CUDA).

Each device-parametrised test runs its ``cpu`` case in the default suite with the same code and a
small configuration, so the paths the CUDA cases take stay tested on CPU-only machines; the
``gpu``-only tests (torchrun with NCCL, bench and serve on cuda) have their CPU twins in
test_distributed.py, test_bench_run.py and test_service.py. The CUDA cases use the paper's 256x256
configuration where the issue asks for it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import datasetgan
import stylegan2_ops as ops
from support import ACDC, free_port, wait_ready

ROOT = str(Path(datasetgan.__file__).resolve().parents[1])
CUDA = torch.cuda.is_available()
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=[gpu, needs_cuda])]
F32 = dict(rtol=2e-4, atol=2e-5)


def three_ways(fn, x: torch.Tensor):
    """fn(x), the gradient g of |fn(x)|^2 / 2 and the double backward d/dx |g|^2 (R1's shape; nonzero
    for linear operations too)."""
    x = x.detach().clone().requires_grad_(True)
    y = fn(x)
    (g,) = torch.autograd.grad(y.square().sum() / 2, x, create_graph=True)
    (gg,) = torch.autograd.grad(g.square().sum(), x)
    return y.detach(), g.detach(), gg.detach()


def op_cases():
    f = ops.setup_filter([1, 3, 3, 1])
    w = torch.randn(6, 4, 3, 3, generator=torch.Generator().manual_seed(1))
    styles = torch.randn(2, 4, generator=torch.Generator().manual_seed(2))
    return {
        "bias_act": lambda x, be: ops.bias_act(x, torch.linspace(-1, 1, x.shape[1], device=x.device), act="lrelu",
                                               clamp=2.0, backend=be),
        "upfirdn2d_up": lambda x, be: ops.upfirdn2d(x, f.to(x.device), up=2, padding=ops.up_padding(f, 2), gain=4,
                                                    backend=be),
        "upfirdn2d_down": lambda x, be: ops.upfirdn2d(x, f.to(x.device), down=2, padding=ops.down_padding(f, 2),
                                                      backend=be),
        "modulated_conv2d_up": lambda x, be: ops.modulated_conv2d(x, w.to(x.device), styles.to(x.device),
                                                                  f=f.to(x.device), up=2, padding=1, backend=be),
        "modulated_conv2d_down": lambda x, be: ops.modulated_conv2d(x, w.to(x.device), styles.to(x.device),
                                                                    f=f.to(x.device), down=2, padding=1, backend=be),
    }


@pytest.mark.parametrize("device", DEVICES)
def test_op_backends_agree_forward_backward_double_backward(device):
    """On cuda: cuda and ref on the GPU and cpu on the host give one answer; on cpu: cpu and ref."""
    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    runs = {"ref": device, device: device} if device == "cpu" else {"ref": "cuda", "cuda": "cuda", "cpu": "cpu"}
    for name, fn in op_cases().items():
        results = {be: [t.cpu() for t in three_ways(lambda a: fn(a, be), x.to(dev))] for be, dev in runs.items()}
        for be, got in results.items():
            for what, a, b in zip(("forward", "backward", "double backward"), got, results["ref"]):
                torch.testing.assert_close(a, b, **F32, msg=lambda m: f"{name} {what} {be} vs ref: {m}")


def training_config(device: str):
    from datasetgan.presets import make_config

    if device == "cuda":  # the paper's configuration
        return make_config("paper256", batch=8)
    return make_config("cpu-tiny", batch=8, channel_base=256, channel_max=32, mapping_layers=1)


@pytest.mark.parametrize("device", DEVICES)
def test_two_training_steps(device):
    from datasetgan.training import Trainer

    cfg = training_config(device)
    cfg.img_channels = 1
    images = np.random.default_rng(0).integers(0, 255, (16, 1, cfg.resolution, cfg.resolution), dtype=np.uint8)
    trainer = Trainer(cfg, images, device=device)
    before = [p.detach().clone() for p in trainer.G.parameters()]
    for _ in range(2):
        trainer.train_step()
    means = trainer.stats.means()
    assert all(np.isfinite(v) for v in means.values()) and {"loss_G", "loss_D", "r1_penalty"} <= set(means)
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.G.parameters()))
    assert next(trainer.G.parameters()).device.type == device


@gpu
@needs_cuda
def test_two_training_steps_under_torchrun_nccl_on_every_gpu(tmp_path):
    """The CPU twin (gloo, 2 ranks) is tests/test_distributed.py."""
    if not (ACDC / "train").is_dir():
        pytest.skip(f"ACDC data not found at {ACDC}")
    gpus = torch.cuda.device_count()
    batch = 8 * gpus
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(gpus),
                        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "datasetgan", "train",
                        str(ACDC / "train"), "--out", str(tmp_path / "run"), "--preset", "paper256", "--device", "cuda",
                        "--batch", str(batch), "--kimg", str(2 * batch / 1000), "--snap", str(2 * batch / 1000),
                        "--fid", "0", "--grid", "2", "--limit", "64", "--no-progress"],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    log = [json.loads(line) for line in (tmp_path / "run" / "training" / "log.jsonl").read_text().splitlines()]
    assert log[-1]["step"] == 2 and np.isfinite(log[-1]["loss_G"])


@pytest.mark.parametrize("device", DEVICES)
def test_render_interpret_generate_match_the_cpu(device, tiny_run, tmp_path):
    from datasetgan.factory import PairFactory, generate

    seeds = list(range(20, 28))
    ref = {p.seed: p for p in PairFactory(tiny_run).pairs(seeds)}
    got = {p.seed: p for p in PairFactory(tiny_run, device=device).pairs(seeds)}
    images = np.stack([got[s].image for s in seeds]).astype(int) - np.stack([ref[s].image for s in seeds])
    masks = np.mean([(got[s].mask == ref[s].mask).mean() for s in seeds])
    assert np.abs(images).max() <= 2 and masks >= 0.99  # uint8 levels; fraction of equal mask pixels
    man = generate(PairFactory(tiny_run, device=device), seeds, tmp_path / "set", fmt="wds", shard_size=4)
    assert man["seeds_kept"] == seeds and len(man["shards"]) == 2


def small_acdc(dst: Path) -> Path:
    """12 training and 6 test slices of ACDC with their masks, for a quick benchmark."""
    import shutil

    for split, k in (("train", 12), ("test", 6)):
        names = sorted(p.name for p in (ACDC / split / "images").glob("*.png"))[::37][:k]
        for sub in ("images", "masks"):
            (dst / split / sub).mkdir(parents=True)
            for name in names:
                shutil.copy(ACDC / split / sub / name, dst / split / sub / name)
        shutil.copy(ACDC / "labels.json", dst / split / "labels.json")
    return dst


@gpu
@needs_cuda
def test_bench_on_cuda(tmp_path):
    """The CPU twin is tests/test_bench_run.py."""
    from click.testing import CliRunner

    from datasetgan.cli import main

    if not ACDC.is_dir():
        pytest.skip(f"ACDC data not found at {ACDC}")
    data = small_acdc(tmp_path / "data")
    (tmp_path / "run").mkdir()
    r = CliRunner().invoke(main, ["bench", "run", str(tmp_path / "run"), "--real", str(data / "train"), "--test-real",
                                  str(data / "test"), "--models", "unet,fcn", "--folds", "2", "--resolution", "64",
                                  "--epochs", "2", "--batch-size", "4", "--device", "cuda", "--no-progress"])
    assert r.exit_code == 0, r.output
    doc = json.loads((tmp_path / "run" / "bench" / "results.json").read_text())
    assert doc


@gpu
@needs_cuda
def test_serve_on_cuda_answers_a_pair_request(tiny_run, tmp_path):
    """The CPU twin is tests/test_service.py."""
    import io
    import shutil
    import tarfile

    import httpx
    from PIL import Image

    from datasetgan.factory import PairFactory

    shutil.copytree(tiny_run, tmp_path / "runs" / "run")
    port = free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    server = subprocess.Popen([sys.executable, "-m", "datasetgan", "serve", "--runs", str(tmp_path / "runs"),
                               "--port", str(port), "--device", "cuda", "--log-level", "warning"], env=env)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as c:
            wait_ready(c, server)
            r = c.post("/v1/models/run/pairs", json={"n": 2, "seed_start": 5, "format": "tar"})
            assert r.status_code == 200
        tar = tarfile.open(fileobj=io.BytesIO(r.content))
        ref = {p.seed: p for p in PairFactory(tmp_path / "runs" / "run").pairs([5, 6])}
        for seed in (5, 6):
            mask = np.asarray(Image.open(tar.extractfile(f"{seed:08d}.mask.png")))
            assert (mask == ref[seed].mask).mean() >= 0.99
    finally:
        server.terminate()
        server.wait(60)
