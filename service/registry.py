"""The model registry: every run folder under RUNS with a generator and an interpreter is a model.

Listing reads the JSON sidecars and checks the weights' hashes against them (a hash is computed once
per file version, keyed by size, mtime and inode), so every request sees runs added or replaced since
and a run with damaged weights is listed as unavailable, with the reason; the pair factory of a run is
loaded on first use and kept while its weight hashes stay the same. Messages never show server paths.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from datasetgan.data import DataError, read_labels
from datasetgan.errors import DatasetganError
from datasetgan.runfolder import RunFolder
from datasetgan.weightfiles import CheckpointError, check_sha, file_sha256, read_meta

log = logging.getLogger("service.registry")

# A run id is a folder name that cannot climb out of RUNS (no slashes, no leading dot).
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


class UnknownModel(DatasetganError, LookupError):
    pass


class BrokenModel(DatasetganError, RuntimeError):
    pass


@dataclass(frozen=True)
class RunInfo:
    id: str
    path: Path
    resolution: int | None
    channels: int | None
    classes: tuple[dict, ...]
    generator_sha256: str | None
    interpreter_sha256: str | None
    created: str | None
    unavailable: str | None = None  # why the run cannot serve (damaged weights), None when it can

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "resolution": self.resolution,
            "channels": self.channels,
            "classes": [dict(c) for c in self.classes],
            "generator_sha256": self.generator_sha256,
            "interpreter_sha256": self.interpreter_sha256,
            "created": self.created,
            "available": self.unavailable is None,
            "reason": self.unavailable,
        }


def _classes_from(meta: dict, run: RunFolder) -> list[dict] | None:
    """Class list from the interpreter's metadata, else from the annotation set's labels.json."""
    found = meta.get("classes")
    if isinstance(found, list) and found:
        out = []
        for i, c in enumerate(found):
            if isinstance(c, dict):
                out.append({"id": int(c.get("id", i)), "name": str(c.get("name", i)), "color": str(c.get("color", ""))})
            else:
                out.append({"id": i, "name": str(c), "color": ""})
        return out
    if isinstance(found, int) and found > 0:
        return [{"id": i, "name": str(i), "color": ""} for i in range(found)]
    labels = run.annotations / "labels.json"
    if labels.exists():
        try:
            return [dict(c.__dict__) for c in read_labels(labels)]
        except DataError:
            return None
    return None


def classes_of(factory) -> list[dict]:
    """Class list of a loaded factory (ClassInfo objects, dicts or names)."""
    out = []
    for i, c in enumerate(factory.classes):
        if isinstance(c, dict):
            out.append({"id": int(c.get("id", i)), "name": str(c.get("name", i)), "color": str(c.get("color", ""))})
        elif hasattr(c, "name"):
            out.append({"id": int(getattr(c, "id", i)), "name": str(c.name), "color": str(getattr(c, "color", ""))})
        else:
            out.append({"id": i, "name": str(c), "color": ""})
    return out


class ModelRegistry:
    def __init__(self, runs_dir: Path, loader: Callable[[Path], Any], max_loaded: int = 4):
        self.runs_dir = Path(runs_dir)
        self._loader = loader
        self._max_loaded = max_loaded
        self._lock = threading.Lock()  # guards the cache
        self._load_locks: dict[str, threading.Lock] = {}
        self._factories: OrderedDict[str, tuple[tuple[str, str], Any]] = OrderedDict()
        self._hashes: dict[Path, tuple[tuple[int, int, int], str]] = {}  # path -> (file version, sha256)

    def public(self, message: str) -> str:
        """``message`` without the server's paths: RUNS/x/file becomes x/file."""
        for root in {str(self.runs_dir.resolve()), str(self.runs_dir)}:
            message = message.replace(root + "/", "").replace(root, "RUNS")
        return message

    def _sha256(self, path: Path) -> str:
        st = path.stat()
        version = (st.st_size, st.st_mtime_ns, st.st_ino)
        with self._lock:
            hit = self._hashes.get(path)
        if hit and hit[0] == version:
            return hit[1]
        sha = file_sha256(path)
        with self._lock:
            self._hashes[path] = (version, sha)
        return sha

    def _meta(self, path: Path) -> tuple[dict, str | None]:
        """The metadata of a weights file, and why its weights are unusable (None if they are fine)."""
        sha = self._sha256(path)
        meta = read_meta(path, sha)
        try:
            check_sha(path, meta, sha)
        except CheckpointError as e:
            return meta, self.public(str(e))
        return meta, None

    def run_dir(self, run_id: str) -> Path:
        """The folder of a run id (which must name an existing direct child of RUNS)."""
        if not isinstance(run_id, str) or not RUN_ID.fullmatch(run_id):
            raise UnknownModel(
                f"unknown model {run_id!r}: a model id is a run folder name (letters, digits, '.', '_', '-')"
            )
        path = self.runs_dir / run_id
        if not path.is_dir():
            raise UnknownModel(f"unknown model {run_id!r}; GET /v1/models lists the models")
        return path

    def info(self, run_id: str) -> RunInfo:
        path = self.run_dir(run_id)
        run = RunFolder(path)
        if not run.generator.exists() or not run.interpreter.exists():
            raise UnknownModel(
                f"model {run_id!r} is not ready: its run folder needs "
                f"{run.generator.name} and {run.interpreter.name} (train and interpret first)"
            )
        try:
            gmeta, gbad = self._meta(run.generator)
            imeta, ibad = self._meta(run.interpreter)
            cfg = gmeta["config"]
            resolution, channels = int(cfg["resolution"]), int(cfg["img_channels"])
            gsha, isha = str(gmeta["sha256"]), str(imeta["sha256"])
        except (OSError, ValueError, KeyError, TypeError, CheckpointError) as e:
            raise BrokenModel(
                self.public(f"model {run_id!r}: unreadable metadata ({e.__class__.__name__}: {e})")
            ) from None
        classes = _classes_from(imeta, run)
        if classes is None and not (gbad or ibad):  # only the loaded interpreter knows its classes
            classes = classes_of(self.factory(run_id, (gsha, isha)))
        created = datetime.fromtimestamp(run.interpreter.stat().st_mtime, timezone.utc)
        return RunInfo(
            run_id,
            path,
            resolution,
            channels,
            tuple(classes or ()),
            gsha,
            isha,
            created.isoformat(timespec="seconds").replace("+00:00", "Z"),
            gbad or ibad,
        )

    def ready(self, run_id: str) -> RunInfo:
        """The info of a run that can serve; BrokenModel (503) with the reason if it cannot."""
        info = self.info(run_id)
        if info.unavailable:
            raise BrokenModel(f"model {run_id!r} is unavailable: {info.unavailable}")
        return info

    def list(self) -> list[RunInfo]:
        out = []
        if not self.runs_dir.is_dir():
            return out
        for path in sorted(self.runs_dir.iterdir()):
            if not path.is_dir() or not RUN_ID.fullmatch(path.name):
                continue
            try:
                out.append(self.info(path.name))
            except UnknownModel:
                continue
            except BrokenModel as e:  # listed, so that its owner learns why it does not serve
                log.warning("%s", e)
                out.append(RunInfo(path.name, path, None, None, (), None, None, None, str(e)))
        return out

    def factory(self, run_id: str, hashes: tuple[str, str] | None = None):
        """The pair factory of a run, loaded once per (generator, interpreter) hash pair."""
        if hashes is None:
            info = self.info(run_id)
            hashes = (info.generator_sha256, info.interpreter_sha256)
        with self._lock:
            hit = self._factories.get(run_id)
            if hit and hit[0] == hashes:
                self._factories.move_to_end(run_id)
                return hit[1]
            load_lock = self._load_locks.setdefault(run_id, threading.Lock())
        with load_lock:  # one load per run at a time; others wait for it
            with self._lock:
                hit = self._factories.get(run_id)
                if hit and hit[0] == hashes:
                    return hit[1]
            try:
                factory = self._loader(self.runs_dir / run_id)
            except Exception as e:
                raise BrokenModel(self.public(f"model {run_id!r} cannot be loaded: {e}")) from e
            got = (
                str(getattr(factory, "generator_sha256", hashes[0])),
                str(getattr(factory, "interpreter_sha256", hashes[1])),
            )
            if got != hashes:  # the files changed between listing and loading
                hashes = got
            with self._lock:
                self._factories[run_id] = (hashes, factory)
                self._factories.move_to_end(run_id)
                while len(self._factories) > self._max_loaded:
                    self._factories.popitem(last=False)
            return factory
