"""Running the service: worker processes (supervised), recovery, and uvicorn in front.

At start, and whenever a worker process ends, :meth:`JobQueue.recover` puts the jobs of dead
workers back in the queue; they resume from their output sets' journals. Workers are child
processes that die with the server (``PR_SET_PDEATHSIG``): after a ``kill -9`` of the server,
nothing keeps writing, and the restarted server takes the interrupted job again.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
from typing import Any, Optional

from ..jobs.queue import JobQueue
from .settings import Settings

log = logging.getLogger(__name__)


class Workers:
    """``n`` worker processes kept running (a dead one is replaced after its jobs are recovered)."""

    def __init__(self, queue: JobQueue, n: int, env: Optional[dict[str, str]] = None):
        self.queue = queue
        self.n = n
        self.env = env
        self.procs: list[subprocess.Popen] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, name="backdrop-workers", daemon=True)

    def _spawn(self) -> subprocess.Popen:
        cmd = [sys.executable, "-m", "backdrop.jobs.worker", str(self.queue.root), "--parent", str(os.getpid())]
        return subprocess.Popen(cmd, env=self.env or os.environ.copy(), stdin=subprocess.DEVNULL)

    def start(self) -> "Workers":
        self.queue.recover()
        self.procs = [self._spawn() for _ in range(self.n)]
        self.thread.start()
        return self

    def _watch(self) -> None:
        while not self.stop.wait(1.0):
            for i, p in enumerate(self.procs):
                if p.poll() is not None and not self.stop.is_set():
                    log.warning("worker process %d ended (exit %s): its jobs go back to the queue; restarting it",
                                p.pid, p.returncode)
                    self.queue.recover()
                    self.procs[i] = self._spawn()

    def close(self) -> None:
        self.stop.set()
        for p in self.procs:
            if p.poll() is None:
                p.terminate()
        for p in self.procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.queue.recover(shutdown=True)  # what they held goes back to the queue (resumed at the next start)


def check_port(host: str, port: int) -> None:
    """Fail in one line, before any worker starts, when ``host:port`` cannot be listened on."""
    import socket

    from ..errors import ConfigError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None


def serve(settings: Settings, *, log_level: str = "warning", on_ready: Any = None) -> None:
    """Serve until interrupted (blocking)."""
    import uvicorn

    from .app import create_app
    from .security import check_bind

    check_bind(settings.host, settings.token)
    check_port(settings.host, settings.port)
    queue = JobQueue(settings.root)
    app = create_app(settings, queue)
    workers = Workers(queue, settings.workers).start()
    try:
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=log_level,
                                access_log=False, server_header=False, timeout_graceful_shutdown=5)
        uvicorn.Server(config).run()
    finally:
        workers.close()
