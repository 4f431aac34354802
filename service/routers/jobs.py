"""Jobs: larger requests written into tar shards in the background (see :mod:`service.jobs`)."""
from __future__ import annotations

import asyncio
import json
import os
import time
from typing import AsyncIterator

import anyio
from fastapi import APIRouter, Header, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from ..deps import MetricsDep, RegistryDep, RunnerDep, SettingsDep, StoreDep
from ..jobs import ACTIVE, JobConflict, valid_job_id
from ..schemas import JobOut, JobRequest, Message
from . import ERRORS

router = APIRouter(tags=["jobs"])


def job_view(request: Request, job: dict) -> dict:
    root = request.scope.get("root_path", "")
    url = f"{root}/v1/jobs/{job['id']}"
    keys = JobOut.model_fields.keys()
    out = {k: job[k] for k in keys if k in job}
    out["shards"] = [{**s, "url": f"{url}/shards/{s['index']}"} for s in job["shards"]]
    out.update(url=url, events_url=f"{url}/events")
    return out


def the_job(store, job_id: str) -> dict:
    job = store.get(job_id) if valid_job_id(job_id) else None
    if job is None:
        raise HTTPException(404, f"unknown job {job_id!r}")
    return job


@router.post("/v1/models/{model_id}/jobs", status_code=202, response_model=JobOut,
             responses={409: {"model": Message, "description": "Idempotency-Key reused for another request"},
                        503: {"model": Message}, **ERRORS})
async def create_job(model_id: str, req: JobRequest, request: Request, settings: SettingsDep, registry: RegistryDep,
                     store: StoreDep, runner: RunnerDep, metrics: MetricsDep,
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
        job, created = store.create(model_id, req, (info.generator_sha256, info.interpreter_sha256),
                                    settings.shard_size, idempotency_key)
    except JobConflict as e:
        raise HTTPException(409, str(e)) from None
    if created:
        runner.submit(job["id"])
        metrics.add("jobs_total")
    view = job_view(request, job)
    headers = {"Location": view["url"]}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return JSONResponse(view, status_code=202, headers=headers)


@router.get("/v1/jobs", responses=ERRORS)
async def list_jobs(request: Request, store: StoreDep) -> dict:
    with store.lock:
        ids = sorted(store.jobs, key=lambda i: store.jobs[i]["created"])
    return {"jobs": [job_view(request, j) for j in (store.get(i) for i in ids) if j]}


@router.get("/v1/jobs/{job_id}", response_model=JobOut, responses=ERRORS)
async def get_job(job_id: str, request: Request, store: StoreDep):
    """State and progress of a job, with the URLs of its complete shards."""
    return job_view(request, the_job(store, job_id))


@router.get("/v1/jobs/{job_id}/events",
            responses={200: {"description": "server-sent events: `progress` (job state as JSON) on every change, "
                                            "`end` once the job is done, failed or cancelled",
                             "content": {"text/event-stream": {}}}, **ERRORS})
async def job_events(job_id: str, request: Request, store: StoreDep):
    """Server-sent events: `progress` on every change, `end` when the job is done, failed or cancelled."""
    the_job(store, job_id)

    async def events() -> AsyncIterator[bytes]:
        last, seq, quiet = None, 0, time.monotonic()
        while True:
            job = store.get(job_id)
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


@router.get("/v1/jobs/{job_id}/shards/{k}",
            responses={200: {"description": "a complete tar shard; supports HTTP Range",
                             "content": {"application/x-tar": {}}},
                       206: {"description": "part of the shard (Range request)"},
                       416: {"description": "range not satisfiable"}, **ERRORS})
async def get_shard(job_id: str, k: int, store: StoreDep):
    """Shard k of a job (a complete tar); HTTP Range requests are answered with 206."""
    job = the_job(store, job_id)
    rec = next((s for s in job["shards"] if s["index"] == k), None)
    path = store.shard_path(job_id, k) if rec else None
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


@router.delete("/v1/jobs/{job_id}", responses=ERRORS)
async def delete_job(job_id: str, store: StoreDep, metrics: MetricsDep) -> dict:
    """Cancel a queued or running job (its shards are removed), or delete a finished one."""
    the_job(store, job_id)
    result = await anyio.to_thread.run_sync(store.cancel, job_id)
    metrics.add(f"jobs_{result}_total")
    return {"id": job_id, "result": result}
