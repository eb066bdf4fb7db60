"""The worker loop: claim a queued job, run it, finish it; models stay loaded across jobs.

``backdrop serve`` starts ``--workers`` of these as child processes (``python -m
backdrop.jobs.worker ROOT``) that die with it (Linux: ``PR_SET_PDEATHSIG``), so a ``kill -9``
of the server leaves no orphan writing into a job that the restarted server takes again. One
worker runs one job at a time; a worker per device is the default.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Optional

from .queue import JobQueue

log = logging.getLogger(__name__)

POLL = 0.2  # seconds between looks at an empty queue


def work(queue: JobQueue, *, stop: Optional[threading.Event] = None, once: bool = False,
         poll: float = POLL, worker_id: str | None = None) -> int:
    """Run jobs until ``stop`` is set (or, with ``once``, until the queue is empty). Returns how
    many jobs were run."""
    from .runner import ModelCache, run_job
    from .sdapi import KINDS as IMAGE_KINDS, Generators, run_images

    stop = stop or threading.Event()
    models = ModelCache(keep=1)
    gens = Generators()
    n = 0
    with queue.worker(worker_id) as wid:
        log.info("worker %s: waiting for jobs in %s", wid, queue.root)
        while not stop.is_set():
            rec = queue.claim(wid)
            if rec is None:
                if once:
                    break
                stop.wait(poll)
                continue
            log.info("job %s (%s): started", rec.id, rec.kind)
            if rec.kind in IMAGE_KINDS:  # the A1111-compatible routes' jobs
                state = run_images(queue, rec, wid, gens)
            else:
                state = run_job(queue, rec, wid, models=models)
            log.info("job %s: %s", rec.id, state)
            n += 1
    return n


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGKILL to this process when its parent dies."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m backdrop.jobs.worker", description=__doc__.splitlines()[0])
    ap.add_argument("root", type=Path, help="the queue's folder ($BACKDROP_HOME/serve)")
    ap.add_argument("--once", action="store_true", help="exit when the queue is empty")
    ap.add_argument("--parent", type=int, default=0, help="die with this process (the server)")
    args = ap.parse_args(argv)
    if args.parent:
        _die_with_parent()
        if os.getppid() != args.parent:  # the parent died before prctl took effect
            return 1
    logging.basicConfig(level=logging.INFO, format="worker: %(message)s")
    # SIGTERM keeps its default (the process ends at once): the job it held is taken again by the
    # next recover() and resumes from its journals, exactly as after a crash
    try:
        work(JobQueue(args.root), once=args.once)
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
