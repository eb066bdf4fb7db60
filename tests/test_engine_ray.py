"""The Ray engine (``--engine ray``): the same pixels and manifest as the local engine, resume
after the driver is killed, a bad item reported while the rest complete, no Ray import on the
local path, and the one-line message without the extra.

One local Ray (2 CPUs, no dashboard, loopback only) is started per test session, on first use.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backdrop.config import PipelineConfig, preset
from backdrop.job import Job

SRC = str(Path(__file__).resolve().parents[1] / "src")
# Ray Data itself warns about its own deprecated context fields when it copies the context
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")


# -- fixtures ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray for the whole session; yields its address (for driver subprocesses)."""
    ray = pytest.importorskip("ray")
    pytest.importorskip("ray.data")
    os.environ.pop("RAY_ADDRESS", None)
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    # Ray names this machine by its own interface address; nothing leaves the machine
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def _picture(path: Path, i: int, size=(96, 72)) -> None:
    """A textured background with a bright rectangle: something to segment and re-background."""
    w, h = size
    rng = np.random.default_rng(i)
    a = np.empty((h, w, 3), np.uint8)
    a[:] = (30 + 40 * (i % 5), 110, 190)
    a = (a + rng.integers(0, 25, a.shape)).clip(0, 255).astype(np.uint8)
    a[h // 3:2 * h // 3, w // 3:2 * w // 3] = (245, 30 + 20 * (i % 7), 20)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(a).save(path)


def _folder(root: Path, n: int, bad: bool = False, size=(96, 72)) -> Path:
    for i in range(n):
        _picture(root / f"img{i:02d}.png", i, size)
    if bad:
        (root / "broken.png").write_bytes(b"this is not a picture")
    return root


def _yolo(root: Path) -> Path:
    """A small labelled YOLO set: 3 training images (boxes), 1 validation image."""
    for i, rel in enumerate(["train/a.png", "train/sub/b.png", "train/c.png", "val/v.png"]):
        _picture(root / "images" / rel, i)
        label = root / "labels" / Path(rel).with_suffix(".txt")
        label.parent.mkdir(parents=True, exist_ok=True)
        label.write_text(f"{i % 2} 0.5 0.5 0.36 0.36\n")
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames: [a, b]\n")
    return root


def _config(variants=2, seed=1) -> PipelineConfig:
    return preset("offline", PipelineConfig(variants=variants, seed=seed))


def _manifest(out: Path) -> list[dict]:
    """Manifest lines without the file hash (the embedded record holds per-run timings)."""
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    for line in lines:
        line.pop("sha256", None)
    return sorted(lines, key=lambda d: (d["image"], d.get("variant", 0)))


def _images(out: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(out)): np.asarray(Image.open(p))
            for p in sorted(out.rglob("*")) if p.suffix in (".png", ".jpg") and ".backdrop" not in p.parts}


def _assert_same_pixels(a: Path, b: Path) -> int:
    ia, ib = _images(a), _images(b)
    assert sorted(ia) == sorted(ib)
    for rel in ia:
        assert np.array_equal(ia[rel], ib[rel]), f"{rel}: pixels differ"
    return len(ia)


# -- the same results as the local engine -----------------------------------------------------------


def test_run_job_same_pixels_and_manifest_as_local(ray_local, tmp_path):
    from backdrop.engine.local import run_local
    from backdrop.engine.ray import run_ray

    src = _folder(tmp_path / "in", 4)
    local = run_local(Job(config=_config(), out=str(tmp_path / "local"), kind="run", inputs=(str(src),)),
                      progress=False)
    seen = []
    remote = run_ray(Job(config=_config(), out=str(tmp_path / "ray"), kind="run", inputs=(str(src),)),
                     progress=False, on_outcome=seen.append)
    assert (remote.done, remote.images, remote.failed) == (local.done, local.images, []) == (4, 8, [])
    assert sorted(o.key for o in seen) == sorted(f"in/img{i:02d}" for i in range(4))
    assert set(remote.timings) >= {"segment", "inpaint", "generate", "composite"}
    assert _manifest(tmp_path / "ray") == _manifest(tmp_path / "local")
    assert _assert_same_pixels(tmp_path / "local", tmp_path / "ray") == 4 * (2 + 2 * 2)  # mask, bg_only, 2x2
    # no debris: every actor's temporary folder is gone
    assert list((tmp_path / "ray" / ".backdrop" / "tmp").iterdir()) == []


