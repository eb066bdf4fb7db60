"""How the contact sheet writes: whole files or none, never over a file it did not write, and no
debris left by a killed run.

Every write goes through a temporary file in one folder of the sheet's own (``.partial/`` beside
the thumbnails, removed when empty), named after the writing process: ``<pid>.<random>.part``. A run removes, when it
starts, the temporary files of processes that are gone (``kill -9`` included), so nothing is left
in the set or beside the sheet. (``outputs.write_new`` puts its temporary file beside the target,
where a killed run would leave it among the user's files.)
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from ..images import _UMASK


class Writer:
    """Writes files through ``tmp_dir`` (which must be on the same file system as the targets)."""

    def __init__(self, tmp_dir: Path):
        self.tmp_dir = Path(tmp_dir)
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        self.clean()

    def _ensure(self) -> None:
        self.tmp_dir.mkdir(parents=True, exist_ok=True)  # a run that ended may have removed it

    def clean(self) -> int:
        """Remove temporary files of processes that no longer run; returns how many."""
        gone = 0
        for f in os.scandir(self.tmp_dir):
            try:
                pid = int(f.name.split(".", 1)[0])
            except ValueError:
                continue
            if pid != os.getpid() and not _alive(pid):
                with contextlib.suppress(OSError):
                    os.unlink(f.path)
                    gone += 1
        return gone

    def close(self) -> None:
        """Remove the temporary folder if no other run is writing through it."""
        with contextlib.suppress(OSError):
            self.tmp_dir.rmdir()

    def _temp(self, data: bytes) -> Path:
        tmp = self.tmp_dir / f"{os.getpid()}.{secrets.token_hex(8)}.part"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_UMASK)
        except FileNotFoundError:
            self._ensure()
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~_UMASK)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return tmp

    def new(self, path: Path, data: bytes) -> bool:
        """Write ``path`` only if no file has that name (linked into place); False when one has."""
        tmp = self._temp(data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)

    def replace(self, path: Path, data: bytes) -> None:
        """Write ``path`` whole, replacing it in one rename (only for files this module wrote)."""
        tmp = self._temp(data)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True
