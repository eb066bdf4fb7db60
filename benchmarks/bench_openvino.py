"""OpenVINO vs plain torch on this CPU: the 4-step LCM recipe, full-size SD 1.5 architecture, random weights.

Issue #11 item 9 asked whether an OpenVINO runtime is worth adopting (>= 1.5x faster here) and whether
it brings the 4-step path to <= 12 s per 512x512 image. It was (figures in the README), and backdrop
now runs it as ``--runtime openvino`` (``backdrop.generate.ov_runtime``); the last part of this script
times that path too: a ``Txt2ImgGenerator`` with ``runtime="openvino"`` on the same model folders
(load with conversion or cache, then whole images through backdrop's generator).

The random full-size models come from ``bench_sd_full.build`` (UNet 859 M, VAE 84 M, CLIP text 123 M,
TAESD; nothing downloaded or committed). One diffusers pipeline runs the recipe: LCM scheduler,
4 steps, no CFG (guidance 1), TAESD decoder, 512x512, fp32 weights. The LCM-LoRA is left out: fused,
it costs nothing per step. The same pipeline object then runs with its UNet and TAESD decoder
swapped for OpenVINO models (converted from the same torch modules with ``openvino.convert_model``,
static shapes for the image size, saved as IR under ``--workdir`` and reused), compiled for the CPU
with ``INFERENCE_NUM_THREADS`` = torch's thread count and the latency hint; in two precisions:
``f32`` (like torch) and OpenVINO's default on this CPU (``bf16`` where the CPU has AVX512-BF16/AMX,
which changes the numbers a little: the UNet's output difference is printed). The text encoder stays
in torch in both (~0.1 s). torch's own bf16 (CPU autocast) is measured too, to tell OpenVINO's gain
from bf16's. Scheduler, tokenizer and image post-processing are the same code.

Printed: per runtime, the cheapest UNet pass (batch 1), TAESD decode and the whole image (best of
``--repeats`` after a warm-up image), then the ratios. torch runs first, before any OpenVINO model
exists, and again at the end; the OpenVINO models are compiled one at a time and freed after use.
Then the bare pipeline is freed and backdrop's own generator is loaded with ``runtime="openvino"``
(its IR cache under ``--backdrop-home``, default WORKDIR/backdrop-home: the first run converts,
later ones reuse it; ``--skip-backdrop`` leaves this part out) and timed the same way.

Why not optimum-intel (``OVStableDiffusionPipeline.from_pretrained(folder, export=True)``)?
optimum-intel 2.2.0 (the newest) needs transformers < 5.6 and huggingface-hub < 1.22; this
environment has transformers 5.24 and huggingface-hub 2.4, and installed with ``--no-deps`` it fails
at import (``cannot import name 'VisionRotaryEmbedding'``). Its export does what this script does:
``openvino.convert_model`` of each torch module, then a static reshape.

    pip install openvino==2026.4.1
    python benchmarks/bench_openvino.py --threads 2          # ~3 min on 2 cores (+3 the first time), ~12.5 GB RAM
    python benchmarks/bench_openvino.py --tiny --size 64     # a quick check of the code path
    (the backdrop part converts again into its own cache the first time: another ~12 GB peak)
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sd_full import PROMPT, build, peak_gib, time_parts  # noqa: E402  (also puts tests/ on the path)

STEPS = 4


def tiny_paths(workdir: Path) -> dict[str, Path]:
    """Tiny random models with the same layout (``--tiny``: a check of the code path only)."""
    from tiny_models import make_tiny_sd, make_tiny_taesd

    paths = {"sd": workdir / "tiny-sd", "taesd": workdir / "tiny-taesd"}
    if not paths["sd"].exists():
        make_tiny_sd(paths["sd"])
        make_tiny_taesd(paths["taesd"])
    return paths


def load_pipeline(paths: dict[str, Path]):
    from diffusers import AutoencoderTiny, LCMScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(paths["sd"], safety_checker=None, requires_safety_checker=False)
    pipe.vae = AutoencoderTiny.from_pretrained(paths["taesd"])
    pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class _UNetIO:
    """The UNet as a plain function of tensors (what is traced and converted)."""

    def __init__(self, unet):
        import torch

        class Wrapped(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.unet = unet

            def forward(self, sample, timestep, encoder_hidden_states):
                return self.unet(sample, timestep, encoder_hidden_states, return_dict=False)[0]

        self.module = Wrapped().eval()


def convert(pipe, size: int, ir_dir: Path) -> tuple[dict[str, Path], float]:
    """Convert the UNet and the TAESD decoder to OpenVINO IR with static shapes for ``size``."""
    import openvino as ov
    import torch

    latent = size // pipe.vae_scale_factor
    unet_cfg = pipe.unet.config
    seq = pipe.tokenizer.model_max_length
    files = {"unet": ir_dir / f"unet-{size}.xml", "decoder": ir_dir / f"taesd-decoder-{size}.xml"}
    if all(f.exists() for f in files.values()):
        return files, 0.0
    ir_dir.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    shapes = [[1, unet_cfg.in_channels, latent, latent], [1], [1, seq, unet_cfg.cross_attention_dim]]
    example = (torch.randn(shapes[0]), torch.tensor([999], dtype=torch.int64), torch.randn(shapes[2]))
    with torch.no_grad():
        model = ov.convert_model(_UNetIO(pipe.unet).module, example_input=example)
    model.reshape({i: ov.PartialShape(s) for i, s in enumerate(shapes)})
    ov.save_model(model, files["unet"], compress_to_fp16=False)
    del model
    gc.collect()
    z = torch.randn(1, pipe.vae.config.latent_channels, latent, latent)
    with torch.no_grad():
        model = ov.convert_model(pipe.vae.decoder.eval(), example_input=(z,))
    model.reshape({0: ov.PartialShape(list(z.shape))})
    ov.save_model(model, files["decoder"], compress_to_fp16=False)
    del model
    gc.collect()
    return files, time.perf_counter() - t


class OVRuntime:
    """OpenVINO-compiled UNet and TAESD decoder, swapped into the pipeline's modules' ``forward``."""

    def __init__(self, files: dict[str, Path], precision: str | None, threads: int):
        import openvino as ov

        core = ov.Core()
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        if precision:
            config["INFERENCE_PRECISION_HINT"] = precision
        t = time.perf_counter()
        self.unet = core.compile_model(files["unet"], "CPU", config)
        self.decoder = core.compile_model(files["decoder"], "CPU", config)
        self.compile_s = time.perf_counter() - t
        self.precision = self.unet.get_property("INFERENCE_PRECISION_HINT").to_string()
        self.unet_req, self.decoder_req = self.unet.create_infer_request(), self.decoder.create_infer_request()

    def unet_forward(self, sample, timestep, encoder_hidden_states=None, *args, return_dict=True, **kwargs):
        import torch

        t = timestep if torch.is_tensor(timestep) else torch.tensor(timestep)
        out = self.unet_req.infer([sample.numpy(), t.reshape(1).to(torch.int64).numpy(),
                                   encoder_hidden_states.numpy()], share_inputs=True)
        return (torch.from_numpy(out[0].copy()),)

    def decoder_forward(self, x):
        import torch

        return torch.from_numpy(self.decoder_req.infer([x.numpy()], share_inputs=True)[0].copy())

    def attach(self, pipe) -> None:
        pipe.unet.forward = self.unet_forward
        pipe.vae.decoder.forward = self.decoder_forward


def detach(pipe) -> None:
    """Back to torch."""
    for module in (pipe.unet, pipe.vae.decoder):
        module.__dict__.pop("forward", None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/backdrop-bench-sd-full"))
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch and OpenVINO threads (0: torch's own choice)")
    parser.add_argument("--tiny", action="store_true", help="tiny random models: a code-path check, not a figure")
    parser.add_argument("--skip-bf16", action="store_true", help="only fp32 (torch and OpenVINO)")
    parser.add_argument("--skip-backdrop", action="store_true", help="leave out backdrop's --runtime openvino path")
    parser.add_argument("--backdrop-home", type=Path, default=None,
                        help="BACKDROP_HOME for backdrop's IR cache [default: WORKDIR/backdrop-home]")
    args = parser.parse_args()

    import openvino as ov
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f}; torch {torch.__version__}, OpenVINO {ov.get_version()}, {threads} threads; "
          f"{args.size}x{args.size}, LCM {STEPS} steps, no CFG, TAESD", flush=True)
    paths = tiny_paths(args.workdir) if args.tiny else build(args.workdir)
    pipe = load_pipeline(paths)
    size = args.size

    autocast = {"on": False}  # torch's own bf16 (CPU autocast): is a gain OpenVINO's or bf16's?

    def image():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast["on"]):
            pipe(prompt=PROMPT, num_inference_steps=STEPS, guidance_scale=1.0, width=size, height=size,
                 generator=torch.Generator("cpu").manual_seed(1), output_type="pil")

    # torch warm-up: safetensors weights are memory-mapped, the first pass reads them from disk
    t = time.perf_counter()
    with torch.no_grad():
        pipe(prompt=PROMPT, num_inference_steps=1, guidance_scale=1.0, width=size, height=size, output_type="pil")
    print(f"[torch] load + warm-up {time.perf_counter() - t:.1f} s; peak {peak_gib():.1f} GiB", flush=True)

    parts = time_parts(pipe)
    results: dict[str, dict[str, list[float]]] = {}

    def measure(name: str, make=image) -> None:
        """A warm-up image, then ``--repeats`` timed ones, with whatever runtime is attached."""
        r = results[name] = {"image": [], "unet": [], "vae": []}
        for i in range(args.repeats + 1):
            before = {k: len(v) for k, v in parts.items()}
            t = time.perf_counter()
            make()
            if i == 0:
                continue
            r["image"].append(time.perf_counter() - t)
            for k in ("unet", "vae"):
                r[k] += parts[k][before[k]:]
            print(f"[{name}] image {r['image'][-1]:.2f} s; UNet passes "
                  f"{', '.join(f'{t:.2f}' for t in r['unet'][-STEPS:])} s, TAESD decode {r['vae'][-1]:.2f} s; "
                  f"load average {os.getloadavg()[0]:.1f}", flush=True)

    # torch first, before any OpenVINO model exists (they hold 3-6 GB more); again at the end
    measure("torch fp32")
    if not args.skip_bf16:
        autocast["on"] = True
        measure("torch bf16 autocast")
        autocast["on"] = False

    # the UNet's output on one input: the reference for each OpenVINO model
    latent = size // pipe.vae_scale_factor
    g = torch.Generator("cpu").manual_seed(0)
    x = torch.randn(1, pipe.unet.config.in_channels, latent, latent, generator=g)
    ehs = torch.randn(1, pipe.tokenizer.model_max_length, pipe.unet.config.cross_attention_dim, generator=g)
    step = torch.tensor(759)
    with torch.no_grad():
        ref = pipe.unet(x, step, ehs, return_dict=False)[0]

    files, convert_s = convert(pipe, size, args.workdir / ("ov-ir-tiny" if args.tiny else "ov-ir"))
    print(f"[openvino] converted UNet + TAESD decoder to IR in {convert_s:.0f} s"
          f"{' (cached)' if not convert_s else ''}; peak {peak_gib():.1f} GiB", flush=True)
    for precision in (["f32"] if args.skip_bf16 else ["f32", None]):  # one compiled model at a time
        rt = OVRuntime(files, precision, threads)
        if not precision and rt.precision == "f32":
            break  # the default is f32 on this CPU: nothing more to measure
        name = f"OpenVINO {rt.precision}{'' if precision else ' (its default here)'}"
        out = rt.unet_forward(x, step, ehs)[0]
        rel = ((out - ref).abs().max() / ref.abs().max()).item()
        print(f"[openvino] compiled ({rt.precision}) in {rt.compile_s:.0f} s; UNet output vs torch: max |difference| "
              f"/ max |torch| = {rel:.2e}; peak {peak_gib():.1f} GiB", flush=True)
        rt.attach(pipe)
        measure(name)
        detach(pipe)
        del rt
        gc.collect()

    # torch again, after the OpenVINO models are freed: how steady the torch figure is
    measure("torch fp32, again after OpenVINO")

    if not args.skip_backdrop:  # backdrop's own path: the same recipe through Txt2ImgGenerator
        pipe = None  # the bare pipeline's torch weights: freed before backdrop loads its own
        gc.collect()
        os.environ["BACKDROP_HOME"] = str(args.backdrop_home or args.workdir / "backdrop-home")
        from backdrop.config import GenerateConfig
        from backdrop.generate.diffusion import Txt2ImgGenerator
        from backdrop.types import Prompt

        gen = Txt2ImgGenerator(GenerateConfig(
            backend="sd-txt2img", model=str(paths["sd"]), device="cpu", tiny_vae=str(paths["taesd"]),
            scheduler="lcm", steps=STEPS, guidance=1.0, short_side=size, batch_size=1, threads=threads,
            runtime="openvino", openvino_precision="f32" if args.skip_bf16 else "auto"))
        t = time.perf_counter()
        gen.load()
        load_s = time.perf_counter() - t
        parts = time_parts(gen._pipe)
        print(f"[backdrop] loaded with runtime openvino in {load_s:.0f} s "
              f"({'converted ' + ' and '.join(gen._ov.converted) if gen._ov.converted else 'IR from the cache'}: "
              f"{gen._ov.folder}); peak {peak_gib():.1f} GiB", flush=True)
        name = "backdrop --runtime openvino"
        measure(name, lambda: gen.generate(Prompt(PROMPT), 1, size, size, 1))
        described = gen.describe()
        results[f"{name} ({described['openvino_precision']})"] = results.pop(name)

    base = results["torch fp32"]
    rows = [("runtime", "UNet pass (batch 1)", "TAESD decode", f"whole image ({STEPS} steps)",
             "vs torch (UNet / image)")]
    for name, r in results.items():
        rows.append((name, f"{min(r['unet']):.2f} s", f"{min(r['vae']):.2f} s", f"{min(r['image']):.2f} s",
                     f"{min(base['unet']) / min(r['unet']):.2f}x / {min(base['image']) / min(r['image']):.2f}x"))
    print(f"\nbest of {args.repeats} after a warm-up, {size}x{size}, {threads} threads, load average now "
          f"{os.getloadavg()[0]:.1f}, peak resident memory {peak_gib():.1f} GiB:")
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)))
    best = min((min(r["image"]), name) for name, r in results.items())
    speedup = min(base["image"]) / best[0]
    print(f"\nfastest: {best[1]}, {best[0]:.1f} s per image ({speedup:.2f}x torch): "
          f"{'meets' if speedup >= 1.5 else 'misses'} the 1.5x bar, {'meets' if best[0] <= 12 else 'misses'} 12 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
