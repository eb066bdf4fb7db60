"""The studio's pages by URL (st.navigation), driven by streamlit.testing (AppTest): each page
has its own heading, deep links fill the page's settings and the page writes them back."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

from backdrop.studio import APP  # noqa: E402

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "datasets"
TIMEOUT = 120
PAGES = {"views/text_to_image.py": "Text to image", "views/new_background.py": "New background",
         "views/data_sets.py": "Data sets", "views/jobs.py": "Jobs"}


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDROP_STUDIO_ROOTS", str(EXAMPLES))
    monkeypatch.setenv("BACKDROP_STUDIO_QUEUE", str(tmp_path / "queue"))
    monkeypatch.setenv("BACKDROP_OUTPUT_DIR", str(tmp_path / "generated"))
    return tmp_path


def app(**query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT)
    at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


def headers(at: AppTest) -> list[str]:
    return [h.value for h in at.header]


def test_every_page_has_its_own_heading(env):
    at = app()
    assert headers(at) == ["Text to image"]  # the default page
    for script, title in PAGES.items():
        at.switch_page(script).run()
        assert not at.exception, (script, at.exception)
        assert headers(at) == [title]


def test_text_to_image_settings_come_from_the_link_and_go_back_into_it(env):
    at = app(prompt="a lighthouse at dusk", steps="7", width="320", style="no-such-style")
    assert at.text_area(key="t2i_prompt").value == "a lighthouse at dusk"
    assert at.number_input(key="t2i_steps").value == 7 and at.number_input(key="t2i_width").value == 320
    assert at.selectbox(key="t2i_style").value == "none"  # a style this machine lacks falls back
    at.number_input(key="t2i_height").set_value(256).run()
    assert at.query_params["height"] == "256" and at.query_params["prompt"] == "a lighthouse at dusk"
    assert "style" not in at.query_params  # defaults are left out of the link


def test_data_sets_page_reads_the_linked_set(env):
    at = app()
    at.switch_page("views/data_sets.py")
    at.query_params.update({"set": str(EXAMPLES / "yolo-cells"), "variants": "2", "generator": "texture"})
    at.run()
    assert not at.exception, at.exception
    assert [m.value for m in at.metric] == ["yolo", "10", "2", "2"]
    assert at.number_input(key="ds_variants").value == 2 and at.selectbox(key="ds_generator").value == "texture"
    assert at.multiselect(key="ds_splits").value == ["train"]
    assert len(at.get("image")) == 6  # sample images with their labels drawn
    # the list offers the example sets, not the folder that holds them
    assert at.selectbox(key="ds_pick").options == ["(choose one)", "datasets/coco-cells", "datasets/masks-cells",
                                                   "datasets/yolo-cells"]
    assert at.selectbox(key="ds_pick").value == str(EXAMPLES / "yolo-cells")  # the linked one is chosen


def test_data_sets_page_refuses_a_folder_outside_the_allowed_ones(env, tmp_path):
    at = app()
    at.switch_page("views/data_sets.py").run()
    at.text_input(key="ds_path").set_value(str(tmp_path)).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "outside the allowed folders" in errors[0]
    assert not at.metric
    at.text_input(key="ds_path").set_value(str(EXAMPLES / "yolo-cells" / ".." / ".." / "..")).run()
    assert len(at.error) == 1 and "outside the allowed folders" in at.error[0].value


# -- the job queue (shared with `backdrop serve`) --------------------------------------------------------


def test_a_set_submitted_from_the_page_runs_on_the_queue_and_shows_its_sheet(env):
    pytest.importorskip("backdrop.jobs.queue")
    from backdrop.jobs.queue import JobQueue
    from backdrop.jobs.worker import work

    at = app()
    at.switch_page("views/data_sets.py")
    at.query_params.update({"set": str(EXAMPLES / "coco-cells"), "variants": "1", "generator": "texture",
                            "seed": "3"})
    at.run()
    assert not at.exception, at.exception
    at.button(key="ds_submit").click().run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    job_id = at.session_state["ds_job"]
    assert at.query_params["job"] == job_id  # the page's address now names the job
    queue = JobQueue(env / "queue")
    rec = queue.get(job_id)
    assert rec.kind == "augment" and rec.state == "queued"
    assert rec.params["source"] == str(EXAMPLES / "coco-cells") and rec.params["variants"] == 1
    assert work(queue, once=True) == 1  # a worker (as `backdrop serve` or `backdrop studio` runs it)
    assert queue.get(job_id).state == "done"
    at.run()
    assert not at.exception, at.exception
    assert "Contact sheet" in [s.value for s in at.subheader]
    out = queue.job_dir(job_id) / "out"
    assert (out / "preview.html").is_file()
    sheet = [e for e in at.get("iframe")] or [e for e in at.get("html")]
    assert sheet  # the sheet, inline
    # the jobs page lists it, done, with a link to its sheet
    at.switch_page("views/jobs.py").run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert job_id in text and f"/data-sets?job={job_id}" in text


def test_jobs_page_lists_every_job_of_the_queue_and_cancels_one(env):
    pytest.importorskip("backdrop.jobs.queue")
    from backdrop.jobs.queue import JobQueue

    queue = JobQueue(env / "queue")
    a = queue.submit("augment", {"command": "augment", "source": str(EXAMPLES / "yolo-cells")})
    b = queue.submit("run", {"command": "run"})  # as an HTTP client of `backdrop serve` would
    at = app()
    at.switch_page("views/jobs.py").run()
    assert not at.exception, at.exception
    text = " ".join(m.value for m in at.markdown)
    assert a.id in text and b.id in text
    at.button(key=f"cancel_{b.id}").click().run()
    assert not at.exception, at.exception
    assert queue.get(b.id).state == "cancelled" and queue.get(a.id).state == "queued"


def _zip_of(folder: Path, prefix: str) -> bytes:
    import io
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                zf.write(p, f"{prefix}/{p.relative_to(folder).as_posix()}")
    return buf.getvalue()


def test_an_uploaded_zip_is_unpacked_once_and_read_and_a_bad_one_refused(env):
    pytest.importorskip("backdrop.service.uploads")
    import io
    import zipfile

    at = app()
    at.switch_page("views/data_sets.py").run()
    at.radio(key="ds_source").set_value("Upload a .zip").run()
    at.file_uploader(key="ds_zip").set_value(("cells.zip", _zip_of(EXAMPLES / "yolo-cells", "cells"),
                                              "application/zip")).run()
    assert not at.exception and not at.error, (at.exception, [e.value for e in at.error])
    assert [m.value for m in at.metric] == ["yolo", "10", "2", "2"]
    unpacked = Path(at.session_state["ds_path"])
    assert unpacked.name == "cells" and (env / "queue" / "studio-uploads") in unpacked.parents
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("../../escape.txt", "x")
    at.file_uploader(key="ds_zip").set_value(("evil.zip", buf.getvalue(), "application/zip")).run()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("This file cannot be used:") and "zip-slip" in errors[0]
    assert not (env / "escape.txt").exists() and not list((env / "queue" / "studio-uploads").glob(".*"))


def test_backdrop_studio_runs_the_queues_jobs_with_its_own_worker(tmp_path):
    """`backdrop studio --queue Q` (no `backdrop serve`) runs what is queued on Q, and its worker
    goes with it."""
    pytest.importorskip("backdrop.service.server")
    import os
    import signal
    import subprocess
    import sys
    import time

    from backdrop.jobs.queue import JobQueue

    queue = JobQueue(tmp_path / "q")
    rec = queue.submit("augment", {"command": "augment", "source": str(EXAMPLES / "masks-cells"), "variants": 1,
                                   "generator": "texture"})
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "studio.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-c", "from backdrop.cli import main; main()", "studio", "--port",
                                 str(port), "--queue", str(tmp_path / "q"), "--allow-root", str(EXAMPLES)],
                                stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while queue.get(rec.id).state not in ("done", "failed") and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
            time.sleep(0.5)
        assert queue.get(rec.id).state == "done", (queue.get(rec.id), log.read_text(errors="replace")[-2000:])
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    time.sleep(1)
    assert not [w for w in (tmp_path / "q" / "workers").glob("*.lock") if queue.alive(w.stem)]


def test_new_background_backends_come_from_the_link(env):
    at = app()
    at.switch_page("views/new_background.py")
    at.query_params.update({"generate": "random", "inpaint": "ns", "refine": "no-such-refiner"})
    at.run()
    assert not at.exception, at.exception
    assert at.sidebar.selectbox(key="bg_generate").value == "random"
    assert at.sidebar.selectbox(key="bg_inpaint").value == "ns"
    assert at.sidebar.selectbox(key="bg_refine").value == "template"  # unknown here: the default instead
    at.sidebar.selectbox(key="bg_generate").set_value("pool").run()
    assert at.query_params["generate"] == "pool" and at.query_params["inpaint"] == "ns"
    assert "refine" not in at.query_params and "segment" not in at.query_params  # defaults are left out
