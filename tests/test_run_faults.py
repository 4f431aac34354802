"""A run folder survives kills and bad resumes: weight/sidecar pairs, torn log lines, stale temporary
files, a changed preset, and the data folder recorded for `annotate`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from support import ACDC as ACDC_ROOT
from support import tiny_train_args

from datasetgan.annotations import AnnotationSet
from datasetgan.checkpoint import load_generator, load_tensors, save_generator
from datasetgan.cli import main
from datasetgan.networks import Generator, GeneratorConfig
from datasetgan.training import latest_snapshot

REPO = Path(__file__).resolve().parents[1]
ACDC = ACDC_ROOT / "train"
TINY = tiny_train_args(16)


def train(*args):
    return CliRunner().invoke(main, ["train", str(ACDC), *TINY, *args])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    if not ACDC.is_dir():
        pytest.skip(f"ACDC data not found at {ACDC}")
    run = tmp_path_factory.mktemp("faults") / "run"
    r = train("--out", str(run), "--kimg", "0.016", "--snap", "0.016")
    assert r.exit_code == 0, r.output
    return run


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return Path(shutil.copytree(trained, tmp_path / "run"))


def tiny_generator(seed: int) -> Generator:
    torch.manual_seed(seed)
    return Generator(GeneratorConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=1, channel_base=32, channel_max=8))


KILL_AFTER_WEIGHTS = """
import os, sys, torch
from datasetgan.checkpoint import save_generator
from datasetgan.networks import Generator, GeneratorConfig
replace = os.replace
def replace_then_die(src, dst):  # the process is killed right after the weights reach their place
    replace(src, dst)
    if str(dst).endswith(".safetensors"):
        os._exit(9)
os.replace = replace_then_die
torch.manual_seed(1)
save_generator(sys.argv[1], Generator(GeneratorConfig(resolution=16, z_dim=8, w_dim=8, mapping_layers=1,
                                                      channel_base=32, channel_max=8)))
"""


def test_a_save_killed_between_weights_and_sidecar_leaves_a_loadable_pair(tmp_path):
    path = tmp_path / "generator.safetensors"
    save_generator(path, tiny_generator(0))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", KILL_AFTER_WEIGHTS, str(path)], env=env)
    assert proc.returncode == 9
    G = load_generator(path)  # the weights on disk are the new ones: their metadata must be found
    for key, t in tiny_generator(1).state_dict().items():
        assert torch.equal(G.state_dict()[key], t), key
    save_generator(path, tiny_generator(2))  # the next save tidies up
    assert sorted(p.name for p in tmp_path.iterdir()) == ["generator.json", "generator.safetensors"]


def test_resume_repairs_a_generator_export_that_does_not_match(run):
    # a kill between the snapshot and the export: generator.safetensors holds other weights
    gen = run / "generator.safetensors"
    gen.write_bytes(gen.read_bytes()[:-100] + bytes(100))
    r = train("--out", str(run), "--kimg", "0.016", "--snap", "0.016", "--resume")
    assert r.exit_code == 0, r.output
    tensors, _ = load_tensors(latest_snapshot(run / "training"))
    for key, t in load_generator(gen).state_dict().items():
        assert torch.equal(t, tensors[f"G_ema.{key}"]), key


def test_resume_drops_a_torn_log_line_and_says_so(run):
    log = run / "training/log.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join(lines) + '\n{"kimg": 0.02, "nimg": 2')  # killed mid-line
    r = train("--out", str(run), "--kimg", "0.024", "--snap", "0.016", "--resume")
    assert r.exit_code == 0, r.output
    assert "torn line" in r.output and "Traceback" not in r.output
    rows = [json.loads(line) for line in log.read_text().splitlines()]  # every line is JSON again
    assert rows[-1]["nimg"] == 24 and [r["nimg"] for r in rows[: len(lines)]] == [json.loads(x)["nimg"] for x in lines]


def test_a_log_line_after_a_torn_one_starts_on_its_own_line(tmp_path):
    from datasetgan.jsonlog import append, read

    log = tmp_path / "log.jsonl"
    append(log, {"a": 1})
    with open(log, "a") as f:
        f.write('{"a": 2')
    append(log, {"a": 3})
    assert read(log) == ([{"a": 1}, {"a": 3}], [2])


def test_resume_refuses_another_preset(run):
    r = train("--out", str(run), "--kimg", "0.032", "--snap", "0.016", "--resume", "--preset", "cpu-small")
    assert r.exit_code != 0 and "--preset cpu-small" in r.output and "cpu-tiny" in r.output
    assert json.loads((run / "training/latest.json").read_text())["nimg"] == 16  # nothing trained


def test_train_removes_what_killed_writes_left(run):
    stale = [run / "training/.snapshot-000000016.safetensors.abc123.tmp", run / ".generator.safetensors.x1.tmp"]
    kept = run / "annotations/.seed_00000001.png.x2.tmp"  # another stage's, possibly being written now
    for p in stale + [kept]:
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(b"partial")
    r = train("--out", str(run), "--kimg", "0.016", "--snap", "0.016", "--resume")
    assert r.exit_code == 0, r.output
    assert not any(p.exists() for p in stale) and kept.exists()


def test_annotate_finds_the_classes_of_the_training_data(run):
    # train recorded its data folder in generator.json; the folder's labels.json names the classes
    assert json.loads((run / "generator.json").read_text())["data"] == str(ACDC.resolve())
    r = CliRunner().invoke(main, ["annotate", str(run), "--n", "1", "--no-serve"])
    assert r.exit_code == 0, r.output
    from datasetgan.data import read_labels

    assert AnnotationSet(run / "annotations").classes() == read_labels(ACDC.parent / "labels.json")


def test_dry_run_prints_the_resolved_configuration(tmp_path):
    from datasetgan.presets import make_config

    r = CliRunner().invoke(
        main,
        ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--preset", "cpu-small", "--batch", "8", "--dry-run"],
    )
    assert r.exit_code == 0, r.output
    printed = json.loads(r.stdout)
    assert printed == json.loads(make_config("cpu-small", batch=8).to_json())
    assert printed["r1_gamma"] == pytest.approx(0.0002 * 64**2 / 8)
    assert "automatic" in r.stderr and "batch=8" in r.stderr
    assert not (tmp_path / "run").exists()  # nothing written
    r = CliRunner().invoke(main, ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--gamma", "2", "--dry-run"])
    assert json.loads(r.stdout)["r1_gamma"] == 2 and "automatic" not in r.stderr


def test_train_and_interpret_defaults_come_from_the_dataclasses():
    from datasetgan.cli.interpret import command as interpret
    from datasetgan.cli.train import command as train_command
    from datasetgan.interpreter import InterpreterConfig
    from datasetgan.training import LoopOptions

    opts = {p.name: p.default for p in interpret.params}
    cfg = InterpreterConfig()
    assert (opts["members"], opts["epochs"], opts["lr"], opts["batch_size"], opts["holdout"], opts["seed"]) == (
        cfg.members,
        cfg.epochs,
        cfg.lr,
        cfg.batch_size,
        cfg.holdout,
        cfg.seed,
    )
    assert tuple(int(h) for h in opts["hidden"].split(",")) == cfg.hidden
    opts = {p.name: p.default for p in train_command.params}
    assert (opts["grid_seeds"], opts["keep_snapshots"]) == (LoopOptions.grid_seeds, LoopOptions.keep_snapshots)
