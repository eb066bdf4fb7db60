"""The backdrop studio: a local Streamlit web app over the same Python API as the CLI.

Pages by URL: /text-to-image (Stable Diffusion with style presets), /new-background (upload,
see mask / clean background / caption, edit the prompt, generate N variants), /data-sets (open a
set under ``--allow-root``, or upload a .zip; submit it as an augment job; browse its contact
sheet) and /jobs (the queue shared with ``backdrop serve``). Every single image is saved as PNG
and JPEG with its metadata into ``generated_images/`` (``BACKDROP_OUTPUT_DIR`` or the sidebar
field) and offered for download.

Start it with ``backdrop studio`` or from Python::

    from backdrop.studio import launch
    launch(port=8501)            # blocks; serves http://127.0.0.1:8501

Only this module's functions are light; the app itself imports Streamlit (``backdrop[studio]``).
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import subprocess
import sys
import threading
from pathlib import Path

from ..errors import ConfigError
from ..registry import require

log = logging.getLogger(__name__)

APP = Path(__file__).with_name("app.py")
DEFAULT_PORT = 8501
DEFAULT_HOST = "127.0.0.1"


def command(port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, open_browser: bool = False,
            extra: list[str] | tuple[str, ...] = ()) -> list[str]:
    """The ``streamlit run`` command line that serves the studio (see :func:`launch`)."""
    from .core import MAX_UPLOAD_MB

    if not 1 <= int(port) <= 65535:
        raise ConfigError(f"port: expected 1 to 65535, got {port}")
    if not host or any(c.isspace() for c in host):
        raise ConfigError(f"host: expected an address or host name, got {host!r}")
    return [
        sys.executable, "-m", "streamlit", "run", str(APP),
        "--server.port", str(int(port)),
        "--server.address", host,
        "--server.headless", "false" if open_browser else "true",
        "--browser.gatherUsageStats", "false",
        "--server.maxUploadSize", str(MAX_UPLOAD_MB),
        # the file watcher walks every imported module (torch's among them) for nothing here
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--client.toolbarMode", "minimal",
        *extra,
    ]


def studio_env(allow_roots=(), queue: str | Path | None = None) -> dict[str, str]:
    """The environment the studio's pages read: allowed folders and the job queue's folder."""
    import os

    env = dict(os.environ)
    roots = [str(Path(r).expanduser().resolve()) for r in allow_roots]
    for r, given in zip(roots, allow_roots):
        if not Path(r).is_dir():
            raise ConfigError(f"--allow-root {given}: no such folder")
    if roots:
        env["BACKDROP_STUDIO_ROOTS"] = os.pathsep.join(roots)
    if queue is not None:
        env["BACKDROP_STUDIO_QUEUE"] = str(Path(queue).expanduser().resolve())
    return env


def launch(port: int = DEFAULT_PORT, host: str = DEFAULT_HOST, open_browser: bool = False,
           allow_roots=(), queue: str | Path | None = None, workers: int = 1) -> int:
    """Serve the studio on ``host:port`` until interrupted; returns streamlit's exit status.

    Binds to localhost by default; pass ``host="0.0.0.0"`` only on a trusted network (the
    studio has no login). ``allow_roots``: folders the data-sets page may open. ``queue``: the
    job queue's folder (default: the one ``backdrop serve`` uses); ``workers`` worker processes
    run its jobs while the studio is up (0: leave them to a ``backdrop serve`` on the same
    queue). Raises MissingDependencyError when Streamlit is not installed.

    >>> launch(port=8502)   # doctest: +SKIP
    """
    require("streamlit", "studio", "the studio")
    if not is_loopback(host):
        log.warning("the studio has no login; serving on %s makes it reachable from other machines", host)
    if workers < 0:
        raise ConfigError(f"--workers: expected 0 or more, got {workers}")
    env = studio_env(allow_roots, queue)
    cmd = command(port, host, open_browser)
    pool = _workers(env, workers)
    log.info("starting: %s", " ".join(cmd))
    try:
        proc = subprocess.Popen(cmd, env=env)
    except BaseException:
        if pool is not None:
            pool.close()
        raise
    forwarded = None
    if threading.current_thread() is threading.main_thread():
        # `kill <our pid>` must stop the server too, not leave it serving on its own
        forwarded = signal.signal(signal.SIGTERM, lambda signum, frame: proc.send_signal(signum))
    try:
        return proc.wait()
    except KeyboardInterrupt:  # Ctrl+C reached the server as well (same process group)
        try:
            proc.wait(timeout=10)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            pass
        return 130
    finally:
        if forwarded is not None:
            signal.signal(signal.SIGTERM, forwarded)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if pool is not None:
            pool.close()


def _workers(env: dict[str, str], n: int):
    """``n`` worker processes on the studio's queue (the service's own), or None."""
    if n <= 0:
        return None
    try:
        from ..jobs.queue import JobQueue, default_root
        from ..service.server import Workers
    except ImportError:
        log.info("no job workers: backdrop.jobs / backdrop.service are not installed")
        return None
    root = env.get("BACKDROP_STUDIO_QUEUE") or str(default_root())
    return Workers(JobQueue(root), n, env=env).start()


def is_loopback(host: str) -> bool:
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


__all__ = ["APP", "command", "launch", "studio_env"]
