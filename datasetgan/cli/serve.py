"""`datasetgan serve`: the data-factory REST service."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import click

from . import Command


@click.command(context_settings={"help_option_names": ["-h", "--help"]}, cls=Command)
@click.option("--runs", "runs_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder of run folders; each run with a generator and an interpreter is a model.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free port).")
@click.option("--api-key-env", default="DATASETGAN_API_KEY", show_default=True,
              help="Environment variable holding the API key; unset or empty means no key is required.")
@click.option("--api-key", default=None, help="The API key itself (prefer --api-key-env: flags show in `ps`).")
@click.option("--max-n", default=256, show_default=True, type=click.IntRange(1),
              help="Largest n of a streamed request; larger requests must be jobs.")
@click.option("--max-job-n", default=1_000_000, show_default=True, type=click.IntRange(1), help="Largest n of a job.")
@click.option("--max-concurrent", default=2, show_default=True, type=click.IntRange(1),
              help="Streams generating at once; more get 429 with Retry-After.")
@click.option("--jobs-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Job states and shards [default: RUNS/.jobs].")
@click.option("--shard-size", default=1000, show_default=True, type=click.IntRange(1), help="Pairs per job shard.")
@click.option("--batch-size", default=8, show_default=True, type=click.IntRange(1), help="Pairs generated per batch.")
@click.option("--max-body-bytes", default=1 << 20, show_default=True, type=click.IntRange(1),
              help="Larger request bodies get 413.")
@click.option("--device", default="cpu", show_default=True, help="torch device for generation.")
@click.option("--threads", "torch_threads", default=None, type=click.IntRange(1), help="torch CPU threads.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["critical", "error", "warning", "info", "debug"]))
@click.option("--ray", "ray_address", default=None,
              help="Run jobs on this Ray cluster ('auto': the one `ray start` made here; or its address); each "
                   "shard is a task on a worker holding the model. Needs pip install 'datasetgan[ray]'.")
@click.option("--ray-workers", default=None, type=click.IntRange(1),
              help="Ray workers per model (default: one per CPU of the cluster, one per GPU with --device cuda).")
def command(runs_dir, host, port, api_key_env, api_key, max_n, max_job_n, max_concurrent, jobs_dir, shard_size,
            batch_size, max_body_bytes, device, torch_threads, log_level, ray_address, ray_workers):
    """Serve synthetic image + mask pairs of the runs in RUNS over REST (FastAPI on uvicorn).

    \b
    Streamed requests (n up to --max-n) get a tar in WebDataset layout or NDJSON;
    larger ones run as jobs writing tar shards. OpenAPI docs at /docs.

    \b
    Example:
      DATASETGAN_API_KEY=secret datasetgan serve --runs runs --port 8000
      datasetgan serve --runs /shared/runs --ray auto     # jobs on the Ray cluster of `ray start`
      curl -H 'X-API-Key: secret' localhost:8000/v1/models
      curl -H 'X-API-Key: secret' -H 'Content-Type: application/json' \\
           -d '{"n": 50, "seed_start": 0, "format": "tar"}' \\
           localhost:8000/v1/models/acdc64/pairs -o pairs.tar
    """
    import uvicorn

    from datasetgan.service.app import create_app
    from datasetgan.service.settings import Settings

    if not runs_dir.is_dir():
        raise click.UsageError(f"--runs {runs_dir}: no such folder")
    if api_key is None:
        api_key = os.environ.get(api_key_env) or None
    try:
        settings = Settings(runs_dir=runs_dir, jobs_dir=jobs_dir, api_key=api_key, max_n=max_n, max_job_n=max_job_n,
                            max_concurrent=max_concurrent, max_body_bytes=max_body_bytes, batch_size=batch_size,
                            shard_size=shard_size, device=device, torch_threads=torch_threads,
                            ray_address=ray_address, ray_workers=ray_workers)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    try:
        settings.jobs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise click.ClickException(f"cannot create the jobs folder {settings.jobs_dir} ({e.strerror}); "
                                   "choose another with --jobs-dir") from None
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if ray_address:
        from datasetgan.raygen import connect

        connect(ray_address)  # fails here, in one line, when Ray is missing or the cluster is not there
    app = create_app(settings)
    click.echo(f"serving {runs_dir} on http://{host}:{port} (API key {'required' if api_key else 'off'}; docs at /docs)")
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
