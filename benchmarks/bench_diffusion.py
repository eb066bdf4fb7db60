"""Time the Stable Diffusion generators: load, seconds per denoising step, seconds per image.

By default it builds the tiny random pipelines of tests/tiny_models.py in a temporary folder
(no download, CPU-friendly) and times all three backends. Give ``--model`` (a local folder or
a Hub id already in the cache) to time a real model. Prints figures; never asserts.

    python benchmarks/bench_diffusion.py                         # tiny pipelines, 64 px, 4 steps
    python benchmarks/bench_diffusion.py --model /models/sd15 --backend sd-txt2img \\
        --steps 20 --size 512 --device auto
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "tests"))

BACKENDS = ["sd-txt2img", "sd-inpaint", "sd-img2img"]


def _request(size: int, seed: int, progress):
    from backdrop.types import GenerateRequest, Prompt

    w, h = size * 3 // 2, size
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")
    mask = np.zeros((h, w), np.uint8)
    mask[h // 4 : 3 * h // 4, w // 3 : 2 * w // 3] = 255
    return GenerateRequest(
        image=img,
        mask=Image.fromarray(mask, "L"),
        background=img,
        known=Image.fromarray(255 - mask, "L"),
        prompt=Prompt("a photo of a sandy beach", "blurry"),
        seed=seed,
        progress=progress,
    )


def bench(name: str, model: str, args: argparse.Namespace) -> None:
    from backdrop.config import GenerateConfig
    from backdrop.generate import GENERATORS

    config = GenerateConfig(
        backend=name, model=model, steps=args.steps, short_side=args.size, device=args.device,
        dtype=args.dtype, scheduler=args.scheduler, offload=args.offload,
    )
    gen = GENERATORS.create(name, config)
    t0 = time.perf_counter()
    gen.load()
    load_s = time.perf_counter() - t0

    stamps: list[float] = []
    per_image: list[float] = []
    per_step: list[float] = []
    for i in range(args.warmup + args.repeat):
        stamps.clear()
        start = time.perf_counter()
        gen(_request(args.size, seed=i, progress=lambda s, t: stamps.append(time.perf_counter())))
        took = time.perf_counter() - start
        if i < args.warmup:
            continue
        per_image.append(took)
        marks = [start] + stamps
        per_step += [b - a for a, b in zip(marks[1:], marks[2:])]  # step 1 also holds text encoding
    info = gen.describe()
    step = statistics.median(per_step) if per_step else float("nan")
    print(
        f"{name:11s} load {load_s:6.2f} s | {statistics.median(per_image):7.3f} s/image "
        f"(min {min(per_image):.3f}) | {step:7.4f} s/step | size {info['size']} steps {info['steps']} "
        f"sampler {info['sampler']}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", help="a local folder or cached Hub id (default: build tiny random pipelines)")
    ap.add_argument("--backend", choices=BACKENDS + ["all"], default="all")
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="short side of the generation size (multiple of 8)")
    ap.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    ap.add_argument("--dtype", default="auto", choices=["auto", "float16", "bfloat16", "float32"])
    ap.add_argument("--scheduler", default="default")
    ap.add_argument("--offload", action="store_true")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = ap.parse_args()

    import diffusers
    import torch

    from backdrop.devices import pick_device, pick_dtype

    if args.threads:
        torch.set_num_threads(args.threads)
    device = pick_device(args.device)
    print(
        f"device {device} | dtype {str(pick_dtype(device, args.dtype)).replace('torch.', '')} | "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads) | diffusers {diffusers.__version__} | "
        f"{platform.processor() or platform.machine()}"
    )
    if device == "cuda":
        print(f"gpu {torch.cuda.get_device_name(0)}")
    names = BACKENDS if args.backend == "all" else [args.backend]

    with tempfile.TemporaryDirectory() as tmp:
        if args.model:
            models = {name: args.model for name in names}
            print(f"model {args.model}")
        else:
            from tiny_models import make_tiny_sd

            plain = str(make_tiny_sd(Path(tmp) / "sd"))
            inpaint = str(make_tiny_sd(Path(tmp) / "sd-inpaint", inpaint=True))
            models = {"sd-txt2img": plain, "sd-img2img": plain, "sd-inpaint": inpaint}
            print("model tiny random pipelines (tests/tiny_models.py)")
        from backdrop.errors import BackdropError

        for name in names:
            try:
                bench(name, models[name], args)
            except BackdropError as exc:
                print(f"{name:11s} cannot run: {exc}")


if __name__ == "__main__":
    main()
