"""The job queue: states, claim under contention, cancel, and recovery of jobs whose worker died."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from backdrop.jobs.queue import JobQueue

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_submit_get_list_counts(tmp_path):
    q = JobQueue(tmp_path)
    a = q.submit("run", {"variants": 2})
    b = q.submit("augment", {"variants": 1})
    assert a.state == "queued" and a.params == {"variants": 2}
    assert q.get(b.id).kind == "augment"
    assert [r.id for r in q.list()] == [b.id, a.id]  # newest first
    assert [r.id for r in q.list(state="queued", limit=1)] == [b.id]
    assert q.counts()["queued"] == 2
    assert q.job_dir(a.id).is_dir()
    with pytest.raises(KeyError):
        q.get("nope")
    with pytest.raises(KeyError):
        q.job_dir("../x")
    assert JobQueue(tmp_path).get(a.id).params == {"variants": 2}  # persistent: a new handle sees it


def test_claim_progress_finish_in_order(tmp_path):
    q = JobQueue(tmp_path)
    a = q.submit("run", {})
    b = q.submit("run", {})
    with q.worker() as wid:
        got = q.claim(wid)
        assert got.id == a.id and got.state == "running" and got.worker == wid and got.attempts == 1
        q.progress(a.id, 1, 3)
        assert q.get(a.id).to_dict()["progress"] == {"done": 1, "total": 3}
        q.finish(a.id, "done", summary={"images": 3}, worker_id=wid)
        assert q.get(a.id).state == "done" and q.get(a.id).summary == {"images": 3}
        assert q.claim(wid).id == b.id
        assert q.claim(wid) is None
        q.finish(b.id, "failed", error="bad", failed=[["x", "bad"]])
    rec = q.get(b.id)
    assert rec.state == "failed" and rec.error == "bad" and rec.failed == [["x", "bad"]]
    with pytest.raises(ValueError):
        q.finish(b.id, "running")


def test_cancel_queued_and_running(tmp_path):
    q = JobQueue(tmp_path)
    a = q.submit("run", {})
    b = q.submit("run", {})
    assert q.cancel(b.id).state == "cancelled"
    with q.worker() as wid:
        q.claim(wid)
        assert not q.should_stop(a.id)
        assert q.cancel(a.id).state == "running"  # asked; the runner stops at the next item
        assert q.should_stop(a.id)
        q.finish(a.id, "cancelled", worker_id=wid)
    assert q.get(a.id).state == "cancelled"
    assert q.cancel(a.id).state == "cancelled"  # finished: left as it is
    assert q.claim("w") is None  # a cancelled job is never taken


def _claimer(root: str, n: int, out) -> None:
    q = JobQueue(root)
    got = []
    with q.worker() as wid:
        while True:
            rec = q.claim(wid)
            if rec is None:
                break
            got.append(rec.id)
            q.finish(rec.id, "done", worker_id=wid)
    out.put(got)


def test_two_workers_never_take_one_job(tmp_path):
    q = JobQueue(tmp_path)
    ids = {q.submit("run", {"i": i}).id for i in range(60)}
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [ctx.Process(target=_claimer, args=(str(tmp_path), 0, out)) for _ in range(3)]
    for p in procs:
        p.start()
    taken = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(30)
    flat = [j for t in taken for j in t]
    assert len(flat) == len(set(flat)) == 60  # each job taken exactly once
    assert set(flat) == ids
    assert all(r.attempts == 1 and r.state == "done" for r in q.list(limit=100))


_HOLDER = """
import sys, time
from backdrop.jobs.queue import JobQueue
q = JobQueue(sys.argv[1])
with q.worker() as wid:
    rec = q.claim(wid)
    print(rec.id, flush=True)
    time.sleep(60)
