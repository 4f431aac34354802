"""Typed dependencies of the routes: the parts of the service that ``create_app`` keeps on ``app.state``
(settings, model registry, counters, stream slots; the job store and runner while the app runs)."""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from .guards import Slots
from .jobs import JobRunner, JobStore
from .registry import ModelRegistry
from .settings import Settings
from .streaming import Metrics


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_registry(request: Request) -> ModelRegistry:
    return request.app.state.registry


def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


def get_slots(request: Request) -> Slots:
    return request.app.state.slots


def get_store(request: Request) -> JobStore:
    return request.app.state.store


def get_runner(request: Request) -> JobRunner | None:
    """The job runner, None before the app has started (or after it stopped)."""
    return getattr(request.app.state, "runner", None)


SettingsDep = Annotated[Settings, Depends(get_settings)]
RegistryDep = Annotated[ModelRegistry, Depends(get_registry)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
SlotsDep = Annotated[Slots, Depends(get_slots)]
StoreDep = Annotated[JobStore, Depends(get_store)]
RunnerDep = Annotated[JobRunner | None, Depends(get_runner)]
