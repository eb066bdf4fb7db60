"""A persistent job queue on SQLite: what `backdrop serve` and the studio's jobs page share.

Layout under the queue's root (``$BACKDROP_HOME/serve`` by default, :func:`default_root`)::

    ROOT/jobs.db               the queue (SQLite, WAL journal: readers never wait for the writer)
    ROOT/jobs/<id>/input/      what was uploaded for the job (written before it is queued)
    ROOT/jobs/<id>/out/        the job's output: an ordinary backdrop output set (resumable)
    ROOT/workers/<wid>.lock    held (``flock``) by a live worker for as long as it runs

The Python API, small on purpose::

    q = JobQueue(root)                        # opens (creates) the queue
    rec = q.submit("run", {"variants": 2})    # -> JobRecord, state "queued"
    q.get(rec.id) / q.list(state=None, limit=100)   # JobRecord(s), newest first
    q.cancel(rec.id)                          # queued: cancelled now; running: asked to stop
    q.job_dir(rec.id)                         # ROOT/jobs/<id> (input/, out/)
    q.remove(rec.id)                          # a finished job: its row and its folder

    # the worker side (backdrop.jobs.worker does this; a studio page only reads)
    with q.worker() as wid:                   # a worker id and its liveness lock
        rec = q.claim(wid)                    # the oldest queued job, now "running", or None
        q.progress(rec.id, done, total)       # as items finish
        q.should_stop(rec.id)                 # True once cancel() was asked
        q.finish(rec.id, "done", summary={...}, failed=[...])   # or "failed" with error=..., or "cancelled"
    q.recover()                               # running jobs of dead workers -> queued again (3 tries)

To queue a backdrop run (what ``POST /v1/jobs`` does; a studio page can do the same)::

    from backdrop.jobs.runner import check_params     # the CLI's option names, checked as the CLI does
    opts = check_params("augment", {"variants": 3, "generator": "random"})
    rec = q.submit("augment", {"command": "augment", "source": "/data/coco8", **opts})
    # a worker (backdrop serve, or `backdrop jobs work`) runs it into q.job_dir(rec.id) / "out"

States: ``queued -> running -> done | failed | cancelled`` (``queued -> cancelled`` directly).
A job's record is a :class:`JobRecord`; ``params`` is the JSON the client sent (validated before
``submit``), ``summary`` and ``failed`` are what the run reported.

Why a worker's liveness is a lock, not a heartbeat: the kernel drops a ``flock`` the moment its
process dies (``kill -9`` included), so ``recover()`` knows for sure, at once, without clocks. A
recovered job simply runs again on the same output folder: the write protocol resumes it, so what
was written is kept and nothing is written twice. Two workers never take one job: ``claim`` is a
single ``BEGIN IMMEDIATE`` transaction (SQLite's write lock) that moves one queued row to running.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import socket
import sqlite3
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

STATES = ("queued", "running", "done", "failed", "cancelled")
FINAL = ("done", "failed", "cancelled")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT UNIQUE NOT NULL,
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    params TEXT NOT NULL,
    created REAL NOT NULL,
    started REAL,
    finished REAL,
    worker TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER,
    cancel INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    failed TEXT NOT NULL DEFAULT '[]',
    summary TEXT
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, seq);
"""


def default_root() -> Path:
    """``$BACKDROP_HOME/serve``: where the service keeps its queue, jobs and token."""
    from ..models import home

    return home() / "serve"


@dataclass
class JobRecord:
    """One job as the queue holds it."""

    id: str
    kind: str  # "run", "augment", "txt2img", ...
    state: str  # queued | running | done | failed | cancelled
    params: dict[str, Any]
    created: float
    started: Optional[float] = None
    finished: Optional[float] = None
    worker: Optional[str] = None
    attempts: int = 0  # how many times a worker took it (a recovered job: more than one)
    done: int = 0  # items finished (done, skipped or failed)
    total: Optional[int] = None  # items in the job, once known
    cancel: bool = False  # a cancel was asked
    error: Optional[str] = None
    failed: list = field(default_factory=list)  # [[item, message], ...]
    summary: Optional[dict[str, Any]] = None

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "kind": self.kind, "state": self.state, "params": self.params,
                "created": self.created, "started": self.started, "finished": self.finished,
                "attempts": self.attempts, "progress": {"done": self.done, "total": self.total},
                "cancel_requested": self.cancel, "error": self.error, "failed": self.failed,
                "summary": self.summary}


