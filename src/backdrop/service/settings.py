"""The service's settings: one frozen dataclass, filled from `backdrop serve`'s options."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


@dataclass(frozen=True)
class Settings:
    root: Path  # the queue's folder ($BACKDROP_HOME/serve): jobs.db, jobs/, token
    host: str = "127.0.0.1"  # loopback by default; another address needs a token
    port: int = 8502
    token: Optional[str] = None  # the bearer token every route but /v1/health wants (None: no auth, loopback only)
    allow_roots: tuple[Path, ...] = ()  # server folders a job's "source" may name (resolved)
    workers: int = 1  # worker processes (one job at a time each; one per device is the default)
    max_file_bytes: int = 64 << 20  # one uploaded file
    max_request_bytes: int = 512 << 20  # one request body, all files together
    max_files: int = 1000  # files in one upload
    max_pixels: int = 60_000_000  # one uploaded image (width * height)
    max_zip_entries: int = 100_000  # members of an uploaded data set .zip
    max_zip_bytes: int = 8 << 30  # the .zip's members, uncompressed, all together
    max_zip_ratio: int = 200  # a member's uncompressed/compressed size above this: a zip bomb
    list_files: int = 1000  # files listed in a job's status (all of them: /archive)
    sd_model: Optional[str] = None  # /sdapi's model (id, store name or folder) [default: the studio's]
    sd_device: str = "auto"  # /sdapi's device: auto, cpu, cuda, mps
    docs: bool = True  # /docs (Swagger UI, assets served from this package: works offline)
    extra: dict = field(default_factory=dict)
