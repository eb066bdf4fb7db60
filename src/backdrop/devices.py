"""The one place where device and dtype are chosen (CUDA + fp16 when present, else CPU + fp32).

Every torch backend asks here, so ``--device`` / ``--dtype`` mean the same everywhere. An
explicit device that is not present is an error, never a silent fallback.

>>> pick_device("cpu")
'cpu'
>>> str(pick_dtype("cpu"))
'torch.float32'
"""

from __future__ import annotations

import logging
from typing import Any

from .errors import ConfigError
from .registry import require

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda", "mps")
DTYPES = ("auto", "float16", "bfloat16", "float32")


def _mps_available(torch: Any) -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def pick_device(requested: str = "auto", extra: str = "diffusion") -> str:
    """The torch device to run on: "cuda", "mps" or "cpu".

    "auto" picks CUDA when present, else Apple MPS, else the CPU. Asking for "cuda" or "mps"
    where it is absent raises ConfigError. ``extra`` names the pip extra if torch is missing.
    """
    if requested not in DEVICES:
        raise ConfigError(f"device: expected one of {', '.join(DEVICES)}, got {requested!r}")
    if requested == "cpu":
        return "cpu"
    torch = require("torch", extra)
    if requested == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available(torch):
            return "mps"
        return "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device: 'cuda' was asked for but torch sees no CUDA GPU "
            f"(torch {torch.__version__}); use --device cpu or auto, or install a CUDA build of torch"
        )
    if requested == "mps" and not _mps_available(torch):
        raise ConfigError("device: 'mps' was asked for but torch sees no Apple GPU; use --device cpu or auto")
    return requested


def pick_dtype(device: str, requested: str = "auto", extra: str = "diffusion") -> Any:
    """The torch dtype for ``device``: fp16 on CUDA, fp32 elsewhere, unless one is asked for."""
    if requested not in DTYPES:
        raise ConfigError(f"dtype: expected one of {', '.join(DTYPES)}, got {requested!r}")
    torch = require("torch", extra)
    if requested == "auto":
        return torch.float16 if device == "cuda" else torch.float32
    if requested == "float16" and device == "cpu":
        log.warning("float16 on the CPU is slow and some operations lack fp16 kernels; float32 is the usual choice")
    return getattr(torch, requested)


def generator_device(device: str) -> str:
    """Where to make the torch.Generator for ``device`` (MPS generators are not reproducible)."""
    return "cpu" if device == "mps" else device
