"""Where the job and the per-item worker used to live; kept so that ``backdrop.engine.work``
imports keep working. The job, its plan and the run's account are :mod:`backdrop.job`; one item
turned into files (the worker, the mask cache, the run folder layout) is :mod:`backdrop.items`.
New code imports from those."""

from __future__ import annotations

from ..items import MaskCache, Worker, label_check, save_result, start, write_run_item
from ..job import Job, Outcome, Plan, RunNames, Summary, Task, validate_job

__all__ = ["Job", "MaskCache", "Outcome", "Plan", "RunNames", "Summary", "Task", "Worker", "label_check",
           "save_result", "start", "validate_job", "write_run_item"]
