"""Studio page /new-background: upload, see mask / clean background / caption, edit the prompt,
generate N variants."""

from __future__ import annotations

import json
from dataclasses import replace

import streamlit as st

from backdrop.caption import CAPTIONERS
from backdrop.config import CaptionConfig, GenerateConfig, InpaintConfig, PipelineConfig, RefineConfig, SegmentConfig
from backdrop.errors import BackdropError
from backdrop.generate import GENERATORS
from backdrop.inpaint import INPAINTERS
from backdrop.refine import REFINERS
from backdrop.segment import SEGMENTERS
from backdrop.studio import core
from backdrop.studio.ui import (UPLOAD_TYPES, gallery, generation_slot, linked, load_stages, log, one_line, seed_widgets,
                                to_query)

LINKS_OF_PAGE: dict = {}  # query name -> (widget key, default, parse); the defaults depend on the models here


def stage_config() -> tuple[PipelineConfig, dict[str, str]]:
    """The backends chosen in the sidebar (defaults: the default profile) and their problems."""
    from backdrop.pipeline import resolve_auto

    defaults, _ = resolve_auto(PipelineConfig())
    sb = st.sidebar
    sb.subheader("Backends")
    links = {stage: (f"bg_{stage}", getattr(defaults, stage).backend, str)
             for stage in ("segment", "inpaint", "caption", "refine", "generate")}
    links["variants"] = ("bg_variants", 2, int)
    LINKS_OF_PAGE.clear()
    LINKS_OF_PAGE.update(links)
    linked(links)

    def pick(label, registry, default, key):
        # one uploaded image: generators that draw from a set's other images (swap) need a batch
        names = registry.single_image_names() if registry is GENERATORS else registry.names()
        if st.session_state.get(key) not in names:  # a link naming a backend this machine lacks
            st.session_state[key] = default if default in names else names[0]
        return sb.selectbox(label, names, key=key,
                            help="; ".join(f"{n}: {registry.descriptions.get(n, '')}" for n in names))

    seg = pick("Segment", SEGMENTERS, defaults.segment.backend, "bg_segment")
    inp = pick("Inpaint", INPAINTERS, defaults.inpaint.backend, "bg_inpaint")
    cap = pick("Caption", CAPTIONERS, defaults.caption.backend, "bg_caption")
    ref = pick("Refine", REFINERS, defaults.refine.backend, "bg_refine")
    gen = pick("Generate", GENERATORS, defaults.generate.backend, "bg_generate")
    segment = replace(defaults.segment, backend=seg) if seg == defaults.segment.backend else SegmentConfig(backend=seg)
    refine = replace(defaults.refine, backend=ref) if ref == defaults.refine.backend else RefineConfig(backend=ref)
    gen_cfg = GenerateConfig(backend=gen)
    if GENERATORS.capability(gen, "generative"):  # a model made the pixels: its settings
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
    if GENERATORS.capability(gen, "generative"):  # a model made the pixels: its settings
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
    to_query(LINKS_OF_PAGE)  # the backends chosen are in the link from here on
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

    if not GENERATORS.capability(cfg.generate.backend, "uses_prompt"):
        st.caption(f"ℹ The {cfg.generate.backend} generator does not read the prompt; it is kept in the "
                   "record but not written into the images' parameters.")
    positive = st.text_area("Prompt (edit before generating)", key="bg_prompt", height=90)
    negative = st.text_area("Negative prompt", key="bg_negative", height=70)
    a, b = st.columns([1, 2])
    variants = int(a.number_input("Variants", 1, 16, key="bg_variants"))
    to_query(LINKS_OF_PAGE)
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
                                        watermark=bool(st.session_state.get("watermark", False)), download_stem=f"{stem}_{v.seed}_{kind}",
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




new_background_page()
