"""The AUTOMATIC1111-compatible subset (``/sdapi/v1/...``), on the same job queue."""

from __future__ import annotations

from typing import Any


def router(settings: Any, queue: Any) -> Any:
    from fastapi import APIRouter

    return APIRouter()
