"""Input handling: every awkward input is processed as a viewer shows it, or refused with one line.

The files come from tests/make_bad_inputs.py. The loader is tested directly (fast, exact), then a
whole batch of bad and odd files goes through the real CLI once, checking that the bad ones are
reported one line each with nothing written for them, and the odd ones come out right.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import make_bad_inputs as bad
from backdrop.errors import InputError
from backdrop.images import collect_inputs, load_bytes, load_image, normalise
from backdrop.outputs import atomic_write_bytes

ROOT = Path(__file__).resolve().parents[1]


# -- refused inputs ----------------------------------------------------------------------------------


def test_missing_file_is_one_line_input_error(tmp_path):
    with pytest.raises(InputError) as err:
        load_image(tmp_path / "nope.png")
    assert "no such file" in str(err.value) and "\n" not in str(err.value)


def test_folder_given_to_load_image(tmp_path):
    with pytest.raises(InputError, match="folder"):
        load_image(tmp_path)


@pytest.mark.parametrize("name", sorted(bad.BAD))
def test_bad_file_is_refused_with_one_line(tmp_path, name):
    path = bad.BAD[name](tmp_path)
    with pytest.raises(InputError) as err:
        load_image(path)
    msg = str(err.value)
    assert "\n" not in msg, msg
    assert str(path) in msg  # the message says which file
    assert len(msg) < 300


EXPECTED_REASON = {
    "zero_byte": "empty",
    "truncated_jpeg": "truncated",
    "truncated_png": "truncated",
    "text_as_png": "not an image",
    "html_as_jpg": "not an image",
    "random_bytes": "not an image",
    "one_pixel": "at least",
    "bomb_png": "over the limit",
    "bomb_png_real": "over the limit",
}


@pytest.mark.parametrize("name", sorted(EXPECTED_REASON))
def test_bad_file_message_says_why(tmp_path, name):
    with pytest.raises(InputError, match=EXPECTED_REASON[name]):
        load_image(bad.BAD[name](tmp_path))


def test_load_bytes_refuses_empty_and_garbage():
    with pytest.raises(InputError, match="empty"):
        load_bytes(b"", name="up.png")
    with pytest.raises(InputError, match="not an image"):
        load_bytes(b"<html></html>", name="up.png")


def test_pixel_limit_is_the_callers(tmp_path):
    path = bad.scene(tmp_path)  # 160 x 120 = 19200 pixels
    assert load_image(path, max_pixels=19200).image.size == (160, 120)
    with pytest.raises(InputError, match="19,200 pixels, over the limit of 19,199"):
        load_image(path, max_pixels=19199)


def test_pillow_bomb_limit_restored_after_load(tmp_path):
    before = Image.MAX_IMAGE_PIXELS
    with pytest.raises(InputError):
        load_image(bad.bomb_png(tmp_path))
    load_image(bad.scene(tmp_path))
    assert Image.MAX_IMAGE_PIXELS == before


BOMB_PROBE = textwrap.dedent(
    """
    import json, resource, sys, time
    sys.path.insert(0, {tests!r})
    import make_bad_inputs as bad
    from backdrop.images import load_image
    from backdrop.errors import InputError
    from pathlib import Path
    folder = Path({folder!r})
    paths = [bad.bomb_png(folder), bad.bomb_png_real(folder)]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # a hard cap: decoding either bomb would need far more than this much extra address space
    vm = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (vm + 150 * 2**20, resource.RLIM_INFINITY))
    out = []
    for p in paths:
        t = time.perf_counter()
        try:
            load_image(p)
            out.append(("loaded", p.stat().st_size, time.perf_counter() - t))
        except InputError as exc:
            out.append((str(exc), p.stat().st_size, time.perf_counter() - t))
        except MemoryError:
            out.append(("MemoryError", p.stat().st_size, time.perf_counter() - t))
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({{"results": out, "rss_growth_kb": rss1 - rss0}}))
    """
)


def test_decompression_bomb_refused_before_decoding(tmp_path):
    """10 gigapixels claimed in ~500 bytes, and a real 81 Mpx PNG of ~10 kB: both refused from the
    header, with no large allocation (run in a child process with a capped address space, which a
    decode would break; how fast it is belongs to benchmarks, not to this test)."""
    code = BOMB_PROBE.format(tests=str(Path(__file__).parent), folder=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    (msg1, size1, _), (msg2, size2, _) = report["results"]
    assert size1 < 2000 and size2 < 50_000  # they really are tiny files
    assert "100000x100000" in msg1 and "over the limit" in msg1
    assert "9000x9000" in msg2 and "over the limit" in msg2
    assert report["rss_growth_kb"] < 30_000  # < 30 MB: nothing near 10 GB or 240 MB was touched


# -- odd but valid inputs ------------------------------------------------------------------------------


def _px(im: Image.Image, x: int, y: int) -> tuple[int, int, int]:
    return im.getpixel((x, y))


def _close(a, b, tol=6) -> bool:
    return all(abs(int(x) - int(y)) <= tol for x, y in zip(a, b))


def test_gray16_scaled_to_8_bit(tmp_path):
    loaded = load_image(bad.gray16(tmp_path))
    im = loaded.image
    assert im.mode == "RGB" and im.size == (160, 120)
    assert _px(im, 5, 5) == (0, 0, 0)
    assert _px(im, 150, 5) == (255, 255, 255)
    assert _px(im, 65, 5) == (128, 128, 128)  # 32768 / 65535 * 255 = 127.5 -> 128
    assert loaded.info["mode"].startswith("I")
    assert any("16-bit" in n for n in loaded.info["notes"])


def test_gray8_kept_exactly(tmp_path):
    im = load_image(bad.gray8(tmp_path)).image
    assert im.mode == "RGB"
    assert _px(im, 5, 5) == (77, 77, 77) and _px(im, 150, 5) == (200, 200, 200)


@pytest.mark.parametrize("builder", [bad.cmyk_jpeg, bad.cmyk_tiff], ids=["jpeg", "tiff"])
def test_cmyk_converted(tmp_path, builder):
    loaded = load_image(builder(tmp_path))
    assert loaded.info["mode"] == "CMYK" and loaded.image.mode == "RGB"
    assert _close(_px(loaded.image, 5, 5), (0, 255, 255))  # cyan ink
    assert _close(_px(loaded.image, 150, 5), (255, 0, 255))  # magenta ink


def test_palette_with_transparency_flattened_on_white(tmp_path):
    im = load_image(bad.palette_transparent(tmp_path)).image
    assert im.mode == "RGB"
    assert _px(im, 5, 5) == (255, 255, 255) and _px(im, 150, 5) == (0, 0, 255)


def test_rgba_flattened_on_white(tmp_path):
    loaded = load_image(bad.rgba(tmp_path))
    assert loaded.image.mode == "RGB"
    assert _px(loaded.image, 5, 5) == (255, 255, 255) and _px(loaded.image, 150, 5) == (0, 200, 0)
    assert any("transparency" in n for n in loaded.info["notes"])


def test_float_tiff_scaled_by_its_range(tmp_path):
    loaded = load_image(bad.float_tiff(tmp_path))
    im = loaded.image
    assert loaded.info["mode"] == "F" and im.mode == "RGB"
    assert _px(im, 0, 0) == (0, 0, 0) and _px(im, 159, 0) == (255, 255, 255)
    row = np.asarray(im)[0, :, 0].astype(int)
    assert np.all(np.diff(row) >= 0) and len(set(row.tolist())) > 100  # a ramp, not posterised


def test_float_with_nan_and_inf_does_not_crash():
    arr = np.zeros((16, 16), np.float32)
    arr[0, 0], arr[0, 1], arr[0, 2], arr[1, :] = np.nan, np.inf, -np.inf, 0.5
    im = normalise(Image.fromarray(arr, "F"))
    assert im.mode == "RGB" and im.getpixel((5, 1)) == (128, 128, 128)


@pytest.mark.parametrize("builder", [bad.animated_gif, bad.animated_png], ids=["gif", "apng"])
def test_animated_uses_first_frame(tmp_path, builder):
    loaded = load_image(builder(tmp_path))
    assert loaded.info["frames"] == 3
    arr = np.asarray(loaded.image)
    assert loaded.image.mode == "RGB" and loaded.image.size == (160, 120)
    assert (arr == (255, 0, 0)).all()  # the red first frame, everywhere
    assert any("first frame" in n for n in loaded.info["notes"])


# corner of the *displayed* image where the stored top-left (red) corner must land
ROTATIONS = {3: "br", 5: "tl", 6: "tr", 7: "br", 8: "bl"}


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
@pytest.mark.parametrize("orientation", [6, 8, 3])
def test_exif_rotated_processed_upright(tmp_path, orientation, fmt):
    loaded = load_image(bad.exif_rotated(tmp_path, orientation, fmt))
    im = loaded.image
    w, h = im.size
    assert (w, h) == ((120, 160) if orientation in (5, 6, 7, 8) else (160, 120))
    corners = {"tl": (2, 2), "tr": (w - 3, 2), "bl": (2, h - 3), "br": (w - 3, h - 3)}
    for name, xy in corners.items():
        want = (255, 0, 0) if name == ROTATIONS[orientation] else (128, 128, 128)
        assert _close(_px(im, *xy), want), (name, _px(im, *xy))
    assert loaded.info["exif_orientation"] == orientation
    assert loaded.info["size"] == [160, 120] and loaded.info["upright_size"] == [w, h]


def test_panorama_loaded_whole(tmp_path):
    loaded = load_image(bad.panorama(tmp_path))
    assert loaded.image.size == (6000, 300) and loaded.image.mode == "RGB"
    assert np.array_equal(np.asarray(loaded.image), bad.scene_array(6000, 300))


def test_rgb_input_is_untouched(tmp_path):
    path = bad.scene(tmp_path)
    assert np.array_equal(np.asarray(load_image(path).image), bad.scene_array())


@pytest.mark.parametrize("mode", ["1", "L", "LA", "La", "P", "PA", "I", "I;16", "I;16B", "F", "RGBA", "RGBa",
                                  "CMYK", "YCbCr", "LAB", "HSV"])
def test_normalise_every_pillow_mode(mode):
    im = normalise(Image.new(mode, (9, 9)))
    assert im.mode == "RGB" and im.size == (9, 9)


# -- collecting inputs -----------------------------------------------------------------------------------


def test_collect_missing_path(tmp_path):
    with pytest.raises(InputError, match="no such file or folder"):
        collect_inputs([tmp_path / "missing"])


def test_collect_folder_without_images(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    (tmp_path / "sub").mkdir()
    with pytest.raises(InputError, match="no images") as err:
        collect_inputs([tmp_path])
    assert "\n" not in str(err.value)


def test_collect_folder_sorted_recursive_skips_hidden(tmp_path):
    for rel in ["b.png", "a.JPG", "sub/c.tif", ".hidden/d.png", ".e.png", "notes.txt"]:
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    top = tmp_path.name
    got = collect_inputs([tmp_path])
    assert [p.relative_to(tmp_path).as_posix() for p, _ in got] == ["a.JPG", "b.png", "sub/c.tif"]
    # names relative to the folder's parent: the folder given is part of every name
    assert [rel for _, rel in got] == [f"{top}/a.JPG", f"{top}/b.png", f"{top}/sub/c.tif"]


def test_collect_explicit_files_by_name_and_once(tmp_path):
    a, b = tmp_path / "z.png", tmp_path / "a.png"
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    (tmp_path / "link.png").symlink_to(a)
    got, notes = collect_inputs([a, b, a, tmp_path / "link.png"], with_notes=True)
    assert got == [(b, "a.png"), (a, "z.png")]  # sorted by name; the same file (or a link to it) once
    assert len(notes) == 2 and all("same file" in n for n in notes)


def test_collect_follows_symlinked_folders_once_and_says_so(tmp_path):
    real = tmp_path / "data" / "real"
    real.mkdir(parents=True)
    (real / "x.png").write_bytes(b"x")
    (tmp_path / "data" / "alias").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(tmp_path / "data", target_is_directory=True)  # a cycle
    got, notes = collect_inputs([tmp_path / "data"], with_notes=True)
    assert [rel for _, rel in got] == ["data/real/x.png"]
    assert any("alias" in n and "already searched" in n for n in notes)
    assert any("loop" in n and "already searched" in n for n in notes)
    # a link to a folder that is not otherwise in the tree is followed, and said so
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "y.png").write_bytes(b"y")
    (tmp_path / "data" / "more").symlink_to(other, target_is_directory=True)
    got, notes = collect_inputs([tmp_path / "data"], with_notes=True)
    assert [rel for _, rel in got] == ["data/more/y.png", "data/real/x.png"]
    assert any("more" in n and "symlinked folder followed" in n for n in notes)


def test_collect_never_takes_backdrop_outputs(tmp_path):
    """Earlier outputs, anywhere in the tree (not only the current --out), are never inputs."""
    from backdrop.outputs import OutputSet

    bad.scene(tmp_path, "a.png")
    with OutputSet.open(tmp_path / "old_out", "run", seed=1):
        pass
    (tmp_path / "old_out" / "a").mkdir()
    bad.scene(tmp_path / "old_out" / "a", "composite_1.png")
    assert [rel for _, rel in collect_inputs([tmp_path])] == [f"{tmp_path.name}/a.png"]
    with pytest.raises(InputError, match="backdrop output folder"):
        collect_inputs([tmp_path / "old_out"])


# -- atomic output ----------------------------------------------------------------------------------------


def test_atomic_write_bytes_no_temp_left(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"abc")
    assert target.read_bytes() == b"abc"
    assert [p.name for p in tmp_path.iterdir()] == ["f.bin"]


# -- the whole flow through the CLI: one batch of bad + odd files -----------------------------------------


def _run_cli(args, cwd):
    exe = ROOT / ".venv" / "bin" / "backdrop"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "backdrop.cli"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=600, cwd=cwd)


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    """Every bad file and every odd file (panorama aside: its own test) in one folder, run once."""
    folder = tmp_path_factory.mktemp("inputs")
    bad_paths = {name: build(folder) for name, build in bad.BAD.items()}
    odd_paths = {name: build(folder) for name, build in bad.ODD.items() if name != "panorama"}
    out = tmp_path_factory.mktemp("out") / "o"
    proc = _run_cli(["run", folder, "-o", out, "--preset", "offline", "--generator", "texture", "-n", "1",
                     "--seed", "3", "-q"], cwd=folder.parent)
    return bad_paths, odd_paths, out / folder.name, proc  # names keep the folder given


def test_batch_bad_files_one_line_each_and_no_output(batch):
    bad_paths, _, out, proc = batch
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    err_lines = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    for name, path in bad_paths.items():
        mine = [line for line in err_lines if path.name in line]
        assert len(mine) == 1, (name, proc.stderr)
        assert not (out / path.stem).exists(), name  # never a partial output
    assert len(err_lines) == len(bad_paths), proc.stderr
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert list((out.parent / ".backdrop" / "tmp").iterdir()) == []  # no temporary debris


def test_batch_odd_files_all_processed(batch):
    _, odd_paths, out, proc = batch
    produced = {p.name for p in out.iterdir()}
    # inputs that share a stem in their folder (anim.gif + anim.png, cmyk.jpg + cmyk.tif): both names
    # carry their suffix, whatever else the run holds
    expected_dirs = {p.stem for p in odd_paths.values() if p.stem not in ("anim", "cmyk")} | {
        "anim_gif", "anim_png", "cmyk_jpg", "cmyk_tif"}
    assert expected_dirs <= produced, (produced, proc.stderr)
    for d in expected_dirs:
        files = {p.name for p in (out / d).iterdir()}
        assert {"mask.png", "bg_only.png", "background_1.png", "composite_1.png", "run.json"} <= files


@pytest.mark.parametrize("orientation,corner", [(6, "tr"), (8, "bl")])
def test_batch_exif_rotated_output_upright(batch, orientation, corner):
    _, _, out, _ = batch
    comp = Image.open(out / f"rot{orientation}" / "composite_1.png")
    mask = Image.open(out / f"rot{orientation}" / "mask.png")
    assert comp.size == (120, 160) and mask.size == (120, 160)
    assert comp.getexif().get(0x0112) in (None, 1)  # no orientation left to apply twice
    run = json.loads((out / f"rot{orientation}" / "run.json").read_text())
    assert run["input"]["exif_orientation"] == orientation


def test_batch_gray16_output_is_rgb_and_scaled(batch):
    _, _, out, _ = batch
    comp = Image.open(out / "gray16" / "composite_1.png")
    mask = np.asarray(Image.open(out / "gray16" / "mask.png"))
    assert comp.mode == "RGB" and comp.size == (160, 120)
    want = np.asarray(load_image(batch[1]["gray16"]).image)
    fg = mask == 255
    assert np.array_equal(np.asarray(comp)[fg], want[fg])


def test_panorama_processed(tmp_path):
    path = bad.panorama(tmp_path, 6000, 300)
    out = tmp_path / "out"
    proc = _run_cli(["run", path, "-o", out, "--preset", "offline", "-n", "1", "--seed", "1", "-q"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    comp = np.asarray(Image.open(out / "panorama" / "composite_1.png"))
    mask = np.asarray(Image.open(out / "panorama" / "mask.png"))
    assert comp.shape == (300, 6000, 3) and mask.shape == (300, 6000)
    src = bad.scene_array(6000, 300)
    fg = mask == 255
    assert fg.any() and np.array_equal(comp[fg], src[fg])


def test_atomic_outputs_are_not_private(tmp_path):
    """mkdtemp/mkstemp create 0700/0600; the results must be ordinary (umask) folders and files."""
    umask = os.umask(0o022)
    os.umask(umask)
    from backdrop.outputs import OutputSet

    atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert ((tmp_path / "a.bin").stat().st_mode & 0o777) == (0o666 & ~umask)
    with OutputSet.open(tmp_path / "out", "run", seed=1) as out:
        with out.item("img", "fp") as w:
            w.own_dir("img")
            w.write_part("v1", {"img/b.bin": b"y"})
    assert ((tmp_path / "out" / "img").stat().st_mode & 0o777) == (0o777 & ~umask)
    assert ((tmp_path / "out" / "img" / "b.bin").stat().st_mode & 0o777) == (0o666 & ~umask)


def test_normalise_applies_exif_orientation(tmp_path):
    """The API path (a PIL image handed to the pipeline) is upright too, like load_image."""
    im = normalise(Image.open(bad.exif_rotated(tmp_path, 6, "PNG")))
    assert im.size == (120, 160) and _px(im, 117, 2) == (255, 0, 0)


def test_normalise_lazy_truncated_image_is_input_error(tmp_path):
    with pytest.raises(InputError, match="truncated"):
        normalise(Image.open(bad.truncated_png(tmp_path)))


def test_collect_excludes_the_output_folder(tmp_path):
    bad.scene(tmp_path, "a.png")
    (tmp_path / "out" / "a").mkdir(parents=True)
    bad.scene(tmp_path / "out" / "a", "composite_1.png")
    assert [p for p, _ in collect_inputs([tmp_path], exclude=[tmp_path / "out"])] == [tmp_path / "a.png"]
    assert len(collect_inputs([tmp_path])) == 2
    # a file named explicitly is kept even there
    explicit = tmp_path / "out" / "a" / "composite_1.png"
    assert [p for p, _ in collect_inputs([explicit], exclude=[tmp_path / "out"])] == [explicit]


# -- extreme aspect ratios (issue 9, case 11) ------------------------------------------------------------


@pytest.mark.parametrize("size", [(10, 10000), (10000, 10), (8, 3000)])
def test_extreme_aspect_processed_end_to_end(tmp_path, size):
    """A valid 10x10000 image failed: every stage's working copy had its long side cut to 512 and
    the short side rounded to 1 px ("image too small to model (1x512)"), so the whole image became
    foreground and texture had nothing to sample. Now the short side keeps at least 64 px."""
    w, h = size
    path = bad.scene(tmp_path, "thin.png", w, h)
    out = tmp_path / "out"
    proc = _run_cli(["run", path, "-o", out, "--preset", "offline", "-n", "1", "--seed", "1"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "too small to model" not in proc.stderr and "1x512" not in proc.stderr
    mask = np.asarray(Image.open(out / "thin" / "mask.png")) == 255
    comp = np.asarray(Image.open(out / "thin" / "composite_1.png"))
    src = bad.scene_array(w, h)
    obj = (src == (220, 40, 50)).all(-1)
    assert comp.shape == (h, w, 3)
    assert 0 < mask.mean() < 0.5  # a real mask, not the whole image
    assert (mask & obj).sum() >= 0.8 * obj.sum()  # most of the object found
    assert np.array_equal(comp[mask], src[mask])
