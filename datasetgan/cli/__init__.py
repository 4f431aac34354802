"""The ``datasetgan`` command. Sub-commands load lazily, so ``--help`` is instant.

Every sub-command is a :class:`Command`: the project's errors (:class:`DatasetganError`) raised
anywhere below it become a one-line click error here, so no command catches them itself.
"""
from __future__ import annotations

import dataclasses
import importlib
import importlib.util

import click

from ..errors import DatasetganError
from ..seeds import parse_seeds

# name -> module under datasetgan.cli defining a click command called ``command``
COMMANDS = {
    "train": "train",
    "fid": "fid",
    "annotate": "annotate",
    "project": "project",
    "interpret": "interpret",
    "generate": "generate",
    "serve": "serve",
    "bench": "bench",
    "demo": "demo",
}


class ReportsErrors:
    """Reports a :class:`DatasetganError` as ``Error: <message>`` (exit 1), without a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except DatasetganError as e:
            raise click.ClickException(str(e)) from None


class Command(ReportsErrors, click.Command):
    """The class of every sub-command (``@click.command(cls=Command)``), so it reports errors when
    invoked alone too (tests invoke sub-commands without the group)."""


class Seeds(click.ParamType):
    """An option value like ``1,2,5-9``: a list of distinct seeds (see :func:`datasetgan.seeds.parse_seeds`)."""
    name = "seeds"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        try:
            return parse_seeds(value)
        except ValueError as e:
            self.fail(str(e), param, ctx)


SEEDS = Seeds()


def defaults(cls) -> dict:
    """The field defaults of a dataclass: the one place a command's option defaults come from."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


class LazyGroup(ReportsErrors, click.Group):

    def list_commands(self, ctx):
        return sorted(n for n in COMMANDS if importlib.util.find_spec(f"datasetgan.cli.{COMMANDS[n]}"))

    def get_command(self, ctx, name):
        if name not in COMMANDS or not importlib.util.find_spec(f"datasetgan.cli.{COMMANDS[name]}"):
            return None
        return importlib.import_module(f"datasetgan.cli.{COMMANDS[name]}").command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="datasetgan")
def main():
    """DatasetGAN data factory: synthetic medical image + mask pairs from ~30 annotations.

    \b
    The pipeline, each stage writing into one run folder:
      datasetgan train DATA --out RUN        StyleGAN2-ADA on a folder of images
      datasetgan annotate RUN --n 30         paint masks on 30 generated images in a browser
      datasetgan project RUN IMAGES --out D  find the generator input of real images (GAN inversion)
      datasetgan interpret RUN               train the style interpreter on those masks
      datasetgan generate RUN --n 1000       write image + mask pairs by seed
      datasetgan serve --runs RUNS           stream pairs over REST
      datasetgan bench RUN --real DATA       benchmark segmenters on synthetic vs real data
    """
