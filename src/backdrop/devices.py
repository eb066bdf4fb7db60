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


THREADS_ENV = "BACKDROP_THREADS"  # overrides every CPU thread count backdrop chooses


def physical_cores() -> int:
    """Physical CPU cores this process may use (hyper-threads counted once), at least 1."""
    import os

    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 1
    cores: set[tuple[str, str]] = set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            phys = core = ""
            for line in fh:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "physical id":
                    phys = value.strip()
                elif key == "core id":
                    core = value.strip()
                elif not key and core:
                    cores.add((phys, core))
                    phys = core = ""
            if core:
                cores.add((phys, core))
    except OSError:
        pass
    logical = os.cpu_count() or 1
    if cores and len(cores) < logical:  # SMT: two logical CPUs per core share its arithmetic units
        usable = max(1, usable * len(cores) // logical)
    return max(1, usable)


def pick_threads(requested: int = 0, busy_aware: bool = True) -> int:
    """CPU threads for a compute library: ``requested`` when > 0, else ``$BACKDROP_THREADS``, else
    the physical cores that are not already busy (1-minute load average), at least 1.

    Why not ``os.cpu_count()``: llama.cpp's threads spin while they wait for each other, so one
    thread more than there are free cores makes every token wait for a descheduled thread (a
    1 s refine took 7-38 s on a busy 2-core machine). Hyper-threads add little to matrix work.

    >>> pick_threads(3)
    3
    """
    import os

    if requested and requested > 0:
        return int(requested)
    env = os.environ.get(THREADS_ENV, "").strip()
    if env:
        try:
            value = int(env)
        except ValueError:
            raise ConfigError(f"{THREADS_ENV}: expected a whole number of threads, got {env!r}") from None
        if value < 1:
            raise ConfigError(f"{THREADS_ENV}: expected at least 1, got {value}")
        return value
    cores = physical_cores()
    if not busy_aware:
        return cores
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return cores
    # the load average counts runnable threads machine-wide; leave the cores they hold
    free = cores - int(load + 0.5) + 1  # +1: this process is often part of that load already
    return max(1, min(cores, free))


def torch_threads(requested: int = 0) -> int | None:
    """Set torch's intra-op threads when asked (``requested`` > 0 or ``$BACKDROP_THREADS``);
    otherwise leave torch's own choice (its physical cores). Returns the count set, or None."""
    import os

    if not (requested and requested > 0) and not os.environ.get(THREADS_ENV, "").strip():
        return None
    count = pick_threads(requested)
    import torch

    if torch.get_num_threads() != count:
        torch.set_num_threads(count)
        log.info("torch uses %d CPU threads", count)
    return count
