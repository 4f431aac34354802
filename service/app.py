"""The data-factory service: FastAPI app streaming image + mask pairs of the runs under RUNS.

    GET  /healthz, /readyz                     health (never needs the API key)
    GET  /metrics                              counters in Prometheus text format
    GET  /v1/models                            runs ready to serve
    POST /v1/models/{id}/pairs                 stream up to max_n pairs (tar or NDJSON)
    POST /v1/models/{id}/jobs                  larger requests: a job writing tar shards (202 + Location)
    GET  /v1/jobs, /v1/jobs/{id}, /v1/jobs/{id}/events (server-sent events), /v1/jobs/{id}/shards/{k}
    DELETE /v1/jobs/{id}                       cancel (or delete a finished job)
    /annotate/{id}/                            the annotation page of a run

Generation runs in worker threads; the event loop only moves bytes, so health checks stay fast while
pairs stream. A streamed response asks the thread for one pair at a time: when the client goes away,
the thread finishes at most the batch in hand and the generator is closed.
"""
from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable, Iterator

import anyio
from fastapi import FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, PlainTextResponse, StreamingResponse

from datasetgan.atomic import remove_stale_temps

from .annotate_mount import AnnotateMount, load_annotate_factory
from .guards import ApiKeyMiddleware, BodyLimitMiddleware, Slots
from .jobs import ACTIVE, JobConflict, JobRunner, JobStore, valid_job_id
from .registry import BrokenModel, ModelRegistry, UnknownModel
from .schemas import JobOut, JobRequest, Message, ModelList, ModelOut, PairsRequest
from .settings import Settings
from .streaming import Metrics, pair_chunks

log = logging.getLogger("service")
MEDIA = {"tar": "application/x-tar", "ndjson": "application/x-ndjson"}
ERRORS = {401: {"model": Message, "description": "missing or wrong API key"},
          404: {"model": Message}, 413: {"model": Message, "description": "request body too large"}}


def make_factory(run_dir, device: str):
    """A run's PairFactory; torch is imported on first use, so the server starts (and answers health
    checks) at once."""
    return importlib.import_module("datasetgan.factory").PairFactory(run_dir, device=device)


def ray_pools(settings: Settings):
    """Ray workers for jobs when the server runs them on a cluster (``serve --ray``), else None."""
    if not settings.ray_address:
        return None
    from datasetgan.raygen import RayPools

    return RayPools(settings.ray_address, settings.device, settings.ray_workers, settings.torch_threads)


class GuardedStream(StreamingResponse):
    """A streaming response that always runs its clean-up, however the stream ends (done, client
    gone before or during the body, error)."""

    def __init__(self, content, on_close: list[Callable[[], Any]], **kw):
        super().__init__(content, **kw)
        self.on_close = on_close

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.body_iterator.aclose()
            for fn in self.on_close:
                fn()


async def thread_iter(it: Iterator[bytes]) -> AsyncIterator[bytes]:
    """Pull chunks from a blocking iterator in a worker thread, one at a time. A cancellation (client
    gone) waits for the chunk in progress, then the iterator is closed, so generation stops there."""
    done = object()
    try:
        while True:
            chunk = await anyio.to_thread.run_sync(next, it, done)
            if chunk is done:
                return
            if chunk:
                yield chunk
    finally:
        it.close()


