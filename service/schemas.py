"""Request and response bodies of the service API. Requests are strict: unknown fields, wrong types
(a string for n, true for a number) and out-of-range values are refused with a 422 naming the field."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from datasetgan.seeds import MAX_SEED

Part = Literal["image", "mask", "overlay", "uncertainty"]
Seed = Annotated[int, Field(ge=0, le=MAX_SEED)]


class GenerationRequest(BaseModel):
    """Which pairs to make: ``n`` seeds from ``seed_start`` (default 0), or the listed ``seeds``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    n: int | None = Field(
        None,
        ge=1,
        le=MAX_SEED + 1,
        description="number of seeds to render (before drop_uncertain); may be left out when seeds are listed",
    )
    seed_start: Seed | None = Field(
        None, description="first seed of the range seed_start .. seed_start+n-1 (default 0); not together with seeds"
    )
    seeds: list[Seed] | None = Field(None, min_length=1, description="explicit distinct seeds, in output order")
    truncation: float = Field(1.0, ge=0.0, le=2.0, allow_inf_nan=False, description="truncation psi")
    include: list[Part] = Field(
        default_factory=lambda: ["image", "mask"], max_length=4, description="files per pair besides the JSON record"
    )
    drop_uncertain: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        allow_inf_nan=False,
        description="fraction of the most uncertain pairs to drop (a scoring pass runs before any pair is sent)",
    )

    @model_validator(mode="after")
    def _consistent(self):
        if self.seeds is not None:
            if self.seed_start is not None:
                raise ValueError("give either seed_start or seeds, not both")
            if self.n is not None and self.n != len(self.seeds):
                raise ValueError(f"n = {self.n} but {len(self.seeds)} seeds are listed; leave n out or make them agree")
            if len(set(self.seeds)) != len(self.seeds):
                raise ValueError("seeds must be distinct (each names the files of its pair)")
            self.n = len(self.seeds)
        else:
            if self.n is None:
                raise ValueError("n is required unless seeds are listed")
            if self.seed_start is None:
                self.seed_start = 0
            if self.seed_start + self.n - 1 > MAX_SEED:
                raise ValueError(f"seed_start + n - 1 must be at most {MAX_SEED}")
        if len(set(self.include)) != len(self.include):
            raise ValueError("include lists a part twice")
        return self

    def seed_at(self, i: int) -> int:
        return self.seeds[i] if self.seeds is not None else self.seed_start + i


class PairsRequest(GenerationRequest):
    format: Literal["tar", "ndjson"] = Field("tar", description="tar (WebDataset layout) or ndjson (base64 PNGs)")


class JobRequest(GenerationRequest):
    pass


class ClassOut(BaseModel):
    id: int
    name: str
    color: str


class ModelOut(BaseModel):
    id: str
    resolution: int | None
    channels: int | None
    classes: list[ClassOut]
    generator_sha256: str | None
    interpreter_sha256: str | None
    created: str | None
    available: bool = Field(True, description="false when the run's files are damaged; see reason")
    reason: str | None = Field(None, description="why the model is unavailable")


class ModelList(BaseModel):
    models: list[ModelOut]


class ShardOut(BaseModel):
    index: int
    url: str
    pairs: int
    bytes: int
    sha256: str
    first_seed: int
    last_seed: int


class JobOut(BaseModel):
    id: str
    model: str
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    phase: str
    n: int
    pairs_total: int | None
    pairs_done: int
    scored: int
    dropped: int
    shard_size: int
    shards: list[ShardOut]
    error: str | None
    created: float
    updated: float
    request: dict
    url: str
    events_url: str


class Message(BaseModel):
    detail: str
