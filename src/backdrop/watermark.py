"""An optional invisible watermark (DWT-DCT, the ``invisible-watermark`` package).

The mark is a fixed 16-byte payload spread over the whole image's chroma: the magic ``BD``,
the text's length, the text (UTF-8, at most 12 bytes) and a CRC byte. Detection decodes those
16 bytes and answers the text only when the magic and the CRC agree, so an unmarked image
gives ``None`` rather than garbage. The image must be at least 256x256 pixels.

Survives: lossless saving (PNG), small brightness changes. Often lost: JPEG re-encoding,
resizing, cropping, heavy filtering. It is a provenance hint, not a security measure; the
metadata written by :mod:`backdrop.metadata` is the primary record.

>>> from PIL import Image
>>> marked = embed(Image.effect_noise((512, 512), 40).convert("RGB"), "backdrop")   # doctest: +SKIP
>>> detect(marked)                                                                  # doctest: +SKIP
'backdrop'
"""

from __future__ import annotations

import io
import logging
import zlib
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .errors import InputError
from .registry import require

log = logging.getLogger(__name__)

METHOD = "dwtDct"
MAGIC = b"BD"
TEXT_BYTES = 12  # longest text the payload holds
PAYLOAD_BYTES = len(MAGIC) + 1 + TEXT_BYTES + 1  # magic, length, text, crc
MIN_PIXELS = 256 * 256  # imwatermark refuses smaller images


def _crc(data: bytes) -> int:
    return zlib.crc32(data) & 0xFF


def _payload(text: str) -> bytes:
    raw = text.encode("utf-8")
    if not raw or len(raw) > TEXT_BYTES:
        raise ValueError(f"watermark text must be 1 to {TEXT_BYTES} UTF-8 bytes, got {len(raw)} ({text!r})")
    body = MAGIC + bytes([len(raw)]) + raw.ljust(TEXT_BYTES, b"\0")
    return body + bytes([_crc(body)])


def _parse(payload: bytes) -> str | None:
    if len(payload) != PAYLOAD_BYTES or not payload.startswith(MAGIC):
        return None
    body, crc = payload[:-1], payload[-1]
    if _crc(body) != crc:
        return None
    n = body[len(MAGIC)]
    if not 1 <= n <= TEXT_BYTES:
        return None
    try:
        return body[len(MAGIC) + 1: len(MAGIC) + 1 + n].decode("utf-8")
    except UnicodeDecodeError:
        return None


def _bgr(image: Image.Image) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])


def can_mark(image: Image.Image) -> bool:
    """True when ``image`` is large enough to carry the mark (at least 256x256 pixels)."""
    w, h = image.size
    return w * h >= MIN_PIXELS


