"""The Ray engine: a job's tasks as Ray Data stages, on a cluster or on this machine.

The driver (this process) plans the job as the local engine does (opens the output set, fixes
the base seed, lists the tasks), then streams the tasks through one ``map_batches`` stage whose
callable class, :class:`TaskActor`, holds one loaded pipeline per actor (models load once per
actor) and runs each task with the same :class:`~backdrop.items.Worker` as the local
engine: the same bytes for the same item, written through the same output protocol (per-item
locks and journals), so a killed driver, a restarted actor or a rerun loses and duplicates
nothing. The driver adds up the outcomes as they stream back (progress, summary) and ends with
:meth:`Job.finalize` (manifest and index files), as the local engine does.

Every node needs backdrop and its extras installed, and the output folder (and the source) on
a shared file system that honours ``flock`` (see docs/ray.md).

>>> from backdrop.engine.ray import run_ray             # doctest: +SKIP
>>> summary = run_ray(job, concurrency=4, num_gpus=1)   # doctest: +SKIP
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import time
import traceback
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterator, Optional

from .. import errors
from ..errors import BackdropError, ConfigError
from ..registry import require
from ..items import Worker
from ..job import Job, Outcome, Plan, Summary, Task

log = logging.getLogger(__name__)

OnOutcome = Callable[[Outcome], None]

MAX_BLOCKS = 10_000  # input blocks: one per batch up to this (finer blocks: better balance, finer progress)


@dataclass(frozen=True)
class RaySettings:
    """How the stage is laid out on the cluster (chosen by :func:`settings`)."""

    concurrency: int  # pipeline actors
    num_gpus: float  # GPUs per actor (0: CPU actors)
    batch_size: int  # tasks per call of an actor
    cluster_cpus: float
    cluster_gpus: float

    def line(self) -> str:
        each = f"{self.num_gpus:g} GPU(s) each" if self.num_gpus else "CPU only"
        return (f"ray: {self.concurrency} pipeline actor(s), {each}, batch size {self.batch_size} "
                f"(cluster: {self.cluster_cpus:g} CPU(s), {self.cluster_gpus:g} GPU(s))")


def uses_gpu(job: Job) -> bool:
    """True when the job's heavy stage is a diffusion model (worth one GPU per actor)."""
    from ..generate import GENERATORS

    try:
        return GENERATORS.capability(job.config.generate.backend, "uses_gpu")  # what the backend declares
    except Exception:  # noqa: BLE001 - an unknown or uninstallable backend fails later, with its own message
        return False


