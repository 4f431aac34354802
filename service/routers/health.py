"""Health and counters: never behind the API key (except /metrics), always fast."""
from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse

from ..deps import MetricsDep, RunnerDep, SettingsDep, SlotsDep
from ..schemas import Message
from . import ERRORS

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict:
    """Liveness: answers at once, even while pairs are being generated. Never needs the API key."""
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"model": Message}})
async def readyz(settings: SettingsDep, runner: RunnerDep, slots: SlotsDep, metrics: MetricsDep) -> JSONResponse:
    """Readiness (runs folder readable, job workers alive) and the service counters, e.g.
    `generated_pairs_total`. Never needs the API key."""
    ok = settings.runs_dir.is_dir() and runner is not None and all(t.is_alive() for t in runner.threads)
    doc = {"ready": ok, "active_streams": slots.used, "max_concurrent": slots.limit, **metrics.snapshot()}
    return JSONResponse(doc, status_code=200 if ok else 503)


@router.get("/metrics", response_class=PlainTextResponse, responses=ERRORS)
async def metrics_text(slots: SlotsDep, metrics: MetricsDep) -> str:
    lines = [f"datasetgan_active_streams {slots.used}"]
    lines += [f"datasetgan_{k} {v}" for k, v in sorted(metrics.snapshot().items())]
    return "\n".join(lines) + "\n"
