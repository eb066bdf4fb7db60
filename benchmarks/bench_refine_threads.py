"""The llama.cpp refiner on a busy machine: the old thread count (every logical CPU) vs backdrop's
choice (``devices.pick_threads``: the free physical cores).

Starts ``--busy`` processes that spin on the CPU (others' work on a shared machine), then times
the same captions with each thread count, alternating, and prints the seconds per prompt. Never
asserts anything.

    python benchmarks/bench_refine_threads.py                 # busy = number of CPUs
    python benchmarks/bench_refine_threads.py --busy 0        # a quiet machine
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from bench_refine_llm import CAPTIONS, find_smollm2  # noqa: E402

from backdrop.config import RefineConfig  # noqa: E402
from backdrop.devices import physical_cores, pick_threads  # noqa: E402
from backdrop.refine import REFINERS  # noqa: E402


def _spin(stop) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _time(threads: int, model: str, captions: list[str]) -> list[float]:
    refiner = REFINERS.create("llama-cpp", RefineConfig(backend="llama-cpp", model=model, threads=threads))
    refiner.load()
    out = []
    for caption in captions:
        t = time.perf_counter()
        refiner(caption)
        out.append(time.perf_counter() - t)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--busy", type=int, default=os.cpu_count() or 1, help="CPU-spinning processes to start")
    parser.add_argument("--captions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    model = find_smollm2()
    if model is None:
        print("SmolLM2 not found: run `backdrop models pull smollm2-135m-instruct`")
        return 1
    stop = mp.Event()
    spinners = [mp.Process(target=_spin, args=(stop,), daemon=True) for _ in range(args.busy)]
    for p in spinners:
        p.start()
    time.sleep(3 if args.busy else 0)  # let the load average notice them
    try:
        old, new = os.cpu_count() or 1, pick_threads()
        print(f"{os.cpu_count()} logical CPUs, {physical_cores()} physical; {args.busy} spinning processes; "
              f"load average {os.getloadavg()[0]:.1f}")
        print(f"old choice: n_threads = os.cpu_count() = {old}; new: pick_threads() = {new}")
        times: dict[str, list[float]] = {"old": [], "new": []}
        captions = CAPTIONS[: args.captions]
        for _ in range(args.rounds):
            times["old"] += _time(old, str(model), captions)
            times["new"] += _time(new, str(model), captions)
        for key, n in (("old", old), ("new", new)):
            t = times[key]
            print(f"{key} ({n} threads): median {statistics.median(t):.2f} s, mean {statistics.mean(t):.2f} s, "
                  f"max {max(t):.2f} s per prompt over {len(t)}")
    finally:
        stop.set()
        for p in spinners:
            p.join(timeout=5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
