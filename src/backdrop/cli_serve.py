"""`backdrop serve` and `backdrop jobs ...`: thin over backdrop.service and backdrop.jobs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer


from .cli_common import guarded

jobs_app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                       help="The job queue that `backdrop serve` runs: list, show, cancel, recover, work.")

_ROOT_HELP = "the queue's folder [default: $BACKDROP_HOME/serve]"


def serve(
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (default: this machine only; another needs a token)"),
    port: int = typer.Option(8502, "--port", help="port to serve on"),
    allow_root: Optional[List[Path]] = typer.Option(None, "--allow-root", help="a server folder jobs may read as their source (repeatable); none: uploads only"),
    workers: int = typer.Option(1, "--workers", min=1, max=64, help="worker processes: jobs run at once (one per device is right)"),
    root: Optional[Path] = typer.Option(None, "--root", help=_ROOT_HELP),
    no_token: bool = typer.Option(False, "--no-token", help="no token at all (only with a loopback --host)"),
    max_file_mb: int = typer.Option(64, "--max-file-mb", min=1, help="largest uploaded file, MB"),
    max_request_mb: int = typer.Option(512, "--max-request-mb", min=1, help="largest request (all files), MB"),
    max_pixels: int = typer.Option(60_000_000, "--max-pixels", min=1, help="largest uploaded image, width x height"),
    max_zip_entries: int = typer.Option(100_000, "--max-zip-entries", min=1, help="most members of an uploaded .zip"),
    sd_model: Optional[str] = typer.Option(None, "--sd-model", help="the /sdapi (A1111) routes' diffusers model: id, store name or folder [default: the studio's]"),
    device: str = typer.Option("auto", "--device", help="the /sdapi routes' device: auto, cpu, cuda or mps"),
    docs: bool = typer.Option(True, "--docs/--no-docs", help="the API's documentation page at /docs (served offline)"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Serve backdrop over HTTP: jobs on a persistent queue (/v1/jobs), results, progress,
    cancellation, and an AUTOMATIC1111-compatible subset (/sdapi/v1). Docs at /docs."""

    def go():
        from .jobs.queue import default_root
        from .registry import require
        from .service.security import check_bind, load_token
        from .service.settings import Settings

        require("fastapi", "service", "backdrop serve")
        require("uvicorn", "service", "backdrop serve")
        folder = (root or default_root()).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        token, made = (None, False) if no_token else load_token(folder)
        check_bind(host, token)
        if device not in ("auto", "cpu", "cuda", "mps"):
            from .errors import ConfigError

            raise ConfigError(f"--device: expected auto, cpu, cuda or mps, got {device!r}")
        for r in allow_root or []:
            if not r.is_dir():
                from .errors import ConfigError

                raise ConfigError(f"--allow-root {r}: not a folder")
        settings = Settings(root=folder, host=host, port=port, token=token,
                            allow_roots=tuple(r.resolve() for r in allow_root or []), workers=workers,
                            max_file_bytes=max_file_mb << 20, max_request_bytes=max_request_mb << 20,
                            max_pixels=max_pixels, max_zip_entries=max_zip_entries, docs=docs,
                            sd_model=sd_model, sd_device=device)
        from .service.server import check_port

        check_port(host, port)
        shown = "[" + host + "]" if ":" in host else host
        typer.echo(f"backdrop serve: http://{shown}:{port} (docs: /docs), queue in {folder}, "
                   f"{workers} worker(s)", err=True)
        if made:
            typer.echo(f"token (made now, kept in {folder / 'token'}; send 'Authorization: Bearer TOKEN'): {token}",
                       err=True)
        elif token:
            typer.echo("token: from $BACKDROP_TOKEN" if _env_token() else f"token: in {folder / 'token'}", err=True)
        else:
            typer.echo("no token: this machine only", err=True)
        from .service.server import serve as run_server

        run_server(settings)

    guarded(debug, go)


def _env_token() -> bool:
    import os

    return bool(os.environ.get("BACKDROP_TOKEN", "").strip())


def _queue(root: Optional[Path]):
    from .jobs.queue import JobQueue, default_root

    return JobQueue((root or default_root()).expanduser())


