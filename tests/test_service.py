"""`backdrop serve` over real HTTP on loopback: a real server process, real worker processes.

Covers the issue's "done when": health, 401 without the token, a run job of uploaded images
ending done with every listed file downloadable, bad uploads and options as clear 4xx, sources
outside the allowed roots refused, kill -9 of the server mid-job and a restart finishing the job
with every composite exactly once, cancellation, and the upload limits.
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

SRC = str(Path(__file__).resolve().parents[1] / "src")
TOKEN = "test-token-" + "x" * 20
FAST = {"generator": "random", "segmenter": "classical"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``backdrop serve`` in a subprocess, with its own $BACKDROP_HOME."""

    def __init__(self, home: Path, *args: str, token: str | None = TOKEN):
        self.home = home
        self.args = args
        self.token = token
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "Server":
        env = {**os.environ, "PYTHONPATH": SRC, "BACKDROP_HOME": str(self.home)}
        env.pop("BACKDROP_TOKEN", None)
        if self.token:
            env["BACKDROP_TOKEN"] = self.token
        self.log = open(self.home / f"serve-{time.time_ns()}.log", "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "backdrop.cli", "serve", "--port", str(self.port),
                                      *self.args], env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                if call(self, "GET", "/v1/health", token=None)[0] == 200:
                    return self
            except OSError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server ended: {Path(self.log.name).read_text()}")
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def call(server: Server, method: str, path: str, *, body: bytes | None = None, ctype: str | None = None,
         token: str | None = "default", headers: dict | None = None) -> tuple[int, bytes, dict]:
    req = urllib.request.Request(server.url + path, data=body, method=method)
    tok = server.token if token == "default" else token
    if tok:
        req.add_header("Authorization", f"Bearer {tok}")
    if ctype:
        req.add_header("Content-Type", ctype)
    for k, v in (headers or {}).items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


def jcall(server: Server, method: str, path: str, **kw) -> tuple[int, dict]:
    status, data, _ = call(server, method, path, **kw)
    assert data.count(b"\n") <= 1 or status < 400, data  # errors: one line
    return status, json.loads(data)


