"""The `backdrop` command: thin over the Python API (builds a config, calls the pipeline).

Errors print one line and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from .cli_common import fail as _fail  # noqa: F401 - the names commands here use
from .cli_common import guarded
from .options import build_config  # noqa: F401 - kept importable from here
from .cli_common import setup_logging as _setup_logging

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="backdrop: new, realistic backgrounds for images, and a local text-to-image studio.",
)
log = logging.getLogger("backdrop")


def _names(registry_attr: str) -> str:
    from importlib import import_module

    module, attr = registry_attr.split(":")
    return ", ".join(getattr(import_module(f"backdrop.{module}"), attr).names())


def _augment_default() -> str:
    from .generate import AUGMENT_DEFAULT

    return AUGMENT_DEFAULT


def _formats() -> Any:
    from .datasets import FORMATS  # the registry: help, choices and messages come from it

    return FORMATS


def _presets() -> str:
    from .config import PRESETS

    return ", ".join(PRESETS)


@app.command()
def run(
    inputs: List[Path] = typer.Argument(..., help="image files or folders of images"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="output folder; each image gets OUT/<name>/"),
    variants: Optional[int] = typer.Option(None, "--variants", "-n", help="new backgrounds per image [default: 1]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="base seed: each image's seed derives from it and the image's path; drawn and recorded if not given"),
    preset: Optional[str] = typer.Option(None, "--preset", help=f"a named config: {_presets()} (see the README's table)"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="a .json or .toml config (see README)"),
    segmenter: Optional[str] = typer.Option(None, "--segmenter", help=f"segment backend: auto, {_names('segment:SEGMENTERS')}"),
    inpainter: Optional[str] = typer.Option(None, "--inpainter", help=f"inpaint backend: {_names('inpaint:INPAINTERS')}"),
    captioner: Optional[str] = typer.Option(None, "--captioner", help=f"caption backend: {_names('caption:CAPTIONERS')}"),
    refiner: Optional[str] = typer.Option(None, "--refiner", help=f"refine backend: auto, {_names('refine:REFINERS')}"),
    generator: Optional[str] = typer.Option(None, "--generator", help=f"generate backend: {_names('generate:GENERATORS')}"),
    style: Optional[str] = typer.Option(None, "--style", help="style preset (see `backdrop styles`)"),
    styles_file: Optional[Path] = typer.Option(None, "--styles-file", help="extra style presets (TOML/JSON)"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="fixed prompt: skips caption and refine"),
    negative: Optional[str] = typer.Option(None, "--negative", help="negative prompt (replaces the style's)"),
    backgrounds: Optional[Path] = typer.Option(None, "--backgrounds", help="folder of backgrounds (pool generator)"),
    seg_model: Optional[str] = typer.Option(None, "--seg-model", help="rembg model name, store name or .onnx path"),
    alpha_matting: Optional[bool] = typer.Option(None, "--alpha-matting/--no-alpha-matting", help="rembg alpha matting"),
    seg_size: Optional[int] = typer.Option(None, "--seg-size", help="ISNet input side, a multiple of 32 (smaller is faster; see README's bench_isnet table) [default: 1024]"),
    seg_runtime: Optional[str] = typer.Option(None, "--seg-runtime", help="what runs ISNet: onnxruntime or openvino (compiled once, cached)"),
    caption_model: Optional[str] = typer.Option(None, "--caption-model", help="captioning model id or folder (git)"),
    llm_model: Optional[str] = typer.Option(None, "--llm-model", help="GGUF file name or path (llama-cpp, gpt4all)"),
    llm_path: Optional[Path] = typer.Option(None, "--llm-path", help="folder holding the GGUF"),
    sd_model: Optional[str] = typer.Option(None, "--sd-model", help="diffusers model id or local folder (sd-*)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="denoising steps (sd-*)"),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="CFG scale (sd-*)"),
    scheduler: Optional[str] = typer.Option(None, "--scheduler", help="default (the profile's), ddim, pndm, euler, euler-a, dpm++, lms, unipc, lcm"),
    strength: Optional[float] = typer.Option(None, "--strength", help="img2img strength 0..1 (sd-img2img)"),
    short_side: Optional[int] = typer.Option(None, "--short-side", help="generation short side, multiple of 8 (sd-*)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or mps, for every model stage"),
    offload: Optional[bool] = typer.Option(None, "--offload/--no-offload", help="model CPU offload (small GPUs)"),
    lora: Optional[List[str]] = typer.Option(None, "--lora", help="LoRA PATH_OR_ID[:SCALE], repeatable; 'lcm': the family's LCM-LoRA (sd-*)"),
    tiny_vae: Optional[str] = typer.Option(None, "--tiny-vae", help="AutoencoderTiny id/folder/store name, or auto (sd-*)"),
    profile: Optional[str] = typer.Option(None, "--profile", help="model family defaults: auto, sd15, sdxl, sd-turbo, sdxl-turbo, lcm"),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="variants per diffusion call [default: 0 = auto]"),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch and llama.cpp [default: free cores]"),
    compile_unet: Optional[bool] = typer.Option(None, "--compile/--no-compile", help="torch.compile the UNet (CUDA)"),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="torch, or openvino: UNet + VAE decoder as OpenVINO models on the CPU (converted once, cached; pip install 'backdrop[openvino]') (sd-*)"),
    openvino_precision: Optional[str] = typer.Option(None, "--openvino-precision", help="runtime openvino: auto (the CPU's default, bf16 where it has AMX/AVX512-BF16) or f32"),
    vae_tiling: Optional[bool] = typer.Option(None, "--vae-tiling/--no-vae-tiling", help="decode large images in tiles"),
    harmonize: Optional[bool] = typer.Option(None, "--harmonize/--no-harmonize", help="match the edge colour to the new background"),
    feather: Optional[int] = typer.Option(None, "--feather", help="a soft band of N px outside the object (default 0: paste exactly along the mask; a band is a cue a model can learn)"),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="refuse larger inputs [default: 60000000]"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace backdrop's own earlier outputs (never other files)"),
    mask_cache: str = typer.Option("auto", "--mask-cache", help="keep segmenter masks by image content for later runs: auto ($BACKDROP_HOME/cache/masks), a folder, or off"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="each image's details too (-vv: and the model libraries' notices)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="errors only, no progress bar"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Give each input image N new backgrounds, keeping the object pixel-identical.

    OUT/<name>/ per image, where <name> is the image's path relative to the folder given (its
    class folder kept) without the suffix. A rerun of the same command resumes: what is done is
    skipped, what a crash cut short is redone."""
    _setup_logging(verbose, quiet)
    cfg = guarded(debug, lambda: build_config(
        config_file=config_file, preset=preset, variants=variants, seed=seed, prompt=prompt, negative=negative,
        max_pixels=max_pixels, stages={
            "segment": {"backend": segmenter, "model": seg_model, "alpha_matting": alpha_matting, "device": device,
                        "size": seg_size, "runtime": seg_runtime},
            "inpaint": {"backend": inpainter},
            "caption": {"backend": captioner, "model": caption_model, "device": device},
            "refine": {"backend": refiner, "style": style, "styles_file": _str(styles_file), "model": llm_model,
                       "model_path": _str(llm_path), "threads": threads},
            "generate": {"backend": generator, "model": sd_model, "steps": steps, "guidance": guidance,
                         "scheduler": scheduler, "strength": strength, "short_side": short_side, "device": device,
                         "offload": offload, "backgrounds": _str(backgrounds),
                         "lora": tuple(lora) if lora else None, "tiny_vae": tiny_vae, "profile": profile,
                         "batch_size": batch_size, "threads": threads, "compile": compile_unet,
                         "vae_tiling": vae_tiling, "runtime": runtime, "openvino_precision": openvino_precision},
            "composite": {"harmonize": harmonize, "feather": feather},
        }))
    from .job import Job

    job = guarded(debug, lambda: Job(config=cfg, out=str(out), kind="run", inputs=tuple(str(i) for i in inputs),
                                     overwrite=overwrite, mask_cache=_cache_option(mask_cache)))
    _run_job(job, engine="local", quiet=quiet, debug=debug)


