"""Outputs are safe: each case of the "Outputs are safe" issue, reproduced and now passing.

Runs go through the real CLI in subprocesses (real exit codes, real kills). Images are small so
a 30-image batch takes a few seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import make_bad_inputs as bad

ROOT = Path(__file__).resolve().parents[1]
EXE = ROOT / ".venv" / "bin" / "backdrop"
FAST = ["--preset", "offline", "--generator", "texture", "--segmenter", "classical"]
RUN_FILES = {"mask.png", "bg_only.png", "background_1.png", "background_2.png", "composite_1.png",
             "composite_2.png", "run.json", "pipeline.log"}


def cmd(*args) -> list[str]:
    base = [str(EXE)] if EXE.exists() else [sys.executable, "-c", "from backdrop.cli import main; main()"]
    return base + [str(a) for a in args]


def cli(*args, cwd=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=cwd)


def errors(proc) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.startswith("error:")]


def small_set(folder: Path, n: int, size=(48, 40)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [bad.scene(folder, f"{i:03d}.png", size[0], size[1], seed=i) for i in range(n)]


def debris(out: Path) -> list[str]:
    """Temporary files anywhere in the output (ours are under .backdrop/tmp/<run>/)."""
    found = [p.relative_to(out).as_posix() for p in (out / ".backdrop" / "tmp").iterdir()] \
        if (out / ".backdrop" / "tmp").is_dir() else []
    found += [p.relative_to(out).as_posix() for p in out.rglob("*")
              if p.name.endswith((".tmp", ".bdtmp")) and ".backdrop/tmp" not in p.as_posix()]
    return found


def snapshot(out: Path) -> dict[str, np.ndarray]:
    """Every image's pixels (metadata carry times, so bytes are compared through pixels)."""
    return {p.relative_to(out).as_posix(): np.asarray(Image.open(p)) for p in sorted(out.rglob("*.png"))}


# -- 1. --overwrite never deletes what backdrop did not write --------------------------------------------------


def test_overwrite_never_deletes_a_users_folder(tmp_path):
    home = tmp_path / "home"
    (home / "report").mkdir(parents=True)
    (home / "report" / "thesis.tex").write_text("years of work")
    image = bad.scene(tmp_path, "report.png")
    proc = cli("run", image, "-o", home, *FAST, "-n", "1", "--overwrite")
    assert proc.returncode != 0
    assert len(errors(proc)) == 1 and str(home / "report") in errors(proc)[0]
    assert "not written by backdrop" in errors(proc)[0]
    assert (home / "report" / "thesis.tex").read_text() == "years of work"
    assert sorted(p.name for p in (home / "report").iterdir()) == ["thesis.tex"]


def test_overwrite_into_the_input_folder_keeps_class_folders(tmp_path):
    data = tmp_path / "in"
    (data / "cat").mkdir(parents=True)
    bad.scene(data / "cat", "001.png")
    cat_png = bad.scene(data, "cat.png")
    before = sorted(p.relative_to(data).as_posix() for p in data.rglob("*"))
    proc = cli("run", cat_png, "-o", data, *FAST, "-n", "1", "--overwrite")
    assert proc.returncode != 0 and "not written by backdrop" in proc.stderr
    after = sorted(p.relative_to(data).as_posix() for p in data.rglob("*") if ".backdrop" not in p.as_posix()
                   and p.name != "manifest.jsonl")
    assert after == before


def test_overwrite_replaces_only_backdrops_files(tmp_path):
    image = bad.scene(tmp_path, "img.png")
    out = tmp_path / "out"
    assert cli("run", image, "-o", out, *FAST, "-n", "2", "--seed", "1").returncode == 0
    (out / "img" / "notes.txt").write_text("mine")  # a user's file inside an output folder
    proc = cli("run", image, "-o", out, *FAST, "-n", "1", "--seed", "2", "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert (out / "img" / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in (out / "img").iterdir()) == sorted(
        {"notes.txt", "mask.png", "bg_only.png", "background_1.png", "composite_1.png", "run.json", "pipeline.log"})
    assert json.loads((out / "img" / "run.json").read_text())["variants"][0]["index"] == 1
    assert not debris(out)


# -- 2. two runs into one output ----------------------------------------------------------------------------------


