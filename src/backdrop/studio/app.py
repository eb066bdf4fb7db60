"""The backdrop studio (Streamlit script): ``backdrop studio`` or ``streamlit run app.py``.

Thin over the Python API: widgets here, work in backdrop.studio.core and the pipeline.
Models load once per process (st.cache_resource); one generation runs at a time across all
browser sessions (core.GENERATION_LOCK).
"""

from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import replace

import streamlit as st

from backdrop.version import __version__
from backdrop.caption import CAPTIONERS
from backdrop.config import (
    CaptionConfig,
    GenerateConfig,
    InpaintConfig,
    PipelineConfig,
    RefineConfig,
    SegmentConfig,
)
from backdrop.errors import BackdropError
from backdrop.generate import GENERATORS
from backdrop.generate.diffusion import SCHEDULERS
from backdrop.inpaint import INPAINTERS
from backdrop.refine import REFINERS
from backdrop.segment import SEGMENTERS
from backdrop.studio import core

log = logging.getLogger("backdrop.studio")

PAGES = ("Text to image", "New background")
UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp", "gif"]

st.set_page_config(page_title="backdrop studio", layout="wide")


# -- shared helpers ------------------------------------------------------------------------------


def one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    first = text[0] if text else ""
    if isinstance(exc, BackdropError):
        return first or type(exc).__name__
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


@contextlib.contextmanager
def generation_slot():
    """Hold the process-wide generation lock, saying so while another session has it."""
    if not core.GENERATION_LOCK.acquire(blocking=False):
        note = st.info("Another session is generating; yours starts when it is done.")
        core.GENERATION_LOCK.acquire()
        note.empty()
    try:
        yield
    finally:
        core.GENERATION_LOCK.release()


def seed_widgets(prefix: str) -> int | None:
    """Random or fixed seed; returns the fixed seed or None (drawn at generation and shown)."""
    mode = st.radio("Seed", ["Random", "Fixed"], horizontal=True, key=f"{prefix}_seed_mode")
    if mode == "Fixed":
        return int(st.number_input("Seed value", min_value=0, max_value=2**32 - 1, value=0, step=1,
                                   key=f"{prefix}_seed"))
    return None


def downloads(saved: core.Saved, key: str) -> None:
    a, b = st.columns(2)
    a.download_button("PNG", saved.png, file_name=saved.png_name, mime="image/png", key=f"{key}_png",
                      on_click="ignore", icon=":material/download:")
    b.download_button("JPEG", saved.jpeg, file_name=saved.jpeg_name, mime="image/jpeg", key=f"{key}_jpg",
                      on_click="ignore", icon=":material/download:")


def gallery(saved: list[core.Saved], prefix: str, per_row: int = 3) -> None:
    for row in range(0, len(saved), per_row):
        cols = st.columns(per_row)
        for col, (i, s) in zip(cols, enumerate(saved[row:row + per_row], start=row)):
            with col:
                st.image(s.image, caption=f"{s.label} · seed {s.seed}", width="stretch")
                downloads(s, f"{prefix}_{i}")
                for note in s.info.values():
                    st.caption(note)


@st.cache_resource(show_spinner=False)
def has_cuda() -> bool:
    return core.cuda_available()


@st.cache_resource(max_entries=1, show_spinner=False)
def load_txt2img(model: str, device: str, offload: bool, lora: tuple = (), tiny_vae: str | None = None,
                 runtime: str = "torch") -> core.Txt2Img:
    """The text-to-image pipeline, loaded once per process for (model, device, offload, LoRA, tiny VAE, runtime)."""
    from backdrop.generate.diffusion import load_txt2img as _load

    return core.Txt2Img(_load(GenerateConfig(backend="sd-txt2img", model=model, device=device, offload=offload,
                                             lora=tuple(lora), tiny_vae=tiny_vae, runtime=runtime)))


@st.cache_resource(max_entries=2, show_spinner=False)
def load_stages(config_json: str):
    """The background pipeline's backends, built once per process for one stage configuration."""
    from backdrop.pipeline import Pipeline

    return Pipeline.from_config(PipelineConfig.from_dict(json.loads(config_json)), all_stages=True)


