"""The annotation page and its JSON/PNG API for one run folder's annotation set.

``create_app(run_dir)`` returns a FastAPI application serving the page at ``/`` and the API under
``/api/``. Every URL the page uses is relative, so the application works at the root of its own
server (``datasetgan annotate``) and mounted under a prefix (``/annotate/<run>`` in the service).

    GET  api/labels                     the classes (labels.json)
    GET  api/items                      every item with its state, and "k of N done"
    GET  api/items/{id}                 one item's record
    GET  api/items/{id}/image           the rendered image (PNG; a real image's reconstruction)
    GET  api/items/{id}/original        a real, projected item's original image (PNG)
    GET  api/items/{id}/mask            the saved label map (PNG; ?format=raw gives R*R bytes)
    PUT  api/items/{id}/mask?state=...  a new label map (PNG body), validated, saved atomically;
                                        state=done (a person's "save & mark done", the default) or
                                        state=todo (an autosaved draft: kept, but not trained on)

Item ids are checked against ``seed_`` or ``real_`` + 8 ASCII digits before any file is looked at, so no request
can name a path outside the annotation set. Bad input is answered 404/413/422 with a message.
"""
from __future__ import annotations

import io
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from PIL import Image
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from datasetgan.annotations import ITEM_ID, AnnotationError, AnnotationSet, decode_mask_png
from datasetgan.data import DataError
from datasetgan.errors import DatasetganError
from datasetgan.runfolder import RunFolder

STATIC = Path(__file__).resolve().parent / "static"
SAVE_STATES = ("done", "todo")                       # what a person's save may set


class ApiError(DatasetganError):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


def item_state(rec, has_mask: bool) -> str:
    """The state shown on the page: a todo item with a saved mask is a draft (autosaved, not done)."""
    return "draft" if rec.state == "todo" and has_mask else rec.state


def max_upload_bytes(resolution: int) -> int:
    # An uncompressed 8-bit PNG of R x R is about R*(R+1) bytes; allow generous overhead.
    return 2 * resolution * (resolution + 1) + 64 * 1024


