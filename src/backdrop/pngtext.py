"""Reading PNG text chunks without trusting them: each field and all of them together are capped
(decompressed), past the caps bytes are counted, not kept, so a crafted file cannot exhaust
memory; and a PNG stripped of the text chunks Pillow would refuse, so such a file still loads.

Used by :mod:`backdrop.metadata` (read back what backdrop wrote) and :mod:`backdrop.images`
(load an input whose text chunks are oversized).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MAX_TEXT = 16 * 2**20  # read_metadata keeps at most this much of one text field (decompressed)
MAX_TEXT_TOTAL = 64 * 2**20  # ... and of all text fields together
_COUNT_LIMIT = 1 << 30  # past what is kept, decompressed bytes are counted (not kept): this many per file
_BLOCK = 1 << 16


@dataclass
class TextChunk:
    key: str
    text: str
    kind: str  # tEXt, zTXt or iTXt
    incomplete: bool = False  # not all of the value was read
    note: str | None = None


def png_text_chunks(fh: Any, max_text: int, max_total: int) -> tuple[list[TextChunk], tuple[int, int], list[str]]:
    """The text chunks of a PNG (after its signature), each read at most ``max_text`` bytes deep.

    Reads chunk by chunk from ``fh``, seeking past image data, so memory stays at about
    ``max_total`` whatever the file holds. A damaged chunk list ends the walk with a note.
    """
    head = fh.read(16)  # the first chunk's length and type, then width and height
    if len(head) < 16 or head[4:8] != b"IHDR":
        raise ValueError("not a PNG: no IHDR chunk after the signature")
    size = struct.unpack(">II", head[8:16])
    fh.seek(8)
    found: list[TextChunk] = []
    notes: list[str] = []
    budget = max_total
    counting = [_COUNT_LIMIT]  # shared by the file's chunks: many bombs cost one bomb's time
    while True:
        head = fh.read(8)
        if len(head) < 8:
            notes.append("the PNG ends without an IEND chunk (truncated file?)")
            break
        length, ctype = struct.unpack(">I4s", head)
        if length > 0x7FFFFFFF:
            notes.append(f"a chunk claims {length:,} bytes (more than PNG allows); the rest of the file is not read")
            break
        start = fh.tell()
        if ctype in (b"tEXt", b"zTXt", b"iTXt"):
            kind = ctype.decode("ascii")
            if budget <= 0:
                notes.append(f"a {kind} chunk of {length:,} bytes left out: over {max_total:,} bytes of text in all")
            else:
                chunk = _read_text_chunk(fh, kind, length, min(max_text, budget), counting)
                if chunk is not None:
                    found.append(chunk)
                    budget -= len(chunk.text)
        elif ctype == b"IEND":
            break
        fh.seek(start + length + 4)  # past the data and the CRC
    return found, size, notes


def _read_text_chunk(fh: Any, kind: str, length: int, cap: int, counting: list[int]) -> TextChunk | None:
    # keyword, NUL, then: tEXt the text; zTXt a method byte and zlib data; iTXt flag, method,
    # language NUL, translated keyword NUL, then the (possibly zlib) UTF-8 text
    head = fh.read(min(length, 80 + (2 if kind != "tEXt" else 0)))
    key_end = head.find(b"\0")
    if key_end < 1:
        return None  # no keyword: not a text chunk Pillow (or anyone) would read either
    key = head[:key_end].decode("latin-1")
    pos = key_end + 1
    compressed = kind == "zTXt"
    encoding = "latin-1"
    if kind == "zTXt":
        pos += 1  # the method byte (0 = zlib)
    elif kind == "iTXt":
        encoding = "utf-8"
        rest = head[pos:] + fh.read(min(length - len(head), 4096))
        if len(rest) < 2:
            return None
        compressed = rest[0] != 0 and rest[1] == 0  # flag set, method zlib (as Pillow reads it)
        i = rest.find(b"\0", 2)
        j = rest.find(b"\0", i + 1) if i >= 0 else -1
        if j < 0:
            return None  # language or translated keyword longer than anyone writes: not read
        head, pos = head[:pos] + rest, pos + j + 1
    remaining = length - len(head)
    body = head[pos:]
    if not compressed:
        keep = body[:cap]
        if len(keep) < cap:
            keep += fh.read(min(remaining, cap - len(keep)))
        left = len(body) + remaining - len(keep)
        text = keep.decode(encoding, "replace")
        note = (f"text field {key!r} ({kind}): {len(body) + remaining:,} bytes; the first {len(keep):,} "
                f"read, {left:,} left out") if left > 0 else None
        return TextChunk(key, text, kind, left > 0, note)
    kept, total, exact, broken = _inflate_capped(body, fh, remaining, cap, counting)
    text = kept.decode(encoding, "replace")
    if broken:
        return TextChunk(key, text, kind, True, f"text field {key!r} ({kind}): compressed data damaged; "
                                            f"{len(kept):,} bytes read")
    if total > len(kept) or not exact:
        size = f"{total:,}" if exact else f"more than {total:,}"
        return TextChunk(key, text, kind, True,
                     f"text field {key!r} ({kind}, compressed): {size} bytes decompressed; the first "
                     f"{len(kept):,} read, the rest left out")
    return TextChunk(key, text, kind)


def _inflate_capped(first: bytes, fh: Any, remaining: int, cap: int,
                    counting: list[int]) -> tuple[bytes, int, bool, bool]:
    """Decompress zlib data (``first`` then ``remaining`` bytes of ``fh``) keeping ``cap`` bytes.

    Returns (kept, total decompressed, whether total is exact, whether the data was damaged).
    Past the cap, output is counted in blocks and dropped while ``counting[0]`` lasts (a budget
    of bytes shared by the file's chunks, reduced here); memory stays at ``cap`` plus a block.
    """
    d = zlib.decompressobj()
    kept = bytearray()
    total = 0
    budget = counting[0]
    stopped = False

    def feed(data: bytes) -> bool:
        nonlocal total, stopped
        while True:
            want = max(cap - len(kept), 0) or _BLOCK
            out = d.decompress(data, want)
            total += len(out)
            if len(kept) < cap:
                kept.extend(out[: cap - len(kept)])
            if d.eof:
                return False
            if len(kept) >= cap and total - len(kept) >= budget:
                stopped = True  # more follows, not counted
                return False
            data = d.unconsumed_tail
            if not data and len(out) < want:  # input used up and no output pending
                return True

    try:
        going = feed(first)
        while going and remaining > 0:
            block = fh.read(min(remaining, _BLOCK))
            if not block:
                break
            remaining -= len(block)
            going = feed(block)
    except zlib.error:
        return bytes(kept), total, True, True
    counting[0] = budget - (total - len(kept))
    return bytes(kept), total, not stopped, False


def png_without_unsafe_chunks(data: bytes, *, max_chunk: int, max_total: int) -> tuple[bytes, list[str]]:
    """``data`` (a PNG) without the text and ICC chunks that would make Pillow refuse it.

    Pillow decompresses a zTXt/iTXt/iCCP chunk up to ``PngImagePlugin.MAX_TEXT_CHUNK`` and keeps
    at most ``MAX_TEXT_MEMORY`` of text, and raises ValueError past either: a 1 kB "zTXt bomb"
    would make a good image unreadable. Those chunks carry nothing the pixels need, so the ones
    over the limits are dropped, each with a note. Returns ``data`` itself when nothing is dropped.
    Not a PNG, or a damaged chunk list: returned as is (Pillow then says what is wrong).
    """
    if not data.startswith(PNG_SIGNATURE):
        return data, []
    pos, kept_text = 8, 0
    drop: list[tuple[int, int]] = []
    notes: list[str] = []
    while pos + 12 <= len(data):
        length, ctype = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            break
        if ctype in (b"tEXt", b"zTXt", b"iTXt", b"iCCP"):
            body = data[pos + 8:end - 4]
            size = _pillow_text_size(ctype, body, max_chunk)
            name = body.split(b"\0", 1)[0][:79].decode("latin-1")
            if size is None:
                drop.append((pos, end))
                notes.append(f"PNG {ctype.decode()} chunk {name!r} left out: it decompresses to more than "
                             f"{max_chunk:,} bytes")
            elif ctype != b"iCCP":
                if kept_text + size > max_total:
                    drop.append((pos, end))
                    notes.append(f"PNG {ctype.decode()} chunk {name!r} left out: over {max_total:,} bytes "
                                 "of text in all")
                else:
                    kept_text += size
        elif ctype == b"IEND":
            break
        pos = end
    if not drop:
        return data, notes
    parts, last = [], 0
    for a, b in drop:
        parts.append(data[last:a])
        last = b
    parts.append(data[last:])
    return b"".join(parts), notes


def _pillow_text_size(ctype: bytes, body: bytes, max_chunk: int) -> int | None:
    """Bytes of text Pillow would keep from this chunk, or None when it would refuse it."""
    key_end = body.find(b"\0")
    compressed = ctype in (b"zTXt", b"iCCP")
    start = key_end + 2
    if ctype == b"iTXt":
        compressed = len(body) > key_end + 2 and body[key_end + 1] != 0 and body[key_end + 2] == 0
        i = body.find(b"\0", key_end + 3)
        j = body.find(b"\0", i + 1) if i >= 0 else -1
        if j < 0:
            return len(body)
        start = j + 1
    if key_end < 0 or not compressed:
        return len(body)
    d = zlib.decompressobj()
    try:
        out = d.decompress(body[start:], max_chunk)
    except zlib.error:
        return 0  # Pillow reads damaged compressed text as empty
    return None if d.unconsumed_tail else len(out)
