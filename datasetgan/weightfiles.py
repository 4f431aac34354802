"""A weights file and its JSON sidecar, written and read as one unit (torch-free).

``weights.safetensors`` holds the bytes; ``weights.json`` the metadata and the bytes' SHA-256. They
are two files, so a save writes the new sidecar first as an intent record ``.weights.pending.json``,
then the weights, then the sidecar, then removes the record (each write atomic). A reader whose
weights do not match the sidecar takes the intent record when the weights match that: a save killed
between its writes leaves a usable pair (the old one or the new one), never a "hash mismatch".
Readers never write, so they cannot race a save; the next save tidies up. ``write_unit`` and
``interrupted`` are that mechanism for any file and a record naming its hash (annotations use them).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from .atomic import atomic_write_bytes, atomic_write_text
from .errors import DatasetganError

FORMAT = "datasetgan-checkpoint/1"


class CheckpointError(DatasetganError, RuntimeError):
    pass


def sidecar(path) -> Path:
    return Path(path).with_suffix(".json")


def pending(path) -> Path:
    path = Path(path)
    return path.with_name(f".{path.stem}.pending.json")


def file_sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_pair(path, data: bytes, meta: dict) -> str:
    """Write ``data`` to ``path`` and ``meta`` + its hash to the sidecar; returns the hash."""
    sha = hashlib.sha256(data).hexdigest()
    write_unit(
        path, data, sidecar(path), json.dumps({"format": FORMAT, "sha256": sha, **meta}, indent=1), pending(path)
    )
    return sha


def write_unit(path, data: bytes, record: Path, doc: str, intent: Path) -> None:
    """Write ``data`` to ``path`` and ``doc`` (a record naming its hash) to ``record`` as one unit: ``doc``
    goes first to ``intent``, removed once both are written (see ``interrupted``)."""
    atomic_write_text(intent, doc)
    atomic_write_bytes(path, data)
    atomic_write_text(record, doc)
    Path(intent).unlink(missing_ok=True)


def interrupted(path, recorded: str | None, intended: str | None, sha: str | None = None) -> bool:
    """Whether a ``write_unit`` was killed after writing ``path`` but before its record: ``path``'s hash
    (``sha``, computed if not given; a missing file has none) is the intent's, not the record's."""
    if intended is None:
        return False
    try:
        sha = sha or file_sha256(path)
    except OSError:  # no file: the unit never reached it
        return False
    return sha == intended and sha != recorded


def _read(json_path: Path) -> dict | None:
    """A sidecar's content, None if it does not exist; an error if it is not one."""
    try:
        meta = json.loads(json_path.read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{json_path}: not valid JSON ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or not isinstance(meta.get("sha256"), str):
        raise CheckpointError(f"{json_path}: not a {FORMAT} file")
    return meta


def read_meta(path, sha: str | None = None) -> dict:
    """The metadata of the weights at ``path``. With an interrupted save around (an intent record),
    the weights' hash (``sha``, computed if not given) picks the sidecar or the record that matches."""
    path = Path(path)
    meta = _read(sidecar(path))
    intent = pending(path)
    if intent.is_file():
        try:
            new = _read(intent)
        except (OSError, CheckpointError):
            new = None  # a record cut short: the save never reached the weights
        if new is not None and interrupted(path, meta and meta["sha256"], new["sha256"], sha):
            return new
    if meta is None:
        raise CheckpointError(f"{path}: its metadata file {sidecar(path).name} is missing")
    return meta


def check_sha(path, meta: dict, sha: str) -> None:
    if sha != meta["sha256"]:
        raise CheckpointError(
            f"{path}: SHA-256 does not match {sidecar(path).name}; the file is truncated, corrupted or was modified"
        )


def verify(path) -> dict:
    """The metadata of ``path`` after checking the weights' hash against it (reads the whole file)."""
    path = Path(path)
    try:
        sha = file_sha256(path)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: file not found") from None
    meta = read_meta(path, sha)
    check_sha(path, meta, sha)
    return meta


def remove_pair(path) -> None:
    for p in (Path(path), sidecar(path), pending(path)):
        p.unlink(missing_ok=True)
