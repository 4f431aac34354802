"""Training loop: a short real run on ACDC writes its outputs, and resuming is exact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from support import ACDC as ACDC_ROOT
from support import tiny_train_args

from datasetgan.checkpoint import load_generator, load_meta, load_tensors
from datasetgan.cli import main
from datasetgan.presets import make_config
from datasetgan.training import (
    Trainer,
    export_snapshot,
    flatten_optimizer,
    latest_snapshot,
    snapshot_generator,
    unflatten_optimizer,
)

ACDC = ACDC_ROOT / "train"

# A small network so that a few hundred images train in seconds on a shared CPU.
TINY = tiny_train_args(96, 4, "--aug", "ada", "--p", "0.2", "--ada-kimg", "0.5")


def run_cli(args):
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    return res


def snapshot_state(run: Path):
    tensors, meta = load_tensors(latest_snapshot(run / "training"))
    return tensors, meta["state"]


@pytest.fixture(scope="module")
def acdc():
    if not ACDC.is_dir():
        pytest.skip(f"ACDC data not found at {ACDC}")
    return str(ACDC)


def test_train_writes_outputs_and_resume_is_exact(acdc, tmp_path, monkeypatch):
    monkeypatch.setenv("DATASETGAN_CACHE", str(tmp_path / "cache"))
    full, cut = tmp_path / "full", tmp_path / "cut"
    # Uninterrupted: 320 images with a snapshot every 160.
    run_cli(["train", acdc, "--out", str(full), "--kimg", "0.32", "--snap", "0.16", *TINY])
    # Interrupted (Ctrl-C) at 240 images, after the snapshot at 160 and log lines beyond it ...
    real_step = Trainer.train_step

    def step_then_interrupt(self):
        if self.nimg >= 240:
            raise KeyboardInterrupt
        real_step(self)

    with monkeypatch.context() as m:
        m.setattr(Trainer, "train_step", step_then_interrupt)
        res = CliRunner().invoke(main, ["train", acdc, "--out", str(cut), "--kimg", "0.32", "--snap", "0.16", *TINY])
    assert res.exit_code != 0 and "interrupted at 240 images" in res.output and "Traceback" not in res.output
    _, mid = snapshot_state(cut)
    assert mid["nimg"] == 160 and mid["step"] == 20
    # ... then resumed to the same total.
    res = run_cli(["train", acdc, "--out", str(cut), "--kimg", "0.32", "--snap", "0.16", "--resume", *TINY])
    assert "resumed from snapshot-000000160" in res.output

    t_full, s_full = snapshot_state(full)
    t_cut, s_cut = snapshot_state(cut)
    assert s_full["step"] == s_cut["step"] == 40 and s_full["nimg"] == s_cut["nimg"] == 320
    assert s_full["ada"] == s_cut["ada"]
    assert s_full["ada"]["p"] != 0.2  # p moved, so "the same p" is a real check
    assert t_full.keys() == t_cut.keys()
    for name in t_full:
        assert torch.equal(t_full[name], t_cut[name]), name

    # Outputs a person and the later stages look at.
    tdir = full / "training"
    for name in (
        "config.json",
        "log.jsonl",
        "curves.png",
        "reals.png",
        "grid-000000000.png",
        "grid-000000160.png",
        "grid-000000320.png",
    ):
        assert (tdir / name).is_file(), name
    G = load_generator(full / "generator.safetensors")
    assert G.cfg.resolution == 32 and G.cfg.img_channels == 1
    for key, t in G.state_dict().items():
        assert torch.equal(t, t_full[f"G_ema.{key}"]), key
    # Any snapshot kept on disk gives the generator the run exported at that point, and `fid` scores it.
    export_snapshot(tdir / "snapshot-000000320.safetensors", tmp_path / "g320.safetensors", acdc)
    exported, meta = load_tensors(tmp_path / "g320.safetensors")
    assert meta["training"] == load_meta(full / "generator.safetensors")["training"]
    assert exported.keys() == G.state_dict().keys()
    assert all(torch.equal(t, exported[k]) for k, t in G.state_dict().items())
    G160, meta160 = snapshot_generator(tdir / "snapshot-000000160.safetensors")
    assert meta160["state"]["nimg"] == 160
    assert not all(torch.equal(t, G160.state_dict()[k]) for k, t in G.state_dict().items())
    data = tmp_path / "four"
    data.mkdir()
    for f in sorted(Path(acdc).glob("images/*.png"))[:4]:
        (data / f.name).write_bytes(f.read_bytes())
    fids = [
        json.loads(run_cli(["fid", str(src), str(data), "--n", "4", "--fast", "--json"]).output.splitlines()[-1])["fid"]
        for src in (full, tdir / "snapshot-000000320.safetensors", tdir / "snapshot-000000160.safetensors")
    ]
    assert fids[0] == fids[1] != fids[2]
    rows = [json.loads(line) for line in (tdir / "log.jsonl").read_text().splitlines()]
    assert rows[-1]["nimg"] == 320 and {"loss_G", "loss_D", "p", "r_t", "images_per_s"} <= rows[-1].keys()
    # The resumed log continues the curve: same kimg sequence as the uninterrupted one.
    rows_cut = [json.loads(line) for line in (cut / "training" / "log.jsonl").read_text().splitlines()]
    assert [r["nimg"] for r in rows_cut] == [r["nimg"] for r in rows]
    assert [r["p"] for r in rows_cut] == [r["p"] for r in rows]


def test_cli_refuses_bad_input(tmp_path, acdc):
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(main, ["train", str(empty), "--out", str(tmp_path / "run")])
    assert res.exit_code != 0 and "no PNG or JPEG images" in res.output
    res = runner.invoke(main, ["train", acdc, "--out", str(tmp_path / "run2"), "--resume"])
    assert res.exit_code != 0 and "holds no snapshot" in res.output
    assert "Traceback" not in res.output
    for device in ("cuda:7", "nonsense"):  # no GPU here; a typo
        res = runner.invoke(main, ["train", acdc, "--out", str(tmp_path / "run3"), "--device", device, *TINY])
        assert res.exit_code != 0 and f"--device {device}" in res.output and "Traceback" not in res.output


def test_optimizer_state_round_trip():
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.01, betas=(0.0, 0.99))
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(4, 3)).square().sum().backward()
        opt.step()
    tensors, meta = flatten_optimizer(opt, "opt")
    json.dumps(meta)  # metadata is plain JSON
    opt2 = torch.optim.Adam(net.parameters(), lr=0.5)
    unflatten_optimizer(opt2, "opt", tensors, json.loads(json.dumps(meta)))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"][0]["betas"] == b["param_groups"][0]["betas"] and b["param_groups"][0]["lr"] == 0.01
    for pid in a["state"]:
        for k in a["state"][pid]:
            assert torch.equal(a["state"][pid][k], b["state"][pid][k])


def test_lazy_regularisation_corrects_adam():
    cfg = make_config("cpu-tiny", channel_base=128, channel_max=16, mapping_layers=1, batch=4)
    tr = Trainer(cfg, np.zeros((4, 1, 32, 32), np.uint8))
    g = tr.opt_G.param_groups[0]
    c = cfg.pl_interval / (cfg.pl_interval + 1)
    assert g["lr"] == pytest.approx(0.0025 * c) and g["betas"][1] == pytest.approx(0.99**c)
    d = tr.opt_D.param_groups[0]
    c = cfg.r1_interval / (cfg.r1_interval + 1)
    assert d["lr"] == pytest.approx(0.0025 * c) and d["betas"][1] == pytest.approx(0.99**c)


def test_ema_follows_g_with_rampup():
    cfg = make_config("cpu-tiny", channel_base=128, channel_max=16, mapping_layers=1, batch=4)
    tr = Trainer(cfg, np.zeros((4, 1, 32, 32), np.uint8))
    with torch.no_grad():
        for p in tr.G.parameters():
            p.add_(1.0)
    before = [p.clone() for p in tr.G_ema.parameters()]
    tr.nimg = 4  # early: the ramp-up makes the half-life 0.05 * 4 images, so EMA ~ G
    tr.update_ema()
    beta = 0.5 ** (4 / (4 * 0.05))
    for pe, p, b in zip(tr.G_ema.parameters(), tr.G.parameters(), before):
        assert torch.allclose(pe, p * (1 - beta) + b * beta, atol=1e-6)


def test_make_grid_places_images_in_rows():
    from datasetgan.imagegrid import make_grid

    imgs = np.stack([np.full((2, 3, 1), i, np.uint8) for i in range(5)])
    grid = make_grid(imgs, cols=3, pad=1, pad_value=255)
    assert grid.shape == (2 * 3 - 1, 3 * 4 - 1, 1)
    assert (grid[0:2, 0:3] == 0).all() and (grid[0:2, 8:11] == 2).all() and (grid[3:5, 4:7] == 4).all()
    assert (grid[2] == 255).all() and (grid[3:5, 8:11] == 255).all()  # padding and the empty cell
    with pytest.raises(ValueError):
        make_grid(imgs.astype(np.float32))


def test_curves_png_from_log(tmp_path):
    from PIL import Image

    from datasetgan.curves import plot_curves

    log = tmp_path / "log.jsonl"
    rows = [
        {
            "kimg": k,
            "nimg": k * 1000,
            "loss_G": 1.0 + k,
            "loss_D": 1.0,
            "p": 0.1 * k,
            "r_t": 0.5,
            "fid": (100 - k) if k % 2 == 0 else None,
        }
        for k in range(5)
    ]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"kimg": 5, "cut sh')  # a torn last line
    plot_curves(log, tmp_path / "curves.png")
    with Image.open(tmp_path / "curves.png") as im:
        assert im.format == "PNG" and im.size[0] > im.size[1] > 100


def test_training_step_with_fused_ops_matches_reference(monkeypatch):
    """One whole step (G main, path length, D main, R1; augmentation on) gives the same losses and
    gradients with the fused cpu backend, its low-resolution downsampling forced on, as with ref."""
    from stylegan2_ops import backend, fused

    monkeypatch.setattr(fused, "MIN_DOWN_SIDE", 1)
    cfg = make_config(
        "cpu-tiny",
        resolution=16,
        channel_base=128,
        channel_max=16,
        z_dim=16,
        w_dim=16,
        batch=4,
        pl_interval=2,
        aug="fixed",
        aug_p=0.5,
    )
    images = np.random.default_rng(3).integers(0, 256, (8, 1, 16, 16), dtype=np.uint8)
    results = []
    for name in ("ref", "cpu"):
        monkeypatch.setenv(backend.ENV_VAR, name)
        trainer = Trainer(cfg, images)
        trainer.step_count = 0  # every regulariser is due
        trainer.train_step()
        # the last G phase (path length) and D phase (R1) leave their gradients; None counts as zero
        grads = [
            torch.zeros_like(p) if p.grad is None else p.grad
            for p in list(trainer.G.parameters()) + list(trainer.D.parameters())
        ]
        results.append((trainer.stats.means(), grads))
    (ref_stats, ref_grads), (cpu_stats, cpu_grads) = results
    assert set(ref_stats) == {"loss_G", "pl_penalty", "loss_D", "D_real", "D_fake", "r1_penalty"}
    for key, value in ref_stats.items():
        assert cpu_stats[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert sum(bool(g.abs().sum() > 0) for g in ref_grads) > 10
    for got, expected in zip(cpu_grads, ref_grads):
        torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)


def test_every_image_d_sees_is_augmented_and_r_t_counts_augmented_reals():
    """ADA: D sees A(x) in G's loss (fakes), D's loss (fakes and reals) and R1; r_t's signs are those of
    D on augmented reals. The pipeline is replaced by a marker (a constant image) to see which ran."""
    cfg = make_config("cpu-tiny", channel_base=128, channel_max=16, mapping_layers=1, batch=4, aug="fixed", aug_p=0.5)
    tr = Trainer(cfg, np.random.default_rng(0).integers(0, 256, (8, 1, 32, 32), dtype=np.uint8))
    tr.augment = lambda x, p, generator: torch.full_like(x, 0.25) + 0 * x  # keeps the graph for R1
    seen, outputs = [], []

    def record(module, args, out):
        seen.append(args[0].detach())
        outputs.append(out.detach())

    tr.D.register_forward_hook(record)
    tr.step_count = 0  # R1 is due
    tr.train_step()
    assert len(seen) == 4  # G main, D main on fakes, D main on reals, R1
    assert all(torch.equal(x, torch.full_like(x, 0.25)) for x in seen)
    assert tr.ada.sign_sum == float(torch.sign(outputs[2]).sum()) and tr.ada.count == cfg.batch


def test_fixed_p0_trains_bit_identically_to_no_augmentation(acdc, tmp_path, monkeypatch):
    """The pipeline switched on at p = 0 changes nothing: `--aug fixed --p 0` gives the same weights,
    optimiser and random states as `--aug none` (while p = 0.2 does change them)."""
    monkeypatch.setenv("DATASETGAN_CACHE", str(tmp_path / "cache"))
    runs = {}
    for name, aug in (
        ("none", ["--aug", "none"]),
        ("p0", ["--aug", "fixed", "--p", "0"]),
        ("p02", ["--aug", "fixed", "--p", "0.2"]),
    ):
        out = tmp_path / name
        run_cli(["train", acdc, "--out", str(out), "--kimg", "0.064", "--snap", "0.064", *tiny_train_args(32), *aug])
        runs[name] = snapshot_state(out)[0]
    assert runs["none"].keys() == runs["p0"].keys()
    for key in runs["none"]:
        assert torch.equal(runs["none"][key], runs["p0"][key]), key
    assert not torch.equal(
        runs["none"]["G.synthesis.blocks.3.torgb.bias"], runs["p02"]["G.synthesis.blocks.3.torgb.bias"]
    )


def test_d_capacity_learning_rates_and_path_length_weight_are_kept_on_resume(acdc, tmp_path, monkeypatch):
    monkeypatch.setenv("DATASETGAN_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    opts = "--d-cbase 512 --d-cmax 64 --glr 0.002 --dlr 0.003 --pl-weight 0".split()
    run_cli(["train", acdc, "--out", str(out), "--kimg", "0.032", "--snap", "0.032", *tiny_train_args(32), *opts])
    run_cli(["train", acdc, "--out", str(out), "--kimg", "0.064", "--snap", "0.032", "--resume", *tiny_train_args(32)])
    tensors, meta = load_tensors(latest_snapshot(out / "training"))
    cfg = meta["config"]
    assert meta["state"]["nimg"] == 64
    assert (cfg["d_channel_base"], cfg["d_channel_max"], cfg["g_lr"], cfg["d_lr"], cfg["pl_weight"]) == (
        512,
        64,
        0.002,
        0.003,
        0.0,
    )
    assert json.loads((out / "training" / "config.json").read_text())["d_channel_base"] == 512
    # D is twice as wide as G (min(512 / 32, 64) = 16 channels at 32x32 against G's min(256 / 32, 32) = 8).
    assert (
        tensors["D.blocks.0.fromrgb.weight"].shape[0] == 16
        and tensors["G.synthesis.blocks.3.torgb.affine.bias"].shape[0] == 8
    )
    lr_d = meta["opt_D"]["param_groups"][0]["lr"]
    lr_g = meta["opt_G"]["param_groups"][0]["lr"]
    assert lr_d == pytest.approx(0.003 * 16 / 17) and lr_g == pytest.approx(0.002 * 8 / 9)
    rows = [json.loads(line) for line in (out / "training" / "log.jsonl").read_text().splitlines()]
    assert not any("pl_penalty" in r for r in rows)  # path length off
    cpu = [r["train_cpu_seconds"] for r in rows]
    assert cpu[0] == 0 and cpu[-1] > cpu[len(cpu) // 2] > 0 and cpu == sorted(cpu)  # counted over the resume


@pytest.mark.parametrize(
    "option, message",
    [
        ("--glr 0", "--glr (g_lr) must be positive"),
        ("--dlr -1", "--dlr (d_lr) must be positive"),
        ("--d-cbase 0", "--d-cbase (d_channel_base) must be positive"),
        ("--d-cmax -4", "--d-cmax (d_channel_max) must be positive"),
        ("--pl-weight -1", "--pl-weight (pl_weight) must be 0 (off) or positive"),
    ],
)
def test_bad_capacity_rate_or_weight_is_a_one_line_error(tmp_path, option, message):
    res = CliRunner().invoke(
        main, ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--dry-run", *option.split()]
    )
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1
