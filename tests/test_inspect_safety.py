"""`backdrop inspect` and the image loader do not trust a file's metadata (issue 9, case 10).

Each hostile file is built here, in code: text chunks carrying terminal escape sequences, a
backdrop record nested too deeply to parse, a 50 MB text chunk, a zTXt bomb (about 500 kB that
decompresses to 500 MB). Inspect must print none of the escapes, cut what is huge with a note, show
the rest of the metadata, and stay within bounded memory; `run` must still take the image.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import make_bad_inputs as bad
from backdrop.cli import app
from backdrop.images import load_bytes, load_image
from backdrop.metadata import format_metadata, metadata_json, read_metadata, safe_text
from writers import save_image

BOMB_SIZE = 500 * 2**20  # decompressed bytes of the zTXt bomb
ESCAPES = (
    "title \x1b]0;PWNED\x07 clip \x1b]52;c;ZXZpbA==\x07 link \x1b]8;;http://evil.example/\x1b\\here"
    "\x1b]8;;\x1b\\ clear \x1b[2J\x1b[H red \x1b[31mX\x1b[0m c1 \x9b31mY \x9d0;t\x9c cr \r bidi \u202egnp.exe"
)
TERMINAL_ACTIVE = ["\x1b", "\x07", "\x9b", "\x9c", "\x9d", "\r", "\u202e"]


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)


def png_with(chunks: list[bytes], *, array: np.ndarray | None = None) -> bytes:
    """A small valid PNG (the test scene) with ``chunks`` inserted right after IHDR."""
    buf = io.BytesIO()
    Image.fromarray(bad.scene_array() if array is None else array, "RGB").save(buf, "PNG")
    data = buf.getvalue()
    at = 8 + 12 + 13  # signature, then the IHDR chunk
    return data[:at] + b"".join(chunks) + data[at:]


def text(key: str, value: str) -> bytes:
    return chunk(b"tEXt", key.encode("latin-1") + b"\0" + value.encode("latin-1", "replace"))


def itxt(key: str, value: str, *, compress: bool = False) -> bytes:
    body = value.encode("utf-8")
    return chunk(b"iTXt", key.encode("latin-1") + b"\0" + bytes([int(compress), 0]) + b"\0\0"
                 + (zlib.compress(body) if compress else body))


@pytest.fixture(scope="module")
def bomb_zlib() -> bytes:
    """zlib data of BOMB_SIZE zero-free bytes ('A'), about 500 kB: built once (a second or so)."""
    c = zlib.compressobj(9)
    block = b"A" * 2**20
    return b"".join(c.compress(block) for _ in range(BOMB_SIZE // 2**20)) + c.flush()


@pytest.fixture(scope="module")
def bomb_png(tmp_path_factory, bomb_zlib) -> Path:
    path = tmp_path_factory.mktemp("bomb") / "bomb.png"
    path.write_bytes(png_with([
        text("parameters", "a cat on a mat\nSteps: 20, Seed: 7, Size: 160x120"),
        chunk(b"zTXt", b"Comment\0\0" + bomb_zlib),
    ]))
    return path


def inspect(*args) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["inspect", *map(str, args)])
    err = result.stderr if result.stderr_bytes is not None else ""
    return result.exit_code, result.stdout, err


# -- escape sequences ----------------------------------------------------------------------------


def test_escape_sequences_never_reach_the_terminal(tmp_path):
    path = tmp_path / "evil.png"
    path.write_bytes(png_with([text("parameters", ESCAPES), itxt("Comment", "ok " + ESCAPES),
                               text("Key\x1b]0;x\x07", "value")]))
    code, out, err = inspect(path)
    assert code == 0, err
    for ch in TERMINAL_ACTIVE:
        assert ch not in out and ch not in err, repr(ch)
    # the printable text around the sequences is kept, the sequences' payloads are not
    assert "title  clip  link here clear  red X c1 Y" in out
    assert "PWNED" not in out and "ZXZpbA" not in out and "evil.example" not in out
    assert "Comment: ok title" in out and "Key: value" in out
    assert "escape sequences removed; --raw prints them" in out


def test_raw_prints_the_text_as_stored(tmp_path):
    path = tmp_path / "evil.png"
    path.write_bytes(png_with([text("parameters", "a \x1b]0;PWNED\x07 b")]))
    code, out, _ = inspect(path, "--raw")
    assert code == 0 and "\x1b]0;PWNED\x07" in out


def test_json_output_escapes_every_control_character(tmp_path):
    path = tmp_path / "evil.png"
    path.write_bytes(png_with([text("parameters", ESCAPES)]))
    code, out, _ = inspect(path, "--json")
    assert code == 0
    assert all(ch not in out for ch in TERMINAL_ACTIVE)
    assert json.loads(out)["parameters"] == ESCAPES.encode("latin-1", "replace").decode("latin-1")


def test_error_lines_are_cleaned_too(tmp_path):
    name = tmp_path / "no\x1b]0;PWNED\x07such.png"
    code, out, err = inspect(name)
    assert code == 1 and "\x1b" not in out + err and "no such file" in err


def test_safe_text_keeps_ordinary_text():
    plain = "a cat\tsits\nNegative prompt: dog, «ünïcödé» 猫 🐈"
    assert safe_text(plain) == (plain, 0)
    assert safe_text("x\x1b[1;31my\x00z\x7f") == ("xyz", 3)
    # an unterminated OSC string ends at the line's end: the next lines are still shown
    assert safe_text("a\x1b]0;never ends\nnext line") == ("a\nnext line", 1)


# -- broken or nested JSON ------------------------------------------------------------------------------


def test_deeply_nested_record_does_not_hide_the_rest(tmp_path):
    nested = "[" * 200_000 + "]" * 200_000  # far past the recursion limit; 2 kB compressed
    path = tmp_path / "nested.png"
    path.write_bytes(png_with([text("parameters", "a red apple\nSteps: 20, Seed: 3"),
                               itxt("backdrop", nested, compress=True), itxt("Software", "tool 1.0")]))
    meta = read_metadata(path)
    assert meta["parameters"].startswith("a red apple") and meta["text"]["Software"] == "tool 1.0"
    assert meta["backdrop"] is None and any("nested too deeply" in n for n in meta["notes"])
    # the command line, told to read the whole record, shows everything else and exits 0
    code, out, err = inspect(path, "--max-field", "500000")
    assert code == 0, err
    assert "a red apple" in out and "Software: tool 1.0" in out and "nested too deeply" in out


def test_nested_record_in_a_jpeg_comment(tmp_path):
    path = tmp_path / "nested.jpg"
    Image.fromarray(bad.scene_array()).save(path, comment=("[" * 30_000 + "]" * 30_000).encode())
    meta = read_metadata(path)
    assert meta["format"] == "JPEG" and any("nested too deeply" in n for n in meta["notes"])
    code, out, _ = inspect(path)
    assert code == 0 and "nested too deeply" in out


def test_broken_record_is_shown_as_text(tmp_path):
    path = tmp_path / "broken.png"
    path.write_bytes(png_with([itxt("backdrop", '{"seed": 7, "prompt": ', compress=True),
                               text("parameters", "a beach")]))
    meta = read_metadata(path)
    assert meta["parameters"] == "a beach" and meta["backdrop"] is None
    assert meta["text"]["backdrop"] == '{"seed": 7, "prompt": '
    assert any("not valid JSON" in n for n in meta["notes"])


def test_a_record_too_deep_to_pretty_print_is_still_printed():
    deep: list = []
    for _ in range(5000):  # read_metadata would not parse this; a caller may still pass it
        deep = [deep]
    text = format_metadata({"format": "PNG", "size": [1, 1], "parameters": "p", "backdrop": deep})
    assert "parameters:" in text and "nested too deeply to show" in text
    shown = json.loads(metadata_json({"format": "PNG", "backdrop": deep}))
    assert any("nested more than 100 deep" in n for n in shown["notes"])


# -- huge chunks ---------------------------------------------------------------------------------------


def test_a_50_mb_text_chunk_is_cut_with_a_note(tmp_path):
    path = tmp_path / "big.png"
    path.write_bytes(png_with([text("parameters", "a forest"), text("Big", "x" * (50 * 2**20))]))
    code, out, err = inspect(path)
    assert code == 0, err
    assert len(out) < 200_000  # 64 KiB of the field, not 50 MB
    assert "a forest" in out
    assert "'Big' (tEXt): 52,428,800 bytes; the first 65,536 read, 52,363,264 left out" in out
    code, out, _ = inspect(path, "--max-field", "10")
    assert code == 0 and "Big: xxxxxxxxxx\n" in out and "52,428,790 left out" in out
    code, out, _ = inspect(path, "--json")
    assert code == 0 and len(out) < 200_000 and json.loads(out)["text"]["Big"] == "x" * 65536


def test_pretty_printed_record_is_cut_where_it_is_long(tmp_path):
    record = {"items": list(range(3000))}  # 17 kB as stored, 38 kB once indented
    path = save_image(Image.new("RGB", (8, 8)), tmp_path / "r.png", record=record)
    code, out, _ = inspect(path, "--max-field", "20000")
    assert code == 0 and '"items": [' in out and "more characters not shown]" in out and len(out) < 25_000


def test_total_text_is_capped_too(tmp_path):
    path = tmp_path / "many.png"
    path.write_bytes(png_with([text(f"k{i}", "y" * 1000) for i in range(20)]))
    meta = read_metadata(path, max_text=1000, max_total=5000)
    assert len(meta["text"]) == 5
    assert sum("over 5,000 bytes of text in all" in n for n in meta["notes"]) == 15


def test_truncated_png_still_shows_what_was_read(tmp_path):
    data = png_with([text("parameters", "a cup of tea")])
    path = tmp_path / "cut.png"
    path.write_bytes(data[: len(data) // 2])
    code, out, _ = inspect(path)
    assert code == 0 and "a cup of tea" in out and "truncated file?" in out


# -- the zTXt bomb: inspect and run, in bounded memory -----------------------------------------------


BOMB_PROBE = textwrap.dedent(
    """
    import json, resource, sys
    from backdrop.images import load_image
    from backdrop.metadata import read_metadata
    # the hard cap: decompressing the bomb whole would need 500 MB more than this allows
    vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + 150 * 2**20, resource.RLIM_INFINITY))
    meta = read_metadata(sys.argv[1], max_text=65536)
    loaded = load_image(sys.argv[1])
    print(json.dumps({"notes": meta["notes"], "parameters": meta["parameters"], "comment": len(meta["text"]["Comment"]),
                      "size": loaded.image.size, "load_notes": loaded.info.get("notes")}))
    """
)


def test_ztxt_bomb_read_and_loaded_in_bounded_memory(bomb_png):
    assert bomb_png.stat().st_size < 600_000  # ~500 kB on disk, 500 MB decompressed
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), *sys.path])}
    proc = subprocess.run([sys.executable, "-c", BOMB_PROBE, str(bomb_png)], capture_output=True, text=True,
                          timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["parameters"].startswith("a cat on a mat") and got["comment"] == 65536
    assert f"{BOMB_SIZE:,} bytes decompressed; the first 65,536 read" in got["notes"][0]
    assert got["size"] == [160, 120]
    assert "zTXt chunk 'Comment' left out" in got["load_notes"][0]


def test_inspect_the_bomb(bomb_png):
    code, out, err = inspect(bomb_png)
    assert code == 0, err
    assert "a cat on a mat" in out and f"{BOMB_SIZE:,} bytes decompressed" in out and len(out) < 100_000


@pytest.mark.parametrize("kind", ["zTXt", "iTXt", "iCCP"])
def test_loader_drops_compressed_chunks_pillow_would_refuse(kind, bomb_zlib):
    body = {"zTXt": b"Comment\0\0", "iTXt": b"Comment\0\1\0\0\0", "iCCP": b"icc\0\0"}[kind] + bomb_zlib
    data = png_with([chunk(kind.encode(), body), text("parameters", "kept")])
    with pytest.raises(ValueError):  # what Pillow alone does with it: the whole image refused
        Image.open(io.BytesIO(data)).load()
    loaded = load_bytes(data, name="up.png")
    assert np.array_equal(np.asarray(loaded.image), bad.scene_array())
    assert any(f"{kind} chunk" in n and "left out" in n for n in loaded.info["notes"])
    assert loaded.info["bytes"] == len(data)


def test_loader_keeps_ordinary_text_and_xmp_orientation(tmp_path):
    """Only chunks Pillow would refuse are dropped: an XMP orientation in iTXt still turns the image."""
    xmp = '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:Description tiff:Orientation="6"/></x:xmpmeta>'
    data = png_with([itxt("XML:com.adobe.xmp", xmp), text("Comment", "z" * 1000)])
    loaded = load_bytes(data, name="x.png")
    assert loaded.image.size == (120, 160) and "notes" in loaded.info  # turned upright
    assert not any("left out" in n for n in loaded.info["notes"])


def test_run_takes_an_image_with_a_ztxt_bomb(tmp_path, bomb_png):
    result = CliRunner().invoke(app, ["run", str(bomb_png), "-o", str(tmp_path / "out"), "--preset", "offline",
                                      "--seed", "1"])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "out" / "bomb" / "run.json").read_text())
    assert any("zTXt chunk 'Comment' left out" in n for n in record["input"]["notes"])


def test_png_signature_with_nothing_after_is_an_error(tmp_path):
    path = tmp_path / "sig.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    code, _, err = inspect(path)
    assert code == 1 and "not a readable PNG/JPEG" in err


def test_many_bombs_cost_one_bomb_of_time(tmp_path, bomb_zlib):
    """Past what is shown, decompressed text is only counted, and that for 1 GiB per file in all."""
    path = tmp_path / "bombs.png"
    path.write_bytes(png_with([chunk(b"zTXt", f"C{i}".encode() + b"\0\0" + bomb_zlib) for i in range(6)]))
    meta = read_metadata(path, max_text=100)
    assert len(meta["text"]) == 6 and all(len(v) == 100 for v in meta["text"].values())
    sizes = [n for n in meta["notes"] if "bytes decompressed" in n]
    assert len(sizes) == 6
    assert sum(f"{BOMB_SIZE:,} bytes decompressed" in n for n in sizes) == 2  # 2 x 500 MB counted
    assert sum("more than" in n for n in sizes) == 4