# -- sidebar ---------------------------------------------------------------------------------------

st.sidebar.title("backdrop studio")
page = st.sidebar.radio("Page", PAGES, key="page")
st.session_state.setdefault("out_dir", core.default_output_dir())
out_dir = st.sidebar.text_input("Output folder", key="out_dir",
                                help="every image is saved here as PNG and JPEG, with its metadata")
watermark = st.sidebar.checkbox("Invisible watermark", key="watermark",
                                help="embed 'backdrop' invisibly (DWT-DCT); survives PNG, usually not JPEG")


# -- page: text to image -------------------------------------------------------------------------------


def text_to_image_page() -> None:
    from backdrop.styles import CLIP_TOKENS, apply_style, approx_tokens, load_styles

    st.header("Text to image")
    sb = st.sidebar
    sb.subheader("Text to image settings")
    st.session_state.setdefault("t2i_model", core.default_model())
    model_text = sb.text_input("Model (Hub id, store name or local folder)", key="t2i_model").strip()
    negative = sb.text_area("Negative prompt", key="t2i_negative", height=90)
    styles_file = sb.text_input("Styles file (TOML/JSON, optional)", key="t2i_styles_file").strip()
    device = sb.selectbox("Device", ["auto", "cpu", "cuda"], key="t2i_device")
    offload = False
    if has_cuda():
        offload = sb.toggle("Model CPU offload (small GPUs)", key="t2i_offload")
    speed = sb.selectbox("Preset", core.SPEED_PRESETS, key="t2i_preset",
                         help="fast: the family's LCM-LoRA (or a Turbo model's 1 step), no CFG, tiny VAE; "
                              "quality: the profile's steps, DPM++, full VAE; custom: the settings below")
    lora_text = sb.text_area("LoRA (one per line: path, Hub id or store name[:scale])", key="t2i_lora", height=68)
    tiny_text = sb.text_input("Tiny VAE (auto, id, folder; empty: full VAE)", key="t2i_tiny_vae").strip()
    runtime = sb.selectbox("Runtime", ["torch", "openvino"], key="t2i_runtime",
                           help="openvino: the UNet and VAE decoder as OpenVINO models on the CPU (3.5x torch "
                                "on a 2-core test machine); the first load converts the model (~30 s, cached)")
    try:
        fast = core.speed_settings(speed, lora_text, tiny_text)
    except BackdropError as exc:
        st.error(one_line(exc))
        fast = core.speed_settings("custom")
    fast = {**fast, "runtime": runtime}

    try:
        styles = load_styles(styles_file or None)
    except BackdropError as exc:
        st.error(one_line(exc))
        styles = load_styles()
    names = list(styles)

    problem = core.model_problem(model_text, device, offload, lora=fast["lora"], tiny_vae=fast["tiny_vae"],
                                 runtime=fast["runtime"])
    if problem:
        st.warning(problem)

    prompt_text = st.text_area("Prompt", key="t2i_prompt", height=90,
                               placeholder="a misty pine forest at dawn")
    c1, c2 = st.columns([1, 2])
    style_name = c1.selectbox("Style", names, index=names.index("none") if "none" in names else 0, key="t2i_style")
    style = styles[style_name]
    prompt = apply_style(style, prompt_text, max_tokens=None)  # never cut what a person typed
    if approx_tokens(prompt.positive) > CLIP_TOKENS:
        c2.warning(f"About {approx_tokens(prompt.positive)} tokens: Stable Diffusion reads only the first "
                   f"{CLIP_TOKENS}; the rest is ignored.")
    negative_full = ", ".join(p for p in (negative.strip(), prompt.negative.strip()) if p)
    prompt = replace(prompt, negative=negative_full)
    c2.caption(f"**Sent:** {prompt.positive or '(empty)'}  \n**Negative:** {prompt.negative or '(none)'}")

    a, b, c, d = st.columns(4)
    steps = int(a.number_input("Steps", 1, 150, 25, key="t2i_steps", disabled=fast["profile_sampling"]))
    guidance = float(b.number_input("Guidance", 0.0, 30.0, 7.5, step=0.5, key="t2i_guidance",
                                    disabled=fast["profile_sampling"]))
    width = int(c.number_input("Width", 64, 2048, 512, step=8, key="t2i_width"))
    height = int(d.number_input("Height", 64, 2048, 512, step=8, key="t2i_height"))
    e, f, g = st.columns([1, 1, 2])
    scheduler = e.selectbox("Scheduler", list(SCHEDULERS), key="t2i_scheduler",
                            disabled=fast["profile_sampling"])
    if fast["profile_sampling"]:  # the model profile's steps and guidance (and the preset's sampler)
        steps, guidance, scheduler = None, None, fast["scheduler"] or "default"
    count = int(f.number_input("Images", 1, 8, 1, key="t2i_count"))
    with g:
        fixed_seed = seed_widgets("t2i")
    w8, h8 = width // 8 * 8, height // 8 * 8
    if (w8, h8) != (width, height):
        st.caption(f"Size rounded to multiples of 8: {w8}x{h8}")

    clicked = st.button("Generate", type="primary", key="t2i_go", disabled=bool(problem))
    if clicked:
        if not prompt_text.strip():
            st.error("Write a prompt first.")
        else:
            run_txt2img(model_text, device, offload, prompt, style_name, prompt_text, negative, fixed_seed,
                        w8, h8, count, steps, guidance, scheduler, fast)

    saved = st.session_state.get("t2i_results")
    if saved:
        st.success(f"Seed used: {st.session_state['t2i_used_seed']} · saved to {saved[0].png_path.parent}")
        gallery(saved, "t2i")
        if len(saved) > 1:
            st.download_button("Download all (zip)", core.zip_of(saved), file_name=f"txt2img_{saved[0].seed}.zip",
                               mime="application/zip", key="t2i_zip", on_click="ignore")


