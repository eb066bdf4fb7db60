"""Jobs: a persistent queue of backdrop runs, and the worker that runs them.

- :mod:`.queue`   JobQueue on SQLite (states, claim, progress, cancel, recover of dead workers)
- :mod:`.runner`  one queued job -> a backdrop Job -> the local engine (stops between items on cancel)
- :mod:`.worker`  the loop: claim, run, finish; models kept loaded across jobs with the same settings

Imports nothing heavy: the service (``backdrop serve``) and the studio's jobs page build on it.
"""

from __future__ import annotations

from .queue import FINAL, STATES, JobQueue, JobRecord, default_root

__all__ = ["FINAL", "STATES", "JobQueue", "JobRecord", "default_root"]
