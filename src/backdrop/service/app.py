"""The HTTP API (FastAPI): jobs over the persistent queue, results, health, backends, models.

Routes (every one but ``/v1/health`` wants the token; every error is one JSON line)::

    GET    /v1/health                      {"status": "ok", "version", "queue": {state: count}}
    POST   /v1/jobs                        202 {"id", "state": "queued", "url"}
                                           multipart: params (JSON) + files (images; augment: one .zip)
                                           JSON: {"command", "source": server path under --allow-root, ...options}
    GET    /v1/jobs                        {"jobs": [...]}  (?state=&limit=&offset=)
    GET    /v1/jobs/{id}                   {"id", "state", "progress", "error", "failed", "files", "summary", ...}
    GET    /v1/jobs/{id}/events            Server-Sent Events: one "progress" event per change, "end" at the end
    GET    /v1/jobs/{id}/files/{path}      one result file (only from the job's own output folder)
    GET    /v1/jobs/{id}/archive           every result as one .zip (streamed)
    DELETE /v1/jobs/{id}                   cancel: queued -> cancelled; running -> stops at the next item
    GET    /v1/backends, /v1/models        what can run here
    /sdapi/v1/...                          the AUTOMATIC1111-compatible subset (service/a1111.py)
"""

import asyncio
import json
import logging
import os
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator, Optional

from fastapi import APIRouter, Depends, FastAPI, Request  # this module is imported only when serving
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from ..jobs.queue import FINAL, STATES, JobQueue, JobRecord
from .errors import ApiError, install as install_errors, json_error
from .security import PathGuard, authorized
from .settings import Settings

log = logging.getLogger(__name__)

RECORD_DIR = ".backdrop"


