"""One base for the project's errors, reported by the command line in one place."""
import importlib

import click
import pytest
from click.testing import CliRunner

from datasetgan.cli import Command, main
from datasetgan.errors import DatasetganError

ERRORS = {"datasetgan.annotations": "AnnotationError", "datasetgan.checkpoint": "CheckpointError",
          "datasetgan.data": "DataError", "datasetgan.demo": "DemoError", "datasetgan.factory": "FactoryError",
          "datasetgan.features": "FeatureError", "datasetgan.fid": "FIDError", "datasetgan.training": "TrainingError",
          "datasetgan.errors": "ConfigError", "datasetgan.seeds": "SeedError", "stylegan2_ops.build": "BuildError",
          "datasetgan.service.registry": "UnknownModel", "datasetgan.service.jobs": "JobConflict",
          "datasetgan.annotate.api": "ApiError"}


@pytest.mark.parametrize("module,name", sorted(ERRORS.items()))
def test_every_error_class_has_the_one_base(module, name):
    assert issubclass(getattr(importlib.import_module(module), name), DatasetganError)


def test_a_project_error_is_one_line_without_traceback():
    from datasetgan.data import DataError

    @click.command(cls=Command)
    def broken():
        raise DataError("images/x.png: not an image")

    r = CliRunner().invoke(broken, [])
    assert r.exit_code == 1 and r.output == "Error: images/x.png: not an image\n"


def test_the_group_reports_errors_of_its_commands(tmp_path):
    # a corrupt generator: CheckpointError from deep inside `fid`, with no handler in the command
    (tmp_path / "generator.safetensors").write_bytes(b"junk")
    (tmp_path / "generator.json").write_text("{")
    r = CliRunner().invoke(main, ["fid", str(tmp_path), str(tmp_path)])
    assert r.exit_code == 1 and "generator.json: not valid JSON" in r.output and "Traceback" not in r.output


def test_a_bad_preset_override_is_a_config_error(tmp_path):
    r = CliRunner().invoke(main, ["train", str(tmp_path), "--out", str(tmp_path / "run"), "--resolution", "48"])
    assert r.exit_code == 1 and "resolution must be a power of two" in r.output
