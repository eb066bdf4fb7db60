"""Engines: how a job's items are scheduled. What is computed for one item lives in
:mod:`backdrop.engine.work` (no engine imports), so the local loop and the Ray stages compute
the same bytes for the same item.

- :mod:`.work`   the job (picklable), its tasks, the per-item worker and the finaliser
- :mod:`.local`  the loop on this machine (progress, summary)
- :mod:`.ray`    the same tasks as Ray Data stages (``--engine ray``; imported lazily)
"""

from .work import Job, Outcome, Summary, Task

__all__ = ["Job", "Outcome", "Summary", "Task"]
