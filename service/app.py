"""The data-factory service: FastAPI app streaming image + mask pairs of the runs under RUNS.

    GET  /healthz, /readyz                     health (never needs the API key)
    GET  /metrics                              counters in Prometheus text format
    GET  /v1/models                            runs to serve (damaged ones marked unavailable)
    POST /v1/models/{id}/pairs                 stream up to max_n pairs (tar or NDJSON)
    POST /v1/models/{id}/jobs                  larger requests: a job writing tar shards (202 + Location)
    GET  /v1/jobs, /v1/jobs/{id}, /v1/jobs/{id}/events (server-sent events), /v1/jobs/{id}/shards/{k}
    DELETE /v1/jobs/{id}                       cancel (or delete a finished job)
    /annotate/{id}/                            the annotation page of a run

``create_app`` assembles the parts: one router per resource (:mod:`service.routers`), the errors as
JSON, the guards, and the service's state on ``app.state`` (read by the routes through the typed
dependencies of :mod:`service.deps`).
"""
from __future__ import annotations

import importlib
import logging
import time
from contextlib import asynccontextmanager

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from datasetgan.atomic import remove_stale_temps

from .annotate_mount import AnnotateMount, load_annotate_factory
from .guards import ApiKeyMiddleware, BodyLimitMiddleware, Slots
from .jobs import JobRunner, JobStore
from .registry import BrokenModel, ModelRegistry, UnknownModel
from .routers import health, jobs, models
from .settings import Settings
from .streaming import Metrics

log = logging.getLogger("service")


def make_factory(run_dir, device: str):
    """A run's PairFactory; torch is imported on first use, so the server starts (and answers health
    checks) at once."""
    return importlib.import_module("datasetgan.factory").PairFactory(run_dir, device=device)


@asynccontextmanager
async def lifespan(app: FastAPI):
    """The job store and its worker threads live while the app runs."""
    settings: Settings = app.state.settings
    if settings.torch_threads:
        import torch
        torch.set_num_threads(settings.torch_threads)
    remove_stale_temps(settings.jobs_dir, recursive=True)  # partial shards of a killed server
    app.state.store = JobStore(settings.jobs_dir)
    pools = ray_pools(settings)
    app.state.runner = JobRunner(app.state.store, app.state.registry, settings.batch_size, settings.job_workers,
                                 app.state.metrics, pools)
    app.state.started = time.time()
    app.state.runner.start()
    log.info("serving runs from %s; jobs in %s%s", settings.runs_dir, settings.jobs_dir,
             f" (made on the Ray cluster at {settings.ray_address})" if pools else "")
    try:
        yield
    finally:
        await anyio.to_thread.run_sync(app.state.runner.stop)
        if pools is not None:
            pools.close()


def ray_pools(settings: Settings):
    """Ray workers for the jobs when the server makes them on a cluster (``serve --ray``), else None."""
    if not settings.ray_address:
        return None
    from datasetgan.raygen import RayPools

    return RayPools(settings.ray_address, settings.device, settings.ray_workers, settings.torch_threads)


async def invalid_request(request: Request, exc: RequestValidationError):
    # where and why, not the raw input: it may be NaN or Infinity, which JSON cannot carry
    errors = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": str(e.get("type", ""))}
              for e in exc.errors()]
    summary = "; ".join(f"{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in errors)
    return JSONResponse({"detail": errors, "message": f"invalid request: {summary}"}, status_code=422)


async def unknown_model(request: Request, exc: UnknownModel):
    return JSONResponse({"detail": str(exc)}, status_code=404)


async def broken_model(request: Request, exc: BrokenModel):
    log.error("%s", exc)
    return JSONResponse({"detail": str(exc)}, status_code=503)


def create_app(settings: Settings) -> FastAPI:
    """The service app."""
    app = FastAPI(title="DatasetGAN data factory", version="1.0",
                  description="Synthetic image + mask pairs from DatasetGAN runs, streamed or as jobs. "
                              "Send the API key (when the server has one) as `X-API-Key` or `Authorization: Bearer`.",
                  lifespan=lifespan)
    app.state.settings = settings
    app.state.registry = ModelRegistry(settings.runs_dir, lambda run_dir: make_factory(run_dir, settings.device))
    app.state.metrics = Metrics()
    app.state.slots = Slots(settings.max_concurrent)
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(ApiKeyMiddleware, api_key=settings.api_key)  # added last = outermost
    # errors: always a 4xx with a message for bad input, JSON everywhere
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(UnknownModel, unknown_model)
    app.add_exception_handler(BrokenModel, broken_model)
    for router in (health.router, models.router, jobs.router):
        app.include_router(router)
    app.mount("/annotate", AnnotateMount(app.state.registry, load_annotate_factory()))
    return app