def run_txt2img(model_text, device, offload, prompt, style_name, prompt_text, negative, fixed_seed,
                width, height, count, steps, guidance, scheduler, fast=None) -> None:
    from backdrop.seeds import draw_seed

    seed = fixed_seed if fixed_seed is not None else draw_seed()
    resolved = core.resolve_model(model_text)
    bar = st.progress(0.0, text=f"Seed {seed}: loading the model…")
    try:
        fast = fast or core.speed_settings("custom")
        gen = load_txt2img(resolved, device, offload, fast["lora"], fast["tiny_vae"], fast.get("runtime", "torch"))

        def on_step(i: int, n: int) -> None:
            bar.progress(min(i / max(n, 1), 1.0), text=f"Seed {seed}: step {i}/{n}")

        with generation_slot():
            bar.progress(0.0, text=f"Seed {seed}: generating…")
            images, described = gen.generate(prompt, seed=seed, width=width, height=height, num_images=count,
                                             steps=steps, guidance=guidance, scheduler=scheduler, progress=on_step)
        settings = {"steps": steps, "guidance": guidance, "scheduler": scheduler, "width": width, "height": height,
                    "num_images": count, "device": device, "offload": offload, "model_field": model_text,
                    "lora": list(fast["lora"]), "tiny_vae": fast["tiny_vae"], "runtime": fast.get("runtime", "torch")}
        model_name = model_text or described.get("model") or core.default_model()
        saved = []
        for k, image in enumerate(images):
            s = seed + k
            params = core.a1111_for(prompt, described, seed=s, size=image.size, model=model_name)
            record = core.txt2img_record(prompt=prompt, style=style_name, user_prompt=prompt_text,
                                         user_negative=negative, seed=s, index=k, described=described,
                                         settings=settings)
            saved.append(core.save_generated(image, st.session_state["out_dir"], seed=s, kind=f"txt2img-{k + 1}",
                                             model=model_name, parameters=params, record=record,
                                             source_type="trainedAlgorithmicMedia", watermark=watermark,
                                             download_stem=f"txt2img_{s}", label=f"Image {k + 1}"))
        bar.progress(1.0, text=f"Seed {seed}: done")
        st.session_state["t2i_results"] = saved
        st.session_state["t2i_used_seed"] = seed
    except Exception as exc:  # noqa: BLE001 - shown in one line; the app stays usable
        if not isinstance(exc, BackdropError):
            log.exception("text to image failed")
        bar.empty()
        st.session_state["t2i_used_seed"] = seed
        st.error(f"Generation failed (seed {seed}): {one_line(exc)}")


