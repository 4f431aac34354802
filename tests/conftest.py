"""Shared fixtures. ``tiny_run``: a complete run folder (generator, annotations, interpreter) in seconds."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from datasetgan.annotations import AnnotationSet, render_items
from datasetgan.checkpoint import load_generator, save_generator
from datasetgan.data import default_classes
from datasetgan.features import render_annotated
from datasetgan.interpreter import InterpreterConfig, InterpreterInfo, save_interpreter, train_interpreter
from datasetgan.networks import Generator, GeneratorConfig
from datasetgan.runfolder import RunFolder

@pytest.fixture(scope="session", autouse=True)
def fused_ops_built():
    """Build the fused CPU operations once, up front: otherwise the first server started by a test
    spends its start-up time compiling them (minutes on a fresh machine) and the test times out."""
    from stylegan2_ops.build import BuildError, load

    try:
        load("cpu")
    except BuildError:
        pass  # the operations fall back to the reference backend; tests/test_ops.py reports why


@pytest.fixture
def one_thread():
    """Torch on one thread for the test: tiny tensors gain nothing from more, they only contend for the
    shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


TINY_G = dict(resolution=16, img_channels=1, z_dim=32, w_dim=32, mapping_layers=2, channel_base=256,
              channel_max=32)


def build_tiny_run(root, resolution=16, img_channels=1, num_classes=3, annotated=4, members=3,
                   hidden=(16, 8), seed=0, generator: dict | None = None) -> Path:
    """A random-weight generator (``generator``: its configuration instead of TINY_G's), ``annotated``
    seeds with masks cut from image intensity into classes, and an interpreter trained on them for a
    few steps."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors: extra threads only contend for the shared cores
    try:
        return _build(RunFolder(root), resolution, img_channels, num_classes, annotated, members, hidden, seed,
                      generator or TINY_G)
    finally:
        torch.set_num_threads(threads)


def _build(run, resolution, img_channels, num_classes, annotated, members, hidden, seed, generator) -> Path:
    run.root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    G = Generator(GeneratorConfig(**{**generator, "resolution": resolution, "img_channels": img_channels}))
    with torch.no_grad():  # random noise strengths, so the stored constant noise matters
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.fill_(0.1)
    save_generator(run.generator, G)
    G = load_generator(run.generator)
    aset = AnnotationSet(run.annotations)
    ids = render_items(aset, G, range(100, 100 + annotated), truncation=1.0,
                       classes=default_classes(num_classes))
    for item in ids:
        img = aset.image(item).astype(np.float32)
        gray = img if img.ndim == 2 else img.mean(2)
        edges = np.quantile(gray, np.linspace(0, 1, num_classes + 1)[1:-1])
        aset.save_mask(item, np.digitize(gray, edges).astype(np.uint8))
    feats, masks, records = render_annotated(G, aset)
    info = InterpreterInfo(feats.taps, aset.classes(), resolution, img_channels, G.sha256, "const",
                           [r.id for r in records])
    cfg = InterpreterConfig(members=members, hidden=hidden, lr=1e-2, batch_size=128, epochs=2,
                            pixels_per_epoch=512, holdout=0.1, seed=seed)
    save_interpreter(run.interpreter, train_interpreter(feats, masks, info, cfg))
    return run.root


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """A tiny run folder (16x16 grayscale, 3 classes, 3-member interpreter). Treat it as read-only."""
    return build_tiny_run(tmp_path_factory.mktemp("tiny_run") / "run")
