"""Engines: how a job's items are scheduled. What is computed for one item lives in
:mod:`backdrop.items` (no engine imports), so the local loop and the Ray stages compute
the same bytes for the same item; what to make is :mod:`backdrop.job`.

- :mod:`.local`  the loop on this machine (progress, summary)
- :mod:`.ray`    the same tasks as Ray Data stages (``engine="ray"``; imported lazily)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..job import Job, Outcome, Summary, Task


def augment(source: str | Path, out: str | Path | None = None, *, config: Any = None, engine: str = "local",
            engine_options: dict[str, Any] | None = None, **options: Any) -> Summary:
    """Augment a labelled data set: the Python side of ``backdrop augment``.

    ``config`` is a :class:`~backdrop.config.PipelineConfig` (its ``variants`` and ``seed`` apply);
    without one: 3 variants from the default generator (``generate.AUGMENT_DEFAULT``), as
    ``backdrop augment`` does;
    ``options`` are :class:`Job` fields (``format``, ``splits``, ``include_originals``,
    ``image_format``, ``quality``, ``save_masks``, ``overwrite``, ``box_fallback``, ...).
    Rerunning the same call resumes. Returns the :class:`Summary`.

    >>> from backdrop import PipelineConfig, GenerateConfig                       # doctest: +SKIP
    >>> cfg = PipelineConfig(variants=3, seed=7, generate=GenerateConfig(backend="random"))
    >>> augment("data/yolo", "data/yolo-aug", config=cfg).images                   # doctest: +SKIP
    24
    """
    from ..config import GenerateConfig, PipelineConfig

    source = Path(source)
    dst = Path(out) if out is not None else source.resolve().parent / f"{source.resolve().name}-backdrop"
    from ..generate import AUGMENT_DEFAULT

    config = config or PipelineConfig(variants=3, generate=GenerateConfig(backend=AUGMENT_DEFAULT))
    if engine not in ("local", "ray"):
        from ..errors import ConfigError

        raise ConfigError(f"engine: expected local or ray, got {engine!r}")
    # every option checked here, before any folder exists (Job.__post_init__)
    job = Job.from_options(config, dst, kind="dataset", inputs=(str(source),), **options)
    if engine == "ray":
        from .ray import run_ray

        return run_ray(job, **(engine_options or {}))
    from .local import run_local

    return run_local(job, progress=False)


__all__ = ["Job", "Outcome", "Summary", "Task", "augment"]