def test_two_runs_with_other_settings_keep_one_result_and_one_clear_failure(tmp_path):
    small_set(tmp_path / "in", 12)
    out = tmp_path / "out"
    procs = [subprocess.Popen(cmd("run", tmp_path / "in", "-o", out, *FAST, "-n", "1", "--seed", str(seed)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for seed in (100, 200)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for i in range(12):
        rec = json.loads((out / "in" / f"{i:03d}" / "run.json").read_text())
        kept = rec["config"]["seed"]
        winner, loser = (0, 1) if kept == 100 else (1, 0)
        name = f"{i:03d}"
        # the run whose result is on disk did not report that image failed; the other one did
        assert not any(f"in/{name}:" in line for line in results[winner][1].splitlines() if line.startswith("error:"))
        assert any(f"in/{name}:" in line and "other settings" in line
                   for line in results[loser][1].splitlines() if line.startswith("error:")), results[loser][1]
    # never success for work another process kept: a run that lost any image exits non-zero
    for code, stderr in results:
        assert (code == 0) == (not any(line.startswith("error:") for line in stderr.splitlines()))
    assert not debris(out)


def test_two_identical_runs_at_once_share_the_work(tmp_path):
    small_set(tmp_path / "in", 12)
    out = tmp_path / "out"
    procs = [subprocess.Popen(cmd("run", tmp_path / "in", "-o", out, *FAST, "-n", "2", "--seed", "7"),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [code for code, _ in results] == [0, 0], results
    done = 0
    for _, stderr in results:
        line = next(x for x in stderr.splitlines() if " already done, " in x)
        done += int(line.split(" done, ")[0])
    assert done == 12  # each image made once, by one of them
    for i in range(12):
        assert {p.name for p in (out / "in" / f"{i:03d}").iterdir()} == RUN_FILES
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 24 and len(set(lines)) == 24


# -- 3. names never depend on the run's other inputs ----------------------------------------------------------------


def test_names_do_not_depend_on_other_inputs(tmp_path):
    for cls in ("dog", "cat"):
        (tmp_path / "in" / cls).mkdir(parents=True)
        bad.scene(tmp_path / "in" / cls, "001.png", seed=len(cls))
    out = tmp_path / "o"
    assert cli("run", tmp_path / "in" / "dog", "-o", out, *FAST, "-n", "1", "--seed", "1").returncode == 0
    proc = cli("run", tmp_path / "in" / "cat", tmp_path / "in" / "dog", "-o", out, *FAST, "-n", "1", "--seed", "1")
    assert proc.returncode == 0, proc.stderr
    assert "1 done, 1 already done" in proc.stderr
    assert sorted(p.relative_to(out).as_posix() for p in out.glob("*/*") if p.parent.name != ".backdrop") == [
        "cat/001", "dog/001"]


# -- 4. earlier outputs are never inputs ----------------------------------------------------------------------------


def test_earlier_outputs_are_not_reingested(tmp_path):
    src = tmp_path / "in"
    small_set(src, 5)
    assert cli("run", src, "-o", src / "out", *FAST, "-n", "1", "--seed", "1").returncode == 0
    proc = cli("run", src, "-o", src / "out3", *FAST, "-n", "1", "--seed", "1")
    assert proc.returncode == 0 and "5 done, 0 already done" in proc.stderr, proc.stderr


# -- 5, 6, 8. kill -9 at random points, rerun: complete, nothing twice, no debris, exit 0 ------------------------


def _kill_at_random(args, rng, *, times: int, cwd) -> None:
    for _ in range(times):
        p = subprocess.Popen(cmd(*args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=cwd)
        time.sleep(rng.uniform(0.8, 3.0))  # start-up is ~0.7 s; the batch takes several seconds
        p.send_signal(signal.SIGKILL)
        p.wait()


def test_kill_9_at_random_points_then_rerun_gives_the_whole_set(tmp_path):
    src = tmp_path / "in"
    small_set(src, 30)
    args = ["run", src, "-o", tmp_path / "out", *FAST, "-n", "2", "--seed", "3"]
    clean = cli("run", src, "-o", tmp_path / "ref", *FAST, "-n", "2", "--seed", "3")
    assert clean.returncode == 0
    rng = random.Random(int(os.environ.get("BACKDROP_FAULT_SEED", "0")) or None)
    _kill_at_random(args, rng, times=3, cwd=tmp_path)
    final = cli(*args, cwd=tmp_path)
    assert final.returncode == 0 and not errors(final), final.stderr
    out = tmp_path / "out"
    for i in range(30):
        assert {p.name for p in (out / "in" / f"{i:03d}").iterdir()} == RUN_FILES, i
    got, want = snapshot(out), snapshot(tmp_path / "ref")
    assert got.keys() == want.keys()
    for rel in want:
        assert np.array_equal(got[rel], want[rel]), rel  # nothing half-written, nothing made twice differently
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 60 and len({json.loads(x)["image"] for x in lines}) == 60
    assert not debris(out)
    again = cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "0 done, 30 already done" in again.stderr


def test_kill_9_mid_overwrite_then_rerun(tmp_path):
    src = tmp_path / "in"
    small_set(src, 20)
    out = tmp_path / "out"
    assert cli("run", src, "-o", out, *FAST, "-n", "2", "--seed", "1").returncode == 0
    args = ["run", src, "-o", out, *FAST, "-n", "2", "--seed", "2", "--overwrite"]
    _kill_at_random(args, random.Random(), times=2, cwd=tmp_path)
    final = cli(*args, cwd=tmp_path)
    assert final.returncode == 0, final.stderr
    ref = tmp_path / "ref"
    assert cli("run", src, "-o", ref, *FAST, "-n", "2", "--seed", "2").returncode == 0
    got, want = snapshot(out), snapshot(ref)
    assert got.keys() == want.keys()
    assert all(np.array_equal(got[k], want[k]) for k in want)  # every image from the new settings
    assert not debris(out)


def test_kill_9_mid_augment_then_rerun(tmp_path):
    from test_augment import make_yolo

    src = tmp_path / "src"
    make_yolo(src)
    args = ["augment", src, "-o", tmp_path / "out", "-n", "3", "--seed", "1", "--generator", "texture",
            "--segmenter", "classical"]
    _kill_at_random(args, random.Random(), times=2, cwd=tmp_path)
    final = cli(*args, cwd=tmp_path)
    assert final.returncode == 0, final.stderr
    out = tmp_path / "out"
    assert len(list((out / "images/train").glob("*_bd*.png"))) == 12
    assert len(list((out / "labels/train").glob("*_bd*.txt"))) == 12
    lines = (out / "manifest.jsonl").read_text().splitlines()
    assert len(lines) == 13 and len(set(lines)) == 13  # 12 variants + the copied val image
    assert not debris(out)


# -- 7. an unwritable or full output: one line with the path, before or instead of more work ----------------------


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=160k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_read_only_output_fails_before_any_work(tmp_path, small_fs):
    subprocess.run(["mount", "-o", "remount,ro", str(small_fs)], check=True)
    image = bad.scene(tmp_path, "img.png")
    proc = cli("run", image, "-o", small_fs / "out", *FAST, "-n", "1")
    assert proc.returncode == 7
    assert len(errors(proc)) == 1 and str(small_fs / "out") in errors(proc)[0] and "read-only" in errors(proc)[0]
    assert "Traceback" not in proc.stderr


def test_full_disk_stops_the_batch_with_one_line_and_keeps_what_is_done(tmp_path, small_fs):
    src = tmp_path / "in"
    small_set(src, 30, size=(64, 48))
    out = small_fs / "out"
    proc = cli("run", src, "-o", out, *FAST, "-n", "2", "--seed", "1")
    assert proc.returncode == 7, proc.stderr
    assert len(errors(proc)) == 1 and "disk is full" in errors(proc)[0] and str(out) in errors(proc)[0]
    done = [d for d in (out / "in").iterdir() if (d / "run.json").is_file()]
    assert 0 < len(done) < 30
    for d in done:  # what was done is whole
        assert {p.name for p in d.iterdir()} == RUN_FILES


# -- 11. the seed summary never wraps past 2**32 - 1 ----------------------------------------------------------------


def test_seeds_stay_in_range_at_the_top(tmp_path):
    image = bad.scene(tmp_path, "img.png")
    proc = cli("run", image, "-o", tmp_path / "out", *FAST, "-n", "2", "--seed", str(2**32 - 1))
    assert proc.returncode == 0, proc.stderr
    assert "4294967296" not in proc.stderr
    rec = json.loads((tmp_path / "out" / "img" / "run.json").read_text())
    assert all(0 <= v["seed"] < 2**32 for v in rec["variants"])


def test_a_torn_journal_line_loses_nothing_after_it(tmp_path):
    """A kill mid-append leaves a line without its newline; the next run's entries must not be
    glued onto it (that would hide which files are the item's own)."""
    from backdrop.outputs import OutputSet, read_journal

    with OutputSet.open(tmp_path / "out", "run", seed=1) as out:
        with out.item("img", "fp") as w:
            w.own_dir("img")
            w.write_part("v1", {"img/a.png": b"a"})
        journal = w.journal
    with open(journal, "ab") as fh:
        fh.write(b'{"done": "v9", "files": {"img/z.p')  # torn by a kill
    # the next run announces v2, links its file, and is killed before recording it
    with OutputSet.open(tmp_path / "out", "run", seed=1) as out:
        with out.item("img", "fp") as w:
            w._append({"pending": "v2", "files": ["img/b.png"]})
            (tmp_path / "out" / "img" / "b.png").write_bytes(b"half")
    # a rerun knows b.png as its own: it is replaced, not reported as someone else's file
    with OutputSet.open(tmp_path / "out", "run", seed=1) as out:
        with out.item("img", "fp") as w:
            assert w.has("v1") and not w.has("v2")
            w.write_part("v2", {"img/b.png": b"b"})
            w.finish()
    assert (tmp_path / "out" / "img" / "b.png").read_bytes() == b"b"
    state = read_journal(journal)
    assert set(state.parts) == {"v1", "v2"} and state.complete == {} and not state.pending


def test_runs_starting_together_never_take_each_others_temporary_folders(tmp_path):
    """Each opening of an output cleans up dead runs' folders; one that starts meanwhile must not
    lose its own (Ray actors open the same output at the same moment)."""
    from concurrent.futures import ThreadPoolExecutor

    from backdrop.outputs import OutputSet

    def open_write_close(i):
        with OutputSet.open(tmp_path / "out", "run", seed=1) as out:
            with out.item(f"img{i}", "fp") as w:
                w.own_dir(f"img{i}")
                w.write_part("v1", {f"img{i}/a.png": b"x" * 1000})
                w.finish()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(open_write_close, range(64)))
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == \
        sorted(f"img{i}" for i in range(64))
    assert not debris(tmp_path / "out")
