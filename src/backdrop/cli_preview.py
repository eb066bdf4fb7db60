"""`backdrop preview SET`: the contact sheet of a data set (see backdrop.preview).

Registered by the main CLI as ``app.command("preview")(preview)``; ``augment`` calls
:func:`sheet_after_augment` at the end of a run (``--preview/--no-preview``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer

log = logging.getLogger("backdrop")


def preview(
    set_root: Path = typer.Argument(..., metavar="SET", help="the data set's folder (an augmented set, or any set)"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="the sheet's file (default: SET/preview.html)"),
    source: Optional[Path] = typer.Option(None, "--source", help="the set SET was augmented from: its images lead each row"),
    fmt: str = typer.Option("auto", "--format", help="auto, yolo, coco, folders, imagefolder, masks, plain"),
    splits: Optional[str] = typer.Option(None, "--splits", help="comma-separated splits to show (default: all)"),
    per_page: int = typer.Option(50, "--per-page", help="rows per page of the sheet"),
    thumb: int = typer.Option(320, "--thumb", help="thumbnail size in pixels (the longer side)"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="errors only"),
    debug: bool = typer.Option(False, "--debug", help="show tracebacks"),
) -> None:
    """Write an offline HTML contact sheet of a data set: one row per source image with its
    variants, labels drawn, seeds and check scores, flags, filters and pages."""
    from .cli_common import guarded
    from .cli_common import setup_logging as _setup_logging

    _setup_logging(0, quiet)

    def go():
        from .config import ConfigError
        from .preview import build_preview

        if per_page < 1:
            raise ConfigError(f"--per-page: expected 1 or more, got {per_page}")
        if not 32 <= thumb <= 2048:
            raise ConfigError(f"--thumb: expected 32 to 2048, got {thumb}")
        if source is not None and not source.is_dir():
            raise ConfigError(f"--source {source}: no such folder")
        chosen = [s.strip() for s in splits.split(",") if s.strip()] if splits else None
        return build_preview(set_root, out, source=source, format=fmt, splits=chosen, per_page=per_page,
                             thumb_px=thumb, on_progress=_progress(quiet))

    sheet = guarded(debug, go)
    if not quiet:
        _say(sheet)


def _progress(quiet: bool):
    import sys
    import time

    if quiet or not sys.stderr.isatty():
        return None
    last = [0.0]

    def on(done: int, total: int) -> None:
        now = time.monotonic()
        if now - last[0] > 0.5 or done == total:
            last[0] = now
            sys.stderr.write(f"\rthumbnails {done}/{total}")
            if done == total:
                sys.stderr.write("\n")
            sys.stderr.flush()

    return on


def _say(sheet) -> None:
    typer.echo(f"{sheet.images} image(s) in {sheet.rows} row(s), {sheet.labels} label(s) drawn, "
               f"{sheet.flagged} flagged; thumbnails: {sheet.thumbs_made} made, {sheet.thumbs_reused} reused", err=True)
    typer.echo(f"contact sheet: {sheet.path}")


def sheet_after_augment(out: str, source: str, *, quiet: bool) -> None:
    """``augment --preview``: the new set's sheet, its path printed; a failure here is a warning
    (the set itself is written and good)."""
    from .errors import BackdropError
    from .preview import build_preview

    try:
        sheet = build_preview(out, source=source, on_progress=_progress(quiet))
    except BackdropError as exc:
        log.warning("no contact sheet: %s", exc)
        return
    except Exception as exc:  # noqa: BLE001 - the set is written; the sheet is a bonus
        log.warning("no contact sheet: unexpected %s: %s", type(exc).__name__, exc)
        return
    if not quiet:
        _say(sheet)
