"""The local engine: the job's tasks, one after another, in this process.

ProgressBar: a rich bar with images/s and ETA on a terminal; otherwise a plain line every
``PLAIN_EVERY`` seconds (logs of batch jobs stay readable). A failing task is reported in one
line and the loop goes on; a disk error (OutputError) stops it, keeping what is done.
"""

from __future__ import annotations

import logging
import time
from typing import Callable, Optional

from ..errors import OutputError
from ..items import Worker
from ..job import Job, Outcome, Plan, Summary

log = logging.getLogger(__name__)

PLAIN_EVERY = 30.0  # seconds between plain progress lines when not on a terminal

# called once per finished task (the CLI prints failures as they happen)
OnOutcome = Callable[[Outcome], None]


def run_local(job: Job, *, on_outcome: Optional[OnOutcome] = None, progress: bool = True,
              plan: Plan | None = None, worker: Worker | None = None,
              should_stop: Optional[Callable[[], bool]] = None) -> Summary:
    """Run ``job`` here; returns the summary (the manifest and index files are written at the end,
    also when some tasks failed; a disk error stops the loop and is raised after them).
    ``should_stop`` is asked before each task: True ends the loop there, keeping what is done
    (``summary.stopped``; a queued job's cancel)."""
    if plan is None:
        from ..items import start

        plan, worker = start(job)
    job = plan.job
    summary = Summary()
    total = plan.total()
    worker = worker or Worker(job, out=plan.out, dataset=plan.dataset)
    if total:
        worker.on_variant = _Estimate(plan.survey["augment"] * job.config.variants) if plan.survey else None
    t0 = time.perf_counter()
    stopped: OutputError | None = None
    try:
        with ProgressBar(total, job.config.variants, enabled=progress) as bar:
            for task in plan.tasks():
                if should_stop is not None and should_stop():
                    summary.stopped = True
                    break
                summary.total += 1
                bar.describe(task.key)
                try:
                    outcome = worker(task)
                except OutputError as exc:
                    stopped = exc
                    break
                tally(summary, outcome, on_outcome, bar)
        summary.seconds = time.perf_counter() - t0
        job.finalize(plan.out, plan.dataset)
    finally:
        plan.close()
    if stopped is not None:
        raise stopped
    return summary


def tally(summary: Summary, outcome: Outcome, on_outcome: Optional[OnOutcome], bar: "ProgressBar") -> None:
    """Count one finished task: into the summary, to the caller, on the progress display."""
    summary.add(outcome)
    if on_outcome:
        on_outcome(outcome)
    bar.describe(outcome.key)
    bar.advance(outcome.written)


class ProgressBar:
    """A rich bar (images/s, ETA) on a terminal; plain periodic log lines elsewhere."""

    def __init__(self, total: int | None, variants: int, enabled: bool, unit: str = "new images"):
        from rich.console import Console

        self.total = total
        self.variants = max(1, variants)
        self.enabled = enabled
        self.unit = unit  # what advance() counts, in the plain progress line
        self.console = Console(stderr=True)
        self.rich = enabled and self.console.is_terminal
        self.done = 0
        self.images = 0
        self.t0 = time.perf_counter()
        self.last = self.t0
        self.bar = None

    def __enter__(self) -> "ProgressBar":
        if self.rich:
            from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                       TimeRemainingColumn)

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("ETA"),
                                TimeRemainingColumn(), console=self.console, transient=False)
            self.bar.__enter__()
            self.task = self.bar.add_task("images", total=self.total, rate="")
        return self

    def describe(self, name: str) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=name[-40:])

    def advance(self, images: int) -> None:
        self.done += 1
        self.images += images
        now = time.perf_counter()
        rate = self.images / max(now - self.t0, 1e-9)
        if self.bar is not None:
            self.bar.update(self.task, advance=1, rate=f"{rate:.2f} img/s")
        elif self.enabled and (now - self.last >= PLAIN_EVERY) and self.done < (self.total or 1 << 62):
            self.last = now
            per = (now - self.t0) / self.done
            eta = f", ETA {_hms(per * (self.total - self.done))}" if self.total else ""
            log.info("progress: %d/%s items, %.2f %s/s%s", self.done, self.total or "?", rate, self.unit, eta)

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.__exit__(*exc)


class _Estimate:
    """One line after the first variant of a large run: how long the whole run will take."""

    LARGE = 50  # images to make, at least, for the line to be worth printing

    def __init__(self, images: int):
        self.images = images
        self.said = images < self.LARGE

    def __call__(self, task, k: int, seconds: float) -> None:
        if not self.said:
            self.said = True
            log.info("estimate: %.1f s for the first image; %d image(s) to make: about %s "
                        "(variants are written as they are made; rerun to resume)",
                        seconds, self.images, _hms(seconds * self.images))


def _hms(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")