# -- page: new background ---------------------------------------------------------------------------


def stage_config() -> tuple[PipelineConfig, dict[str, str]]:
    """The backends chosen in the sidebar (defaults: the default profile) and their problems."""
    from backdrop.pipeline import resolve_auto

    defaults, _ = resolve_auto(PipelineConfig())
    sb = st.sidebar
    sb.subheader("Backends")

    def pick(label, registry, default, key):
        names = registry.names()
        return sb.selectbox(label, names, index=names.index(default) if default in names else 0, key=key,
                            help="; ".join(f"{n}: {registry.descriptions.get(n, '')}" for n in names))

    seg = pick("Segment", SEGMENTERS, defaults.segment.backend, "bg_segment")
    inp = pick("Inpaint", INPAINTERS, defaults.inpaint.backend, "bg_inpaint")
    cap = pick("Caption", CAPTIONERS, defaults.caption.backend, "bg_caption")
    ref = pick("Refine", REFINERS, defaults.refine.backend, "bg_refine")
    gen = pick("Generate", GENERATORS, defaults.generate.backend, "bg_generate")
    segment = replace(defaults.segment, backend=seg) if seg == defaults.segment.backend else SegmentConfig(backend=seg)
    refine = replace(defaults.refine, backend=ref) if ref == defaults.refine.backend else RefineConfig(backend=ref)
    gen_cfg = GenerateConfig(backend=gen)
    if GENERATORS.load(gen).generative:  # a model made the pixels: its settings
        with sb.expander("Diffusion settings", expanded=True):
            st.session_state.setdefault("bg_model", "")
            model = st.text_input("Model (empty: the backend's default)", key="bg_model").strip()
            steps = int(st.number_input("Steps", 1, 150, 25, key="bg_steps"))
            guidance = float(st.number_input("Guidance", 0.0, 30.0, 7.5, step=0.5, key="bg_guidance"))
            short = int(st.number_input("Short side", 64, 2048, 512, step=8, key="bg_short")) // 8 * 8
            gen_cfg = replace(gen_cfg, model=core.resolve_model(model) if model else None, steps=steps,
                              guidance=guidance, short_side=short)
    elif gen == "pool":
        folder = sb.text_input("Backgrounds folder", key="bg_pool").strip()
        gen_cfg = replace(gen_cfg, backgrounds=folder or None)
    cfg = PipelineConfig(segment=segment, inpaint=InpaintConfig(backend=inp), caption=CaptionConfig(backend=cap),
                         refine=refine, generate=gen_cfg)
    problems: dict[str, str] = {}
    if GENERATORS.load(gen).generative:  # a model made the pixels: its settings
        problem = core.model_problem(model, default=GENERATORS.load(gen).default_model)
        if problem:
            problems["generate"] = f"Generate ({gen}): {problem}"
    for stage, registry, sub in (("segment", SEGMENTERS, cfg.segment), ("inpaint", INPAINTERS, cfg.inpaint),
                                 ("caption", CAPTIONERS, cfg.caption), ("refine", REFINERS, cfg.refine),
                                 ("generate", GENERATORS, cfg.generate)):
        if stage in problems:
            continue
        avail = registry.availability(sub.backend, sub)
        if not avail.usable:
            problems[stage] = f"{stage} backend {sub.backend} is not available: {avail.reason}"
    return cfg, problems


def _analysis_key(cfg: PipelineConfig, file_id: str) -> str:
    d = cfg.to_dict()
    return json.dumps({"file": file_id, **{k: d[k] for k in ("segment", "inpaint", "caption", "refine")}},
                      sort_keys=True)