def test_dataset_job_same_pixels_labels_and_manifest_as_local(ray_local, tmp_path):
    pytest.importorskip("backdrop.datasets")
    from backdrop.engine.local import run_local
    from backdrop.engine.ray import run_ray

    src = _yolo(tmp_path / "set")

    def job(out):
        return Job(config=_config(), out=str(out), kind="dataset", inputs=(str(src),), format="yolo")

    local = run_local(job(tmp_path / "local"), progress=False)
    remote = run_ray(job(tmp_path / "ray"), progress=False, concurrency=2)
    assert (remote.done, remote.copied, remote.images, remote.failed) == \
        (local.done, local.copied, local.images, local.failed) == (3, 1, 6, [])
    man = _manifest(tmp_path / "ray")
    assert man == _manifest(tmp_path / "local")
    augmented = [m for m in man if not m.get("copied")]
    assert len(augmented) == 6 and all(m["split"] == "train" for m in augmented)
    assert [m["image"] for m in man if m.get("copied")] == ["images/val/v.png"]  # val copied, listed once
    _assert_same_pixels(tmp_path / "local", tmp_path / "ray")
    checked = 0
    for f in (tmp_path / "local").rglob("*"):  # label files and data.yaml (which names its own folder)
        if f.suffix in (".txt", ".yaml"):
            mine = (tmp_path / "ray" / f.relative_to(tmp_path / "local")).read_text()
            assert f.read_text().replace(str(tmp_path / "local"), str(tmp_path / "ray")) == mine, f
            checked += 1
    assert checked == 8  # 3 train images x 2 variants + 1 val label files, data.yaml


# -- failures ---------------------------------------------------------------------------------------


def test_bad_item_is_reported_while_the_rest_complete(ray_local, tmp_path):
    from backdrop.engine.ray import run_ray

    src = _folder(tmp_path / "in", 3, bad=True)
    seen = []
    s = run_ray(Job(config=_config(variants=1), out=str(tmp_path / "out"), kind="run", inputs=(str(src),)),
                progress=False, on_outcome=seen.append)
    assert s.done == 3 and s.images == 3 and s.total == 4
    assert [k for k, _ in s.failed] == ["in/broken"]
    assert "broken.png" in s.failed[0][1] and "\n" not in s.failed[0][1]
    assert s.exit_code != 0
    bad = [o for o in seen if o.status == "failed"]
    assert len(bad) == 1 and bad[0].error is not None  # the error class travels back (API callers re-raise it)
    assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) == 3


def test_disk_error_in_an_actor_stops_the_run_with_one_line(ray_local, tmp_path):
    from backdrop.engine.ray import run_ray
    from backdrop.errors import OutputError
    from backdrop.outputs import key_hash

    src = _folder(tmp_path / "in", 3)
    out = tmp_path / "out"
    h = key_hash("in/img01")
    blocker = out / ".backdrop" / "locks" / h[:2]
    blocker.parent.mkdir(parents=True)
    blocker.write_text("a file where the item's lock folder goes")
    with pytest.raises(OutputError) as err:
        run_ray(Job(config=_config(variants=1), out=str(out), kind="run", inputs=(str(src),)), progress=False)
    assert str(blocker) in str(err.value) and "\n" not in str(err.value)
    assert err.value.exit_code == 7
    assert (out / "manifest.jsonl").is_file()  # what was done is listed before the error is raised


