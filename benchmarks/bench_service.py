"""`backdrop serve` under load: jobs/s end to end and the latency of status calls meanwhile.

    python benchmarks/bench_service.py                      # 50 jobs, 10 clients, 1 worker (~1 min, 2 cores)
    python benchmarks/bench_service.py --jobs 200 --clients 20 --workers 2

A real server (a subprocess with its own $BACKDROP_HOME in a temporary folder) on loopback.
N clients (threads) each submit their share of small ``run`` jobs (one 96x72 upload, one
variant, generator ``random``, segmenter ``classical``) and poll their jobs' status until each
ends. Printed side by side: submit latency, status latency (p50/p95/max, while the workers are
busy), jobs/s from the first submit to the last job done, and the correctness check that
matters more than speed: every job ``done``, each exactly once (``attempts == 1``) and with
exactly one composite. Timings depend on the machine and its load: the load average is printed
with them. Nothing here fails on timing; it fails only when a job is lost or duplicated.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

SRC = str(Path(__file__).resolve().parents[1] / "src")
TOKEN = "bench-" + uuid.uuid4().hex


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _png(seed: int) -> bytes:
    a = np.full((72, 96, 3), 40 + seed % 100, np.uint8)
    a[18:54, 30:66] = (200, 60, 60)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def _request(url: str, method: str = "GET", body: bytes | None = None, ctype: str | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, method=method, headers={"Authorization": f"Bearer {TOKEN}"})
    if ctype:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _multipart(params: dict, name: str, data: bytes) -> tuple[bytes, str]:
    b = uuid.uuid4().hex
    body = (f"--{b}\r\nContent-Disposition: form-data; name=\"params\"\r\n\r\n{json.dumps(params)}\r\n"
            f"--{b}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{b}--\r\n".encode()
    return body, f"multipart/form-data; boundary={b}"


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))] if values else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--jobs", type=int, default=50)
    ap.add_argument("--clients", type=int, default=10)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--poll", type=float, default=0.1, help="seconds between a client's status calls")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        port = _port()
        url = f"http://127.0.0.1:{port}"
        env = {**os.environ, "PYTHONPATH": SRC, "BACKDROP_HOME": tmp, "BACKDROP_TOKEN": TOKEN}
        log = open(Path(tmp) / "serve.log", "w")
        server = subprocess.Popen([sys.executable, "-m", "backdrop.cli", "serve", "--port", str(port),
                                   "--workers", str(args.workers)], env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            for _ in range(300):
                try:
                    if _request(url + "/v1/health")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.2)
            submit_ms: list[float] = []
            status_ms: list[float] = []
            ids: list[str] = []
            errors: list[str] = []
            lock = threading.Lock()
            t0 = time.perf_counter()
            ends: list[float] = []

            def client(k: int) -> None:
                mine = []
                for j in range(k, args.jobs, args.clients):
                    body, ctype = _multipart({"variants": 1, "seed": j, "generator": "random",
                                              "segmenter": "classical"}, f"img{j}.png", _png(j))
                    t = time.perf_counter()
                    status, resp = _request(url + "/v1/jobs", "POST", body, ctype)
                    with lock:
                        submit_ms.append((time.perf_counter() - t) * 1000)
                    if status != 202:
                        with lock:
                            errors.append(f"submit {status}: {resp}")
                        continue
                    mine.append(resp["id"])
                pending = set(mine)
                while pending:
                    for job_id in list(pending):
                        t = time.perf_counter()
                        status, rec = _request(f"{url}/v1/jobs/{job_id}")
                        with lock:
                            status_ms.append((time.perf_counter() - t) * 1000)
                        if rec.get("state") in ("done", "failed", "cancelled"):
                            pending.discard(job_id)
                            with lock:
                                ends.append(time.perf_counter())
                    time.sleep(args.poll)
                with lock:
                    ids.extend(mine)

            threads = [threading.Thread(target=client, args=(k,)) for k in range(args.clients)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = (max(ends) if ends else time.perf_counter()) - t0

            states: dict[str, int] = {}
            bad = []
            for job_id in ids:
                rec = _request(f"{url}/v1/jobs/{job_id}")[1]
                states[rec["state"]] = states.get(rec["state"], 0) + 1
                composites = [f for f in rec["files"] if "/composite_" in f["path"]]
                if rec["state"] != "done" or rec["attempts"] != 1 or len(composites) != 1:
                    bad.append((job_id, rec["state"], rec["attempts"], len(composites)))
            listed = _request(f"{url}/v1/jobs?limit=1000")[1]["jobs"]
        finally:
            server.terminate()
            server.wait(30)

    load = os.getloadavg()
    print(f"backdrop serve under load: {args.jobs} jobs, {args.clients} clients, {args.workers} worker(s); "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} on {os.cpu_count()} CPUs (shared machine)")
    print(f"{'':24s}{'p50 ms':>10s}{'p95 ms':>10s}{'max ms':>10s}{'calls':>8s}")
    for name, vals in (("submit (upload)", submit_ms), ("status (GET /v1/jobs/id)", status_ms)):
        print(f"{name:24s}{pct(vals, .5):10.1f}{pct(vals, .95):10.1f}{max(vals or [0]):10.1f}{len(vals):8d}")
    print(f"throughput: {len(ids)} jobs in {wall:.1f} s = {len(ids) / wall:.2f} jobs/s (submit to last done)")
    print(f"states: {states}; listed by the server: {len(listed)}; submit errors: {len(errors)}")
    ok = not bad and not errors and len(ids) == args.jobs == len(set(ids)) == len(listed)
    print("every job done exactly once: " + ("yes" if ok else f"NO: {bad[:5]} {errors[:3]}"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