"""


def test_recover_requeues_jobs_of_a_killed_worker_only(tmp_path):
    q = JobQueue(tmp_path)
    a = q.submit("run", {})
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline().strip() == a.id
        assert q.get(a.id).state == "running"
        assert q.recover() == []  # its worker is alive: not touched
        assert q.alive(q.get(a.id).worker)
        b = q.submit("run", {})
        with q.worker() as mine:  # a live worker in this process is not recovered either
            q.claim(mine)
            assert q.recover() == []
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
            assert q.recover() == [a.id]
            assert q.get(b.id).state == "running"
        rec = q.get(a.id)
        assert rec.state == "queued" and rec.worker is None and rec.attempts == 1
        with q.worker() as wid:
            again = q.claim(wid)
        assert again.id == a.id and again.attempts == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_recover_of_a_cancelled_running_job_ends_it_cancelled(tmp_path):
    q = JobQueue(tmp_path)
    a = q.submit("run", {})
    with q.worker() as wid:
        q.claim(wid)
        q.cancel(a.id)
    # the worker is gone without finishing
    assert q.recover() == [a.id]
    assert q.get(a.id).state == "cancelled"


def test_a_stale_worker_cannot_finish_a_job_taken_again(tmp_path):
    q = JobQueue(tmp_path)
    a = q.submit("run", {})
    q.claim("ghost")  # no lock file: counted dead
    assert q.recover() == [a.id]
    with q.worker() as wid:
        q.claim(wid)
        q.finish(a.id, "failed", error="late", worker_id="ghost")
        assert q.get(a.id).state == "running"
        q.finish(a.id, "done", worker_id=wid)
    assert q.get(a.id).state == "done"


def test_a_job_that_kills_its_worker_every_time_ends_failed(tmp_path):
    q = JobQueue(tmp_path)
    a = q.submit("run", {})
    for attempt in range(1, 4):
        rec = q.claim(f"ghost{attempt}")  # taken, then the worker is gone (no lock held)
        assert rec.id == a.id and rec.attempts == attempt
        assert q.recover() == [a.id]
    rec = q.get(a.id)
    assert rec.state == "failed" and "died 3 times" in rec.error and rec.finished
    assert q.claim("w") is None


def test_a_shutdown_does_not_count_as_a_try(tmp_path):
    q = JobQueue(tmp_path)
    a = q.submit("run", {})
    for _ in range(5):  # the server stopped on purpose five times mid-job
        q.claim("gone")
        assert q.recover(shutdown=True) == [a.id]
    rec = q.get(a.id)
    assert rec.state == "queued" and rec.attempts == 0


def test_remove_only_finished_jobs_and_their_folders(tmp_path):
    q = JobQueue(tmp_path)
    a = q.submit("run", {})
    (q.job_dir(a.id) / "out").mkdir()
    (q.job_dir(a.id) / "out" / "x.png").write_bytes(b"x")
    assert q.remove(a.id) is False and q.job_dir(a.id).exists()  # queued: kept
    q.cancel(a.id)
    assert q.finished_before(time.time() + 1) == [a.id] and q.finished_before(0) == []
    assert q.remove(a.id) is True
    assert not q.job_dir(a.id).exists()
    with pytest.raises(KeyError):
        q.get(a.id)


def test_jobs_cli_list_show_cancel_remove(tmp_path):
    q = JobQueue(tmp_path)
    a = q.submit("run", {"variants": 1})
    env = {**os.environ, "PYTHONPATH": SRC}

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "backdrop.cli", "jobs", *args, "--root", str(tmp_path)],
                              capture_output=True, text=True, env=env, timeout=60)

    out = cli("list")
    assert out.returncode == 0 and a.id in out.stdout and "queued" in out.stdout
    assert '"variants": 1' in cli("show", a.id).stdout
    bad = cli("show", "nope")
    assert bad.returncode == 2 and bad.stderr.strip() == "error: no such job: nope"
    assert cli("remove", a.id).stderr.strip().endswith("not removed (cancel it first)")
    assert cli("cancel", a.id).stdout.strip() == f"{a.id}: cancelled"
    assert cli("remove", "--older-than", "0").stdout.strip() == "1 job(s) removed"
    assert cli("list").stdout.strip() == ""
    bad = cli("list", "--state", "lost")
    assert bad.returncode == 2 and "--state" in bad.stderr