def create_app(run_dir) -> FastAPI:
    run = RunFolder(run_dir)
    aset = AnnotationSet(run.annotations)

    app = FastAPI(title="DatasetGAN annotation", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.annotation_set = aset

    # -- errors: always JSON with a message, never a traceback ---------------------------------
    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse({"detail": exc.message}, status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request, exc):
        msgs = "; ".join(f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg')}" for e in exc.errors())
        return JSONResponse({"detail": msgs or "invalid request"}, status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request, exc):
        return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)

    # -- helpers ------------------------------------------------------------------------------
    def checked_id(item: str) -> str:
        if not ITEM_ID.fullmatch(item):
            raise ApiError(422, f"invalid item id {item[:80]!r}: expected seed_ or real_ followed by 8 digits")
        return item

    def record(item: str):
        checked_id(item)
        if not aset.path(item, "record").is_file():
            raise ApiError(404, f"no item {item} in this annotation set")
        try:
            return aset.record(item)
        except (ValueError, TypeError, KeyError) as e:
            raise ApiError(500, f"the record of {item} is unreadable ({e})") from None

    def classes():
        if not aset.labels_path.is_file():
            raise ApiError(404, "this run has no annotation set yet: create it with "
                                "`datasetgan annotate RUN --n 30 --labels labels.json`")
        try:
            return aset.classes()
        except DataError as e:
            raise ApiError(500, f"annotation set has no usable labels.json: {e}") from None

    def item_json(rec) -> dict:
        has_mask = aset.path(rec.id, "mask").is_file()
        return {"id": rec.id, "seed": rec.seed, "state": item_state(rec, has_mask), "source": rec.source,
                "has_mask": has_mask, "updated": rec.updated, "truncation": rec.truncation,
                "noise_mode": rec.noise_mode, "resolution": rec.resolution, "kind": rec.kind,
                "real_name": rec.real_name, "psnr": rec.psnr, "ssim": rec.ssim}

    def png_response(path: Path, missing: str) -> Response:
        if not path.is_file():
            raise ApiError(404, missing)
        return Response(path.read_bytes(), media_type="image/png", headers={"Cache-Control": "no-store"})

    # -- page ---------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    async def index(request: Request):
        # Relative URLs in the page need the trailing slash (e.g. when mounted at /annotate/run).
        if not request.url.path.endswith("/"):
            return RedirectResponse(request.url.path + "/", status_code=307)
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # -- API ----------------------------------------------------------------------------------
    @app.get("/api/labels")
    def labels():
        return {"classes": [c.__dict__ for c in classes()]}

    @app.get("/api/items")
    def items():
        recs = []
        for i in aset.ids():
            try:
                recs.append(aset.record(i))
            except (ValueError, TypeError, KeyError):
                continue  # a damaged record must not hide the others
        out = [item_json(r) for r in recs]
        first = recs[0] if recs else None
        channels = 0
        if first is not None:
            try:
                with Image.open(aset.path(first.id, "image")) as im:
                    channels = len(im.getbands())
            except OSError:
                channels = 0  # a missing image is reported when the page asks for it
        return {"items": out, "done": sum(o["state"] == "done" for o in out), "total": len(out),
                "resolution": first.resolution if first else 0, "channels": channels,
                "run": run.root.resolve().name}

    @app.get("/api/items/{item}")
    def item_record(item: str):
        return item_json(record(item))

    @app.get("/api/items/{item}/image")
    def image(item: str):
        rec = record(item)
        return png_response(aset.path(rec.id, "image"), f"item {item} has no image")

    @app.get("/api/items/{item}/original")
    def original(item: str):
        rec = record(item)
        return png_response(aset.path(rec.id, "original"), f"item {item} is not a real image (it has no original)")

    @app.get("/api/items/{item}/mask")
    def mask(item: str, format: str = "png"):
        rec = record(item)
        if format not in ("png", "raw"):
            raise ApiError(422, "format must be png or raw")
        if format == "png":
            return png_response(aset.path(rec.id, "mask"), f"item {item} has no mask yet")
        m = aset.mask(rec.id)
        if m is None:
            raise ApiError(404, f"item {item} has no mask yet")
        return Response(m.tobytes(), media_type="application/octet-stream",
                        headers={"Cache-Control": "no-store", "X-Resolution": str(m.shape[0])})

    @app.put("/api/items/{item}/mask")
    async def put_mask(item: str, request: Request, state: str = "done"):
        rec = record(item)
        if state not in SAVE_STATES:
            raise ApiError(422, f"state must be one of {', '.join(SAVE_STATES)}")
        limit = max_upload_bytes(rec.resolution)
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise ApiError(413, f"mask upload larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise ApiError(413, f"mask upload larger than {limit} bytes")
        data = bytes(body)
        n_classes = len(classes())
        # The header size first: a huge declared image is refused before it is decoded.
        try:
            with Image.open(io.BytesIO(data)) as im:
                size = im.size
        except Exception as e:  # Pillow raises many error types for bad bytes
            raise ApiError(422, f"not a readable PNG ({e.__class__.__name__})") from None
        if size != (rec.resolution, rec.resolution):
            raise ApiError(422, f"mask is {size[0]}x{size[1]}, expected {rec.resolution}x{rec.resolution}")
        try:
            arr = decode_mask_png(data, rec.resolution, n_classes)
        except AnnotationError as e:
            raise ApiError(422, str(e)) from None

        def save():  # under the set's file lock (see AnnotationSet.save_mask)
            aset.save_mask(rec.id, arr, state=state, source="human")
            return aset.record(rec.id)

        try:
            saved = await run_in_threadpool(save)
        except AnnotationError as e:
            raise ApiError(422, str(e)) from None
        except OSError as e:
            raise ApiError(500, f"could not save the mask ({e.strerror or e.__class__.__name__}); "
                                "the previous version is unchanged") from None
        out = item_json(saved)
        return out

    return app
