"""The studio in a real headless Chromium (Playwright): both pages, downloads read back.

The app is served exactly as ``backdrop studio`` serves it (backdrop.studio.command) on a free
localhost port, with the text-to-image model pointed at a tiny random Stable Diffusion folder
through BACKDROP_STUDIO_MODEL. Screenshots go to test-artifacts/ (gitignored).
"""

from __future__ import annotations

import io
import os
import re
import socket
import sys
import subprocess
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "datasets"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
GENERATE_TIMEOUT_MS = 150_000  # the first text-to-image run imports torch and diffusers in the server

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)"),
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"studio exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise AssertionError(f"studio did not answer in {timeout:.0f} s:\n{log.read_text(errors='replace')[-3000:]}")


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    from tiny_models import make_tiny_sd

    from backdrop.studio import command

    root = tmp_path_factory.mktemp("studio")
    model = make_tiny_sd(root / "tiny-sd")
    out = root / "generated"
    port = free_port()
    env = {**os.environ, "BACKDROP_STUDIO_MODEL": str(model), "BACKDROP_OUTPUT_DIR": str(out),
           "BACKDROP_HOME": str(root / "home"), "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
           "BACKDROP_STUDIO_ROOTS": str(EXAMPLES), "BACKDROP_STUDIO_QUEUE": str(root / "queue")}
    log = root / "server.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(command(port, "127.0.0.1"), cwd=root, env=env, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, log)
        yield {"url": url, "out": out, "model": model, "root": root, "log": log, "env": env}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def page(studio, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        ctx = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")),
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS, accept_downloads=True,
            viewport={"width": 1400, "height": 1900},
        )
        try:
            pg = ctx.new_page()
            pg.set_default_timeout(30_000)
            pg.goto(studio["url"])
            pg.get_by_role("heading", name="Text to image", exact=True, level=2).wait_for()
            yield pg
        finally:
            ctx.close()


def fill(page, label: str, value: str) -> None:
    box = page.get_by_label(label, exact=True)
    box.fill(value)
    box.press("Tab")  # Streamlit takes the value on blur
    page.wait_for_timeout(400)


_IMAGE_LOADED = (
    "() => [...document.querySelectorAll('[data-testid=\"stImage\"] img')]"
    ".some(i => i.complete && i.naturalWidth > 0)"
)


def image_loaded(page, timeout_ms: int = 15_000) -> bool:
    """True once an image on the page has loaded and has pixels (waits for it; False on timeout)."""
    try:
        page.wait_for_function(_IMAGE_LOADED, timeout=timeout_ms)
    except Exception:  # playwright's TimeoutError: the assertion that uses this reports it
        return False
    return True


def download(page, locator, dest: Path) -> Path:
    with page.expect_download() as info:
        locator.click()
    info.value.save_as(dest)
    return dest


def test_text_to_image_in_chromium(studio, page, tmp_path):
    from backdrop.metadata import read_metadata

    t0 = time.perf_counter()
    # the model field starts at BACKDROP_STUDIO_MODEL, so no warning about a missing model
    from playwright.sync_api import expect

    # waits for Streamlit to fill the sidebar (it renders after the page heading); fails if the value differs
    expect(page.get_by_label("Model (Hub id, store name or local folder)")).to_have_value(str(studio["model"]),
                                                                                         timeout=15_000)
    fill(page, "Prompt", "a photo of the sea")
    fill(page, "Steps", "2")
    fill(page, "Width", "256")
    fill(page, "Height", "256")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_text(re.compile(r"Seed used: \d+")).wait_for(timeout=GENERATE_TIMEOUT_MS)
    seed = int(re.search(r"Seed used: (\d+)", page.get_by_text(re.compile(r"Seed used: \d+")).inner_text()).group(1))
    assert image_loaded(page)
    assert not page.locator('[data-testid="stException"]').count()

    png = download(page, page.locator('[data-testid="stDownloadButton"] button').nth(0), tmp_path / "t2i.png")
    jpg = download(page, page.locator('[data-testid="stDownloadButton"] button').nth(1), tmp_path / "t2i.jpg")
    for f, fmt in ((png, "PNG"), (jpg, "JPEG")):
        meta = read_metadata(f)
        assert meta["format"] == fmt and meta["size"] == [256, 256]
        assert meta["digital_source_type"] == "trainedAlgorithmicMedia"
        assert meta["parsed"]["prompt"] == "a photo of the sea"
        assert meta["parsed"]["fields"]["Seed"] == str(seed) and meta["parsed"]["fields"]["Steps"] == "2"
        assert meta["text"]["AI_Watermark"] == f"Generated using {studio['model']} (AI Origin Watermark)"
    # the download is the file written to the output folder
    written = [p for p in studio["out"].glob(f"*_{seed}_txt2img-1.png")]
    assert len(written) == 1 and written[0].read_bytes() == png.read_bytes()
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "studio_text_to_image.png"), full_page=True)
    print(f"text to image in chromium: {time.perf_counter() - t0:.1f} s")


