"""Builders of awkward and broken input files, for the input-handling tests.

Every builder writes one small file (generated in code, in well under a second) into a folder
and returns its path. Two registries sum them up:

    BAD      name -> builder of a file that must be refused with one InputError line
    ODD      name -> builder of a file that must be processed (as the viewer shows it)

    >>> from pathlib import Path; import tempfile
    >>> p = BAD["zero_byte"](Path(tempfile.mkdtemp()))
    >>> p.stat().st_size
    0

The "good" test image (``scene``) is a textured background with a solid object in the middle,
so the classical segmenter finds a foreground and the texture generator has real pixels to copy.
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

W, H = 160, 120  # the small size every test image uses unless it says otherwise
TAG_ORIENTATION = 0x0112


# -- good images ---------------------------------------------------------------------------------


def scene_array(width: int = W, height: int = H, seed: int = 0) -> np.ndarray:
    """A textured, mid-grey-green background with a solid red-ish object in the middle."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack(
        [90 + 20 * np.sin(xx / 7.0), 140 + 15 * np.cos(yy / 5.0), 80 + 10 * np.sin((xx + yy) / 9.0)], axis=-1
    )
    base = base + rng.normal(0, 6, size=base.shape)
    arr = np.clip(base, 0, 255).astype(np.uint8)
    cy, cx = height // 2, width // 2
    ry, rx = max(height // 5, 2), max(width // 6, 2)
    inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
    arr[inside] = (220, 40, 50)
    return arr


def scene(folder: Path, name: str = "scene.png", width: int = W, height: int = H, seed: int = 0) -> Path:
    path = Path(folder) / name
    Image.fromarray(scene_array(width, height, seed), "RGB").save(path)
    return path


def corner_marked(width: int = W, height: int = H) -> Image.Image:
    """Mid-grey image whose stored top-left 10x10 corner is pure red (to follow rotations)."""
    im = Image.new("RGB", (width, height), (128, 128, 128))
    im.paste((255, 0, 0), (0, 0, 10, 10))
    return im


# -- files that must be refused -------------------------------------------------------------------


def zero_byte(folder: Path) -> Path:
    p = Path(folder) / "empty.png"
    p.write_bytes(b"")
    return p


def truncated_jpeg(folder: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(scene_array(), "RGB").save(buf, "JPEG", quality=90)
    data = buf.getvalue()
    p = Path(folder) / "truncated.jpg"
    p.write_bytes(data[: len(data) // 2])  # header intact, half the scan data gone
    return p


def truncated_png(folder: Path) -> Path:
    buf = io.BytesIO()
    Image.fromarray(scene_array(), "RGB").save(buf, "PNG")
    data = buf.getvalue()
    p = Path(folder) / "truncated.png"
    p.write_bytes(data[: len(data) // 2])
    return p


def text_as_png(folder: Path) -> Path:
    p = Path(folder) / "notes.png"
    p.write_text("these are my notes, not a picture\n" * 20, encoding="utf-8")
    return p


def html_as_jpg(folder: Path) -> Path:
    p = Path(folder) / "page.jpg"
    p.write_text("<!DOCTYPE html><html><head><title>404</title></head><body>Not found</body></html>\n")
    return p


def random_bytes(folder: Path) -> Path:
    p = Path(folder) / "noise.png"
    p.write_bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    return p


def one_pixel(folder: Path) -> Path:
    p = Path(folder) / "dot.png"
    Image.new("RGB", (1, 1), (10, 20, 30)).save(p)
    return p


def _chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_claiming(width: int, height: int, rows: int = 4) -> bytes:
    """A well-formed PNG header (valid CRCs) claiming ``width`` x ``height`` 8-bit grey pixels,
    followed by only ``rows`` rows of real, compressed data: a few hundred bytes on disk that a
    careless reader would try to decode into ``width * height`` bytes of memory."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale, no interlace
    raw = (b"\x00" + b"\x00" * width) * rows
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(raw, 9)) + _chunk(b"IEND", b"")


def bomb_png(folder: Path) -> Path:
    """100000 x 100000 pixels (10 gigapixels) claimed in a file of a few hundred bytes."""
    p = Path(folder) / "bomb.png"
    p.write_bytes(png_claiming(100_000, 100_000))
    return p


def bomb_png_real(folder: Path, side: int = 9000) -> Path:
    """A complete, valid 1-bit PNG of ``side`` x ``side`` (81 Mpx > the 60 Mpx default limit)
    that compresses to a few kilobytes; decoding it to RGB would take ~240 MB."""
    row = b"\x00" + b"\x00" * ((side + 7) // 8)
    comp = zlib.compressobj(9)
    idat = b"".join(comp.compress(row) for _ in range(side)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    p = Path(folder) / "bomb_real.png"
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", idat) + _chunk(b"IEND", b""))
    return p


BAD: dict[str, Callable[[Path], Path]] = {
    "zero_byte": zero_byte,
    "truncated_jpeg": truncated_jpeg,
    "truncated_png": truncated_png,
    "text_as_png": text_as_png,
    "html_as_jpg": html_as_jpg,
    "random_bytes": random_bytes,
    "one_pixel": one_pixel,
    "bomb_png": bomb_png,
    "bomb_png_real": bomb_png_real,
}


# -- odd but valid images: processed --------------------------------------------------------------


def gray16(folder: Path) -> Path:
    """16-bit greyscale: left half 0, right half 65535, a middle band at 32768."""
    arr = np.zeros((H, W), np.uint16)
    arr[:, W // 2 :] = 65535
    arr[:, 60:70] = 32768
    p = Path(folder) / "gray16.png"
    Image.fromarray(arr).save(p)  # Pillow writes I;16 as a 16-bit greyscale PNG
    return p


def gray8(folder: Path) -> Path:
    arr = np.full((H, W), 77, np.uint8)
    arr[:, W // 2 :] = 200
    p = Path(folder) / "gray8.png"
    Image.fromarray(arr, "L").save(p)
    return p


def cmyk_jpeg(folder: Path) -> Path:
    """CMYK JPEG whose left half is pure cyan ink, right half pure magenta."""
    im = Image.new("CMYK", (W, H), (255, 0, 0, 0))
    im.paste((0, 255, 0, 0), (W // 2, 0, W, H))
    p = Path(folder) / "cmyk.jpg"
    im.save(p, "JPEG", quality=95)
    return p


def cmyk_tiff(folder: Path) -> Path:
    im = Image.new("CMYK", (W, H), (255, 0, 0, 0))
    im.paste((0, 255, 0, 0), (W // 2, 0, W, H))
    p = Path(folder) / "cmyk.tif"
    im.save(p, "TIFF")
    return p


def palette_transparent(folder: Path) -> Path:
    """Palette PNG: index 0 fully transparent (left half), index 1 opaque blue (right half)."""
    im = Image.new("P", (W, H), 0)
    im.putpalette([0, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    im.paste(1, (W // 2, 0, W, H))
    p = Path(folder) / "palette.png"
    im.save(p, transparency=0)
    return p


def rgba(folder: Path) -> Path:
    """RGBA: left half transparent, right half opaque green."""
    im = Image.new("RGBA", (W, H), (0, 0, 0, 0))
    im.paste((0, 200, 0, 255), (W // 2, 0, W, H))
    p = Path(folder) / "rgba.png"
    im.save(p)
    return p


def float_tiff(folder: Path) -> Path:
    """32-bit float TIFF (mode F) with values from -1.0 (left) to 3.0 (right)."""
    arr = np.tile(np.linspace(-1.0, 3.0, W, dtype=np.float32), (H, 1))
    p = Path(folder) / "float.tif"
    Image.fromarray(arr, "F").save(p, "TIFF")
    return p


def animated_gif(folder: Path) -> Path:
    """Three frames: red, green, blue. The first (red) is the one to use."""
    frames = [Image.new("RGB", (W, H), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    p = Path(folder) / "anim.gif"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return p


def animated_png(folder: Path) -> Path:
    frames = [Image.new("RGB", (W, H), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    p = Path(folder) / "anim.png"
    frames[0].save(p, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return p


def exif_rotated(folder: Path, orientation: int, fmt: str = "JPEG") -> Path:
    """The corner-marked image stored sideways, with an EXIF orientation tag telling viewers
    how to turn it. Saved lossless (PNG eXIf) or as a high-quality JPEG."""
    im = corner_marked()
    exif = Image.Exif()
    exif[TAG_ORIENTATION] = orientation
    suffix = "jpg" if fmt == "JPEG" else "png"
    p = Path(folder) / f"rot{orientation}.{suffix}"
    if fmt == "JPEG":
        im.save(p, "JPEG", quality=98, exif=exif)
    else:
        im.save(p, "PNG", exif=exif)
    return p


def panorama(folder: Path, width: int = 6000, height: int = 300) -> Path:
    return scene(folder, "panorama.png", width, height)


ODD: dict[str, Callable[[Path], Path]] = {
    "gray16": gray16,
    "gray8": gray8,
    "cmyk_jpeg": cmyk_jpeg,
    "cmyk_tiff": cmyk_tiff,
    "palette_transparent": palette_transparent,
    "rgba": rgba,
    "float_tiff": float_tiff,
    "animated_gif": animated_gif,
    "animated_png": animated_png,
    "exif6": lambda folder: exif_rotated(folder, 6),
    "exif8": lambda folder: exif_rotated(folder, 8),
    "panorama": panorama,
}
