"""The annotation page of every run at /annotate/{id}/, served by the annotate package's app.

Runs can appear while the server runs, so instead of one static mount per run this small ASGI app
looks up the run at request time and builds (once) its annotation app. The annotate package is
optional: without it the route answers 404 with a message.
"""
from __future__ import annotations

import importlib
import logging
import threading

from starlette.types import Receive, Scope, Send

from .guards import send_json
from .registry import ModelRegistry, UnknownModel

log = logging.getLogger("service.annotate")


def load_annotate_factory():
    """``annotate.api.create_app``, or None (logged) when the annotate package lacks it."""
    try:
        return importlib.import_module("datasetgan.annotate.api").create_app
    except (ImportError, AttributeError) as e:
        log.warning("annotation pages disabled: annotate.api.create_app is not available (%s)", e)
        return None


class AnnotateMount:
    def __init__(self, registry: ModelRegistry, create_app):
        self.registry, self.create_app = registry, create_app
        self._apps: dict = {}
        self._lock = threading.Lock()

    def _app_for(self, run_id: str):
        run_dir = self.registry.run_dir(run_id)  # validates the id and that the folder exists
        if not (run_dir / "generator.safetensors").exists():
            raise UnknownModel(f"run {run_id!r} has no generator yet, so there is nothing to annotate")
        with self._lock:
            if run_id not in self._apps:
                self._apps[run_id] = self.create_app(run_dir)
            return self._apps[run_id]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            return
        if self.create_app is None:
            return await send_json(send, 404, {"detail": "annotation pages are not available on this server "
                                                         "(annotate.api is not installed)"})
        root = scope.get("root_path", "")
        path = scope["path"]
        rest = path[len(root):] if path.startswith(root) else path
        run_id, slash, _ = rest.lstrip("/").partition("/")
        try:
            app = self._app_for(run_id)
        except UnknownModel as e:
            return await send_json(send, 404, {"detail": str(e)})
        if not slash:  # /annotate/id -> /annotate/id/ so the page's relative URLs resolve inside it
            location = (root + "/" + run_id + "/").encode()
            await send({"type": "http.response.start", "status": 307,
                        "headers": [(b"location", location), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        await app({**scope, "root_path": root + "/" + run_id}, receive, send)