def test_new_background_in_chromium(studio, page, tmp_path):
    from backdrop.metadata import read_metadata

    t0 = time.perf_counter()
    page.locator('[data-testid="stSidebar"]').get_by_text("New background", exact=True).click()
    page.get_by_role("heading", name="New background", exact=True, level=2).wait_for()

    img = Image.new("RGB", (320, 240), (60, 120, 60))
    ImageDraw.Draw(img).ellipse((110, 70, 210, 170), fill=(220, 40, 40))
    noise = np.random.default_rng(0).integers(-12, 13, (240, 320, 3))
    img = Image.fromarray(np.clip(np.asarray(img, int) + noise, 0, 255).astype(np.uint8))
    src = tmp_path / "my sample (1).png"
    img.save(src)
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(str(src))
    analyse = page.get_by_role("button", name=re.compile("Analyse"))
    analyse.wait_for()
    analyse.click()
    page.get_by_text("Caption:").wait_for(timeout=60_000)
    prompt = page.get_by_label("Prompt (edit before generating)")
    assert prompt.input_value().strip()
    edited = prompt.input_value() + ", mossy forest floor"
    prompt.fill(edited)
    prompt.press("Tab")
    page.wait_for_timeout(400)
    page.get_by_role("button", name="2. Generate backgrounds").click()
    page.get_by_text(re.compile(r"Seed used: \d+")).wait_for(timeout=60_000)
    assert image_loaded(page)
    assert not page.locator('[data-testid="stException"]').count()

    zip_path = download(page, page.get_by_role("button", name=re.compile("Download all")), tmp_path / "all.zip")
    with zipfile.ZipFile(zip_path) as zf:
        names = sorted(zf.namelist())
        assert len(names) == 8 and all(n.startswith("my_sample_1_") for n in names)
        comp_png = next(n for n in names if n.endswith("_composite.png"))
        meta = read_metadata(zf.read(comp_png))
    assert meta["digital_source_type"] == "compositeSynthetic"
    # the weight-free texture generator reads no prompt: none is written as if it had made the image;
    # the refined one stays in the record
    assert meta["parsed"]["prompt"] == "" and meta["backdrop"]["refined_prompt"]["positive"]
    assert meta["text"]["AI_Watermark"].startswith("Generated using ")
    assert meta["backdrop"]["mode"] == "new-background"

    first = page.locator('[data-testid="stDownloadButton"] button').nth(1)  # after "Download all": composite 1 PNG
    png = download(page, first, tmp_path / "composite.png")
    got = read_metadata(png)
    assert got["format"] == "PNG" and got["backdrop"]["file"].startswith("composite-")
    assert got["parsed"]["prompt"] == ""
    comp = np.asarray(Image.open(io.BytesIO(png.read_bytes())))
    assert np.array_equal(comp[120, 160], np.asarray(img)[120, 160])  # the disc is kept as it was

    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "studio_new_background.png"), full_page=True)
    print(f"new background in chromium: {time.perf_counter() - t0:.1f} s")