def create_app(settings: Settings) -> FastAPI:
    """The service app."""
    registry = ModelRegistry(settings.runs_dir, lambda run_dir: make_factory(run_dir, settings.device))
    metrics = Metrics()
    slots = Slots(settings.max_concurrent)
    state: dict[str, Any] = {}

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if settings.torch_threads:
            import torch
            torch.set_num_threads(settings.torch_threads)
        remove_stale_temps(settings.jobs_dir, recursive=True)  # partial shards of a killed server
        store = JobStore(settings.jobs_dir)
        pools = ray_pools(settings)
        runner = JobRunner(store, registry, settings.batch_size, settings.job_workers, metrics, pools)
        state.update(store=store, runner=runner, started=time.time())
        runner.start()
        log.info("serving runs from %s; jobs in %s%s", settings.runs_dir, settings.jobs_dir,
                 f" (generated on the Ray cluster at {settings.ray_address})" if pools else "")
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(runner.stop)
            if pools is not None:
                pools.close()

    app = FastAPI(title="DatasetGAN data factory", version="1.0",
                  description="Synthetic image + mask pairs from DatasetGAN runs, streamed or as jobs. "
                              "Send the API key (when the server has one) as `X-API-Key` or `Authorization: Bearer`.",
                  lifespan=lifespan)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)  # added last = outermost

    # -- errors: always a 4xx with a message for bad input, JSON everywhere -------------------------

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        # where and why, not the raw input: it may be NaN or Infinity, which JSON cannot carry
        errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
                  for e in exc.errors()]
        summary = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in errors)
        return JSONResponse({"detail": errors, "message": f"invalid request: {summary}"}, status_code=422)

    @app.exception_handler(UnknownModel)
    async def _unknown(request: Request, exc: UnknownModel):
        return JSONResponse({"detail": str(exc)}, status_code=404)

    @app.exception_handler(BrokenModel)
    async def _broken(request: Request, exc: BrokenModel):
        log.error("%s", exc)
        return JSONResponse({"detail": str(exc)}, status_code=503)

    # -- health ------------------------------------------------------------------------------------

    @app.get("/healthz", tags=["health"])
    async def healthz() -> dict:
        """Liveness: answers at once, even while pairs are being generated. Never needs the API key."""
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], responses={503: {"model": Message}})
    async def readyz() -> JSONResponse:
        """Readiness (runs folder readable, job workers alive) and the service counters, e.g.
        `generated_pairs_total`. Never needs the API key."""
        runner = state.get("runner")
        ok = settings.runs_dir.is_dir() and runner is not None and all(t.is_alive() for t in runner.threads)
        doc = {"ready": ok, "active_streams": slots.used, "max_concurrent": slots.limit, **metrics.snapshot()}
        return JSONResponse(doc, status_code=200 if ok else 503)

    @app.get("/metrics", tags=["health"], response_class=PlainTextResponse, responses=ERRORS)
    async def metrics_text() -> str:
        lines = [f"datasetgan_active_streams {slots.used}"]
        lines += [f"datasetgan_{k} {v}" for k, v in sorted(metrics.snapshot().items())]
        return "\n".join(lines) + "\n"

    # -- models and streamed pairs --------------------------------------------------------------------

    @app.get("/v1/models", response_model=ModelList, tags=["models"], responses=ERRORS)
    async def list_models():
        """Runs ready to serve: a folder under RUNS with a generator and an interpreter."""
        return {"models": [r.public() for r in await anyio.to_thread.run_sync(registry.list)]}

    @app.get("/v1/models/{model_id}", response_model=ModelOut, tags=["models"], responses=ERRORS)
    async def get_model(model_id: str):
        return (await anyio.to_thread.run_sync(registry.info, model_id)).public()

    @app.post("/v1/models/{model_id}/pairs", tags=["pairs"],
              responses={200: {"description": "a tar (WebDataset layout: {seed:08d}.image.png, .mask.png, "
                                              ".overlay.png, .uncertainty.png, .json) or NDJSON, one pair a line",
                               "content": {"application/x-tar": {}, "application/x-ndjson": {}}},
                         429: {"model": Message, "description": "too many streams at once; retry after Retry-After"},
                         503: {"model": Message}, **ERRORS})
    async def stream_pairs(model_id: str, req: PairsRequest):
        """Stream pairs as they are made, batch by batch: a tar in WebDataset layout
        (`{seed:08d}.image.png`, `.mask.png`, `.overlay.png`, `.uncertainty.png`, `.json`) or NDJSON
        (one pair a line, PNGs in base64). The same request always gives the same bytes.

        `n` is capped by the server (`--max-n`); larger requests must be jobs. With `drop_uncertain`,
        a scoring pass renders the requested seeds first, keeping only their scores; the kept seeds are
        then rendered again and streamed (memory stays flat; such requests cost twice the compute and
        their first byte comes after the scoring pass). A client that disconnects stops generation
        within one batch."""
        info = await anyio.to_thread.run_sync(registry.ready, model_id)
        if req.n > settings.max_n:
            raise HTTPException(422, f"n = {req.n} is over this server's limit of {settings.max_n} pairs per "
                                     f"streamed request; submit it as a job: POST /v1/models/{model_id}/jobs")
        slot = slots.try_acquire()
        if slot is None:
            metrics.add("rejected_busy_total")
            raise HTTPException(429, f"{slots.limit} streams are already generating; retry later",
                                headers={"Retry-After": str(settings.retry_after_s)})
        try:
            factory = await anyio.to_thread.run_sync(
                registry.factory, model_id, (info.generator_sha256, info.interpreter_sha256))
        except BaseException:
            slot.release()
            raise
        stop = threading.Event()
        seeds = req.seeds if req.seeds is not None else range(req.seed_start, req.seed_start + req.n)
        chunks = pair_chunks(factory, seeds, truncation=req.truncation, include=req.include,
                             fmt=req.format, drop_uncertain=req.drop_uncertain, batch_size=settings.batch_size,
                             should_stop=stop.is_set, metrics=metrics)
        metrics.add("streams_total")
        name = f"{model_id}-{req.seed_at(0):08d}-{req.n}.{'tar' if req.format == 'tar' else 'ndjson'}"
        headers = {"Content-Disposition": f'attachment; filename="{name}"', "X-Model": model_id,
                   "X-Generator-SHA256": info.generator_sha256, "X-Interpreter-SHA256": info.interpreter_sha256,
                   "Cache-Control": "no-store"}
        return GuardedStream(thread_iter(chunks), on_close=[stop.set, slot.release],
                             media_type=MEDIA[req.format], headers=headers)

    # -- jobs ------------------------------------------------------------------------------------

    def job_view(request: Request, job: dict) -> dict:
        root = request.scope.get("root_path", "")
        url = f"{root}/v1/jobs/{job['id']}"
        keys = JobOut.model_fields.keys()
        out = {k: job[k] for k in keys if k in job}
        out["shards"] = [{**s, "url": f"{url}/shards/{s['index']}"} for s in job["shards"]]
        out.update(url=url, events_url=f"{url}/events")
        return out

    def the_job(job_id: str) -> dict:
        job = state["store"].get(job_id) if valid_job_id(job_id) else None
        if job is None:
            raise HTTPException(404, f"unknown job {job_id!r}")
        return job

    @app.post("/v1/models/{model_id}/jobs", status_code=202, response_model=JobOut, tags=["jobs"],
              responses={409: {"model": Message, "description": "Idempotency-Key reused for another request"},
                         503: {"model": Message}, **ERRORS})
    async def create_job(model_id: str, req: JobRequest, request: Request,
                         idempotency_key: str | None = Header(None, min_length=1, max_length=200)):
        """Queue a job writing the pairs into tar shards (`--shard-size` pairs each). Answers 202 with
        `Location: /v1/jobs/{id}`. A repeated request with the same `Idempotency-Key` returns the same
        job; the same key with a different request is a 409. Jobs survive a server restart: they continue
        after their last complete shard."""
        info = await anyio.to_thread.run_sync(registry.ready, model_id)
        if req.n > settings.max_job_n:
            raise HTTPException(422, f"n = {req.n} is over this server's job limit of {settings.max_job_n}; "
                                     "split it into several jobs with different seed_start")
        try:
            job, created = state["store"].create(model_id, req, (info.generator_sha256, info.interpreter_sha256),
                                                 settings.shard_size, idempotency_key)
        except JobConflict as e:
            raise HTTPException(409, str(e)) from None
        if created:
            state["runner"].submit(job["id"])
            metrics.add("jobs_total")
        view = job_view(request, job)
        headers = {"Location": view["url"]}
        if not created:
            headers["Idempotent-Replayed"] = "true"
        return JSONResponse(view, status_code=202, headers=headers)

    @app.get("/v1/jobs", tags=["jobs"], responses=ERRORS)
    async def list_jobs(request: Request) -> dict:
        store = state["store"]
        with store.lock:
            ids = sorted(store.jobs, key=lambda i: store.jobs[i]["created"])
        return {"jobs": [job_view(request, j) for j in (store.get(i) for i in ids) if j]}

    @app.get("/v1/jobs/{job_id}", response_model=JobOut, tags=["jobs"], responses=ERRORS)
    async def get_job(job_id: str, request: Request):
        """State and progress of a job, with the URLs of its complete shards."""
        return job_view(request, the_job(job_id))

    @app.get("/v1/jobs/{job_id}/events", tags=["jobs"],
             responses={200: {"description": "server-sent events: `progress` (job state as JSON) on every change, "
                                             "`end` once the job is done, failed or cancelled",
                              "content": {"text/event-stream": {}}}, **ERRORS})
    async def job_events(job_id: str, request: Request):
        """Server-sent events: `progress` on every change, `end` when the job is done, failed or cancelled."""
        the_job(job_id)

        async def events() -> AsyncIterator[bytes]:
            last, seq, quiet = None, 0, time.monotonic()
            while True:
                job = state["store"].get(job_id)
                if job is None:
                    yield b'event: end\ndata: {"state": "deleted"}\n\n'
                    return
                view = job_view(request, job)
                progress = {k: view[k] for k in ("id", "state", "phase", "n", "pairs_total", "pairs_done",
                                                 "scored", "dropped", "error")}
                progress["shards"] = len(view["shards"])
                if progress != last:
                    seq += 1
                    yield f"id: {seq}\nevent: progress\ndata: {json.dumps(progress)}\n\n".encode()
                    last, quiet = progress, time.monotonic()
                if job["state"] not in ACTIVE:
                    yield f"event: end\ndata: {json.dumps(progress)}\n\n".encode()
                    return
                if time.monotonic() - quiet > 15:
                    yield b": keep-alive\n\n"
                    quiet = time.monotonic()
                await asyncio.sleep(0.2)

        return StreamingResponse(events(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    @app.get("/v1/jobs/{job_id}/shards/{k}", tags=["jobs"],
             responses={200: {"description": "a complete tar shard; supports HTTP Range",
                              "content": {"application/x-tar": {}}},
                        206: {"description": "part of the shard (Range request)"},
                        416: {"description": "range not satisfiable"}, **ERRORS})
    async def get_shard(job_id: str, k: int):
        """Shard k of a job (a complete tar); HTTP Range requests are answered with 206."""
        job = the_job(job_id)
        rec = next((s for s in job["shards"] if s["index"] == k), None)
        path = state["store"].shard_path(job_id, k) if rec else None
        try:
            stat = os.stat(path) if rec else None  # given to FileResponse: a shard deleted meanwhile is a 404
        except FileNotFoundError:
            stat = None
        if stat is None:
            raise HTTPException(404, f"shard {k} of job {job_id} is not ready; the job has "
                                     f"{len(job['shards'])} complete shards ({job['state']})")
        return FileResponse(path, media_type="application/x-tar", filename=f"{job_id}-{k:05d}.tar",
                            stat_result=stat,
                            headers={"ETag": f'"{rec["sha256"]}"', "Cache-Control": "no-store"})

    @app.delete("/v1/jobs/{job_id}", tags=["jobs"], responses=ERRORS)
    async def delete_job(job_id: str) -> dict:
        """Cancel a queued or running job (its shards are removed), or delete a finished one."""
        the_job(job_id)
        result = await anyio.to_thread.run_sync(state["store"].cancel, job_id)
        metrics.add(f"jobs_{result}_total")
        return {"id": job_id, "result": result}

    app.mount("/annotate", AnnotateMount(registry, load_annotate_factory()))
    app.state.registry, app.state.metrics, app.state.settings = registry, metrics, settings
    return app
