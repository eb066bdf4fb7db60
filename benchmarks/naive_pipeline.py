"""The naive baseline for `bench_augment.py`: what a user writes without backdrop.

For every image it builds a new rembg session (ISNet from the model store) and loads the LLM
again, then: mask, full-resolution OpenCV inpainting, a describe caption, an LLM prompt, a
texture background, compositing, and a PNG written next to the others. No labels are read
(the segmenter decides what is object), no stage is skipped, nothing is reused.

    .venv/bin/python benchmarks/naive_pipeline.py IMAGES_DIR OUT_DIR [--limit 20]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import cv2
import numpy as np
from PIL import Image


def naive(images: list[Path], out: Path) -> float:
    """Process ``images`` the naive way; returns the seconds taken."""
    import llama_cpp
    import rembg

    from backdrop.caption.describe import DescribeCaptioner
    from backdrop.config import CaptionConfig, GenerateConfig
    from backdrop.generate.texture import TextureGenerator
    from backdrop.models import path as model_path
    from backdrop.types import GenerateRequest, Prompt

    out.mkdir(parents=True, exist_ok=True)
    isnet = str(model_path("isnet-medium"))
    gguf = str(model_path("smollm2-135m-instruct"))
    os.environ["U2NET_HOME"] = str(Path(isnet).parent)  # rembg loads custom models from its home only
    t0 = time.perf_counter()
    for i, p in enumerate(images):
        session = rembg.new_session("dis_custom", model_path=isnet)  # a new session per image
        llm = llama_cpp.Llama(model_path=gguf, n_ctx=512, verbose=False)  # the LLM loaded again
        img = Image.open(p).convert("RGB")
        mask = np.asarray(rembg.remove(img, session=session, only_mask=True).convert("L").resize(img.size))
        fg = mask >= 128
        hole = cv2.dilate(fg.astype(np.uint8) * 255, np.ones((15, 15), np.uint8))
        clean = cv2.inpaint(np.asarray(img), hole, 5, cv2.INPAINT_TELEA)  # full resolution
        caption = DescribeCaptioner(CaptionConfig())(Image.fromarray(clean))
        answer = llm.create_chat_completion(
            [{"role": "user", "content": f"Write a short Stable Diffusion prompt for a background: {caption}"}],
            max_tokens=60, temperature=0.2, seed=0)
        prompt = answer["choices"][0]["message"]["content"]
        known = Image.fromarray(np.where(hole > 0, 0, 255).astype(np.uint8))
        bg = TextureGenerator(GenerateConfig())(GenerateRequest(
            image=img, mask=Image.fromarray(fg.astype(np.uint8) * 255), background=Image.fromarray(clean),
            known=known, prompt=Prompt(prompt), seed=i))
        comp = np.where(fg[..., None], np.asarray(img), np.asarray(bg))
        Image.fromarray(comp).save(out / f"{p.stem}_1.png")
        del session, llm
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("images", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--limit", type=int, default=20)
    args = ap.parse_args()
    files = sorted(p for p in args.images.rglob("*") if p.suffix.lower() in (".jpg", ".png"))[: args.limit]
    secs = naive(files, args.out)
    print(f"naive: {len(files)} images in {secs:.1f} s = {len(files) / secs:.3f} images/s")


if __name__ == "__main__":
    main()