def new_background_page() -> None:
    from backdrop.images import load_bytes

    st.header("New background")
    cfg, problems = stage_config()
    for line in problems.values():
        st.warning(line)

    upload = st.file_uploader(f"Image (up to {core.MAX_UPLOAD_MB} MB, {core.MAX_PIXELS // 1_000_000} megapixels)",
                              type=UPLOAD_TYPES, key="bg_upload")
    if upload is None:
        st.info("Upload an image to start: its object is kept pixel for pixel, the background is replaced.")
        return
    data = upload.getvalue()
    file_id = getattr(upload, "file_id", None) or f"{len(data)}"
    if st.session_state.get("bg_file_id") != file_id:
        st.session_state["bg_file_id"] = file_id
        for key in ("bg_loaded", "bg_analysis", "bg_analysis_key", "bg_results", "bg_used_seed", "bg_load_error"):
            st.session_state.pop(key, None)
        if len(data) > core.MAX_UPLOAD_MB * 1024 * 1024:
            st.session_state["bg_load_error"] = f"upload is {len(data) / 2**20:.1f} MB, over the {core.MAX_UPLOAD_MB} MB limit"
        else:
            try:
                st.session_state["bg_loaded"] = load_bytes(data, name="upload", max_pixels=core.MAX_PIXELS)
            except BackdropError as exc:
                st.session_state["bg_load_error"] = one_line(exc)
    if st.session_state.get("bg_load_error"):
        st.error(f"This file cannot be used: {st.session_state['bg_load_error']}")
        return
    loaded = st.session_state["bg_loaded"]
    stem = core.stem_of(upload.name)
    for note in loaded.info.get("notes", []):
        st.caption(note)

    key = _analysis_key(cfg, file_id)
    stage_problems = [p for s, p in problems.items() if s != "generate"]
    if st.button("1. Analyse (mask, clean background, caption, prompt)", key="bg_analyse",
                 disabled=bool(stage_problems)):
        run_analysis(cfg, loaded, key)

    analysis = st.session_state.get("bg_analysis")
    c1, c2, c3 = st.columns(3)
    c1.image(loaded.image, caption=f"Input {loaded.image.size[0]}x{loaded.image.size[1]}", width="stretch")
    if analysis is None:
        return
    if st.session_state.get("bg_analysis_key") != key:
        st.info("The segment, inpaint, caption or refine backend changed: analyse again.")
        return
    c2.image(analysis.mask, caption="Mask (white = kept)", width="stretch")
    c3.image(analysis.background, caption="Clean background", width="stretch")
    st.markdown(f"**Caption:** {analysis.caption}")
    timings = ", ".join(f"{k} {v:.2f} s" for k, v in analysis.timings.items())
    st.caption(f"Timings: {timings}")
    for w in analysis.warnings:
        st.caption(f"⚠ {w}")

    from backdrop.generate import GENERATORS

    if not GENERATORS.load(cfg.generate.backend).uses_prompt:
        st.caption(f"ℹ The {cfg.generate.backend} generator does not read the prompt; it is kept in the "
                   "record but not written into the images' parameters.")
    positive = st.text_area("Prompt (edit before generating)", key="bg_prompt", height=90)
    negative = st.text_area("Negative prompt", key="bg_negative", height=70)
    a, b = st.columns([1, 2])
    variants = int(a.number_input("Variants", 1, 16, 2, key="bg_variants"))
    with b:
        fixed_seed = seed_widgets("bg")
    if st.button("2. Generate backgrounds", type="primary", key="bg_go", disabled="generate" in problems):
        run_backgrounds(cfg, analysis, positive, negative, variants, fixed_seed, stem, core.safe_name(upload.name))

    saved = st.session_state.get("bg_results")
    if saved:
        seeds = sorted({s.seed for s in saved})
        st.success(f"Seed used: {st.session_state['bg_used_seed']} (variants: {', '.join(map(str, seeds))}) · "
                   f"saved to {saved[0].png_path.parent}")
        st.download_button("Download all (zip)", core.zip_of(saved), file_name=f"{stem}_{st.session_state['bg_used_seed']}.zip",
                           mime="application/zip", key="bg_zip", on_click="ignore", icon=":material/folder_zip:")
        composites = [s for s in saved if s.kind.startswith("composite")]
        backgrounds = [s for s in saved if s.kind.startswith("background")]
        gallery(composites, "bg_comp")
        if st.toggle("Show the generated backgrounds alone", key="bg_show_backgrounds"):
            gallery(backgrounds, "bg_back")


