"""Studio page /text-to-image: Stable Diffusion with style presets (settings deep-linkable)."""

from __future__ import annotations

from dataclasses import replace

import streamlit as st

from backdrop.errors import BackdropError
from backdrop.generate.diffusion import SCHEDULERS
from backdrop.studio import core
from backdrop.studio.ui import generation_slot, gallery, has_cuda, linked, load_txt2img, log, one_line, seed_widgets, to_query

LINKS = {  # query name -> (widget key, default, parse)
    "prompt": ("t2i_prompt", "", str),
    "style": ("t2i_style", "none", str),
    "steps": ("t2i_steps", 25, int),
    "width": ("t2i_width", 512, int),
    "height": ("t2i_height", 512, int),
    "images": ("t2i_count", 1, int),
}


def text_to_image_page() -> None:
    from backdrop.styles import CLIP_TOKENS, apply_style, approx_tokens, load_styles

    st.header("Text to image")
    linked(LINKS)
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
    if st.session_state.get("t2i_style") not in names:  # a link naming a style this machine lacks
        st.session_state["t2i_style"] = "none" if "none" in names else names[0]

    problem = core.model_problem(model_text, device, offload, lora=fast["lora"], tiny_vae=fast["tiny_vae"],
                                 runtime=fast["runtime"])
    if problem:
        st.warning(problem)

    prompt_text = st.text_area("Prompt", key="t2i_prompt", height=90,
                               placeholder="a misty pine forest at dawn")
    c1, c2 = st.columns([1, 2])
    style_name = c1.selectbox("Style", names, key="t2i_style")
    style = styles[style_name]
    prompt = apply_style(style, prompt_text, max_tokens=None)  # never cut what a person typed
    if approx_tokens(prompt.positive) > CLIP_TOKENS:
        c2.warning(f"About {approx_tokens(prompt.positive)} tokens: Stable Diffusion reads only the first "
                   f"{CLIP_TOKENS}; the rest is ignored.")
    negative_full = ", ".join(p for p in (negative.strip(), prompt.negative.strip()) if p)
    prompt = replace(prompt, negative=negative_full)
    c2.caption(f"**Sent:** {prompt.positive or '(empty)'}  \n**Negative:** {prompt.negative or '(none)'}")

    a, b, c, d = st.columns(4)
    steps = int(a.number_input("Steps", 1, 150, key="t2i_steps", disabled=fast["profile_sampling"]))
    guidance = float(b.number_input("Guidance", 0.0, 30.0, 7.5, step=0.5, key="t2i_guidance",
                                    disabled=fast["profile_sampling"]))
    width = int(c.number_input("Width", 64, 2048, step=8, key="t2i_width"))
    height = int(d.number_input("Height", 64, 2048, step=8, key="t2i_height"))
    e, f, g = st.columns([1, 1, 2])
    scheduler = e.selectbox("Scheduler", list(SCHEDULERS), key="t2i_scheduler",
                            disabled=fast["profile_sampling"])
    if fast["profile_sampling"]:  # the model profile's steps and guidance (and the preset's sampler)
        steps, guidance, scheduler = None, None, fast["scheduler"] or "default"
    count = int(f.number_input("Images", 1, 8, key="t2i_count"))
    with g:
        fixed_seed = seed_widgets("t2i")
    w8, h8 = width // 8 * 8, height // 8 * 8
    if (w8, h8) != (width, height):
        st.caption(f"Size rounded to multiples of 8: {w8}x{h8}")
    to_query(LINKS)  # the link in the address bar now opens this page as it is set

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
                                             source_type="trainedAlgorithmicMedia", watermark=bool(st.session_state.get("watermark", False)),
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




text_to_image_page()