def multipart(params: dict, files: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    out = io.BytesIO()
    out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n{json.dumps(params)}\r\n".encode())
    for name, data in files:
        out.write(f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
                  f"Content-Type: application/octet-stream\r\n\r\n".encode())
        out.write(data)
        out.write(b"\r\n")
    out.write(f"--{boundary}--\r\n".encode())
    return out.getvalue(), f"multipart/form-data; boundary={boundary}"


def submit(server: Server, params: dict, files: list[tuple[str, bytes]]) -> tuple[int, dict]:
    body, ctype = multipart(params, files)
    return jcall(server, "POST", "/v1/jobs", body=body, ctype=ctype)


def png(w: int, h: int, seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    a = np.full((h, w, 3), 30 + seed % 50, np.uint8)
    a += rng.integers(0, 20, a.shape, dtype=np.uint8)
    a[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = (200, 50 + seed % 100, 60)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def wait(server: Server, job_id: str, states=("done", "failed", "cancelled"), timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        status, rec = jcall(server, "GET", f"/v1/jobs/{job_id}")
        assert status == 200, rec
        if rec["state"] in states:
            return rec
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {rec['state']} after {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    allowed = tmp_path_factory.mktemp("allowed")
    (allowed / "imgs").mkdir()
    for i in range(2):
        (allowed / "imgs" / f"s{i}.png").write_bytes(png(80, 60, i))
    outside = tmp_path_factory.mktemp("outside")
    (outside / "secret.png").write_bytes(png(40, 30))
    (allowed / "link").symlink_to(outside)
    s = Server(home, "--allow-root", str(allowed), "--max-request-mb", "2").start()
    s.allowed, s.outside = allowed, outside  # type: ignore[attr-defined]
    yield s
    s.stop()


def test_health_needs_no_token_everything_else_does(server):
    status, body = jcall(server, "GET", "/v1/health", token=None)
    assert status == 200 and body["status"] == "ok" and "queue" in body
    status, body = jcall(server, "GET", "/v1/jobs", token=None)
    assert status == 401 and "token" in body["error"]
    assert jcall(server, "GET", "/v1/jobs", token="wrong")[0] == 401
    assert jcall(server, "GET", "/v1/backends", token=None)[0] == 401
    assert jcall(server, "GET", "/v1/jobs")[0] == 200


def test_run_job_of_two_uploads_ends_done_and_every_file_downloads(server):
    sizes = {"one.png": (96, 72), "two.png": (64, 80)}
    status, resp = submit(server, {"command": "run", "variants": 2, "seed": 11, **FAST},
                          [(n, png(*wh, seed=i)) for i, (n, wh) in enumerate(sizes.items())])
    assert status == 202 and resp["state"] == "queued" and resp["url"] == f"/v1/jobs/{resp['id']}"
    rec = wait(server, resp["id"])
    assert rec["state"] == "done", rec
    assert rec["progress"] == {"done": 2, "total": 2} and rec["failed"] == [] and rec["summary"]["images"] == 4
    paths = {f["path"] for f in rec["files"]}
    composites = sorted(p for p in paths if "/composite_" in p)
    assert composites == ["one/composite_1.png", "one/composite_2.png", "two/composite_1.png", "two/composite_2.png"]
    for f in rec["files"]:
        status, data, _ = call(server, "GET", f["url"])
        assert status == 200 and data, f
        if "/composite_" in f["path"]:
            assert Image.open(io.BytesIO(data)).size == sizes[f["path"].split("/")[0] + ".png"]
    status, data, headers = call(server, "GET", f"/v1/jobs/{rec['id']}/archive")
    assert status == 200 and headers["content-type"] == "application/zip"
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert set(zf.namelist()) == paths
    # the job is listed, and its progress streams as Server-Sent Events ending with "end"
    assert rec["id"] in [j["id"] for j in jcall(server, "GET", "/v1/jobs")[1]["jobs"]]
    assert "files" not in jcall(server, "GET", f"/v1/jobs/{rec['id']}?files=false")[1]
    status, data, headers = call(server, "GET", f"/v1/jobs/{rec['id']}/events")
    assert headers["content-type"].startswith("text/event-stream")
    assert b"event: progress" in data and data.rstrip().endswith(b'"state": "done"}')


def test_results_are_served_only_from_the_jobs_own_folder(server):
    status, resp = submit(server, {"variants": 1, **FAST}, [("a.png", png(40, 30))])
    wait(server, resp["id"])
    base = f"/v1/jobs/{resp['id']}/files/"
    for bad in ("../../token", "..%2F..%2Ftoken", ".backdrop/set.json", "%2Fetc%2Fpasswd", "nope.png"):
        status, body = jcall(server, "GET", base + bad)
        assert status == 404, (bad, body)
    assert jcall(server, "GET", "/v1/jobs/nope")[0] == 404


def test_bad_uploads_and_options_are_clear_4xx(server):
    status, body = submit(server, {"variants": 1}, [("notes.png", b"this is not a picture")])
    assert status == 415 and "notes.png" in body["error"] and "not a readable image" in body["error"]
    status, body = submit(server, {"variants": 1}, [("notes.txt", png(20, 20))])
    assert status == 415 and "notes.txt" in body["error"]
    status, body = submit(server, {"variantz": 2}, [("a.png", png(20, 20))])
    assert status == 422 and body["option"] == "variantz" and "variants" in body["error"]
    status, body = submit(server, {"variants": "many"}, [("a.png", png(20, 20))])
    assert status == 422 and body["option"] == "variants"
    status, body = submit(server, {"generator": "nope"}, [("a.png", png(20, 20))])
    assert status == 422 and body["option"] == "generator" and "random" in body["error"]
    status, body = submit(server, {"command": "paint"}, [("a.png", png(20, 20))])
    assert status == 422 and body["option"] == "command"
    status, body = submit(server, {"variants": 1}, [])
    assert status == 422 and body["option"] == "files"
    status, body = jcall(server, "POST", "/v1/jobs", body=b"{not json", ctype="application/json")
    assert status == 422 and "JSON" in body["error"]
    # nothing of a refused upload stays behind
    jobs = Path(server.home) / "serve" / "jobs"
    listed = {j["id"] for j in jcall(server, "GET", "/v1/jobs?limit=1000")[1]["jobs"]}
    assert {p.name for p in jobs.iterdir()} == listed


def _raw(server: Server, head: bytes, body_parts: list[bytes]) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
        s.sendall(head)
        try:
            for part in body_parts:
                s.sendall(part)
        except OSError:  # the server answered and closed before reading it all
            pass
        data = b""
        while True:
            try:
                block = s.recv(65536)
            except OSError:
                break
            if not block:
                break
            data += block
        return data


def test_request_larger_than_the_limit_is_413(server):
    body, ctype = multipart({"variants": 1}, [("big.png", os.urandom(3 << 20))])  # over --max-request-mb 2
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
    answer = _raw(server, head, [])  # refused from the header alone, before the body is read
    assert answer.startswith(b"HTTP/1.1 413") and b"limit" in answer
    # without a Content-Length (chunked), counted as it arrives
    head = (f"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: {ctype}\r\n"
            f"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode()
    chunks = [f"{len(body[i:i + 65536]):x}\r\n".encode() + body[i:i + 65536] + b"\r\n"
              for i in range(0, len(body), 65536)] + [b"0\r\n\r\n"]
    answer = _raw(server, head, chunks)
    assert answer.startswith(b"HTTP/1.1 413") and b"limit" in answer
    jobs = Path(server.home) / "serve" / "jobs"
    listed = {j["id"] for j in jcall(server, "GET", "/v1/jobs?limit=1000")[1]["jobs"]}
    assert {p.name for p in jobs.iterdir()} == listed  # nothing left of it


def test_sources_only_under_allowed_roots(server):
    def post(source):
        return jcall(server, "POST", "/v1/jobs", body=json.dumps({"source": str(source), "variants": 1, **FAST}).encode(),
                     ctype="application/json")

    status, body = post(server.outside / "secret.png")
    assert status == 403 and "outside the allowed roots" in body["error"]
    assert post(server.allowed / ".." / server.outside.name / "secret.png")[0] == 403  # .. out
    assert post(server.allowed / "link" / "secret.png")[0] == 403  # a symlink out
    assert post("/etc/passwd")[0] == 403
    assert post(server.allowed / "missing")[0] == 404
    status, body = post(server.allowed / "imgs")
    assert status == 202
    rec = wait(server, body["id"])
    assert rec["state"] == "done" and rec["summary"]["images"] == 2
    status, body = jcall(server, "POST", "/v1/jobs", body=json.dumps(
        {"source": str(server.allowed / "imgs"), "generator": "pool", "backgrounds": str(server.outside)}).encode(),
        ctype="application/json")
    assert status == 403 and body["option"] == "backgrounds"


def test_cancel_a_queued_job_and_a_running_one(server):
    files = [(f"c{i}.png", png(320, 240, i)) for i in range(12)]
    _, first = submit(server, {"variants": 2, **FAST}, files)
    _, second = submit(server, {"variants": 1, **FAST}, files[:1])
    status, rec = jcall(server, "DELETE", f"/v1/jobs/{second['id']}")
    assert status == 200 and rec["state"] in ("cancelled", "running")
    deadline = time.time() + 60
    while jcall(server, "GET", f"/v1/jobs/{first['id']}")[1]["progress"]["done"] < 1 and time.time() < deadline:
        time.sleep(0.05)
    jcall(server, "DELETE", f"/v1/jobs/{first['id']}")
    rec = wait(server, first["id"])
    assert rec["state"] == "cancelled", rec
    assert 1 <= rec["progress"]["done"] < 12  # stopped between images, keeping what is done
    composites = [f for f in rec["files"] if "/composite_" in f["path"]]
    assert len(composites) == 2 * rec["summary"]["done"]
    assert wait(server, second["id"])["state"] == "cancelled"


def test_augment_job_from_an_uploaded_zip(server, tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(2):
            zf.writestr(f"set/images/train/im{i}.png", png(64, 48, i))
            zf.writestr(f"set/labels/train/im{i}.txt", "0 0.5 0.5 0.3 0.5\n")
        zf.writestr("set/data.yaml", "path: .\ntrain: images/train\nnames: {0: thing}\n")
    status, resp = submit(server, {"command": "augment", "variants": 2, "seed": 3}, [("set.zip", buf.getvalue())])
    assert status == 202, resp
    rec = wait(server, resp["id"])
    assert rec["state"] == "done", rec
    paths = {f["path"] for f in rec["files"]}
    assert sum(p.startswith("images/train/") for p in paths) == 4
    assert sum(p.startswith("labels/train/") for p in paths) == 4 and "data.yaml" in paths


def test_backends_and_models(server):
    status, body = jcall(server, "GET", "/v1/backends")
    assert status == 200 and any(b["stage"] == "generate" and b["name"] == "random" and b["usable"]
                                 for b in body["backends"])
    status, body = jcall(server, "GET", "/v1/models")
    assert status == 200 and any(m["name"] == "isnet-medium" for m in body["models"])


def test_docs_served_without_a_cdn(server):
    status, data, _ = call(server, "GET", "/docs", token=None)
    assert status == 200 and b"/docs-assets/swagger-ui-bundle.js" in data and b"cdn" not in data.lower()
    assert call(server, "GET", "/docs-assets/swagger-ui-bundle.js", token=None)[0] == 200
    status, data, _ = call(server, "GET", "/openapi.json", token=None)
    assert status == 200 and "/v1/jobs" in json.loads(data)["paths"]


def test_kill9_of_the_server_mid_job_and_a_restart_finish_it_exactly_once(tmp_path):
    srv = Server(tmp_path).start()
    try:
        files = [(f"k{i}.png", png(640, 480, i)) for i in range(6)]
        status, resp = submit(srv, {"variants": 3, "seed": 4, **FAST}, files)
        assert status == 202
        deadline = time.time() + 120
        while time.time() < deadline:
            rec = jcall(srv, "GET", f"/v1/jobs/{resp['id']}")[1]
            if rec["state"] == "running" and rec["progress"]["done"] >= 1:
                break
            time.sleep(0.02)
        assert rec["state"] == "running" and rec["progress"]["done"] < 6, rec
        worker_pid = int(rec_worker(srv, resp["id"]).split("-")[-2])
        srv.kill9()
        for _ in range(50):  # the worker dies with the server (nothing keeps writing)
            if not Path(f"/proc/{worker_pid}").exists() or "Z" in _proc_state(worker_pid):
                break
            time.sleep(0.1)
        else:
            raise AssertionError("the worker outlived the killed server")
        srv.start()
        rec = wait(srv, resp["id"], timeout=180)
        assert rec["state"] == "done", rec
        assert rec["attempts"] == 2
        composites = [f["path"] for f in rec["files"] if "/composite_" in f["path"]]
        assert len(composites) == 18 == len(set(composites))
        out = tmp_path / "serve" / "jobs" / resp["id"] / "out"
        lines = (out / "manifest.jsonl").read_text().splitlines()
        assert len(lines) == 18 == len({json.loads(x)["image"] for x in lines})  # nothing duplicated
    finally:
        srv.stop()


def rec_worker(srv: Server, job_id: str) -> str:
    from backdrop.jobs.queue import JobQueue

    return JobQueue(srv.home / "serve").get(job_id).worker


def _proc_state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[1].split()[0]
    except OSError:
        return "X"


def test_non_loopback_without_a_token_is_refused(tmp_path):
    env = {**os.environ, "PYTHONPATH": SRC, "BACKDROP_HOME": str(tmp_path)}
    env.pop("BACKDROP_TOKEN", None)
    proc = subprocess.run([sys.executable, "-m", "backdrop.cli", "serve", "--host", "0.0.0.0", "--no-token",
                           "--port", str(free_port())], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "needs a token" in lines[0] and "Traceback" not in proc.stderr


def test_token_made_on_first_start_is_0600_and_printed_once(tmp_path):
    srv = Server(tmp_path, token=None).start()
    srv.stop()
    token_file = tmp_path / "serve" / "token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    token = token_file.read_text().strip()
    logs = sorted(tmp_path.glob("serve-*.log"))
    assert token in logs[0].read_text()
    srv2 = Server(tmp_path, token=None).start()
    srv2.token = token
    assert jcall(srv2, "GET", "/v1/jobs")[0] == 200
    srv2.stop()
    assert token not in sorted(tmp_path.glob("serve-*.log"))[1].read_text()  # printed once


def test_concurrent_clients_and_two_workers_lose_and_duplicate_nothing(tmp_path):
    import threading

    srv = Server(tmp_path, "--workers", "2").start()
    try:
        ids: list[str] = []
        lock = threading.Lock()

        def client(k: int) -> None:
            for j in range(3):
                status, resp = submit(srv, {"variants": 1, "seed": k * 10 + j, **FAST}, [(f"c{k}_{j}.png", png(48, 36, j))])
                assert status == 202
                with lock:
                    ids.append(resp["id"])

        threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(ids) == len(set(ids)) == 12
        for job_id in ids:
            rec = wait(srv, job_id)
            assert rec["state"] == "done" and rec["attempts"] == 1, rec
            assert len([f for f in rec["files"] if "/composite_" in f["path"]]) == 1
        assert len(jcall(srv, "GET", "/v1/jobs?limit=100")[1]["jobs"]) == 12
    finally:
        srv.stop()


def test_events_stream_progress_while_the_job_runs(server):
    status, resp = submit(server, {"variants": 3, **FAST}, [(f"e{i}.png", png(320, 240, i)) for i in range(8)])
    assert status == 202
    req = urllib.request.Request(f"{server.url}/v1/jobs/{resp['id']}/events",
                                 headers={"Authorization": f"Bearer {TOKEN}"})
    events = []
    with urllib.request.urlopen(req, timeout=120) as stream:  # read as it arrives, until the server ends it
        kind = None
        for raw in stream:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                events.append((kind, json.loads(line[6:])))
    progress = [d for k, d in events if k == "progress"]
    assert events[-1] == ("end", {"id": resp["id"], "state": "done"})
    done = [d["progress"]["done"] for d in progress]
    assert done == sorted(done) and done[-1] == 8 and len(set(done)) >= 2  # seen moving, in order
    assert jcall(server, "GET", "/v1/jobs/nope/events")[0] == 404


def test_a_port_in_use_is_one_line_before_any_worker_starts(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {**os.environ, "PYTHONPATH": SRC, "BACKDROP_HOME": str(tmp_path), "BACKDROP_TOKEN": TOKEN}
        proc = subprocess.run([sys.executable, "-m", "backdrop.cli", "serve", "--port", str(port)], env=env,
                              capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [f"error: --host 127.0.0.1 --port {port}: cannot listen there "
                                                "(Address already in use)"]
    assert not list((tmp_path / "serve" / "workers").glob("*.lock"))