def run_analysis(cfg: PipelineConfig, loaded, key: str) -> None:
    status = st.status("Analysing…", expanded=False)
    try:
        with generation_slot():
            pipe = load_stages(json.dumps(cfg.to_dict(), sort_keys=True))
            analysis = core.analyse(pipe, loaded, on_stage=lambda s: status.update(label=f"Analysing: {s}…"))
        status.update(label="Analysed", state="complete")
        st.session_state["bg_analysis"] = analysis
        st.session_state["bg_analysis_key"] = key
        st.session_state["bg_prompt"] = analysis.prompt.positive
        st.session_state["bg_negative"] = analysis.prompt.negative
        st.session_state.pop("bg_results", None)
    except Exception as exc:  # noqa: BLE001 - one line; the app stays usable
        if not isinstance(exc, BackdropError):
            log.exception("analysis failed")
        status.update(label="Analysis failed", state="error")
        st.error(f"Analysis failed: {one_line(exc)}")


def run_backgrounds(cfg, analysis, positive, negative, variants, fixed_seed, stem, upload_name) -> None:
    from backdrop.seeds import draw_seed

    seed = fixed_seed if fixed_seed is not None else draw_seed()
    bar = st.progress(0.0, text=f"Seed {seed}: starting…")

    def on_progress(stage: str, i: int, n: int) -> None:
        if stage.startswith("generate "):
            k, total = (int(x) for x in stage.split()[1].split("/"))
            frac = (k - 1 + (i / n if n else 0)) / total
            bar.progress(min(max(frac, 0.0), 1.0), text=f"Seed {seed}: variant {k}/{total}, step {i}/{n}")

    try:
        with generation_slot():
            base = load_stages(json.dumps(cfg.to_dict(), sort_keys=True))
            pipe = core.background_pipeline(base, analysis, positive=positive, negative=negative,
                                             variants=variants, seed=seed)
            result = pipe(analysis.loaded, on_progress=on_progress)
        record = core.background_record(pipe, result, analysis, analysis.prompt, upload_name)
        described = result.backends.get("generate", {})
        model = described.get("model") or described.get("name") or cfg.generate.backend
        saved = []
        for v in result.variants:
            labels = pipe.labels(result, v)
            rec = {**record, "variant": {"index": v.index, "seed": v.seed}}
            for kind, image in (("composite", v.composite), ("background", v.background)):
                s = core.save_generated(image, st.session_state["out_dir"], seed=v.seed, kind=f"{kind}-{v.index}",
                                        model=model, parameters=labels["parameters"], record=rec,
                                        source_type=labels[kind],
                                        watermark=watermark, download_stem=f"{stem}_{v.seed}_{kind}",
                                        label=f"{kind.capitalize()} {v.index}")
                saved.append(s)
        bar.progress(1.0, text=f"Seed {seed}: done")
        st.session_state["bg_results"] = saved
        st.session_state["bg_used_seed"] = seed
    except Exception as exc:  # noqa: BLE001 - one line; the app stays usable
        if not isinstance(exc, BackdropError):
            log.exception("background generation failed")
        bar.empty()
        st.session_state["bg_used_seed"] = seed
        st.error(f"Generation failed (seed {seed}): {one_line(exc)}")


# -- run ---------------------------------------------------------------------------------------------

if page == PAGES[0]:
    text_to_image_page()
else:
    new_background_page()
st.sidebar.caption(f"backdrop {__version__} · images are saved to {st.session_state['out_dir']}")