def _run_job(job: Any, *, engine: str, quiet: bool, debug: bool, engine_options: dict[str, Any] | None = None,
             after: Optional[Callable[[], None]] = None) -> None:
    """Plan, load, run and report a job (then ``after()``); exits with the summary's code."""
    def start():
        from .items import start as start_job

        if engine == "ray":  # a missing extra is one line before any output folder exists
            from .registry import require

            require("ray", "ray", "--engine ray")
        return start_job(job, load=engine == "local")

    plan, worker = guarded(debug, start)

    def on_outcome(o: Any) -> None:
        if o.status in ("failed", "dropped"):
            typer.echo(f"error: {o.message}", err=True)

    def go():
        if engine == "ray":
            from .engine.ray import run_ray

            return run_ray(plan.job, plan=plan, on_outcome=on_outcome, progress=not quiet, **(engine_options or {}))
        from .engine.local import run_local

        return run_local(plan.job, plan=plan, worker=worker, on_outcome=on_outcome, progress=not quiet)

    summary = guarded(debug, go)
    if not quiet:
        base = plan.job.base_seed
        for line in summary.lines(job.out):
            typer.echo(line, err=True)
        typer.echo(f"base seed {base} (each image's seed derives from it and the image's path)", err=True)
    if after is not None:
        after()
    if summary.failed:
        raise typer.Exit(summary.exit_code)


