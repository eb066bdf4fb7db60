"""Option values -> a :class:`~backdrop.config.PipelineConfig`: the one rule the faces share.

The CLI (``backdrop run`` / ``augment``), the service's jobs (``backdrop.jobs.runner``) and the
studio build their configs here, so the same options make the same config everywhere: a config
file, then a preset, then the options given (``None`` = not given), and ``--style`` also picking
the random generator's domain.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def build_config(*, config_file: Optional[Path], preset: Optional[str], stages: dict[str, dict[str, Any]],
                 **top: Any) -> Any:
    """A PipelineConfig from a file, a preset and the command-line options (which win)."""
    from .config import PipelineConfig, preset as apply_preset

    cfg = PipelineConfig.from_file(config_file) if config_file else PipelineConfig()
    if preset:
        cfg = apply_preset(preset, cfg)
    overrides = {stage: {k: v for k, v in opts.items() if v is not None} for stage, opts in stages.items()}
    cfg = cfg.with_overrides(**{k: v for k, v in overrides.items() if v})
    cfg = cfg.with_overrides(**{k: v for k, v in top.items() if v is not None})
    style = stages.get("refine", {}).get("style")
    if style and cfg.generate.backend == "random" and cfg.generate.random_style == "auto":
        # --style picks the random generator's domain too (microscopy, studio, outdoor)
        from .generate.random import resolve_style
        from .styles import get_style

        chosen = get_style(style, cfg.refine.styles_file)
        cfg = cfg.with_overrides(generate={"random_style": resolve_style("auto", f"{style} {chosen.description}")})
    return cfg