@jobs_app.command("list")
def jobs_list(state: Optional[str] = typer.Option(None, "--state", help="queued, running, done, failed or cancelled"),
              limit: int = typer.Option(50, "--limit", min=1),
              as_json: bool = typer.Option(False, "--json", help="one JSON object per line"),
              root: Optional[Path] = typer.Option(None, "--root", help=_ROOT_HELP),
              debug: bool = typer.Option(False, "--debug")) -> None:
    """The newest jobs: id, command, state, progress."""

    def go():
        from .errors import ConfigError
        from .jobs.queue import STATES

        if state is not None and state not in STATES:
            raise ConfigError(f"--state: expected one of {', '.join(STATES)}, got {state!r}")
        for r in _queue(root).list(state=state, limit=limit):
            if as_json:
                typer.echo(json.dumps(r.to_dict()))
            else:
                total = "?" if r.total is None else r.total
                typer.echo(f"{r.id}  {r.kind:8s} {r.state:9s} {r.done}/{total}" + (f"  {r.error}" if r.error else ""))

    guarded(debug, go)


@jobs_app.command("show")
def jobs_show(job_id: str = typer.Argument(...), root: Optional[Path] = typer.Option(None, "--root", help=_ROOT_HELP),
              debug: bool = typer.Option(False, "--debug")) -> None:
    """One job's record as JSON (its output folder too)."""

    def go():
        q = _queue(root)
        rec = _get(q, job_id)
        typer.echo(json.dumps({**rec.to_dict(), "out": str(q.job_dir(rec.id) / "out")}, indent=2))

    guarded(debug, go)


@jobs_app.command("cancel")
def jobs_cancel(job_id: str = typer.Argument(...), root: Optional[Path] = typer.Option(None, "--root", help=_ROOT_HELP),
                debug: bool = typer.Option(False, "--debug")) -> None:
    """Cancel a job: a queued one at once, a running one at its next image (what is done stays)."""

    def go():
        q = _queue(root)
        _get(q, job_id)
        rec = q.cancel(job_id)
        typer.echo(f"{rec.id}: {rec.state}" + (" (stops at the next image)" if rec.state == "running" else ""))

    guarded(debug, go)


@jobs_app.command("remove")
def jobs_remove(job_ids: Optional[List[str]] = typer.Argument(None, help="finished jobs to remove"),
                older_than: Optional[float] = typer.Option(None, "--older-than", min=0, help="every job finished more than this many days ago"),
                root: Optional[Path] = typer.Option(None, "--root", help=_ROOT_HELP),
                debug: bool = typer.Option(False, "--debug")) -> None:
    """Delete finished jobs: their record, uploads and results (queued or running ones are kept)."""

    def go():
        import time

        from .errors import ConfigError

        q = _queue(root)
        ids = list(job_ids or [])
        if older_than is not None:
            ids += q.finished_before(time.time() - older_than * 86400)
        if not job_ids and older_than is None:
            raise ConfigError("name job ids, or --older-than DAYS")
        removed = 0
        for job_id in ids:
            rec = _get(q, job_id)
            if q.remove(job_id):
                removed += 1
            else:
                typer.echo(f"{job_id}: {rec.state}, not removed (cancel it first)", err=True)
        typer.echo(f"{removed} job(s) removed")

    guarded(debug, go)


@jobs_app.command("recover")
def jobs_recover(root: Optional[Path] = typer.Option(None, "--root", help=_ROOT_HELP),
                 debug: bool = typer.Option(False, "--debug")) -> None:
    """Put the running jobs of workers that are gone back in the queue (serve does this itself)."""

    def go():
        ids = _queue(root).recover()
        typer.echo(f"{len(ids)} job(s) back in the queue" + (": " + ", ".join(ids) if ids else ""))

    guarded(debug, go)


@jobs_app.command("work")
def jobs_work(once: bool = typer.Option(False, "--once", help="exit when the queue is empty"),
              root: Optional[Path] = typer.Option(None, "--root", help=_ROOT_HELP),
              debug: bool = typer.Option(False, "--debug")) -> None:
    """Run queued jobs in this process (a worker without the HTTP server)."""

    def go():
        from .jobs.worker import work

        q = _queue(root)
        q.recover()
        n = work(q, once=once)
        typer.echo(f"{n} job(s) run", err=True)

    guarded(debug, go)


def _get(q, job_id: str):
    from .errors import InputError

    try:
        return q.get(job_id)
    except KeyError:
        raise InputError(f"no such job: {job_id}") from None