def embed(image: Image.Image, text: str = "backdrop") -> Image.Image:
    """Return a copy of ``image`` (RGB) carrying ``text`` as an invisible watermark.

    Raises InputError for images under 256x256 pixels and ValueError for a text longer than
    12 UTF-8 bytes. Save the result losslessly (PNG) for the mark to survive.
    """
    require("imwatermark", "studio", "the invisible watermark")
    if not can_mark(image):
        raise InputError(f"image is {image.size[0]}x{image.size[1]}; the invisible watermark needs at least 256x256 pixels")
    pywt = require("pywt", "studio", "the invisible watermark")
    bits = np.unpackbits(np.frombuffer(_payload(text), dtype=np.uint8))
    rgb = np.asarray(image.convert("RGB"), dtype=np.float64)
    h, w = (rgb.shape[0] // 4) * 4, (rgb.shape[1] // 4) * 4
    u = _u_channel(rgb[:h, :w])
    # imwatermark's own encoder works in uint8 (negative values wrap round), swaps the
    # horizontal and vertical details on the way back, and lets the marked coefficient stop
    # being its block's largest (its decoder then reads another one). Embedding here in float,
    # keeping the marked coefficient the largest and moving only U (Y and V kept) writes the
    # same bits for imwatermark's decoder with far fewer errors on smooth images.
    ll, (dh, dv, dd) = pywt.dwt2(u, "haar")
    _mark_blocks(ll, bits)
    delta_u = pywt.idwt2((ll, (dh, dv, dd)), "haar")[:h, :w] - u
    out = rgb.copy()
    out[:h, :w] = _move_u(rgb[:h, :w], u + delta_u)
    return Image.fromarray(np.rint(out).astype(np.uint8), "RGB")


# OpenCV's BGR<->YUV coefficients (the decoder converts with cv2.COLOR_BGR2YUV)
_B_FROM_U = 2.032
_G_FROM_U = -0.395
SCALE = 36  # quantisation step of the marked coefficients (imwatermark's default)


def _mark_blocks(ll: np.ndarray, bits: np.ndarray, block: int = 4, margin: float = 3.0) -> None:
    """Quantise each block's largest AC coefficient to carry one bit (in place), as imwatermark reads it.

    Bit b of block n (row-major) is ``bits[n % len(bits)]``; the decoder takes the block's
    largest |coefficient| after the first and reads 1 when ``|c| mod SCALE > SCALE/2``. The new
    value is the nearest of three levels carrying the bit, counting what it costs to lower the
    block's other coefficients below it (by ``margin``) so that it stays the largest.
    """
    rows, cols = ll.shape[0] // block, ll.shape[1] // block
    view = ll[: rows * block, : cols * block].reshape(rows, block, cols, block).transpose(0, 2, 1, 3)
    flat = view.reshape(rows * cols, block * block).copy()
    n = flat.shape[0]
    want = bits[np.arange(n) % len(bits)].astype(np.float64)
    pos = np.abs(flat[:, 1:]).argmax(axis=1) + 1
    val = flat[np.arange(n), pos]
    mag = np.abs(val)
    others = np.abs(flat).copy()
    others[:, 0] = 0.0
    others[np.arange(n), pos] = 0.0
    best_level = best_cost = None
    for step in (-1.0, 0.0, 1.0):
        level = (mag // SCALE + step + 0.25 + 0.5 * want) * SCALE
        ok = level - margin > 0
        cost = np.abs(level - mag) + np.maximum(others - (level - margin)[:, None], 0.0).sum(axis=1)
        cost = np.where(ok, cost, np.inf)
        if best_cost is None:
            best_level, best_cost = level, cost
        else:
            better = cost < best_cost
            best_level = np.where(better, level, best_level)
            best_cost = np.where(better, cost, best_cost)
    cap = (best_level - margin)[:, None]
    keep = flat[:, :1].copy()
    flat = np.sign(flat) * np.minimum(np.abs(flat), cap)
    flat[:, 0] = keep[:, 0]
    flat[np.arange(n), pos] = np.where(val >= 0, best_level, -best_level)
    ll[: rows * block, : cols * block] = flat.reshape(rows, cols, block, block).transpose(0, 2, 1, 3).reshape(
        rows * block, cols * block
    )


def _move_u(rgb: np.ndarray, target_u: np.ndarray, rounds: int = 4) -> np.ndarray:
    """RGB pixels (float, 0..255) whose U is ``target_u``, moved as little as possible.

    First along the direction that keeps Y and V (B and G only); where that runs into 0 or 255
    the rest of the change is made with the channels still free to move (Y and V then shift a
    little, which is invisible at these sizes).
    """
    out = rgb.copy()
    out[..., 2] += _B_FROM_U * (target_u - _u_channel(rgb))
    out[..., 1] += _G_FROM_U * (target_u - _u_channel(rgb))
    np.clip(out, 0.0, 255.0, out=out)
    grad = 0.492 * np.array([-0.299, -0.587, 0.886])  # dU / d(R, G, B)
    for _ in range(rounds):
        residual = target_u - _u_channel(out)
        if np.abs(residual).max() < 0.5:
            break
        # a channel is free when moving it the way that reduces the residual stays inside 0..255
        sign = np.sign(residual)[..., None] * np.sign(grad)
        free = ((sign > 0) & (out < 255.0)) | ((sign < 0) & (out > 0.0))
        g = np.where(free, grad, 0.0)
        norm = (g * g).sum(axis=-1)
        step = np.where(norm > 0, residual / np.maximum(norm, 1e-12), 0.0)
        out += step[..., None] * g
        np.clip(out, 0.0, 255.0, out=out)
    return out


def _u_channel(rgb: np.ndarray) -> np.ndarray:
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    return 0.492 * (b - y) + 128.0


def detect(path_or_image: str | Path | bytes | Image.Image) -> str | None:
    """The watermark text in an image (a path, bytes or a PIL image), or None when there is none."""
    imw = require("imwatermark", "studio", "the invisible watermark")
    image = _open(path_or_image)
    if not can_mark(image):
        return None
    decoder = imw.WatermarkDecoder("bytes", PAYLOAD_BYTES * 8)
    try:
        payload = decoder.decode(_bgr(image), METHOD)
    except Exception as exc:  # a decoder failure means "no mark found", never a crash of the caller
        log.debug("watermark decode failed: %s", exc)
        return None
    return _parse(bytes(payload))


def _open(obj: Any) -> Image.Image:
    if isinstance(obj, Image.Image):
        return obj
    data = obj if isinstance(obj, bytes) else Path(obj).read_bytes()
    im = Image.open(io.BytesIO(data))
    im.load()
    return im
