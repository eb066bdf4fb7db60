"""Studio page /data-sets: open a data set (a folder under --allow-root, or an uploaded .zip), see
what --format auto found, set the options, submit it as a job to the queue `backdrop serve` uses,
watch it, then browse its contact sheet and download the new set.

Deep links: ?set=PATH&generator=random&variants=3&seed=7&splits=train&job=ID.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import streamlit as st

from backdrop.errors import BackdropError
from backdrop.generate import AUGMENT_DEFAULT
from backdrop.studio import sets, ui
from backdrop.studio.ui import linked, one_line, split_list, to_query

LINKS = {  # query name -> (widget key, default, parse)
    "set": ("ds_path", "", str),
    "generator": ("ds_generator", AUGMENT_DEFAULT, str),  # augment's measured default
    "variants": ("ds_variants", 3, int),
    "seed": ("ds_seed", "", str),
    "splits": ("ds_splits", [], split_list),
    "pool": ("ds_pool", "", str),
    "job": ("ds_job", "", str),
}


@st.cache_data(ttl=30, show_spinner="Looking for data sets…")
def found_sets(roots: tuple[Path, ...]) -> list[Path]:
    return sets.candidates(roots)


@st.cache_data(max_entries=8, show_spinner="Reading the data set…")
def summary_of(path: str, stamp: float) -> sets.SetSummary:
    return sets.summarise(path)


def _stamp(path: Path) -> float:
    """Changes when the set's top folder or its index files change (a cheap cache key)."""
    try:
        return max([path.stat().st_mtime] + [p.stat().st_mtime for p in path.iterdir() if p.is_file()])
    except OSError:
        return 0.0


def choose_folder(roots: tuple[Path, ...]) -> Path | None:
    if not roots:
        st.info("Start the studio with `backdrop studio --allow-root FOLDER` to open data sets on this "
                "machine, or upload a .zip.")
        return None
    listed = found_sets(roots)
    options = [""] + [str(p) for p in listed]

    def picked() -> None:
        st.session_state["ds_path"] = st.session_state.get("ds_pick") or st.session_state.get("ds_path", "")

    if st.session_state.get("ds_path") in options:
        st.session_state["ds_pick"] = st.session_state["ds_path"]
    st.selectbox(f"Data sets found under {', '.join(map(str, roots))}", options, key="ds_pick", on_change=picked,
                 format_func=lambda p: "(choose one)" if not p else sets.folder_label(Path(p), roots))
    st.text_input("…or a folder (absolute, or relative to the first allowed folder)", key="ds_path")
    text = st.session_state.get("ds_path", "").strip()
    if not text:
        return None
    try:
        return sets.check_path(text, roots + ui.upload_roots())
    except BackdropError as exc:
        st.error(one_line(exc))
        return None


def upload_zip() -> Path | None:
    up = st.file_uploader("A data set as a .zip (YOLO, COCO, class folders, imagefolder, image+mask pairs)",
                          type=["zip"], key="ds_zip")
    if up is None:
        return None
    data = up.getvalue()
    digest = hashlib.sha256(data).hexdigest()[:16]
    try:
        root = ui.extract_upload(data, digest)
    except BackdropError as exc:
        st.error(f"This file cannot be used: {one_line(exc)}")
        return None
    st.session_state["ds_path"] = str(root)
    return root


def show_summary(s: sets.SetSummary) -> None:
    a, b, c, d = st.columns(4)
    a.metric("Format", s.format)
    b.metric("Images", s.images)
    c.metric("Splits", len(s.splits))
    d.metric("Classes", len(s.classes))
    st.caption(f"Found: {s.found}")
    left, right = st.columns(2)
    left.markdown("**Images per split**  \n" + "  \n".join(f"{k}: {v}" for k, v in s.splits.items()))
    if s.classes:
        right.markdown("**Labelled objects per class**  \n" + "  \n".join(f"{k}: {v}" for k, v in list(s.classes.items())[:30]))
    if s.n_errors:
        st.warning(f"{s.n_errors} image(s) cannot be used as they are: " + "; ".join(s.errors))
    if s.samples:
        cols = st.columns(min(3, len(s.samples)))
        for i, item in enumerate(s.samples):
            try:
                cols[i % len(cols)].image(sets.drawn(item, s.names), caption=f"{item.rel} · {item.split}",
                                          width="stretch")
            except Exception as exc:  # noqa: BLE001 - one picture that cannot be drawn is said, not fatal
                cols[i % len(cols)].caption(f"{item.rel}: {exc}")