class JobQueue:
    """The queue at ``root`` (created if missing). Safe to use from several processes and threads:
    each call opens its own short transaction."""

    max_attempts = 3  # a job whose worker died this many times running it is failed, not requeued

    def __init__(self, root: str | Path | None = None):
        self.root = Path(root) if root is not None else default_root()
        (self.root / "jobs").mkdir(parents=True, exist_ok=True)
        (self.root / "workers").mkdir(parents=True, exist_ok=True)
        self.db = self.root / "jobs.db"
        with contextlib.closing(self._connect()) as con:
            con.execute("PRAGMA journal_mode=WAL")
            con.executescript(_SCHEMA)

    # -- plumbing ------------------------------------------------------------------------------
    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.db, timeout=30.0, isolation_level=None)  # autocommit; BEGIN by hand
        con.row_factory = sqlite3.Row
        con.execute("PRAGMA busy_timeout=30000")
        con.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across a process kill
        return con

    @contextlib.contextmanager
    def _tx(self, immediate: bool = True) -> Iterator[sqlite3.Connection]:
        con = self._connect()
        try:
            con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            con.execute("COMMIT")
        finally:
            con.close()

    @staticmethod
    def _record(row: sqlite3.Row) -> JobRecord:
        return JobRecord(id=row["id"], kind=row["kind"], state=row["state"], params=json.loads(row["params"]),
                         created=row["created"], started=row["started"], finished=row["finished"],
                         worker=row["worker"], attempts=row["attempts"], done=row["done"], total=row["total"],
                         cancel=bool(row["cancel"]), error=row["error"], failed=json.loads(row["failed"]),
                         summary=json.loads(row["summary"]) if row["summary"] else None)

    # -- clients ---------------------------------------------------------------------------------
    @staticmethod
    def new_id() -> str:
        """A fresh job id (time-ordered, unguessable): reserve one, write its inputs, then submit."""
        return f"{int(time.time()):x}-{secrets.token_hex(6)}"

    def job_dir(self, job_id: str) -> Path:
        """The job's own folder: ``input/`` (uploads) and ``out/`` (its output set)."""
        if not job_id or "/" in job_id or job_id.startswith("."):
            raise KeyError(job_id)
        return self.root / "jobs" / job_id

    def submit(self, kind: str, params: dict[str, Any], *, job_id: str | None = None) -> JobRecord:
        """Queue a job; ``params`` must already be valid (the runner checks them)."""
        job_id = job_id or self.new_id()
        self.job_dir(job_id).mkdir(parents=True, exist_ok=True)
        with self._tx() as con:
            con.execute("INSERT INTO jobs (id, kind, state, params, created) VALUES (?, ?, 'queued', ?, ?)",
                        (job_id, kind, json.dumps(params, sort_keys=True), time.time()))
        return self.get(job_id)

    def get(self, job_id: str) -> JobRecord:
        """The job's record; ``KeyError`` if there is none."""
        with contextlib.closing(self._connect()) as con:
            row = con.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
        if row is None:
            raise KeyError(job_id)
        return self._record(row)

    def list(self, state: str | None = None, limit: int = 100, offset: int = 0) -> list[JobRecord]:
        """Jobs, newest first (optionally one state only)."""
        with contextlib.closing(self._connect()) as con:
            if state:
                rows = con.execute("SELECT * FROM jobs WHERE state = ? ORDER BY seq DESC LIMIT ? OFFSET ?",
                                   (state, limit, offset)).fetchall()
            else:
                rows = con.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ? OFFSET ?",
                                   (limit, offset)).fetchall()
        return [self._record(r) for r in rows]

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        with contextlib.closing(self._connect()) as con:
            rows = con.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        return {s: 0 for s in STATES} | {r[0]: r[1] for r in rows}

    def cancel(self, job_id: str) -> JobRecord:
        """A queued job is cancelled at once; a running one is asked to stop (it stops at the next
        item, keeping what is done, and ends ``cancelled``); a finished one is left as it is."""
        now = time.time()
        with self._tx() as con:
            row = con.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            if row["state"] == "queued":
                con.execute("UPDATE jobs SET state = 'cancelled', cancel = 1, finished = ? WHERE id = ?",
                            (now, job_id))
            elif row["state"] == "running":
                con.execute("UPDATE jobs SET cancel = 1 WHERE id = ?", (job_id,))
        return self.get(job_id)

    def remove(self, job_id: str) -> bool:
        """Forget a finished job and delete its folder (uploads and results: all written by the
        service). A queued or running job is not removed (cancel it first). True if removed."""
        import shutil

        with self._tx() as con:
            row = con.execute("SELECT state FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            if row["state"] not in FINAL:
                return False
            con.execute("DELETE FROM jobs WHERE id = ?", (job_id,))
        folder = self.job_dir(job_id)
        if folder.is_dir() and not folder.is_symlink():
            shutil.rmtree(folder)
        return True

    def finished_before(self, when: float) -> list[str]:
        """Ids of the jobs that ended before ``when`` (a time.time() value), oldest first."""
        with contextlib.closing(self._connect()) as con:
            rows = con.execute("SELECT id FROM jobs WHERE state IN ('done', 'failed', 'cancelled') AND finished < ? "
                               "ORDER BY seq", (when,)).fetchall()
        return [r["id"] for r in rows]

    # -- workers ---------------------------------------------------------------------------------
    @contextlib.contextmanager
    def worker(self, worker_id: str | None = None) -> Iterator[str]:
        """A worker's identity and its liveness lock, held until the block ends (or the process dies)."""
        wid = worker_id or f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}"
        path = self.root / "workers" / f"{wid}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield wid
        finally:
            os.close(fd)  # drops the lock
            with contextlib.suppress(OSError):
                path.unlink()

    def alive(self, worker_id: str) -> bool:
        """Whether the worker's lock is held (by a live process)."""
        path = self.root / "workers" / f"{worker_id}.lock"
        try:
            fd = os.open(path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    def claim(self, worker_id: str) -> Optional[JobRecord]:
        """Take the oldest queued job for ``worker_id`` (now ``running``), or None."""
        with self._tx() as con:
            row = con.execute("SELECT id FROM jobs WHERE state = 'queued' ORDER BY seq LIMIT 1").fetchone()
            if row is None:
                return None
            con.execute("UPDATE jobs SET state = 'running', worker = ?, started = ?, attempts = attempts + 1, "
                        "error = NULL WHERE id = ? AND state = 'queued'", (worker_id, time.time(), row["id"]))
            job_id = row["id"]
        return self.get(job_id)

    def progress(self, job_id: str, done: int, total: Optional[int] = None) -> None:
        with self._tx() as con:
            con.execute("UPDATE jobs SET done = ?, total = COALESCE(?, total) WHERE id = ? AND state = 'running'",
                        (done, total, job_id))

    def should_stop(self, job_id: str) -> bool:
        """True once the job was cancelled (the runner checks this between items)."""
        with contextlib.closing(self._connect()) as con:
            row = con.execute("SELECT cancel FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return bool(row and row["cancel"])

    def finish(self, job_id: str, state: str, *, error: str | None = None, failed: list | None = None,
               summary: dict[str, Any] | None = None, worker_id: str | None = None) -> None:
        """End a running job (``done``, ``failed`` or ``cancelled``). With ``worker_id``, only if
        that worker still holds it (a worker thought dead and recovered must not overwrite)."""
        if state not in FINAL:
            raise ValueError(f"finish: state must be one of {', '.join(FINAL)}, got {state!r}")
        with self._tx() as con:
            sql = ("UPDATE jobs SET state = ?, error = ?, failed = ?, summary = ?, finished = ? "
                   "WHERE id = ? AND state = 'running'")
            args: list[Any] = [state, error, json.dumps(failed or []), json.dumps(summary) if summary else None,
                               time.time(), job_id]
            if worker_id is not None:
                sql += " AND worker = ?"
                args.append(worker_id)
            con.execute(sql, args)

    def recover(self, *, shutdown: bool = False) -> list[str]:
        """Put the running jobs of workers that are gone back in the queue (their outputs resume);
        a cancel asked meanwhile ends them ``cancelled``, and a job whose worker died
        ``max_attempts`` times ends ``failed`` (a job that crashes its worker must not do so
        forever). ``shutdown``: the workers were stopped on purpose (the server's own shutdown):
        that try is not counted. Returns the ids of the jobs it changed."""
        with contextlib.closing(self._connect()) as con:
            rows = con.execute("SELECT id, worker FROM jobs WHERE state = 'running'").fetchall()
        dead = [(r["id"], r["worker"]) for r in rows if not r["worker"] or not self.alive(r["worker"])]
        requeued = []
        now = time.time()
        gave_up = f"its worker died {self.max_attempts} times while running it (a crash, or killed); not retried"
        with self._tx() as con:
            for job_id, wid in dead:
                cur = con.execute(
                    "UPDATE jobs SET state = CASE WHEN cancel = 1 THEN 'cancelled' WHEN attempts >= ? THEN 'failed' "
                    "ELSE 'queued' END, error = CASE WHEN cancel = 0 AND attempts >= ? THEN ? ELSE error END, "
                    "worker = NULL, finished = CASE WHEN cancel = 1 OR attempts >= ? THEN ? ELSE NULL END, "
                    "attempts = attempts - ? WHERE id = ? AND state = 'running' AND worker IS ?",
                    (self.max_attempts + shutdown, self.max_attempts + shutdown, gave_up, self.max_attempts + shutdown,
                     now, int(shutdown), job_id, wid))
                if cur.rowcount:
                    requeued.append(job_id)
        for wid in {w for _, w in dead if w}:
            with contextlib.suppress(OSError):
                (self.root / "workers" / f"{wid}.lock").unlink()
        return requeued
