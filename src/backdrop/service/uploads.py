"""Uploaded files into a job's ``input/`` folder, with limits.

- images: a safe plain name (no folders, no dot-files), a known image suffix, at most
  ``max_file_bytes``; opened with Pillow (header only) to prove it is an image no larger than
  ``max_pixels``. Anything else is refused with a 4xx naming the file.
- a data set ``.zip`` (:func:`extract_zip`): members only inside the target folder (no absolute
  names, no ``..``, no links: zip-slip), at most ``max_zip_entries`` members and ``max_zip_bytes``
  uncompressed, and no member whose compression ratio says zip bomb; sizes are counted while
  extracting, not trusted from the header.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

from .errors import ApiError

_SAFE = re.compile(r"[^A-Za-z0-9._ -]+")
CHUNK = 1 << 20


def safe_name(name: str | None, taken: set[str]) -> str:
    """A plain file name from an upload's name: its last component, odd characters replaced,
    made unique among ``taken``."""
    base = PurePosixPath((name or "").replace("\\", "/")).name
    base = _SAFE.sub("_", base).strip(" .") or "upload"
    stem, dot, suf = base.rpartition(".")
    if not dot:
        stem, suf = base, ""
    out, n = base, 1
    while out.lower() in taken:
        n += 1
        out = f"{stem}_{n}.{suf}" if suf else f"{stem}_{n}"
    taken.add(out.lower())
    return out


def save_stream(src: BinaryIO, dest: Path, limit: int, what: str) -> int:
    """Copy ``src`` to a new file ``dest``, at most ``limit`` bytes (else 413, nothing left)."""
    n = 0
    try:
        with open(dest, "xb") as fh:
            while True:
                block = src.read(CHUNK)
                if not block:
                    break
                n += len(block)
                if n > limit:
                    raise ApiError(413, f"{what}: larger than the limit of {limit} bytes")
                fh.write(block)
    except BaseException:
        dest.unlink(missing_ok=True)
        raise
    return n


def check_image(path: Path, what: str, max_pixels: int) -> tuple[int, int]:
    """Prove ``path`` is an image Pillow reads, no larger than ``max_pixels``; (width, height)."""
    from PIL import Image

    from ..images import IMAGE_SUFFIXES

    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ApiError(415, f"{what}: not an image file (expected one of {', '.join(sorted(IMAGE_SUFFIXES))})")
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()
    except Image.DecompressionBombError:
        raise ApiError(413, f"{what}: more pixels than the limit of {max_pixels}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to parse: not a usable image
        raise ApiError(415, f"{what}: not a readable image ({type(exc).__name__})") from None
    if size[0] * size[1] > max_pixels:
        raise ApiError(413, f"{what}: {size[0]}x{size[1]} is more pixels than the limit of {max_pixels}")
    return size


def extract_zip(archive: Path, dest: Path, *, max_entries: int, max_bytes: int, max_ratio: int) -> int:
    """Extract a data set ``.zip`` into the new folder ``dest``; returns the files written. A
    refused archive leaves nothing behind (``dest`` is removed: this function made it)."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError):
        raise ApiError(415, f"{archive.name}: not a readable .zip") from None
    dest.mkdir(parents=True, exist_ok=False)
    root = dest.resolve()
    written = total = 0
    try:
        with zf:
            infos = zf.infolist()
            if len(infos) > max_entries:
                raise ApiError(413, f"{archive.name}: {len(infos)} entries, more than the limit of {max_entries}")
            for info in infos:
                name = info.filename
                parts = PurePosixPath(name.replace("\\", "/")).parts
                if (name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name) or ".." in parts
                        or "\x00" in name):
                    raise ApiError(422, f"{archive.name}: member {name!r} would land outside the folder (zip-slip)")
                mode = (info.external_attr >> 16) & 0o170000
                if mode and mode not in (stat.S_IFREG, stat.S_IFDIR):
                    raise ApiError(422, f"{archive.name}: member {name!r} is a link or special file")
                target = (root / Path(*parts)) if parts else root
                if target != root and root not in target.resolve().parents:
                    raise ApiError(422, f"{archive.name}: member {name!r} would land outside the folder (zip-slip)")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                if info.compress_size and info.file_size / max(info.compress_size, 1) > max_ratio:
                    raise ApiError(413, f"{archive.name}: member {name!r} expands {info.file_size // max(info.compress_size, 1)}x "
                                        f"(a zip bomb?); the limit is {max_ratio}x")
                target.parent.mkdir(parents=True, exist_ok=True)
                n = 0
                with zf.open(info) as src, open(target, "xb") as out:
                    while True:
                        block = src.read(CHUNK)
                        if not block:
                            break
                        n += len(block)
                        total += len(block)
                        if total > max_bytes:
                            raise ApiError(413, f"{archive.name}: more than {max_bytes} bytes uncompressed")
                        if info.compress_size and n > max_ratio * max(info.compress_size, 1) + CHUNK:
                            raise ApiError(413, f"{archive.name}: member {name!r} expands more than {max_ratio}x (a zip bomb?)")
                        out.write(block)
                written += 1
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise
    return written


def remove_tree(folder: Path) -> None:
    """Remove a folder this service made (a refused upload's)."""
    if folder.exists() and not folder.is_symlink():
        shutil.rmtree(folder, ignore_errors=True)


def fsize(upload: Any) -> int:
    f = upload.file
    pos = f.tell()
    f.seek(0, os.SEEK_END)
    size = f.tell()
    f.seek(pos)
    return size
