"""The `backdrop` command: thin over the Python API (builds a config, calls the pipeline).

Errors print one line and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any, Callable, List, Optional

import typer

from .errors import BackdropError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="backdrop: new, realistic backgrounds for images, and a local text-to-image studio.",
)
log = logging.getLogger("backdrop")


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    handler.setLevel(level)
    root = logging.getLogger("backdrop")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbose < 2:  # model libraries' own notices (e.g. "requires torchvision ... falling back") are noise here
        for var in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
            os.environ.setdefault(var, "error")


def _fail(exc: BaseException, debug: bool) -> None:
    """Print one line for ``exc`` (or the traceback with --debug) and exit non-zero."""
    if debug:
        raise exc
    if isinstance(exc, BackdropError):
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(exc.exit_code)
    typer.echo(f"error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)", err=True)
    raise typer.Exit(1)


def guarded(debug: bool, fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except (typer.Exit, typer.Abort):
        raise
    except KeyboardInterrupt:
        typer.echo("interrupted", err=True)
        raise typer.Exit(130)
    except Exception as exc:  # noqa: BLE001 - the CLI's one place that turns errors into a line
        _fail(exc, debug)


def _names(registry_attr: str) -> str:
    from importlib import import_module

    module, attr = registry_attr.split(":")
    return ", ".join(getattr(import_module(f"backdrop.{module}"), attr).names())


@app.command()
def run(
    inputs: List[Path] = typer.Argument(..., help="image files or folders of images"),
    out: Path = typer.Option(Path("out"), "--out", "-o", help="output folder; each image gets OUT/<stem>/"),
    variants: Optional[int] = typer.Option(None, "--variants", "-n", help="new backgrounds per image [default: 1]"),
    seed: Optional[int] = typer.Option(None, "--seed", help="variant k uses SEED+k-1; drawn and recorded if not given"),
    preset: Optional[str] = typer.Option(None, "--preset", help="default, offline, seed (the original model design), fast (LCM/Turbo) or quality"),
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
    vae_tiling: Optional[bool] = typer.Option(None, "--vae-tiling/--no-vae-tiling", help="decode large images in tiles"),
    harmonize: Optional[bool] = typer.Option(None, "--harmonize/--no-harmonize", help="match the edge colour to the new background"),
    feather: Optional[int] = typer.Option(None, "--feather", help="soft edge width in pixels"),
    max_pixels: Optional[int] = typer.Option(None, "--max-pixels", help="refuse larger inputs [default: 60000000]"),
    overwrite: bool = typer.Option(False, "--overwrite", help="replace existing output folders"),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="more log lines (-vv for debug)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="errors only, no progress bar"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Give each input image N new backgrounds, keeping the object pixel-identical."""
    _setup_logging(verbose, quiet)

    def build():
        from .config import PipelineConfig, preset as apply_preset

        cfg = PipelineConfig.from_file(config_file) if config_file else PipelineConfig()
        if preset:
            cfg = apply_preset(preset, cfg)
        stage_opts: dict[str, dict[str, Any]] = {
            "segment": {"backend": segmenter, "model": seg_model, "alpha_matting": alpha_matting, "device": device},
            "inpaint": {"backend": inpainter},
            "caption": {"backend": captioner, "model": caption_model, "device": device},
            "refine": {"backend": refiner, "style": style, "styles_file": _str(styles_file), "model": llm_model,
                       "model_path": _str(llm_path), "threads": threads},
            "generate": {"backend": generator, "model": sd_model, "steps": steps, "guidance": guidance,
                         "scheduler": scheduler, "strength": strength, "short_side": short_side, "device": device,
                         "offload": offload, "backgrounds": _str(backgrounds),
                         "lora": tuple(lora) if lora else None, "tiny_vae": tiny_vae, "profile": profile,
                         "batch_size": batch_size, "threads": threads, "compile": compile_unet,
                         "vae_tiling": vae_tiling},
            "composite": {"harmonize": harmonize, "feather": feather},
        }
        overrides = {stage: {k: v for k, v in opts.items() if v is not None} for stage, opts in stage_opts.items()}
        cfg = cfg.with_overrides(**{k: v for k, v in overrides.items() if v})
        top = {"variants": variants, "seed": seed, "prompt": prompt, "negative": negative, "max_pixels": max_pixels}
        cfg = cfg.with_overrides(**{k: v for k, v in top.items() if v is not None})
        from .images import collect_inputs

        files = collect_inputs(inputs, exclude=[out])  # never the outputs of an earlier run
        from .pipeline import Pipeline

        return cfg, files, Pipeline.from_config(cfg).load()

    cfg, files, pipe = guarded(debug, build)
    from .pipeline import draw_seed

    base_seed = cfg.seed if cfg.seed is not None else draw_seed()
    names = _unique_names(files)
    failures: list[tuple[Path, str, BaseException]] = []
    done: list[Path] = []
    with _progress(quiet or len(files) < 1) as bar:
        task = bar.add_task("images", total=len(files))
        for path, name in zip(files, names):
            bar.update(task, description=path.name)
            try:
                done.append(pipe.process(path, out, name=name, seed=base_seed, overwrite=overwrite))
            except KeyboardInterrupt:
                typer.echo("interrupted", err=True)
                raise typer.Exit(130)
            except Exception as exc:  # noqa: BLE001 - a batch goes on past a bad file
                if debug:
                    raise
                msg = str(exc) if isinstance(exc, BackdropError) else f"unexpected {type(exc).__name__}: {exc}"
                failures.append((path, msg, exc))
                typer.echo(f"error: {msg}" if str(path) in msg else f"error: {path}: {msg}", err=True)
            bar.advance(task)
    if not quiet:
        seeds = f"seeds {base_seed}..{base_seed + cfg.variants - 1}" if cfg.variants > 1 else f"seed {base_seed}"
        typer.echo(f"{len(done)} done, {len(failures)} failed ({seeds}) -> {out}", err=True)
    if failures:
        codes = {_exit_code(exc) for _, _, exc in failures}
        raise typer.Exit(codes.pop() if len(codes) == 1 else 1)