def test_pages_by_url_with_their_headings_and_the_back_button(studio, page):
    """Each page at its own address, with a heading naming it; a deep link fills the data-sets
    page; the browser's back button returns to the page before."""
    from playwright.sync_api import expect

    for path, title in (("/text-to-image", "Text to image"), ("/new-background", "New background"),
                        ("/jobs", "Jobs"), ("/data-sets", "Data sets")):
        page.goto(studio["url"] + path)
        page.get_by_role("heading", name=title, exact=True, level=2).wait_for(timeout=60_000)
        expect(page).to_have_title(title)  # the browser tab names the page too
        assert not page.locator('[data-testid="stException"]').count(), path
    page.goto(f"{studio['url']}/data-sets?set={EXAMPLES / 'yolo-cells'}&variants=2")
    page.get_by_role("heading", name="Data sets", exact=True, level=2).wait_for()
    page.get_by_text("Found: YOLO data set").wait_for(timeout=60_000)
    expect(page.get_by_label("Variants per image")).to_have_value("2")
    assert image_loaded(page)  # the sample images, labels drawn
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "studio_data_sets.png"), full_page=True)
    page.locator('[data-testid="stSidebarNav"]').get_by_text("Jobs", exact=True).click()
    page.get_by_role("heading", name="Jobs", exact=True, level=2).wait_for()
    assert page.url.split("?")[0].endswith("/jobs")
    page.go_back()
    page.get_by_role("heading", name="Data sets", exact=True, level=2).wait_for()
    assert "/data-sets" in page.url


@pytest.fixture(scope="module")
def serve(studio):
    """`backdrop serve` on the studio's queue (its workers run the jobs of both)."""
    pytest.importorskip("backdrop.service")
    pytest.importorskip("fastapi")
    port = free_port()
    log = studio["root"] / "serve.log"
    exe = [sys.executable, "-c", "from backdrop.cli import main; main()"]
    with open(log, "wb") as fh:
        proc = subprocess.Popen([*exe, "serve", "--root", str(studio["root"] / "queue"), "--port", str(port),
                                 "--no-token", "--allow-root", str(EXAMPLES), "--workers", "1"],
                                env=studio["env"], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise AssertionError(log.read_text(errors="replace")[-3000:])
            try:
                with urllib.request.urlopen(f"{url}/v1/health", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(log.read_text(errors="replace")[-3000:]) from None
                time.sleep(0.3)
        yield url
    finally:
        os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()


def api(url: str, path: str, body: dict | None = None) -> dict:
    import json

    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="GET" if body is None else "POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read())


def test_data_set_job_from_the_page_runs_on_the_service_queue_and_back(studio, serve, page):
    """A job submitted on /data-sets is one of `GET /v1/jobs` of the `backdrop serve` sharing the
    queue, runs to done there, and its contact sheet shows in the page with labels drawn; a job
    posted to the service shows on /jobs."""
    page.goto(f"{studio['url']}/data-sets?set={EXAMPLES / 'yolo-cells'}&variants=1&generator=texture&seed=4")
    page.get_by_text("Found: YOLO data set").wait_for(timeout=60_000)
    page.get_by_role("button", name="Submit as a job").click()
    page.get_by_role("heading", name=re.compile(r"^Job ")).wait_for(timeout=30_000)
    job_id = page.get_by_role("heading", name=re.compile(r"^Job ")).inner_text().split()[-1]
    assert f"job={job_id}" in page.url
    ids = [j["id"] for j in api(serve, "/v1/jobs")["jobs"]]
    assert job_id in ids
    page.get_by_role("heading", name="Contact sheet").wait_for(timeout=180_000)
    assert api(serve, f"/v1/jobs/{job_id}")["state"] == "done"
    frame = page.frame_locator("iframe").first
    frame.locator("svg rect").first.wait_for(timeout=30_000)
    assert frame.locator("svg rect").count() >= 10 and frame.locator(".row").count() == 10
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "studio_data_set_job.png"), full_page=True)
    # and the other way: a job posted to the service shows on the studio's jobs page
    posted = api(serve, "/v1/jobs", {"command": "augment", "source": str(EXAMPLES / "coco-cells"),
                                      "variants": 1, "generator": "texture"})
    page.goto(f"{studio['url']}/jobs")
    page.get_by_role("heading", name="Jobs", exact=True, level=2).wait_for()
    page.get_by_text(posted["id"]).first.wait_for(timeout=30_000)
    page.get_by_text(job_id).first.wait_for(timeout=30_000)  # the list redraws every 2 s: wait, not count
    page.screenshot(path=str(ARTIFACTS / "studio_jobs.png"), full_page=True)
