"""The service with bad input and damaged runs: non-finite numbers, corrupt weights, server paths."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from datasetgan.weightfiles import write_pair
from datasetgan.service.app import create_app
from datasetgan.service.settings import Settings

CLASSES = [{"id": 0, "name": "bg", "color": "#000000"}, {"id": 1, "name": "fg", "color": "#ff0000"}]


def make_run(root, name):
    run = root / name
    run.mkdir(parents=True)
    write_pair(run / "generator.safetensors", b"generator weights", {"config": {"resolution": 32, "img_channels": 1}})
    write_pair(run / "interpreter.safetensors", b"interpreter weights", {"classes": CLASSES})
    return run


@pytest.fixture
def client(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "good")
    bad = make_run(runs, "damaged")
    (bad / "interpreter.safetensors").write_bytes(b"interpreter weightz")  # same size, one byte off
    (runs / "garbled").mkdir()
    for name in ("generator", "interpreter"):
        (runs / "garbled" / f"{name}.safetensors").write_bytes(b"x")
        (runs / "garbled" / f"{name}.json").write_text("{not json")
    with TestClient(create_app(Settings(runs_dir=runs, jobs_dir=tmp_path / "jobs"))) as c:
        yield c


@pytest.mark.parametrize("path", ["/v1/models/good/pairs", "/v1/models/good/jobs"])
@pytest.mark.parametrize("body", ['{"n": 2, "truncation": NaN}', '{"n": 2, "truncation": Infinity}',
                                  '{"n": 2, "drop_uncertain": -Infinity}', '{"n": NaN}', '{"seeds": [1, NaN]}'])
def test_non_finite_numbers_are_a_422_not_a_500(client, path, body):
    r = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert "invalid request" in r.json()["message"]


def test_models_lists_damaged_runs_as_unavailable_with_a_reason(client, tmp_path):
    models = {m["id"]: m for m in client.get("/v1/models").json()["models"]}
    assert models.keys() == {"good", "damaged", "garbled"}
    assert models["good"]["available"] is True and models["good"]["reason"] is None
    for name in ("damaged", "garbled"):
        assert models[name]["available"] is False and models[name]["reason"]
    assert "SHA-256 does not match" in models["damaged"]["reason"]
    assert "not valid JSON" in models["garbled"]["reason"]
    r = client.post("/v1/models/damaged/pairs", json={"n": 1})
    assert r.status_code == 503 and "SHA-256" in r.json()["detail"]
    r = client.post("/v1/models/garbled/jobs", json={"n": 1})
    assert r.status_code == 503
    # no answer shows where the server keeps its files
    for text in (client.get("/v1/models").text, r.text, client.get("/v1/models/damaged").text):
        assert str(tmp_path) not in text


def test_a_model_that_fails_to_load_is_a_503_without_server_paths(tmp_path):
    from datasetgan.checkpoint import CheckpointError
    from datasetgan.service.registry import BrokenModel, ModelRegistry

    runs = tmp_path / "runs"
    make_run(runs, "good")

    def loader(run_dir):
        raise CheckpointError(f"{run_dir / 'generator.safetensors'}: weights do not match the configuration")

    with pytest.raises(BrokenModel) as e:
        ModelRegistry(runs, loader).factory("good")
    assert str(tmp_path) not in str(e.value) and "good/generator.safetensors: weights do not match" in str(e.value)


def test_start_removes_partial_shards_of_a_killed_server(tmp_path):
    partial = tmp_path / "jobs" / "abc123" / "shards" / ".shard-00003.tar.k2j4.tmp"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"half a shard")
    with TestClient(create_app(Settings(runs_dir=tmp_path, jobs_dir=tmp_path / "jobs"))):
        assert not partial.exists()
