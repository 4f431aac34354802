"""The models (runs ready to serve) and their pairs, streamed as they are made.

Generation runs in worker threads; the event loop only moves bytes, so health checks stay fast while
pairs stream. A streamed response asks the thread for one pair at a time: when the client goes away,
the thread finishes at most the batch in hand and the generator is closed.
"""
from __future__ import annotations

import threading
from typing import Any, AsyncIterator, Callable, Iterator

import anyio
from fastapi import APIRouter, HTTPException
from fastapi.responses import StreamingResponse

from ..deps import MetricsDep, RegistryDep, SettingsDep, SlotsDep
from ..schemas import Message, ModelList, ModelOut, PairsRequest
from ..streaming import pair_chunks
from . import ERRORS

MEDIA = {"tar": "application/x-tar", "ndjson": "application/x-ndjson"}

router = APIRouter(prefix="/v1/models")


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


@router.get("", response_model=ModelList, tags=["models"], responses=ERRORS)
async def list_models(registry: RegistryDep):
    """Runs under RUNS with a generator and an interpreter; a damaged one is listed with
    `available: false` and the reason."""
    return {"models": [r.public() for r in await anyio.to_thread.run_sync(registry.list)]}


@router.get("/{model_id}", response_model=ModelOut, tags=["models"], responses=ERRORS)
async def get_model(model_id: str, registry: RegistryDep):
    return (await anyio.to_thread.run_sync(registry.info, model_id)).public()


@router.post("/{model_id}/pairs", tags=["pairs"],
             responses={200: {"description": "a tar (WebDataset layout: {seed:08d}.image.png, .mask.png, "
                                             ".overlay.png, .uncertainty.png, .json) or NDJSON, one pair a line",
                              "content": {"application/x-tar": {}, "application/x-ndjson": {}}},
                        429: {"model": Message, "description": "too many streams at once; retry after Retry-After"},
                        503: {"model": Message}, **ERRORS})
async def stream_pairs(model_id: str, req: PairsRequest, settings: SettingsDep, registry: RegistryDep,
                       slots: SlotsDep, metrics: MetricsDep):
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