def options_form(s: sets.SetSummary, roots: tuple[Path, ...]) -> dict | None:
    """The job's options, or None (with the reason shown) when they cannot be used."""
    from backdrop.generate import GENERATORS

    st.subheader("Options")
    names = GENERATORS.names()
    if st.session_state.get("ds_generator") not in names:
        st.session_state["ds_generator"] = AUGMENT_DEFAULT if AUGMENT_DEFAULT in names else names[0]
    found = list(s.splits)
    chosen = [x for x in st.session_state.get("ds_splits") or [] if x in found]
    st.session_state["ds_splits"] = chosen or (["train"] if "train" in found else found[:1])
    a, b, c = st.columns(3)
    gen = a.selectbox("Generator", names, key="ds_generator",
                      help="; ".join(f"{n}: {GENERATORS.descriptions.get(n, '')}" for n in names))
    variants = int(b.number_input("Variants per image", 1, 50, key="ds_variants"))
    seed_text = c.text_input("Seed (empty: drawn and recorded)", key="ds_seed").strip()
    splits = st.multiselect("Splits to augment (the others are copied unchanged)", found, key="ds_splits")
    params: dict = {"command": "augment", "generator": gen, "variants": variants}
    if gen == "pool":
        pool = st.text_input("Pool folder (backgrounds, under an allowed folder)", key="ds_pool").strip()
        if not pool:
            st.info("The pool generator needs a folder of backgrounds.")
            return None
        try:
            params["backgrounds"] = str(sets.check_path(pool, roots, "pool folder"))
        except BackdropError as exc:
            st.error(one_line(exc))
            return None
    if seed_text:
        try:
            params["seed"] = int(seed_text)
        except ValueError:
            st.error(f"Seed: expected a whole number, got {seed_text!r}")
            return None
    if not splits:
        st.error("Choose at least one split to augment.")
        return None
    params["splits"] = ",".join(splits)
    return params


def main() -> None:
    st.header("Data sets")
    linked(LINKS)
    roots = ui.allowed_roots()
    source = st.radio("Data set", ["Folder on this machine", "Upload a .zip"], horizontal=True, key="ds_source")
    path = choose_folder(roots) if source == "Folder on this machine" else upload_zip()
    if path is None:
        to_query(LINKS)
        watch()
        return
    try:
        summary = summary_of(str(path), _stamp(path))
    except BackdropError as exc:
        st.error(one_line(exc))
        to_query(LINKS)
        return
    show_summary(summary)
    params = options_form(summary, roots)
    to_query(LINKS)
    queue = ui.job_queue()
    if queue is None:
        st.info("Jobs need the job queue (backdrop.jobs), which this installation lacks.")
    elif params is not None and st.button("Submit as a job", type="primary", key="ds_submit"):
        try:
            rec = ui.submit_augment(queue, path, params)
        except BackdropError as exc:
            st.error(one_line(exc))
        else:
            st.session_state["ds_job"] = rec.id
            st.session_state["ds_job_source"] = str(path)
            to_query(LINKS)
    watch()


def watch() -> None:
    job_id = st.session_state.get("ds_job", "")
    queue = ui.job_queue()
    if not job_id or queue is None:
        return
    st.subheader(f"Job {job_id}")

    @st.fragment(run_every=1.0)
    def progress() -> None:
        try:
            rec = queue.get(job_id)
        except Exception as exc:  # noqa: BLE001 - a job id from an old link
            st.error(f"No such job: {job_id} ({one_line(exc)})")
            return
        ui.job_progress(rec)
        if rec.state in ("done", "failed", "cancelled") and not st.session_state.get(f"ds_final_{job_id}"):
            st.session_state[f"ds_final_{job_id}"] = rec.state
            st.rerun()  # the whole page: the results below appear

    progress()
    state = st.session_state.get(f"ds_final_{job_id}")
    if state is None:
        try:
            state = queue.get(job_id).state
        except Exception:  # noqa: BLE001
            return
    if state == "done":
        results(queue, job_id)


def results(queue, job_id: str) -> None:
    from backdrop.preview import inline_page

    try:
        with st.spinner("Making the contact sheet (thumbnails are kept for next time)…"):
            sheet = ui.job_sheet(queue, job_id)
    except BackdropError as exc:
        st.warning(f"No contact sheet: {one_line(exc)}")
        return
    st.subheader("Contact sheet")
    per = 10
    key = f"ds_sheet_page_{job_id}"
    _, pages = inline_page(sheet, 1, per)
    page = int(st.number_input(f"Page (of {pages})", 1, max(1, pages), key=key)) if pages > 1 else 1
    html, _ = inline_page(sheet, page, per)
    st.components.v1.html(html, height=900, scrolling=True)
    out = sheet.parent
    st.download_button("Download the new data set (zip)", lambda: ui.zip_folder(out), file_name=f"{job_id}.zip",
                       mime="application/zip", key=f"ds_zip_{job_id}", on_click="ignore",
                       icon=":material/folder_zip:")
    st.caption(f"On this machine: {out}")


main()