def create_app(settings: Settings, queue: Optional[JobQueue] = None) -> Any:
    """The ASGI app for ``settings`` (the queue at ``settings.root`` unless one is given)."""
    from .. import __version__
    from . import uploads
    from ..jobs import runner

    queue = queue or JobQueue(settings.root)
    guard = PathGuard(settings.allow_roots)
    app = FastAPI(title="backdrop", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json",
                  description="New backgrounds for images, as a service: jobs on a persistent queue.")
    app.openapi_version = "3.0.3"  # the bundled (offline) Swagger UI 4 renders 3.0 documents
    app.state.settings = settings
    app.state.queue = queue
    install_errors(app)
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)

    bearer = HTTPBearer(auto_error=False, description="the token printed at the first start "
                        "($BACKDROP_HOME/serve/token) or $BACKDROP_TOKEN")  # /docs gets an Authorize button

    def require_token(request: Request, _: Any = Depends(bearer)) -> None:
        if not authorized(request.headers.get("authorization"), settings.token):
            raise ApiError(401, "missing or wrong token: send 'Authorization: Bearer TOKEN' "
                                "(the token is in $BACKDROP_HOME/serve/token or $BACKDROP_TOKEN)",
                           headers={"WWW-Authenticate": "Bearer"})

    open_routes = APIRouter(tags=["health"])
    api = APIRouter(dependencies=[Depends(require_token)], tags=["jobs"])

    @open_routes.get("/v1/health", summary="Liveness and queue counts (no token needed)")
    def health() -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "queue": queue.counts()}

    def record(job_id: str) -> JobRecord:
        try:
            return queue.get(job_id)
        except KeyError:
            raise ApiError(404, f"no such job: {job_id}") from None

    def view(rec: JobRecord, files: bool = True) -> dict[str, Any]:
        url = f"/v1/jobs/{rec.id}"
        out: dict[str, Any] = {"id": rec.id, "command": rec.kind, "state": rec.state, "url": url,
                               "progress": {"done": rec.done, "total": rec.total}, "error": rec.error,
                               "failed": [{"item": f[0], "message": f[1]} for f in rec.failed],
                               "summary": rec.summary, "created": rec.created, "started": rec.started,
                               "finished": rec.finished, "attempts": rec.attempts,
                               "cancel_requested": rec.cancel, "params": rec.params}
        if files:
            listed, more = list_results(runner.out_dir(queue, rec.id), settings.list_files)
            out["files"] = [{"path": p, "url": f"{url}/files/{p}"} for p in listed]
            out["files_truncated"] = more
            out["archive"] = f"{url}/archive"
        return out

    @api.post("/v1/jobs", status_code=202, summary="Submit a job (multipart uploads or a JSON body with a server source)")
    async def submit(request: Request) -> JSONResponse:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data"):
            form = await request.form(max_files=settings.max_files, max_fields=64, max_part_size=1 << 20)
            try:
                raw = form.get("params") or "{}"
                params = json.loads(raw if isinstance(raw, str) else (await raw.read()).decode())
            except (ValueError, UnicodeDecodeError) as exc:
                raise ApiError(422, f"params: not valid JSON ({exc})", option="params") from None
            files = [f for f in form.getlist("files") if not isinstance(f, str)]
            try:
                rec = await run_in_threadpool(create_job, params, files)
            finally:
                await form.close()
        elif ctype.startswith("application/json") or not ctype:
            try:
                body = await request.json()
            except ValueError as exc:
                raise ApiError(422, f"body: not valid JSON ({exc})") from None
            if not isinstance(body, dict):
                raise ApiError(422, "body: expected a JSON object")
            params = dict(body.pop("params", None) or {})
            params.update(body)
            rec = await run_in_threadpool(create_job, params, [])
        else:
            raise ApiError(415, f"expected multipart/form-data or application/json, got {ctype}")
        return JSONResponse({"id": rec.id, "state": rec.state, "url": f"/v1/jobs/{rec.id}"}, status_code=202)

    def create_job(params: dict[str, Any], files: list[Any]) -> JobRecord:
        if not isinstance(params, dict):
            raise ApiError(422, "params: expected a JSON object", option="params")
        command = params.get("command", "run")
        source = params.get("source")
        try:
            clean = runner.check_params(command, params)
        except runner.JobParamsError as exc:
            raise ApiError(422, str(exc), option=exc.option) from None
        for name in runner.PATH_OPTIONS:  # server paths among the options: under an allowed root only
            if clean.get(name):
                clean[name] = str(guard.check(clean[name], name))
        if source and files:
            raise ApiError(422, "give either files or a source, not both", option="source")
        if source:
            src = guard.check(source)
            if command == "augment" and not src.is_dir():
                raise ApiError(422, f"source: {source} is not a folder (augment needs a data set's root)",
                               option="source")
            return queue.submit(command, {"command": command, "source": str(src), **clean})
        if not files:
            raise ApiError(422, "files: upload at least one image (augment: one .zip), or give a source",
                           option="files")
        job_id = queue.new_id()
        folder = queue.job_dir(job_id)
        try:
            inp = folder / "input"
            inp.mkdir(parents=True)
            taken: set[str] = set()
            if command == "augment":
                if len(files) != 1 or not (files[0].filename or "").lower().endswith(".zip"):
                    raise ApiError(415, "augment: upload exactly one .zip holding the data set", option="files")
                z = inp / "set.zip"
                uploads.save_stream(files[0].file, z, settings.max_file_bytes, files[0].filename)
                uploads.extract_zip(z, inp / "set", max_entries=settings.max_zip_entries,
                                    max_bytes=settings.max_zip_bytes, max_ratio=settings.max_zip_ratio)
                z.unlink()
            else:
                if len(files) > settings.max_files:
                    raise ApiError(413, f"files: {len(files)} files, more than the limit of {settings.max_files}")
                for f in files:
                    name = uploads.safe_name(f.filename, taken)
                    dest = inp / name
                    uploads.save_stream(f.file, dest, settings.max_file_bytes, f.filename or name)
                    uploads.check_image(dest, f.filename or name, settings.max_pixels)
            return queue.submit(command, {"command": command, **clean}, job_id=job_id)
        except BaseException:
            uploads.remove_tree(folder)  # ours: made above, never queued
            raise

    @api.get("/v1/jobs", summary="List jobs, newest first")
    def list_jobs(state: Optional[str] = None, limit: int = 100, offset: int = 0) -> dict[str, Any]:
        if state is not None and state not in STATES:
            raise ApiError(422, f"state: expected one of {', '.join(STATES)}, got {state!r}", option="state")
        if not 1 <= limit <= 1000 or offset < 0:
            raise ApiError(422, "limit: expected 1 to 1000 (and offset >= 0)", option="limit")
        return {"jobs": [view(r, files=False) for r in queue.list(state=state, limit=limit, offset=offset)]}

    @api.get("/v1/jobs/{job_id}", summary="A job's state, progress, failures and result files")
    def get_job(job_id: str, files: bool = True) -> dict[str, Any]:
        return view(record(job_id), files=files)  # ?files=false: no listing (cheap polling of a large job)

    @api.delete("/v1/jobs/{job_id}", summary="Cancel: a queued job at once, a running one at its next image")
    def cancel_job(job_id: str) -> dict[str, Any]:
        record(job_id)
        return view(queue.cancel(job_id), files=False)

    @api.get("/v1/jobs/{job_id}/events", summary="Progress as Server-Sent Events")
    async def events(job_id: str, request: Request) -> StreamingResponse:
        await run_in_threadpool(record, job_id)

        async def stream() -> Any:
            last = None
            while True:
                rec = await run_in_threadpool(queue.get, job_id)
                now = (rec.state, rec.done, rec.total)
                if now != last:
                    last = now
                    yield f"event: progress\ndata: {json.dumps(view(rec, files=False))}\n\n"
                if rec.state in FINAL:
                    yield f"event: end\ndata: {json.dumps({'id': rec.id, 'state': rec.state})}\n\n"
                    return
                if await request.is_disconnected():
                    return
                await asyncio.sleep(0.25)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.get("/v1/jobs/{job_id}/files/{path:path}", summary="One result file")
    def get_file(job_id: str, path: str) -> FileResponse:
        record(job_id)
        out = runner.out_dir(queue, job_id)
        parts = Path(path).parts
        if not parts or parts[0] == RECORD_DIR or any(p.startswith(".") for p in parts):
            raise ApiError(404, f"no such file: {path}")
        target = guard.inside(out, path)
        if not target.is_file():
            raise ApiError(404, f"no such file: {path}")
        return FileResponse(target, filename=target.name)

    @api.get("/v1/jobs/{job_id}/archive", summary="Every result of the job as one .zip")
    def archive(job_id: str) -> StreamingResponse:
        record(job_id)
        out = runner.out_dir(queue, job_id)
        return StreamingResponse(zip_stream(out), media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="{job_id}.zip"'})

    @api.get("/v1/backends", summary="Every backend of every stage, and whether it can run here")
    def backends() -> dict[str, Any]:
        return {"backends": list_backends()}

    @api.get("/v1/models", summary="The model store: known models and whether each is present")
    def models() -> dict[str, Any]:
        from ..models import list_models

        return {"models": [{"name": s.name, "task": s.task, "status": st, "license": s.license,
                            "description": s.description} for s, st in list_models()]}

    app.include_router(open_routes)
    app.include_router(api)
    from .a1111 import router as a1111_router

    app.include_router(a1111_router(settings, queue), dependencies=[Depends(require_token)])
    if settings.docs:
        install_docs(app)
    return app


def list_results(out: Path, limit: int) -> tuple[list[str], bool]:
    """Result files under ``out`` (relative, sorted; the write protocol's record left out)."""
    found: list[str] = []
    if not out.is_dir():
        return found, False
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = Path(dirpath).relative_to(out)
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            found.append((rel / name).as_posix())
            if len(found) > limit:
                return found[:limit], True
    return found, False


class _Sink:
    """A write-only file for ZipFile that hands out what was written so far."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.pos = 0

    def write(self, b: bytes) -> int:
        self.parts.append(bytes(b))
        self.pos += len(b)
        return len(b)

    def tell(self) -> int:
        return self.pos

    def flush(self) -> None:
        pass

    def take(self) -> bytes:
        out = b"".join(self.parts)
        self.parts.clear()
        return out


def zip_stream(out: Path) -> Iterator[bytes]:
    """The job's results as a .zip, produced file by file (nothing whole in memory)."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:  # type: ignore[arg-type]
        names, _ = list_results(out, 1 << 62)
        for rel in names:
            src = out / rel
            if src.is_symlink() or not src.is_file():
                continue
            with open(src, "rb") as fh, zf.open(zipfile.ZipInfo(rel, time.localtime(src.stat().st_mtime)[:6]),
                                                "w", force_zip64=True) as dst:
                while True:
                    block = fh.read(1 << 20)
                    if not block:
                        break
                    dst.write(block)
                    yield sink.take()
            yield sink.take()
    yield sink.take()


def list_backends() -> list[dict[str, Any]]:
    from ..caption import CAPTIONERS
    from ..config import PipelineConfig
    from ..generate import GENERATORS
    from ..inpaint import INPAINTERS
    from ..refine import REFINERS
    from ..segment import SEGMENTERS

    cfg = PipelineConfig()
    rows = []
    for stage, registry in (("segment", SEGMENTERS), ("inpaint", INPAINTERS), ("caption", CAPTIONERS),
                            ("refine", REFINERS), ("generate", GENERATORS)):
        for name in registry.names():
            avail = registry.availability(name, getattr(cfg, stage))
            rows.append({"stage": stage, "name": name, "usable": bool(avail.usable),
                         "reason": None if avail.usable else avail.reason,
                         "description": registry.descriptions.get(name, "")})
    return rows


class BodyLimit:
    """Refuses a request body larger than ``limit`` bytes (413, one JSON line), counted as it
    arrives, so a client without Content-Length cannot fill the disk either."""

    class _TooLarge(Exception):
        pass

    def __init__(self, app: Any, limit: int):
        self.app = app
        self.limit = limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        msg = f"request body larger than the limit of {self.limit} bytes"
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                return await json_error(413, msg)(scope, receive, send)
        seen = 0
        started = False

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyLimit._TooLarge()
            return message

        async def watched(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except BodyLimit._TooLarge:
            if not started:
                await json_error(413, msg)(scope, receive, send)


def install_docs(app: Any) -> None:
    """/docs: Swagger UI from the ``swagger-ui-bundle`` package's own files (no CDN: works
    offline); without that package, /docs says how to get it and /openapi.json still works."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from starlette.responses import HTMLResponse

    try:
        import swagger_ui_bundle
    except ImportError:
        @app.get("/docs", include_in_schema=False)
        def no_docs() -> HTMLResponse:
            return HTMLResponse("<p>The API's documentation page needs the <code>swagger-ui-bundle</code> "
                                "package: <code>pip install 'backdrop[service]'</code>. The machine-readable "
                                "description is at <a href='/openapi.json'>/openapi.json</a>.</p>")
        return
    from starlette.staticfiles import StaticFiles

    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="backdrop API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")
