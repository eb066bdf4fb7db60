"""What the studio's pages share: one-line errors, the generation lock, seeds, galleries, the
models loaded once per process, deep links (settings in the query string), and the allowed roots.

Imported by app.py and by every page in views/ (Streamlit runs those as scripts; this module is
imported once per process, so its st.cache_resource loaders hold their models across pages).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Callable

import streamlit as st

from backdrop.config import GenerateConfig, PipelineConfig
from backdrop.errors import BackdropError
from backdrop.studio import core

log = logging.getLogger("backdrop.studio")

UPLOAD_TYPES = ["png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp", "gif"]
ROOTS_ENV = "BACKDROP_STUDIO_ROOTS"  # os.pathsep-separated folders the data-sets page may open (--allow-root)
QUEUE_ENV = "BACKDROP_STUDIO_QUEUE"  # the job queue's folder (--queue; default: $BACKDROP_HOME/serve)


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



# -- deep links ----------------------------------------------------------------------------------------


def linked(params: dict[str, tuple[str, Any, Callable[[str], Any]]]) -> None:
    """Give the page's widgets their values from the query string on the page's first run in a
    session, their defaults otherwise. ``params``: query name -> (widget key, default, parse).

    Call before the widgets are made, make them without a ``value`` (the state holds it), then
    call :func:`to_query` after them so the URL always says what the page shows."""
    seen = st.session_state.setdefault("_linked", set())
    for name, (key, default, parse) in params.items():
        if key not in seen and name in st.query_params:
            try:
                st.session_state[key] = parse(st.query_params[name])
            except (TypeError, ValueError):
                st.session_state.setdefault(key, default)
        else:
            st.session_state.setdefault(key, default)
        seen.add(key)


def to_query(params: dict[str, tuple[str, Any, Callable[[str], Any]]]) -> None:
    """Write the page's current settings into the query string (defaults left out)."""
    for name, (key, default, _) in params.items():
        value = st.session_state.get(key)
        if value is None or value == default or value == "" or value == []:
            if name in st.query_params:
                del st.query_params[name]
        else:
            text = ",".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)
            if st.query_params.get(name) != text:
                st.query_params[name] = text


def split_list(text: str) -> list[str]:
    return [x for x in text.split(",") if x]


# -- server folders ---------------------------------------------------------------------------------------


def allowed_roots() -> tuple[Path, ...]:
    """The folders the data-sets page may open (``backdrop studio --allow-root DIR``), resolved."""
    raw = os.environ.get(ROOTS_ENV, "")
    return tuple(Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip())


def upload_roots() -> tuple[Path, ...]:
    """Where uploaded data sets are unpacked (one folder per upload, by content): also openable."""
    return (uploads_dir(),)


def uploads_dir() -> Path:
    queue = job_queue()
    if queue is not None:
        return Path(queue.root) / "studio-uploads"
    from backdrop.models import home

    return home() / "studio" / "uploads"


def extract_upload(data: bytes, digest: str) -> Path:
    """Unpack an uploaded data set .zip (the service's zip-slip and zip-bomb checks) once per
    content; returns the set's root. InputError when the archive is refused."""
    import shutil
    import tempfile

    from backdrop.errors import InputError

    try:
        from backdrop.jobs.runner import data_set_root
        from backdrop.service.errors import ApiError
        from backdrop.service.settings import Settings
        from backdrop.service.uploads import extract_zip
    except ImportError:
        raise InputError("uploading a .zip needs the service (pip install 'backdrop[service]')") from None
    dest = uploads_dir() / digest
    if (dest / "set").is_dir():
        return data_set_root(dest / "set")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=dest.parent))
    try:
        z = tmp / "set.zip"
        z.write_bytes(data)
        limits = Settings(root=dest.parent)
        try:
            extract_zip(z, tmp / "set", max_entries=limits.max_zip_entries, max_bytes=limits.max_zip_bytes,
                        max_ratio=limits.max_zip_ratio)
        except ApiError as exc:
            raise InputError(exc.message) from None
        z.unlink()
        try:
            tmp.rename(dest)  # whole or not at all; a twin upload that won the race is kept
        except OSError:
            if not (dest / "set").is_dir():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return data_set_root(dest / "set")


