"""What every `backdrop` command shares: console logging and the one place that turns an error
into one line and a non-zero exit. Sub-apps (cli_models, ...) import it from here, never from
cli.py, which imports them to mount them.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import Any, Callable

import typer

from .errors import BackdropError


class _ConsoleFormatter(logging.Formatter):
    """The plan of a run (INFO: what was found, what will be done, progress) as plain lines; what
    a user should act on as ``warning: ...``, failures as ``error: ...`` (as the CLI's own error
    lines), details (``-v``) as ``debug: ...``."""

    PREFIX = {logging.DEBUG: "debug: ", logging.INFO: "", logging.WARNING: "warning: ", logging.ERROR: "error: "}

    def format(self, record: logging.LogRecord) -> str:
        level = max((lv for lv in self.PREFIX if lv <= record.levelno), default=logging.DEBUG)
        return self.PREFIX[level] + super().format(record)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time: while a progress bar is shown, rich puts
    its own stream there, which prints the line above the bar instead of through it."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property  # type: ignore[override]
    def stream(self):  # noqa: D401
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def setup_logging(verbose: int, quiet: bool) -> None:
    # default: the plan (INFO) and warnings; -v: each item's details too; -vv: and the model
    # libraries' own notices; -q: errors only
    level = logging.ERROR if quiet else (logging.INFO, logging.DEBUG, logging.DEBUG)[min(verbose, 2)]
    handler = _StderrHandler()
    handler.setFormatter(_ConsoleFormatter("%(message)s"))
    handler.setLevel(level)
    root = logging.getLogger("backdrop")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    if verbose < 2:  # model libraries' own notices (e.g. "requires torchvision ... falling back") are noise here
        for var in ("TRANSFORMERS_VERBOSITY", "DIFFUSERS_VERBOSITY"):
            os.environ.setdefault(var, "error")


def fail(exc: BaseException, debug: bool) -> None:
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
        fail(exc, debug)
