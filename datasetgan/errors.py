"""The base of every error this project raises for something a user can act on.

Each stage keeps its own class (``DataError``, ``CheckpointError``, ...), and each subclasses
:class:`DatasetganError`, so the command line turns all of them into a one-line message in one place
(:mod:`datasetgan.cli`) instead of catching each class in each command.
"""

from __future__ import annotations


class DatasetganError(Exception):
    """An error with a message meant for the user (a bad file, option or state), not a bug."""


class ConfigError(DatasetganError, ValueError):
    """A configuration value out of range (a preset, an override, a saved config)."""
