"""How the contact sheet writes: whole files or none, never over a file it did not write, and no
debris left by a killed run.

Every write goes through ``outputs`` (the one home of atomic writes) with its temporary file in a
folder of the sheet's own (``.partial/`` beside the thumbnails, removed when empty), named after
the writing process. A run removes, when it starts, the temporary files of processes that are
gone (``kill -9`` included), so nothing is left in the set or beside the sheet; with the default
(a temporary file beside the target) a killed run would leave one among the user's files.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..outputs import atomic_write_bytes, remove_dead_temps, write_new


class Writer:
    """Writes files through ``tmp_dir`` (which must be on the same file system as the targets)."""

    def __init__(self, tmp_dir: Path):
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        remove_dead_temps(self.tmp_dir)

    def new(self, path: Path, data: bytes) -> bool:
        """Write ``path`` only if no file has that name; False when one has."""
        return write_new(path, data, tmp_dir=self.tmp_dir)

    def replace(self, path: Path, data: bytes) -> None:
        """Write ``path`` whole, replacing it in one rename (only for files backdrop wrote)."""
        atomic_write_bytes(path, data, tmp_dir=self.tmp_dir)

    def close(self) -> None:
        """Remove the temporary folder if no other run is writing through it."""
        with contextlib.suppress(OSError):
            self.tmp_dir.rmdir()
