"""The studio's non-Streamlit parts: launch command, names, saving, zips, model resolution."""

from __future__ import annotations

import io
import sys
import zipfile
from pathlib import Path

import numpy as np

import pytest
from PIL import Image

from backdrop.errors import ConfigError
from backdrop.metadata import read_metadata
from backdrop.studio import APP, command, is_loopback
from backdrop.studio import core


def test_launch_command_binds_localhost_headless():
    cmd = command(8765)
    assert cmd[:5] == [sys.executable, "-m", "streamlit", "run", str(APP)]
    opts = dict(zip(cmd[5::2], cmd[6::2]))
    assert opts["--server.port"] == "8765"
    assert opts["--server.address"] == "127.0.0.1"
    assert opts["--server.headless"] == "true"
    assert opts["--browser.gatherUsageStats"] == "false"
    assert opts["--server.maxUploadSize"] == str(core.MAX_UPLOAD_MB)
    assert dict(zip(command(1, "0.0.0.0", open_browser=True)[5::2], command(1, "0.0.0.0", True)[6::2]))[
        "--server.headless"] == "false"
    with pytest.raises(ConfigError):
        command(70000)
    assert APP.is_file()
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


@pytest.mark.parametrize(
    "raw, stem",
    [("../../etc/passwd", "passwd"), ("C:\\Users\\me\\scan 1.tif", "scan_1"), ("", "image"), (".hidden.png", "hidden"),
     ("ünïcode名.jpg", "n_code"), ("a" * 100 + ".png", "a" * 40)],
)
def test_download_names_are_sanitised(raw, stem):
    assert core.stem_of(raw) == stem
    assert "/" not in core.safe_name(raw) and "\\" not in core.safe_name(raw)


def test_save_generated_writes_both_formats_atomically(tmp_path):
    img = Image.new("RGB", (64, 48), (10, 200, 30))
    kw = dict(seed=7, kind="txt2img-1", model="my-model", parameters="a lawn\nSeed: 7", record={"mode": "t"},
              source_type="trainedAlgorithmicMedia")
    a = core.save_generated(img, tmp_path / "out", watermark=True, **kw)
    b = core.save_generated(img, tmp_path / "out", **kw)
    assert a.png_path != b.png_path  # same millisecond or not, never overwritten
    assert sorted(p.suffix for p in (tmp_path / "out").iterdir()) == [".jpg", ".jpg", ".png", ".png"]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left
    assert a.png_path.name.split("_")[1:] == ["7", "txt2img-1.png"]
    meta = read_metadata(a.jpeg_path)
    assert meta["text"]["AI_Watermark"] == "Generated using my-model (AI Origin Watermark)"
    assert meta["backdrop"]["mode"] == "t" and meta["backdrop"]["invisible_watermark"] is False
    assert "256x256" in a.info["watermark"]  # too small for the invisible mark: said, not failed


def test_save_generated_never_replaces_a_file(tmp_path):
    """Another session (or the user) writing the same name at the same moment: both kept."""
    import datetime as dt
    from concurrent.futures import ThreadPoolExecutor

    when = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.timezone.utc)
    stem = f"{core.timestamp(when)}_7_txt2img-1"
    (tmp_path / f"{stem}.jpg").write_bytes(b"the user's own file")  # only the JPEG name is taken
    img = Image.new("RGB", (32, 32), (1, 2, 3))
    kw = dict(seed=7, kind="txt2img-1", model="m", parameters="p", record={}, source_type="trainedAlgorithmicMedia",
              when=when)
    with ThreadPoolExecutor(4) as pool:
        saved = list(pool.map(lambda _: core.save_generated(img, tmp_path, **kw), range(8)))
    assert (tmp_path / f"{stem}.jpg").read_bytes() == b"the user's own file"
    assert not (tmp_path / f"{stem}.png").exists()  # a pair moves on together
    assert len({s.png_path for s in saved}) == 8 and all(s.png_path.stem == s.jpeg_path.stem for s in saved)
    assert len(list(tmp_path.glob("*.png"))) == 8 and not list(tmp_path.glob(".*"))


def test_zip_holds_every_image_once(tmp_path):
    img = Image.new("RGB", (16, 16))
    kw = dict(seed=1, kind="composite-1", model="m", parameters="p", record={}, source_type="compositeSynthetic",
              download_stem="same")
    saved = [core.save_generated(img, tmp_path, **kw), core.save_generated(img, tmp_path, **kw)]
    with zipfile.ZipFile(io.BytesIO(core.zip_of(saved))) as zf:
        assert sorted(zf.namelist()) == ["same-2.jpg", "same-2.png", "same.jpg", "same.png"]


def test_model_resolution_and_env(monkeypatch, tmp_path):
    monkeypatch.setenv("BACKDROP_STUDIO_MODEL", str(tmp_path / "sd"))
    assert core.default_model() == str(tmp_path / "sd")
    monkeypatch.delenv("BACKDROP_STUDIO_MODEL")
    assert core.default_model() == core.DEFAULT_MODEL
    # the default id resolves to the store's folder once `backdrop models pull sd15` has filled it
    from backdrop.models import models_dir

    assert core.resolve_model(core.DEFAULT_MODEL) == core.DEFAULT_MODEL
    (models_dir() / "stable-diffusion-v1-5").mkdir(parents=True)
    assert core.resolve_model(core.DEFAULT_MODEL) == str(models_dir() / "stable-diffusion-v1-5")
    assert core.resolve_model("sd15") == str(models_dir() / "stable-diffusion-v1-5")
    monkeypatch.setenv("BACKDROP_OUTPUT_DIR", str(tmp_path / "o"))
    assert core.default_output_dir() == str(tmp_path / "o")


def test_watermarked_save_keeps_the_mark_in_png_and_jpeg(tmp_path):
    """The studio writes marked JPEGs without chroma subsampling, so the mark survives there too."""
    from backdrop.watermark import detect

    rng = np.random.default_rng(3)
    img = Image.fromarray(rng.integers(60, 200, (320, 320, 3), dtype=np.uint8), "RGB")
    saved = core.save_generated(img, tmp_path, seed=1, kind="txt2img-1", model="m", parameters="p",
                                record={}, source_type="trainedAlgorithmicMedia", watermark=True)
    assert saved.watermarked
    assert detect(saved.png_path) == core.WATERMARK_TEXT
    assert detect(saved.jpeg_path) == core.WATERMARK_TEXT
    assert read_metadata(saved.jpeg_path)["backdrop"]["invisible_watermark"] is True


def test_backdrop_studio_command_serves_on_localhost(tmp_path):
    """`backdrop studio --port N` (the README's command) starts the app, bound to 127.0.0.1 only."""
    import os
    import signal
    import socket
    import subprocess
    import time
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    exe = Path(sys.executable).with_name("backdrop")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from backdrop.cli import main; main()"]
    log = tmp_path / "studio.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([*cmd, "studio", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT,
                                cwd=tmp_path, env={**os.environ, "BACKDROP_OUTPUT_DIR": str(tmp_path / "gen")},
                                start_new_session=True)
    try:
        body, deadline = None, time.monotonic() + 90
        while body is None and time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.3)
        assert body == "ok", log.read_text(errors="replace")[-2000:]
        try:
            table = subprocess.run(["ss", "-ltnH", f"sport = :{port}"], capture_output=True, text=True).stdout
        except FileNotFoundError:  # no ss here: the health check above is what we can say
            table = ""
        local = [line.split()[3] for line in table.splitlines() if line.strip()]
        if local:  # every listener on that port is on loopback
            assert all(addr.startswith(("127.0.0.1:", "[::1]:")) for addr in local), local
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