def _cache_option(value: str) -> Optional[str]:
    return None if value.lower() in ("off", "none", "no", "") else value


def _str(p: Optional[Path]) -> Optional[str]:
    return None if p is None else str(p)


@app.command()
def augment(
    source: Path = typer.Argument(..., help=f"the data set's root folder: {_formats().looked_for()}"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="the new data set's folder [default: SOURCE-backdrop beside it]"),
    variants: int = typer.Option(3, "--variants", "-n", help="new images per training image"),
    seed: Optional[int] = typer.Option(None, "--seed", help="base seed; each image's seed derives from it and its relative path"),
    fmt: str = typer.Option("auto", "--format", help=_formats().choices()),
    splits: str = typer.Option("train", "--splits", help="comma-separated splits to augment; the others are copied unchanged"),
    copy_other_splits: bool = typer.Option(True, "--copy-other-splits/--drop-other-splits", help="copy val/test unchanged, or leave them out"),
    include_originals: bool = typer.Option(False, "--include-originals", help="put the source images in the new set too"),
    image_format: str = typer.Option("same", "--image-format", help="same (as the source), png or jpg"),
    quality: int = typer.Option(95, "--quality", help="JPEG quality of written images"),
    save_masks: bool = typer.Option(False, "--save-masks", help="also write each image's mask and clean background, under DST/.backdrop/side/ (where no loader looks)"),
    box_fallback: str = typer.Option("box", "--box-fallback", help="boxes-only labels, mask misses an object: box (keep the whole box) or skip"),
    box_cover: float = typer.Option(0.3, "--box-cover", help="--no-box-prompt: share of a box the mask must cover before --box-fallback applies"),
    box_prompt: bool = typer.Option(True, "--box-prompt/--no-box-prompt", help="boxes-only labels: segment each box on its own (whole objects on busy backgrounds), or the whole frame once"),
    seg_model: Optional[str] = typer.Option(None, "--seg-model", help="rembg model name, store name or .onnx path"),
    seg_size: Optional[int] = typer.Option(None, "--seg-size", help="ISNet input side, a multiple of 32 (smaller is faster; see README's bench_isnet table) [default: 1024]"),
    seg_runtime: Optional[str] = typer.Option(None, "--seg-runtime", help="what runs ISNet: onnxruntime or openvino (compiled once, cached)"),
    mask_cache: str = typer.Option("auto", "--mask-cache", help="keep segmenter masks by image content for later runs: auto ($BACKDROP_HOME/cache/masks), a folder, or off"),
    preset: Optional[str] = typer.Option(None, "--preset", help=f"a named config: {_presets()}"),
    config_file: Optional[Path] = typer.Option(None, "--config", help="a .json or .toml config (see README)"),
    generator: Optional[str] = typer.Option(None, "--generator", help=f"generate backend (default: {_augment_default()}; pool with --backgrounds), or a mix (swap+random, swap:0.7,random:0.3): {_names('generate:GENERATORS')}"),
    segmenter: Optional[str] = typer.Option(None, "--segmenter", help=f"segment backend (images without mask labels): auto, {_names('segment:SEGMENTERS')}"),
    backgrounds: Optional[Path] = typer.Option(None, "--backgrounds", help="folder of backgrounds (pool generator)"),
    style: Optional[str] = typer.Option(None, "--style", help="style preset (prompts; and the random generator's palette)"),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="fixed prompt: skips caption and refine"),
    negative: Optional[str] = typer.Option(None, "--negative", help="negative prompt"),
    sd_model: Optional[str] = typer.Option(None, "--sd-model", help="diffusers model id or folder (sd-*)"),
    steps: Optional[int] = typer.Option(None, "--steps", help="denoising steps (sd-*)"),
    device: Optional[str] = typer.Option(None, "--device", help="auto, cpu, cuda or mps"),
    runtime: Optional[str] = typer.Option(None, "--runtime", help="torch, or openvino: UNet + VAE decoder as OpenVINO models on the CPU (converted once, cached) (sd-*)"),
    openvino_precision: Optional[str] = typer.Option(None, "--openvino-precision", help="runtime openvino: auto (the CPU's default) or f32"),
    feather: Optional[int] = typer.Option(None, "--feather", help="a soft band of N px outside the object (default 0: paste exactly along the mask; a band is a cue a model can learn)"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace backdrop's own earlier outputs (never other files)"),
    engine: str = typer.Option("local", "--engine", help="local, or ray (a Ray cluster; pip install 'backdrop[ray]')"),
    preview: bool = typer.Option(True, "--preview/--no-preview", help="write the new set's contact sheet (DST/preview.html, see `backdrop preview`)"),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="Ray cluster address [default: $RAY_ADDRESS, else a local Ray]"),
    concurrency: Optional[int] = typer.Option(None, "--concurrency", help="ray: pipeline actors [default: CPUs/2, or GPUs]"),
    num_gpus: Optional[float] = typer.Option(None, "--num-gpus", help="ray: GPUs per actor [default: 1 for diffusion on a GPU cluster, else 0]"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="each image's details too (-vv: and the model libraries' notices)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="errors only, no progress"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Turn a labelled training set into a bigger one: the same format, labels carried over, N
    new backgrounds per training image. Rerun the same command to resume."""
    _setup_logging(verbose, quiet)

    def build():
        from .config import ConfigError
        from .job import Job

        if engine not in ("local", "ray"):
            raise ConfigError(f"--engine: expected local or ray, got {engine!r}")
        # the Job checks every one of its options (image format, quality, box fallback, splits, ...)
        gen = generator
        if gen is None and not config_file and not preset:
            # data sets: the measured default (generate.AUGMENT_DEFAULT) unless a pool or model is given
            from .generate import AUGMENT_DEFAULT

            gen = "pool" if backgrounds else ("sd-txt2img" if sd_model else AUGMENT_DEFAULT)
        cfg = build_config(config_file=config_file, preset=preset, variants=variants, seed=seed, prompt=prompt,
                           negative=negative, stages={
                               "segment": {"backend": segmenter, "device": device, "model": seg_model,
                                           "size": seg_size, "runtime": seg_runtime},
                               "refine": {"style": style},
                               "generate": {"backend": gen, "model": sd_model, "steps": steps, "device": device,
                                            "backgrounds": _str(backgrounds), "runtime": runtime,
                                            "openvino_precision": openvino_precision},
                               "composite": {"feather": feather},
                           })
        dst = out or source.resolve().parent / f"{source.resolve().name}-backdrop"
        wanted = tuple(x.strip() for x in splits.split(",") if x.strip())
        if dst.resolve() == source.resolve() or source.resolve() in dst.resolve().parents:
            raise ConfigError(f"--out {dst} is inside the source set {source}; choose a folder outside it")
        return Job(config=cfg, out=str(dst), kind="dataset", inputs=(str(source),), format=fmt, splits=wanted,
                   copy_other_splits=copy_other_splits, include_originals=include_originals,
                   image_format=image_format, quality=quality, save_masks=save_masks, overwrite=overwrite,
                   box_fallback=box_fallback, box_min_cover=box_cover, box_prompt=box_prompt,
                   mask_cache=_cache_option(mask_cache))

    job = guarded(debug, build)
    opts = {k: v for k, v in {"address": ray_address, "concurrency": concurrency, "num_gpus": num_gpus}.items()
            if v is not None}
    after = None
    if preview:
        from .cli_preview import sheet_after_augment

        def after() -> None:
            sheet_after_augment(job.out, str(source), quiet=quiet)
    _run_job(job, engine=engine, quiet=quiet, debug=debug, engine_options=opts, after=after)


@app.command()
def masks(
    source: Path = typer.Argument(..., help="the data set's root folder (any format augment reads)"),
    fmt: str = typer.Option("auto", "--format", help="auto, yolo, coco, folders, imagefolder, masks, plain"),
    splits: str = typer.Option("train", "--splits", help="comma-separated splits, or all"),
    store: Optional[Path] = typer.Option(None, "--store", help="mask store folder [default: $BACKDROP_HOME/cache/pixel-masks]"),
    segmenter: Optional[str] = typer.Option(None, "--segmenter", help=f"segment backend for images without mask labels: auto, {_names('segment:SEGMENTERS')}"),
    box_grow: float = typer.Option(0.05, "--box-grow", help="boxes-only labels: the mask is kept inside boxes grown by this share"),
    box_cover: float = typer.Option(0.3, "--box-cover", help="share of a box the mask must cover, else the whole box is kept"),
    box_prompt: bool = typer.Option(True, "--box-prompt/--no-box-prompt", help="boxes-only labels: segment each box on its own (as augment), or the whole frame"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="more detail"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="errors only, no progress"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Precompute the masks a training loop's ReplaceBackground transform looks up (by the image's
    pixels and boxes), with augment's labels-aware rule. Rerun to resume."""
    _setup_logging(verbose, quiet)

    def go():
        from .config import ConfigError, SegmentConfig
        from .datasets import open_dataset
        from .engine.local import ProgressBar
        from .maskstore import MaskStore
        from .transforms.masks import fill_masks

        wanted = None if splits.strip() == "all" else tuple(x.strip() for x in splits.split(",") if x.strip())
        if wanted == ():
            raise ConfigError("--splits: name at least one split (e.g. train), or all")
        if box_grow < 0 or not 0 <= box_cover <= 1:
            raise ConfigError("--box-grow must be >= 0 and --box-cover between 0 and 1")
        seg = SegmentConfig(backend=segmenter) if segmenter else SegmentConfig()
        if seg.backend != "auto":
            from .segment import SEGMENTERS

            SEGMENTERS.check_name(seg.backend)
        total = sum(1 for _ in open_dataset(source, fmt).items(wanted))
        ms = MaskStore(store)
        log.info("masks: %d image(s) of %s; store %s", total, source, ms.folder)
        with ProgressBar(total, 1, enabled=not quiet, unit="masks") as bar:
            def on_item(rel: str) -> None:
                bar.describe(rel)
                bar.advance(1)

            summary = fill_masks(source, format=fmt, splits=wanted, store=ms, segment=seg, box_grow=box_grow,
                                 box_min_cover=box_cover, box_prompt=box_prompt, on_item=on_item)
        typer.echo(summary.line(ms), err=True)
        if summary.failed:
            raise typer.Exit(1)

    guarded(debug, go)


@app.command()
def backends() -> None:
    """List every backend of every stage and whether it can run here."""
    from rich.console import Console
    from rich.table import Table

    from .caption import CAPTIONERS
    from .config import PipelineConfig
    from .generate import GENERATORS
    from .inpaint import INPAINTERS
    from .pipeline import resolve_auto
    from .refine import REFINERS
    from .segment import SEGMENTERS

    cfg = PipelineConfig()
    resolved, _ = resolve_auto(cfg)
    table = Table(title="backdrop backends")
    for col in ("stage", "backend", "usable here", "what it is"):
        table.add_column(col)
    for stage, registry in (("segment", SEGMENTERS), ("inpaint", INPAINTERS), ("caption", CAPTIONERS),
                            ("refine", REFINERS), ("generate", GENERATORS)):
        stage_cfg = getattr(cfg, stage)
        for name in registry.names():
            check_cfg = getattr(resolved, stage) if getattr(resolved, stage).backend == name else stage_cfg
            avail = registry.availability(name, check_cfg)
            mark = "yes" if avail.usable else f"no: {avail.reason}"
            table.add_row(stage, name, mark, registry.descriptions.get(name, ""))
    Console(width=160).print(table)
    typer.echo(f"auto picks: segment={resolved.segment.backend} ({resolved.segment.model if resolved.segment.backend == 'rembg' else 'no weights'}), "
               f"refine={resolved.refine.backend}")


@app.command()
def inspect(
    files: List[Path] = typer.Argument(..., help="PNG or JPEG files written by backdrop (or A1111)"),
    as_json: bool = typer.Option(False, "--json", help="print the raw metadata as JSON"),
    watermark: Optional[bool] = typer.Option(
        None, "--watermark/--no-watermark",
        help="look for the invisible watermark (a few seconds); default: when the file says it is AI-made"),
    raw: bool = typer.Option(
        False, "--raw", help="print text fields as stored, terminal escape and control characters included"),
    max_field: int = typer.Option(
        65536, "--max-field", min=1, help="print at most this many characters of one field"),
    debug: bool = typer.Option(False, "--debug"),
) -> None:
    """Print the metadata embedded in saved images.

    The file is not trusted: escape sequences and control characters are removed unless --raw,
    long fields are cut (--max-field) with a note of how much was left out, compressed text is
    decompressed only that far, and a damaged part is noted while the rest is still shown.
    """
    from .metadata import format_metadata, metadata_json, read_metadata, safe_text

    def shown(text: str) -> str:
        return text if raw else safe_text(text)[0]

    def go():
        failed = False
        for f in files:
            if not f.is_file():
                typer.echo(shown(f"error: {f}: no such file"), err=True)
                failed = True
                continue
            try:
                meta = read_metadata(f, max_text=max_field, max_total=max(16 * max_field, 2**20))
            except Exception as exc:  # noqa: BLE001
                typer.echo(shown(f"error: {f}: not a readable PNG/JPEG ({type(exc).__name__})"), err=True)
                failed = True
                continue
            if watermark or (watermark is None and "AI_Watermark" in (meta.get("text") or {})):
                meta["watermark"] = _detect_watermark(f) or "none found"
            if len(files) > 1:
                typer.echo(shown(f"== {f}"))
            if as_json:
                typer.echo(metadata_json(meta, max_field=max_field))
            else:
                typer.echo(format_metadata(meta, max_field=max_field, raw=raw))
        if failed:
            raise typer.Exit(1)

    guarded(debug, go)


def _detect_watermark(path: Path) -> Optional[str]:
    try:
        from .watermark import detect
    except ImportError:
        return None
    try:
        return detect(path)
    except Exception:  # noqa: BLE001 - optional check; never fails inspect
        return None


@app.command()
def styles(styles_file: Optional[Path] = typer.Option(None, "--styles-file", help="extra presets (TOML/JSON)"),
           debug: bool = typer.Option(False, "--debug")) -> None:
    """List the style presets (prompt templates with paired negative prompts)."""

    def go():
        from .styles import load_styles

        for name, st in load_styles(_str(styles_file)).items():
            typer.echo(f"{name:14s} {st.description}")
            typer.echo(f"{'':14s} prompt:   {st.prompt}")
            typer.echo(f"{'':14s} negative: {st.negative}")

    guarded(debug, go)


@app.command()
def studio(
    port: int = typer.Option(8501, "--port", help="port to serve on"),
    host: str = typer.Option("127.0.0.1", "--host", help="address to bind (default: this machine only)"),
    open_browser: bool = typer.Option(False, "--open", help="open a browser tab"),
    allow_root: Optional[List[Path]] = typer.Option(None, "--allow-root", help="a folder whose data sets the data-sets page may open (repeatable)"),
    queue: Optional[Path] = typer.Option(None, "--queue", help="the job queue's folder (default: the one `backdrop serve` uses)"),
    workers: int = typer.Option(1, "--workers", help="worker processes running the queue's jobs (0: leave them to `backdrop serve`)"),
    debug: bool = typer.Option(False, "--debug"),
) -> None:
    """Start the studio web app (text to image, new backgrounds, data sets, jobs) on localhost."""
    from .studio import launch

    code = guarded(debug, lambda: launch(port=port, host=host, open_browser=open_browser,
                                         allow_roots=tuple(allow_root or ()), queue=queue, workers=workers))
    raise typer.Exit(code or 0)


from .cli_models import models_app  # noqa: E402  (a sub-app: light, no model libraries)
from .cli_preview import preview as _preview  # noqa: E402  (#23: contact sheets)

app.command("preview")(_preview)

app.add_typer(models_app, name="models", help="The model store: list, pull, verify, path, remove.")

from .cli_serve import jobs_app, serve  # noqa: E402  (light: fastapi and uvicorn load only when serving)

app.command()(serve)
app.add_typer(jobs_app, name="jobs", help="The job queue of `backdrop serve`: list, show, cancel, recover, work.")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