def _exit_code(exc: BaseException) -> int:
    return exc.exit_code if isinstance(exc, BackdropError) else 1


def _str(p: Optional[Path]) -> Optional[str]:
    return None if p is None else str(p)


def _unique_names(files: list[Path]) -> list[str]:
    """One output folder name per input: its stem, or stem_2, stem_3, ... when already taken
    (also by another file's own stem: a.png, a.jpg, a_2.png -> a, a_2, a_2_2)."""
    used: set[str] = set()
    names = []
    for f in files:
        name, k = f.stem, 1
        while name in used:
            k += 1
            name = f"{f.stem}_{k}"
        used.add(name)
        names.append(name)
    return names


class _progress:
    """A rich progress bar on a terminal; silent otherwise."""

    def __init__(self, disabled: bool):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            console=console, disable=disabled or not console.is_terminal, transient=False,
        )

    def __enter__(self):
        self.progress.__enter__()
        return self.progress

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)


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
    debug: bool = typer.Option(False, "--debug"),
) -> None:
    """Print the metadata embedded in saved images."""
    import json

    from .metadata import format_metadata, read_metadata

    def go():
        failed = False
        for f in files:
            if not f.is_file():
                typer.echo(f"error: {f}: no such file", err=True)
                failed = True
                continue
            try:
                meta = read_metadata(f)
            except Exception as exc:  # noqa: BLE001
                typer.echo(f"error: {f}: not a readable PNG/JPEG ({type(exc).__name__})", err=True)
                failed = True
                continue
            if watermark or (watermark is None and "AI_Watermark" in (meta.get("text") or {})):
                meta["watermark"] = _detect_watermark(f) or "none found"
            if len(files) > 1:
                typer.echo(f"== {f}")
            typer.echo(json.dumps(meta, indent=2, default=str) if as_json else format_metadata(meta))
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
    debug: bool = typer.Option(False, "--debug"),
) -> None:
    """Start the studio web app (text to image, new backgrounds) on localhost."""
    from .studio import launch

    code = guarded(debug, lambda: launch(port=port, host=host, open_browser=open_browser))
    raise typer.Exit(code or 0)


from .cli_models import models_app  # noqa: E402  (a sub-app: light, no model libraries)

app.add_typer(models_app, name="models", help="The model store: list, pull, verify, path, remove.")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