def test_cli_augment_engine_ray(ray_local, tmp_path):
    pytest.importorskip("backdrop.datasets")
    from typer.testing import CliRunner

    from backdrop.cli import app

    src = _yolo(tmp_path / "set")
    r = CliRunner().invoke(app, ["augment", str(src), "-o", str(tmp_path / "out"), "--preset", "offline", "-n", "1",
                                 "--seed", "2", "--engine", "ray", "--concurrency", "2", "--num-gpus", "0"])
    assert r.exit_code == 0, r.output
    assert "3 done, 0 already done, 1 copied unchanged, 0 failed; 3 new image(s) written" in r.output
    assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) == 4  # 3 variants + the copy
    again = CliRunner().invoke(app, ["augment", str(src), "-o", str(tmp_path / "out"), "--preset", "offline",
                                     "-n", "1", "--seed", "2", "--engine", "ray"])
    assert again.exit_code == 0, again.output
    assert "0 done, 4 already done, 0 copied unchanged, 0 failed; 0 new image(s) written" in again.output  # a rerun: all kept
    assert len((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()) == 4


DRIVER = """
import sys
from backdrop.config import PipelineConfig, preset
from backdrop.job import Job
from backdrop.engine.ray import run_ray

def seen(o):
    print("outcome", o.key, o.status, flush=True)

job = Job(config=preset("offline", PipelineConfig(variants=2, seed=5)), out=sys.argv[2], kind="run",
          inputs=(sys.argv[1],))
s = run_ray(job, on_outcome=seen, progress=False, concurrency=2)
print("summary", s.done, s.skipped, len(s.failed), flush=True)
sys.exit(s.exit_code)
"""


def _driver(src: Path, out: Path, address: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "RAY_ADDRESS": address, "RAY_USAGE_STATS_ENABLED": "0"}
    return subprocess.Popen([sys.executable, "-c", DRIVER, str(src), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_resume_after_the_driver_is_killed(ray_local, tmp_path):
    from backdrop.engine.local import run_local

    n = 10
    src = _folder(tmp_path / "in", n, size=(192, 144))  # ~0.3 s an item: the kill lands mid-run
    out = tmp_path / "out"
    first = _driver(src, out, ray_local)
    got = []
    deadline = time.monotonic() + 240
    while len(got) < 2 and time.monotonic() < deadline:
        line = first.stdout.readline()
        if not line:
            break
        if line.startswith("outcome"):
            got.append(line.split()[1])
    os.kill(first.pid, signal.SIGKILL)  # the driver dies mid-run; its actors go with it
    first.wait(30)
    assert len(got) == 2, first.stderr.read()[-3000:]
    journals = list((out / ".backdrop" / "items").rglob("*.jsonl"))
    assert len(journals) >= 2

    second = _driver(src, out, ray_local)
    stdout, stderr = second.communicate(timeout=300)
    assert second.returncode == 0, stderr[-3000:]
    summary = [line.split() for line in stdout.splitlines() if line.startswith("summary")][0]
    done, skipped, failed = map(int, summary[1:])
    assert failed == 0 and done + skipped == n
    assert skipped >= 2 and done >= 1  # what was done is kept, not redone; the rest is made now

    # nothing lost, nothing duplicated: the same set a local run makes in one go
    ref = tmp_path / "ref"
    run_local(Job(config=preset("offline", PipelineConfig(variants=2, seed=5)), out=str(ref), kind="run",
                  inputs=(str(src),)), progress=False)
    man = _manifest(out)
    assert len(man) == len({m["image"] for m in man}) == 2 * n
    assert man == _manifest(ref)
    _assert_same_pixels(ref, out)


# -- the Ray layer is thin and optional -------------------------------------------------------------


def test_task_actor_runs_tasks_without_a_cluster(tmp_path):
    """The map_batches callable is plain Python: columns in, pickled outcomes out."""
    from backdrop.engine.ray import TaskActor

    src = _folder(tmp_path / "in", 2, bad=True)
    plan = Job(config=_config(variants=1), out=str(tmp_path / "out"), kind="run", inputs=(str(src),)).plan()
    try:
        tasks = list(plan.tasks())
        actor = TaskActor(plan.job)
        batch = {"i": np.arange(len(tasks)), "task": np.array([pickle.dumps(t) for t in tasks], dtype=object)}
        res = actor(batch)
    finally:
        plan.close()
    rows = [pickle.loads(r) for r in res["result"]]
    assert list(res["i"]) == list(range(len(tasks)))
    status = {o.key: o.status for kind, (o, _err) in rows if kind == "outcome"}
    assert status == {"in/broken": "failed", "in/img00": "done", "in/img01": "done"}
    assert (tmp_path / "out" / "in" / "img00" / "composite_1.png").is_file()


def test_default_layout_cpu_actors_or_one_gpu_each():
    from backdrop.config import GenerateConfig
    from backdrop.engine.ray import settings
    from backdrop.errors import ConfigError

    cpu_job = Job(config=_config(), out="x")
    sd_job = Job(config=PipelineConfig(generate=GenerateConfig(backend="sd-txt2img")), out="x")
    s = settings(cpu_job, 100, {"CPU": 16.0, "GPU": 4.0})
    assert (s.concurrency, s.num_gpus, s.batch_size) == (8, 0.0, 1)
    s = settings(sd_job, 100, {"CPU": 16.0, "GPU": 4.0})
    assert (s.concurrency, s.num_gpus) == (4, 1.0)
    assert settings(sd_job, 100, {"CPU": 2.0}).num_gpus == 0.0  # no GPUs: CPU actors
    assert settings(cpu_job, 3, {"CPU": 64.0}).concurrency == 3  # never more actors than items
    assert settings(cpu_job, 3, {"CPU": 1.0}).concurrency == 1
    assert settings(sd_job, 100, {"CPU": 8.0, "GPU": 4.0}, num_gpus=0.5).concurrency == 8
    with pytest.raises(ConfigError, match="has 0 GPU"):
        settings(cpu_job, 10, {"CPU": 8.0}, num_gpus=1)
    with pytest.raises(ConfigError, match="--concurrency"):
        settings(cpu_job, 10, {"CPU": 8.0}, concurrency=0)


def _python(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("RAY_ADDRESS", None)
    return subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)


def test_no_ray_import_on_the_local_path(tmp_path):
    _folder(tmp_path / "in", 1)
    code = """
import sys
import backdrop
from backdrop.cli import main
assert "ray" not in sys.modules, "import backdrop"
sys.argv = ["backdrop", "--help"]
try:
    main()
except SystemExit:
    pass
assert "ray" not in sys.modules, "backdrop --help"
sys.argv = ["backdrop", "run", "in", "-o", "out", "--preset", "offline", "--seed", "1", "-q"]
try:
    main()
except SystemExit as e:
    assert not e.code, e.code
assert "ray" not in sys.modules, "a local run"
print("ok")
"""
    r = _python(code, tmp_path)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
    assert (tmp_path / "out" / "in" / "img00" / "composite_1.png").is_file()


def test_without_the_extra_engine_ray_is_one_line_naming_it(tmp_path):
    # sys.modules["ray"] = None is Python's own way to make ``import ray`` fail, as when it is not installed
    code = """
import sys
sys.modules["ray"] = None
from backdrop.config import PipelineConfig, preset
from backdrop.job import Job
from backdrop.engine.ray import run_ray
from backdrop.errors import MissingDependencyError
try:
    run_ray(Job(config=preset("offline", PipelineConfig()), out="out", kind="run", inputs=("in",)))
except MissingDependencyError as exc:
    print(exc)
    print("exit", exc.exit_code)
"""
    r = _python(code, tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.splitlines() == ["--engine ray needs the 'ray' package: pip install 'backdrop[ray]'", "exit 3"]
    assert not (tmp_path / "out").exists()  # nothing opened before the check


def test_cli_without_the_extra_is_one_error_line(tmp_path):
    pytest.importorskip("backdrop.datasets")
    _yolo(tmp_path / "set")
    code = """
import sys
sys.modules["ray"] = None  # as when ray is not installed
from backdrop.cli import main
sys.argv = ["backdrop", "augment", "set", "-o", "out", "--preset", "offline", "-n", "1", "--engine", "ray"]
main()
"""
    r = _python(code, tmp_path)
    assert r.returncode == 3, r.stderr[-3000:]
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: --engine ray needs the 'ray' package: pip install 'backdrop[ray]'"], r.stderr
    assert "Traceback" not in r.stderr
