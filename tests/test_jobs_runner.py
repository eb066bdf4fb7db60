"""The job runner (options -> a backdrop run) and the upload guards, without HTTP."""

from __future__ import annotations

import io
import json
import stat
import subprocess
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backdrop.jobs.queue import JobQueue
from backdrop.jobs.runner import JobParamsError, check_params, run_job
from backdrop.jobs.worker import work

FAST = {"generator": "random", "segmenter": "classical"}


def png_file(path: Path, w: int = 64, h: int = 48, seed: int = 0) -> Path:
    a = np.full((h, w, 3), 40 + seed, np.uint8)
    a[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = (200, 60, 60)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)
    return path


@pytest.mark.parametrize("params, option", [
    ({"variantz": 1}, "variantz"), ({"variants": "x"}, "variants"), ({"variants": 0}, "variants"),
    ({"variants": True}, "variants"), ({"feather": 1.5}, "feather"), ({"generator": "nope"}, "generator"),
    ({"segmenter": "nope"}, "segmenter"), ({"device": "tpu"}, "device"), ({"guidance": "lots"}, "guidance"),
    ({"harmonize": "maybe"}, "harmonize"), ({"prompt": ["a", "b"]}, "prompt"), ({"out": "/tmp/x"}, "out"),
])
def test_bad_option_names_the_option(params, option):
    with pytest.raises(JobParamsError) as err:
        check_params("run", params)
    assert err.value.option == option and option in str(err.value)


def test_augment_options_checked_by_the_job(tmp_path):
    assert check_params("augment", {"splits": "train,val", "quality": 90})["splits"] == "train,val"
    with pytest.raises(JobParamsError) as err:
        check_params("augment", {"quality": 500})
    assert err.value.option == "quality"
    with pytest.raises(JobParamsError) as err:
        check_params("augment", {"image_format": "gif"})
    assert err.value.option == "image_format"
    with pytest.raises(JobParamsError) as err:
        check_params("run", {"quality": 90})  # an augment option is not a run option
    assert err.value.option == "quality"


def test_augment_takes_the_run_options_typed_as_run_does():
    got = check_params("augment", {"guidance": "6", "steps": "3", "preset": "offline", "variants": 2})
    assert got == {"guidance": 6.0, "steps": 3, "preset": "offline", "variants": 2}
    with pytest.raises(JobParamsError) as err:
        check_params("run", {"preset": "nope"})
    assert err.value.option == "preset"


def test_values_converted_as_the_cli_does():
    got = check_params("run", {"variants": "2", "seed": 7, "harmonize": "false", "guidance": "7.5", **FAST})
    assert got == {"variants": 2, "seed": 7, "harmonize": False, "guidance": 7.5, **FAST}
    json.dumps(got)


def _job(q: JobQueue, n: int, params: dict) -> str:
    job_id = q.new_id()
    for i in range(n):
        png_file(q.job_dir(job_id) / "input" / f"im{i}.png", seed=i)
    q.submit("run", check_params("run", params), job_id=job_id)
    return job_id


def test_a_job_runs_to_done_and_a_rerun_writes_nothing_twice(tmp_path):
    q = JobQueue(tmp_path / "q")
    job_id = _job(q, 3, {"variants": 2, "seed": 1, **FAST})
    assert work(q, once=True) == 1
    rec = q.get(job_id)
    assert rec.state == "done" and rec.done == rec.total == 3 and rec.summary["images"] == 6
    out = q.job_dir(job_id) / "out"
    before = {p: p.stat().st_mtime_ns for p in out.rglob("composite_*.png")}
    assert len(before) == 6
    # the same job taken again (as after a crash): everything is found done, nothing rewritten
    with q.worker() as wid:
        with q._tx() as con:
            con.execute("UPDATE jobs SET state = 'queued' WHERE id = ?", (job_id,))
        rec = q.claim(wid)
        assert run_job(q, rec, wid) == "done"
    rec = q.get(job_id)
    assert rec.summary["already_done"] == 3 and rec.summary["images"] == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("composite_*.png")} == before


def test_an_unreadable_item_is_a_failed_item_with_its_message(tmp_path):
    q = JobQueue(tmp_path / "q")
    job_id = q.new_id()
    png_file(q.job_dir(job_id) / "input" / "good.png")
    (q.job_dir(job_id) / "input" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    q.submit("run", check_params("run", {"variants": 1, **FAST}), job_id=job_id)
    work(q, once=True)
    rec = q.get(job_id)
    assert rec.state == "done" and rec.summary["done"] == 1
    assert len(rec.failed) == 1 and "broken.png" in rec.failed[0][1]


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_fails_the_job_with_a_clear_message_and_keeps_the_queue(tmp_path, small_fs):
    q = JobQueue(tmp_path / "q")
    job_id = _job(q, 30, {"variants": 2, "seed": 1, **FAST})
    out = q.job_dir(job_id) / "out"
    out.mkdir()
    subprocess.run(["mount", "--bind", str(small_fs), str(out)], check=True)  # the job's output on a tiny disk
    try:
        work(q, once=True)
        rec = q.get(job_id)
        assert rec.state == "failed" and "disk is full" in rec.error and str(out) in rec.error
        assert 0 < rec.done < 30
        # the queue is intact: the next job runs
        other = _job(q, 1, {"variants": 1, **FAST})
        work(q, once=True)
        assert q.get(other).state == "done" and q.get(job_id).state == "failed"
    finally:
        subprocess.run(["umount", "-l", str(out)], capture_output=True)


# -- uploads ----------------------------------------------------------------------------------


def _zip(members: dict[str, bytes], path: Path, *, link: str | None = None) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, "/etc/passwd")
    return path


