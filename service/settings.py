"""Settings of the data-factory service: one dataclass, given by `datasetgan serve` flags or by tests."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Settings:
    runs_dir: Path                       # folder of run folders; each ready run is a model
    jobs_dir: Path | None = None         # job state and shards; default RUNS/.jobs
    api_key: str | None = field(default=None, repr=False)  # required on every route but health when set
    max_n: int = 256                     # largest n of a streamed request; larger requests go to jobs
    max_job_n: int = 1_000_000           # largest n of a job
    max_concurrent: int = 2              # streaming requests generating at once; more get 429
    max_body_bytes: int = 1 << 20        # larger request bodies get 413
    batch_size: int = 8                  # pairs generated per batch (and the stop granularity)
    shard_size: int = 1000               # pairs per job tar shard
    job_workers: int = 1                 # jobs generated at once (in background threads)
    device: str = "cpu"
    torch_threads: int | None = None     # torch.set_num_threads in the server, if given
    retry_after_s: int = 2               # Retry-After of a 429
    ray_address: str | None = None       # run jobs' shards on this Ray cluster (serve --ray)
    ray_workers: int | None = None       # Ray workers per model (default: one per CPU, or GPU on cuda)

    def __post_init__(self):
        self.runs_dir = Path(self.runs_dir)
        self.jobs_dir = Path(self.jobs_dir) if self.jobs_dir is not None else self.runs_dir / ".jobs"
        for name in ("max_n", "max_job_n", "max_concurrent", "max_body_bytes", "batch_size", "shard_size",
                     "job_workers", "retry_after_s"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.api_key == "":
            raise ValueError("the API key must not be empty (leave it unset to disable authentication)")

    def to_json(self) -> str:
        """The settings as JSON, without the API key."""
        d = asdict(self)
        d["api_key"] = "***" if self.api_key else None
        return json.dumps(d, default=str, indent=1)
