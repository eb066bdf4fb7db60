"""Per-image notes that backends add to the run record (run.json), without seeing the pipeline,
and the capture of an image's own log (``pipeline.log``).

A backend calls ``warn("...")`` when unsure of its result (logged as one warning line and kept
in run.json) and ``note("key", value)`` to record a fact (which provider ran, a fallback).
Outside a pipeline run both only log.
"""

from __future__ import annotations

import contextlib
import contextvars
import io
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


class capture:
    """Collect the 'backdrop' logger's records, details (DEBUG) included, into a string: the
    image's own log keeps what the console shows only with ``-v``.

    >>> with capture() as buf:
    ...     logging.getLogger("backdrop.x").debug("made it")
    >>> "made it" in buf.getvalue()
    True
    """

    def __enter__(self) -> io.StringIO:
        self.buffer = io.StringIO()
        self.handler = logging.StreamHandler(self.buffer)
        self.handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        self.logger = logging.getLogger("backdrop")
        self.old_level = self.logger.level
        if self.logger.getEffectiveLevel() > logging.DEBUG:
            self.logger.setLevel(logging.DEBUG)
        self.logger.addHandler(self.handler)
        return self.buffer

    def __exit__(self, *exc: Any) -> bool:
        self.logger.removeHandler(self.handler)
        self.logger.setLevel(self.old_level)
        return False