def _extract(path: Path, dest: Path, **kw):
    from backdrop.service.uploads import extract_zip

    limits = {"max_entries": 100, "max_bytes": 10 << 20, "max_ratio": 200, **kw}
    return extract_zip(path, dest, **limits)


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/abs/evil.txt", "C:/evil.txt"])
def test_zip_slip_refused_and_nothing_left(tmp_path, name):
    pytest.importorskip("fastapi")
    from backdrop.service.errors import ApiError

    z = _zip({"ok.txt": b"fine", name: b"evil"}, tmp_path / "a.zip")
    with pytest.raises(ApiError) as err:
        _extract(z, tmp_path / "x" / "set")
    assert err.value.status == 422 and "zip-slip" in err.value.message
    assert not (tmp_path / "x" / "set").exists() and not (tmp_path / "evil.txt").exists()


def test_zip_links_bombs_and_too_many_entries_refused(tmp_path):
    pytest.importorskip("fastapi")
    from backdrop.service.errors import ApiError

    with pytest.raises(ApiError) as err:
        _extract(_zip({"a.txt": b"x"}, tmp_path / "l.zip", link="link"), tmp_path / "l")
    assert err.value.status == 422 and "link" in err.value.message
    with pytest.raises(ApiError) as err:
        _extract(_zip({"zeros.bin": bytes(50 << 20)}, tmp_path / "b.zip"), tmp_path / "b", max_bytes=100 << 20)
    assert err.value.status == 413 and "zip bomb" in err.value.message
    with pytest.raises(ApiError) as err:
        _extract(_zip({f"{i}.txt": b"x" for i in range(20)}, tmp_path / "m.zip"), tmp_path / "m", max_entries=10)
    assert err.value.status == 413 and "entries" in err.value.message
    with pytest.raises(ApiError) as err:
        _extract(_zip({"a.bin": np.random.default_rng(0).bytes(3 << 20)}, tmp_path / "s.zip"), tmp_path / "s",
                 max_bytes=1 << 20)
    assert err.value.status == 413 and "uncompressed" in err.value.message
    assert not any((tmp_path / d).exists() for d in "lbms")
    assert _extract(_zip({"d/a.txt": b"x", "d/b.txt": b"y"}, tmp_path / "g.zip"), tmp_path / "g") == 2


def test_path_guard(tmp_path):
    pytest.importorskip("fastapi")
    from backdrop.service.errors import ApiError
    from backdrop.service.security import PathGuard, authorized

    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (tmp_path / "out").mkdir()
    (root / "esc").symlink_to(tmp_path / "out")
    g = PathGuard([root])
    assert g.check(root / "sub") == (root / "sub").resolve()
    assert g.check("sub") == (root / "sub").resolve()  # relative: under the first root
    for bad in (tmp_path / "out", root / ".." / "out", root / "esc", "../out"):
        with pytest.raises(ApiError) as err:
            g.check(bad)
        assert err.value.status == 403
    with pytest.raises(ApiError) as err:
        PathGuard([]).check(root)
    assert err.value.status == 403 and "--allow-root" in err.value.message
    assert authorized("Bearer abc", "abc") and not authorized("Bearer abd", "abc") and not authorized(None, "abc")
    import base64

    assert authorized("Basic " + base64.b64encode(b"user:abc").decode(), "abc")
    assert authorized(None, None)


def test_cli_and_jobs_import_no_web_stack():
    import sys as _sys

    code = ("import sys; sys.argv = ['backdrop', '--help']\nimport backdrop.jobs, backdrop.cli\n"
            "try:\n    backdrop.cli.main()\nexcept SystemExit:\n    pass\n"
            "print('LOADED=' + ','.join(m for m in ('fastapi', 'uvicorn', 'starlette', 'torch') if m in sys.modules))")
    proc = subprocess.run([_sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "serve" in proc.stdout and "jobs" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "LOADED="


def test_models_stay_loaded_across_jobs_with_the_same_settings():
    from dataclasses import replace

    from backdrop.jobs.runner import ModelCache, build

    cfg = build("run", {"variants": 1, "seed": 1, **FAST}, inputs=("x",), out="o").config
    cache = ModelCache(keep=1)
    first = cache.get(cfg, {})
    assert cache.get(replace(cfg, seed=99), {}) is first  # another seed: the same loaded pipeline
    other = cache.get(build("run", {"variants": 1, "generator": "texture", "segmenter": "classical"},
                            inputs=("x",), out="o").config, {})
    assert other is not first
    assert cache.get(cfg, {}) is not first  # keep=1: the first was let go when the other came


def test_an_augment_job_without_a_generator_gets_augments_default(tmp_path):
    """The service and the studio's /data-sets queue `backdrop augment`'s measured default, not a
    list of their own; a pool folder or a model still pick pool / sd-txt2img, as on the CLI."""
    from backdrop.generate import AUGMENT_DEFAULT
    from backdrop.jobs.runner import build

    job = build("augment", check_params("augment", {}), inputs=(str(tmp_path),), out=str(tmp_path / "o"))
    assert job.config.generate.backend == AUGMENT_DEFAULT
    (tmp_path / "bg").mkdir()
    job = build("augment", check_params("augment", {"backgrounds": str(tmp_path / "bg")}), inputs=(str(tmp_path),),
                out=str(tmp_path / "o"))
    assert job.config.generate.backend == "pool"
