"""Per-image notes that backends add to the run record (run.json), without seeing the pipeline.

A backend calls ``warn("...")`` when unsure of its result (logged as one warning line and kept
in run.json) and ``note("key", value)`` to record a fact (which provider ran, a fallback).
Outside a pipeline run both only log.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Any, Iterator

_current: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar("backdrop_runlog", default=None)
log = logging.getLogger("backdrop")


def warn(message: str) -> None:
    rec = _current.get()
    label = rec.get("label") if rec else None
    log.warning("%s: %s", label, message) if label else log.warning(message)
    if rec is not None:
        rec.setdefault("warnings", []).append(message)


def note(key: str, value: Any) -> None:
    log.debug("%s = %r", key, value)
    rec = _current.get()
    if rec is not None:
        rec.setdefault("notes", {})[key] = value


@contextlib.contextmanager
def collecting(label: str | None = None) -> Iterator[dict[str, Any]]:
    """Collect warn()/note() calls made inside the block into the yielded dict.

    ``label`` (an image's name) prefixes the logged warnings, so a batch's log says which image.
    """
    rec: dict[str, Any] = {"warnings": [], "notes": {}, "label": label}
    token = _current.set(rec)
    try:
        yield rec
    finally:
        _current.reset(token)