def settings(job: Job, tasks: int, resources: dict[str, float], *, concurrency: Optional[int] = None,
             num_gpus: Optional[float] = None, batch_size: Optional[int] = None) -> RaySettings:
    """Defaults: CPU actors, one per two CPUs, for weight-free profiles; one GPU per actor, one
    actor per GPU, for diffusion on a cluster with GPUs. Never more actors than tasks."""
    cpus = float(resources.get("CPU", 0.0))
    gpus = float(resources.get("GPU", 0.0))
    if num_gpus is None:
        num_gpus = 1.0 if uses_gpu(job) and gpus >= 1 else 0.0
    if num_gpus < 0:
        raise ConfigError(f"--num-gpus: expected 0 or more GPUs per actor, got {num_gpus:g}")
    if num_gpus > 0 and gpus < num_gpus:
        raise ConfigError(f"--num-gpus {num_gpus:g}: the Ray cluster has {gpus:g} GPU(s); "
                          "use --num-gpus 0 for CPU actors, or a cluster with GPUs (--ray-address)")
    if concurrency is None:
        concurrency = int(gpus // num_gpus) if num_gpus else int(cpus // 2)
    elif concurrency < 1:
        raise ConfigError(f"--concurrency: expected 1 or more actors, got {concurrency}")
    if batch_size is not None and batch_size < 1:
        raise ConfigError(f"batch_size: expected 1 or more, got {batch_size}")
    return RaySettings(concurrency=max(1, min(concurrency, tasks)), num_gpus=float(num_gpus),
                       batch_size=batch_size or 1, cluster_cpus=cpus, cluster_gpus=gpus)


def run_ray(job: Job, *, plan: Plan | None = None, on_outcome: Optional[OnOutcome] = None, progress: bool = True,
            address: Optional[str] = None, concurrency: Optional[int] = None, num_gpus: Optional[float] = None,
            batch_size: Optional[int] = None) -> Summary:
    """Run ``job`` on Ray; returns the summary, as :func:`~backdrop.engine.local.run_local` does.

    ``address``: a Ray cluster (``host:port`` or ``ray://...``); default ``$RAY_ADDRESS`` when set,
    else a Ray already initialised in this process, else a local Ray started here (and stopped at
    the end). A failing item is an outcome, not fatal; a disk error (OutputError) in any actor
    stops the run, keeping what is done, and is raised after the manifest is rebuilt.
    """
    if not (address or os.environ.get("RAY_ADDRESS")):
        # the Ray started here is a one-machine Ray: it binds and talks on loopback only, instead of
        # the address of the interface that routes outward (read when ray is imported)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    ray = require("ray", "ray", "--engine ray")
    require("ray.data", "ray", "--engine ray")
    from .local import ProgressBar, tally

    if plan is None:
        from ..items import start

        plan, _ = start(job, load=False)
    job = plan.job
    summary = Summary()
    stopped: BaseException | None = None
    try:
        tasks = list(plan.tasks())  # Ray Data takes the items as one list
        summary.total = len(tasks)
        t0 = time.perf_counter()
        if tasks:
            with _connected(ray, address):
                lay = settings(job, len(tasks), ray.cluster_resources(), concurrency=concurrency,
                               num_gpus=num_gpus, batch_size=batch_size)
                log.info("%s", lay.line())
                with ProgressBar(len(tasks), job.config.variants, enabled=progress) as bar:
                    for kind, payload in _stream(ray, job, tasks, lay):
                        if kind != "outcome":
                            stopped = payload
                            break
                        tally(summary, payload, on_outcome, bar)
        summary.seconds = time.perf_counter() - t0
        job.finalize(plan.out, plan.dataset)
    finally:
        plan.close()
    if stopped is not None:
        raise stopped
    return summary


@contextmanager
def _connected(ray: Any, address: Optional[str]) -> Iterator[None]:
    """Connected to ``address`` / ``$RAY_ADDRESS`` / the Ray this process already has / a new
    local Ray (stopped on the way out: only what this function started)."""
    address = address or os.environ.get("RAY_ADDRESS") or None
    if ray.is_initialized() and address is None:
        yield
        return
    if ray.is_initialized():
        raise ConfigError(f"--ray-address {address}: this process is already connected to another Ray; "
                          "call ray.shutdown() first")
    if address:
        log.info("ray: connecting to %s", address)
        try:
            ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise BackdropError(f"cannot connect to the Ray cluster at {address}: {_first_line(exc)}") from None
    else:
        # a private local Ray: no usage report leaves this machine, no dashboard
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        log.info("ray: starting a local Ray (no $RAY_ADDRESS, no --ray-address)")
        ray.init(address="local", include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    try:
        yield
    finally:
        ray.shutdown()


def _stream(ray: Any, job: Job, tasks: list[Task], lay: RaySettings) -> Iterator[tuple[str, Any]]:
    """("outcome", Outcome) per task as it finishes, in any order; or one ("stop", exception)."""
    import ray.data as rd

    ctx = rd.DataContext.get_current()
    saved = {k: getattr(ctx, k) for k in ("enable_progress_bars", "print_on_execution_start", "enable_auto_log_stats")}
    ctx.enable_progress_bars = False  # ours is the one progress display
    ctx.print_on_execution_start = False
    ctx.enable_auto_log_stats = False
    quiet = {"ray.data._internal.progress": logging.ERROR,  # "progress bars disabled": ours is shown instead
             "ray.data._internal.execution.streaming_executor": logging.WARNING}  # "execution finished"
    levels = {name: logging.getLogger(name).level for name in quiet}
    for name, level in quiet.items():
        logging.getLogger(name).setLevel(level)
    try:
        rows = [{"i": i, "task": pickle.dumps(t)} for i, t in enumerate(tasks)]
        blocks = min(MAX_BLOCKS, math.ceil(len(rows) / lay.batch_size))
        ds = rd.from_items(rows, override_num_blocks=blocks).map_batches(
            TaskActor, fn_constructor_args=(job,), batch_size=lay.batch_size, batch_format="numpy",
            compute=rd.ActorPoolStrategy(size=lay.concurrency), num_gpus=lay.num_gpus or None,
            udf_modifying_row_count=False)
        try:
            for row in ds.iter_rows():
                kind, payload = pickle.loads(row["result"])
                yield kind, _rebuild(payload) if kind != "outcome" else _outcome(payload)
        except ray.exceptions.RayError as exc:  # an actor died for good, the cluster went away, ...
            raise BackdropError(f"the Ray engine stopped: {_first_line(exc)} (rerun the same command to "
                                "resume; what is done is kept)") from exc
    finally:
        for k, v in saved.items():
            setattr(ctx, k, v)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


class TaskActor:
    """The ``map_batches`` callable: one pipeline per actor, built once, then task after task.

    No Ray in here: it takes and returns plain columns, so it runs (and is tested) without Ray.
    Each call opens the output set for its batch (a run's own temporary folder, removed when the
    batch is done) and runs each task with a :class:`Worker` sharing the loaded pipeline.
    """

    def __init__(self, job: Job):
        self.job = job
        self.failed: tuple[str, str] | None = None
        self.pipe: Any = None
        self.dataset: Any = None
        try:
            probe = Worker(job)
            self.pipe = probe.pipe  # loads the models, once per actor
            self.dataset = probe.dataset
        except BackdropError as exc:  # a missing model or extra: every task of this run would fail alike
            self.failed = _describe(exc)

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        results = [pickle.dumps(r) for r in self.run([pickle.loads(b) for b in batch["task"]])]
        out = np.empty(len(results), dtype=object)
        out[:] = results
        return {"i": batch["i"], "result": out}

    def run(self, tasks: list[Task]) -> list[tuple[str, Any]]:
        if self.failed is not None:
            return [("stop", self.failed)] * len(tasks)
        from ..outputs import OutputSet

        results: list[tuple[str, Any]] = []
        try:
            with OutputSet.open(self.job.out, self.job.kind) as out:
                worker = Worker(self.job, pipeline=self.pipe, out=out, dataset=self.dataset)
                for task in tasks:
                    outcome = worker(task)
                    err = outcome.error
                    results.append(("outcome", (replace(outcome, error=None),
                                                _describe(err) if err is not None else None)))
        except BackdropError as exc:  # OutputError: the disk; stop the run
            results += [("stop", _describe(exc))] * (len(tasks) - len(results))
        except Exception as exc:  # noqa: BLE001 - a bug: stop the run with its one line, traceback logged
            log.error("ray actor: %s", traceback.format_exc())
            results += [("stop", ("RuntimeError", f"{type(exc).__name__}: {exc}"))] * (len(tasks) - len(results))
        return results


def _describe(exc: BaseException) -> tuple[str, str]:
    return type(exc).__name__, str(exc)


def _rebuild(desc: tuple[str, str]) -> BaseException:
    """The error an actor met, as the same backdrop error class (its exit code) with its line."""
    name, message = desc
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, BackdropError)):
        return BackdropError(message) if name != "RuntimeError" else RuntimeError(message)
    exc = cls.__new__(cls)
    exc.args = (message,)
    return exc


def _outcome(payload: tuple[Outcome, tuple[str, str] | None]) -> Outcome:
    outcome, err = payload
    if err is not None:
        outcome.error = _rebuild(err)
    return outcome


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