# -- the job queue (shared with `backdrop serve`) ------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _queue(root: str):
    from backdrop.jobs.queue import JobQueue

    return JobQueue(root)


def job_queue():
    """The queue this studio submits to and lists (``--queue``; default: the one `backdrop serve`
    uses, $BACKDROP_HOME/serve), or None when backdrop.jobs is not installed."""
    try:
        from backdrop.jobs.queue import default_root
    except ImportError:
        return None
    return _queue(str(Path(os.environ.get(QUEUE_ENV) or default_root()).expanduser().resolve()))


def submit_augment(queue, source: Path, params: dict):
    """Check the options exactly as the service does, then queue an augment job of ``source``."""
    from backdrop.jobs import runner

    clean = runner.check_params("augment", params)
    return queue.submit("augment", {"command": "augment", "source": str(source), **clean})


def job_progress(rec) -> None:
    """A job's state as a progress bar and one line (its error, when it failed)."""
    import time

    total = rec.total or 0
    frac = min(1.0, rec.done / total) if total else (1.0 if rec.state == "done" else 0.0)
    took = ((rec.finished or time.time()) - rec.started) if rec.started else None
    text = f"{rec.state} · {rec.done}/{total or '?'} item(s)" + (f" · {took:.0f} s" if took is not None else "")
    st.progress(frac, text=text)
    if rec.state == "failed" and rec.error:
        st.error(f"Job failed: {rec.error}")
    for item, message in (rec.failed or [])[:5]:
        st.caption(f"⚠ {item}: {message}")


def job_sheet(queue, job_id: str) -> Path:
    """The contact sheet of a done augment job (made on first ask, beside the job's output)."""
    from backdrop.jobs.runner import job_inputs, out_dir
    from backdrop.preview import SHEET_NAME, build_preview

    rec = queue.get(job_id)
    out = out_dir(queue, job_id)
    sheet = out / SHEET_NAME
    if not sheet.is_file():
        src = job_inputs(queue, rec)
        source = src[0] if rec.kind == "augment" and src else None
        build_preview(out, source=source, title=f"{Path(source).name if source else 'job'} · job {job_id}")
    return sheet


MAX_ZIP_BYTES = 2 << 30  # a larger set is downloaded from its folder (or the service's /archive)


def zip_folder(folder: Path) -> bytes:
    """``folder`` as a .zip: the set, its sheet and the sheet's thumbnails (the rest of the write
    protocol's record left out), in memory: refused above MAX_ZIP_BYTES."""
    import io
    import zipfile

    from backdrop.errors import OutputError

    def wanted(rel: Path) -> bool:  # the set's own files, and .backdrop/preview/ (the sheet's thumbnails)
        parts = rel.parts
        if parts[:2] == (".backdrop", "preview") or parts == (".backdrop",):
            return True
        return not any(x.startswith(".") for x in parts)

    files = []
    total = 0
    for dirpath, dirnames, filenames in os.walk(folder):
        rel = Path(dirpath).relative_to(folder)
        dirnames[:] = sorted(d for d in dirnames if wanted(rel / d))
        if rel.parts == (".backdrop",):
            continue  # the record's own files (journals, locks, set.json) stay
        for name in sorted(filenames):
            if wanted(rel / name):
                p = Path(dirpath) / name
                total += p.stat().st_size
                files.append(p)
    if total > MAX_ZIP_BYTES:
        raise OutputError(f"{folder} holds {total / 2**30:.1f} GB: take it from the folder itself")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for p in files:
            zf.write(p, p.relative_to(folder).as_posix())
    return buf.getvalue()
