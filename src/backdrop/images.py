"""Loading, validating and normalising input images (atomic writes live in :mod:`backdrop.outputs`).

Every input becomes an upright 8-bit RGB ``PIL.Image`` or an :class:`InputError` with one line
saying what is wrong. Sizes are checked from the header, before the pixels are decoded, so a
decompression bomb is refused cheaply.

>>> from PIL import Image
>>> img = normalise(Image.new("I;16", (4, 4), 65535))
>>> img.mode, img.getpixel((0, 0))
('RGB', (255, 255, 255))
"""

from __future__ import annotations

import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError

log = logging.getLogger(__name__)

_PILLOW_LIMIT_LOCK = threading.Lock()
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif"}
MIN_SIDE = 8  # smaller images carry no usable background


@dataclass
class LoadedImage:
    image: Image.Image  # upright 8-bit RGB
    info: dict[str, Any] = field(default_factory=dict)  # path, format, original mode/size, notes


def collect_inputs(paths: Iterable[str | Path], *, exclude: Iterable[str | Path] = (),
                   with_notes: bool = False) -> Any:
    """Expand files and folders into ``(file, rel)`` pairs, sorted by ``rel``.

    ``rel`` names the file relative to the *parent* of the folder given (``in/cat`` ->
    ``cat/001.png``), or is the file's own name for a file given: so a file's output name is the
    same whatever else is in the run. Folders are searched recursively; hidden files, folders
    in ``exclude`` and folders holding backdrop's output record (earlier runs' outputs, wherever
    they are) are skipped. Symlinked folders are followed once (a loop is not), and said so in
    the notes. The same file (by resolved path) is taken once. Raises InputError for a path that
    does not exist or a folder with no images. With ``with_notes``: ``(pairs, notes)``.

    >>> collect_inputs(["no/such/dir"])
    Traceback (most recent call last):
    backdrop.errors.InputError: no/such/dir: no such file or folder
    """
    from .outputs import is_output_set

    skip = {Path(e).resolve() for e in exclude}
    seen: set[Path] = set()
    notes: list[str] = []
    out: list[tuple[Path, str]] = []

    def take(f: Path, rel: str) -> None:
        real = f.resolve()
        if real in seen:
            notes.append(f"{f}: the same file as one already taken; done once")
            return
        seen.add(real)
        out.append((f, rel))

    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if not p.is_dir():
            take(p, p.name)
            continue
        if is_output_set(p):
            raise InputError(f"{p}: is a backdrop output folder, not an input (it holds {p}/.backdrop)")
        top = p.resolve().name or "input"
        found: list[tuple[Path, str]] = []
        visited: set[Path] = set()
        for dirpath, dirnames, filenames in os.walk(p, followlinks=True):
            d = Path(dirpath)
            real = d.resolve()
            if real in visited:  # a symlink loop, or a second link to a folder already searched
                notes.append(f"{d}: links to a folder already searched; skipped")
                dirnames[:] = []
                continue
            visited.add(real)
            if d != p and d.is_symlink():
                notes.append(f"{d}: symlinked folder followed")
            keep = []
            # real folders first, so a file is named by its real place when a link also reaches it
            for name in sorted(dirnames, key=lambda n: ((d / n).is_symlink(), n)):
                sub = d / name
                if name.startswith(".") or sub.resolve() in skip or is_output_set(sub):
                    continue
                keep.append(name)
            dirnames[:] = keep
            for name in filenames:
                f = d / name
                if name.startswith(".") or Path(name).suffix.lower() not in IMAGE_SUFFIXES or not f.is_file():
                    continue
                found.append((f, str(PurePosixPath(top, *f.relative_to(p).parts))))
        if not found:
            raise InputError(f"{p}: folder has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for f, rel in sorted(found, key=lambda fr: fr[1]):
            take(f, rel)
    out.sort(key=lambda fr: fr[1])
    return (out, notes) if with_notes else out


def load_image(path: str | Path, *, max_pixels: int = 60_000_000) -> LoadedImage:
    """Open, check and normalise one image file (see module docstring)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not an image")
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    if size == 0:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    return load_bytes(data, name=str(path), max_pixels=max_pixels)


def load_bytes(data: bytes, *, name: str = "<upload>", max_pixels: int = 60_000_000) -> LoadedImage:
    """Like :func:`load_image` for bytes in memory (uploads). ``name`` is only used in messages."""
    import io

    if not data:
        raise InputError(f"{name}: empty file (0 bytes)")
    # Text and ICC chunks carry nothing the pixels need, but Pillow refuses a whole PNG whose
    # zTXt/iTXt/iCCP chunk decompresses past its limit (a 500 kB "zTXt bomb" of 500 MB of text):
    # such chunks are dropped, with a note, so metadata never makes a good image unreadable.
    from PIL import PngImagePlugin

    from .pngtext import png_without_unsafe_chunks

    n_bytes = len(data)
    data, dropped = png_without_unsafe_chunks(
        data, max_chunk=PngImagePlugin.MAX_TEXT_CHUNK, max_total=PngImagePlugin.MAX_TEXT_MEMORY)
    for note in dropped:
        log.warning("%s: %s", name, note)
    # Pillow's own bomb check is a process-wide setting; it is lifted only while this thread
    # opens and decodes (the lock keeps concurrent loads, e.g. the studio's, from leaving it off).
    with _PILLOW_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        old_limit = Image.MAX_IMAGE_PIXELS
        Image.MAX_IMAGE_PIXELS = None  # we check the header size ourselves, against max_pixels
        try:
            try:
                im = Image.open(io.BytesIO(data))
            except UnidentifiedImageError:
                raise InputError(f"{name}: not an image, or a format Pillow cannot read") from None
            except (OSError, ValueError, SyntaxError) as exc:
                raise InputError(f"{name}: unreadable image ({exc})") from None
            w, h = im.size
            if w * h > max_pixels:
                raise InputError(
                    f"{name}: image is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,} "
                    "(raise max_pixels to allow it)"
                )
            if min(w, h) < MIN_SIDE:
                raise InputError(f"{name}: image is {w}x{h}; both sides must be at least {MIN_SIDE} px")
            info: dict[str, Any] = {
                "path": name,
                "format": im.format,
                "mode": im.mode,
                "size": [w, h],
                "bytes": n_bytes,
            }
            if dropped:
                info["notes"] = list(dropped)
            frames = getattr(im, "n_frames", 1)
            if frames > 1:
                info["frames"] = frames
                info.setdefault("notes", []).append(f"animated ({frames} frames): the first frame is used")
                im.seek(0)
            try:
                im.load()
            except (OSError, ValueError, SyntaxError) as exc:
                raise InputError(f"{name}: truncated or corrupt image data ({exc})") from None
        finally:
            Image.MAX_IMAGE_PIXELS = old_limit
    orientation = _orientation(im)
    try:
        upright = ImageOps.exif_transpose(im)
    except Exception:  # a broken EXIF block must not sink a good image
        upright, orientation = im, None
    if orientation not in (None, 1):
        info["exif_orientation"] = orientation
        info.setdefault("notes", []).append(f"EXIF orientation {orientation} applied: processed upright")
    rgb, note = _to_rgb(upright)
    if note:
        info.setdefault("notes", []).append(note)
    info["upright_size"] = list(rgb.size)
    return LoadedImage(rgb, info)


def _orientation(im: Image.Image) -> int | None:
    try:
        return im.getexif().get(0x0112)
    except Exception:
        return None


def normalise(im: Image.Image) -> Image.Image:
    """Any Pillow image -> upright 8-bit RGB, as :func:`load_image` makes it: the EXIF orientation
    applied (as a viewer shows it), 16-bit and float scaled, alpha flattened onto white.

    For images opened lazily (``Image.open``), broken pixel data raises a one-line InputError.
    """
    try:
        im.load()
    except (OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"truncated or corrupt image data ({exc})") from None
    if _orientation(im) not in (None, 1):
        try:
            im = ImageOps.exif_transpose(im)
        except Exception:  # a broken EXIF block must not sink a good image
            pass
    return _to_rgb(im)[0]


def _to_rgb(im: Image.Image) -> tuple[Image.Image, str | None]:
    mode = im.mode
    if mode == "RGB":
        return im, None
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im).astype(np.float64)
        if mode == "F":
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            if lo >= 0.0 and hi <= 1.0:
                lo, hi = 0.0, 1.0
            note = f"float image scaled from [{lo:.4g}, {hi:.4g}] to 8 bits"
        elif mode == "I" and arr.max(initial=0) <= 255 and arr.min(initial=0) >= 0:
            lo, hi = 0.0, 255.0
            note = "32-bit integer image read as 8-bit values"
        else:
            lo, hi = 0.0, 65535.0
            note = "16-bit image scaled to 8 bits"
        arr = np.nan_to_num(arr, nan=lo, posinf=hi, neginf=lo)
        scaled = np.clip((arr - lo) / max(hi - lo, 1e-12) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, "L").convert("RGB"), note
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (mode == "P" and "transparency" in im.info):
        if mode == "La":  # premultiplied: Pillow converts it to RGBA only through LA
            im = im.convert("LA")
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), "transparency flattened onto white"
    if mode == "CMYK":
        return im.convert("RGB"), "CMYK converted to RGB"
    return im.convert("RGB"), (f"{mode} converted to RGB" if mode not in ("L", "P") else None)
