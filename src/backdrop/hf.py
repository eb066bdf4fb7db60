"""Loading Hugging Face models (transformers, diffusers) without hangs or tracebacks.

Shared by the GIT/BLIP captioner and the Stable Diffusion generators. A model is either a
local folder (used as is) or a Hub id. A Hub id is first looked up in the local Hugging Face
cache only; the network is tried only when the cache lacks it and ``HF_HUB_OFFLINE`` is not
set, after a short reachability probe. Every failure becomes one line:
:class:`~backdrop.errors.ModelNotFoundError` (not here, cannot get it) or
:class:`~backdrop.errors.ModelCorruptError` (here, but does not load).

>>> canonical("runwayml/stable-diffusion-v1-5")
'stable-diffusion-v1-5/stable-diffusion-v1-5'
>>> looks_local("./models/sd"), looks_local("microsoft/git-large-coco")
(True, False)
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Callable

from .errors import BackdropError, ModelCorruptError, ModelNotFoundError

log = logging.getLogger(__name__)

# Old Hub names that moved; the new name is used unless only the old one is in the cache.
ALIASES = {
    "runwayml/stable-diffusion-v1-5": "stable-diffusion-v1-5/stable-diffusion-v1-5",
    "runwayml/stable-diffusion-inpainting": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}

PROBE_TIMEOUT_S = 5.0  # how long to wait for huggingface.co before saying it cannot be reached

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
_TRUE = {"1", "true", "yes", "on"}


def canonical(model: str) -> str:
    """The current Hub name for ``model`` (old names are mapped to new ones)."""
    return ALIASES.get(model, model)


def looks_local(model: str | os.PathLike) -> bool:
    """True when ``model`` names a folder (it exists, or it is written like a path, not a Hub id)."""
    text = os.fspath(model)
    if Path(text).expanduser().exists():
        return True
    if text.startswith(("/", ".", "~")) or "\\" in text or os.path.isabs(text):
        return True
    return not _HUB_ID.match(text)


def offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) forbids the network."""
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in _TRUE:
            return True
    return False


def cached_file(repo_id: str, filename: str, cache_dir: str | os.PathLike | None = None) -> str | None:
    """The path of ``filename`` of ``repo_id`` in the local Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, filename, cache_dir=cache_dir)
    except Exception as exc:  # an id the hub library rejects is simply not cached
        log.debug("cache lookup of %s/%s failed: %s", repo_id, filename, exc)
        return None
    return found if isinstance(found, str) else None


def store_spec(model: str) -> Any:
    """The model store's catalogue entry for a store name (``sd15``) or a Hub id it knows, else None."""
    from . import models

    spec = models.CATALOGUE.get(model)
    if spec is None:
        spec = next((s for s in models.CATALOGUE.values()
                     if s.details.get("repo_id") in (model, canonical(model))), None)
    return spec if spec is not None and spec.source == "huggingface" else None


def resolve(model: str, index_file: str = "config.json", cache_dir: str | os.PathLike | None = None) -> str:
    """The name to load: the model store's folder when it holds the model (`backdrop models pull`),
    a local folder's path, or the Hub id (old or new name, whichever is cached).

    A store name that is not pulled is returned as is, and :func:`missing_reason` says how to pull it.
    """
    text = os.fspath(model)
    spec = store_spec(text)
    if spec is not None:
        from . import models

        found = models.find(spec.name)
        if found is not None:
            return str(found)
        if text == spec.name:
            return text
    if looks_local(text):
        return str(Path(text).expanduser())
    new = canonical(text)
    if new != text and cached_file(text, index_file, cache_dir) and not cached_file(new, index_file, cache_dir):
        return text  # the user has the model under its old name
    return new


def how_to_get(repo_id: str) -> str:
    spec = store_spec(repo_id)
    if spec is not None:
        return (f"get it with `backdrop models pull {spec.name}` where there is network, or pass a local "
                "folder saved with save_pretrained")
    # `hf` is huggingface_hub's CLI since 1.0; `huggingface-cli` before that
    return (
        f"get it with `hf download {repo_id}` (older huggingface_hub: `huggingface-cli download {repo_id}`) "
        "where there is network, or pass a local folder saved with save_pretrained"
    )


def missing_reason(
    model: str, index_file: str = "config.json", cache_dir: str | os.PathLike | None = None
) -> str | None:
    """None when ``model`` is a present folder or a Hub id in the local cache; else a one-line reason."""
    name = resolve(model, index_file, cache_dir)
    spec = store_spec(name)
    if spec is not None and name == spec.name:
        return f"model {name} is not in the model store: run `backdrop models pull {name}`"
    if looks_local(name):
        folder = Path(name)
        if not folder.is_dir():
            return f"model folder {name} does not exist"
        if not (folder / index_file).is_file():
            return f"model folder {name} has no {index_file}; save it with save_pretrained"
        return None
    if cached_file(name, index_file, cache_dir):
        return None
    return f"model {name} not downloaded: {how_to_get(name)}"


def one_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of ``exc``'s message, cut to ``limit`` characters (for one-line errors)."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    return first if len(first) <= limit else first[: limit - 3] + "..."


def _probe(repo_id: str) -> str | None:
    """None when the Hub says ``repo_id`` exists and is readable; else why it cannot be had."""
    try:
        from huggingface_hub import HfApi
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError as exc:
        return f"cannot use the Hugging Face Hub: {exc}"
    try:
        HfApi().model_info(repo_id, timeout=PROBE_TIMEOUT_S)
    except GatedRepoError:
        return f"model {repo_id} is gated: accept its licence on huggingface.co and log in with `hf auth login`"
    except RepositoryNotFoundError:
        return f"no model {repo_id} on the Hugging Face Hub (check the name)"
    except Exception as exc:  # no network, DNS, TLS, timeout: all mean "cannot reach it now"
        return f"model {repo_id} is not in the local cache and huggingface.co cannot be reached ({type(exc).__name__})"
    return None


def load_pretrained(
    loader: Callable[..., Any],
    model: str,
    what: str,
    extra: str = "",
    *,
    index_file: str = "config.json",
    **kw: Any,
) -> Any:
    """Call ``loader(name, **kw)`` (a ``from_pretrained``) without hangs, tracebacks or surprises.

    ``what`` names the model's role in messages ("Stable Diffusion", "caption"); ``extra`` is a
    hint appended to a not-found message (e.g. a weight-free backend to use instead);
    ``index_file`` is the file whose presence means "this model is here" (``config.json`` for
    transformers, ``model_index.json`` for diffusers pipelines). A ``cache_dir`` keyword is used
    for the cache lookup and passed on to the loader.

    >>> load_pretrained(AutoConfig.from_pretrained, "microsoft/git-large-coco", "caption")  # doctest: +SKIP
    """
    hint = f"; {extra}" if extra else ""
    cache_dir = kw.get("cache_dir")  # passed on to the loader too
    name = resolve(model, index_file, cache_dir)
    spec = store_spec(name)
    if spec is not None and name == spec.name:  # a store name, not pulled
        raise ModelNotFoundError(f"{what} {missing_reason(name, index_file)}{hint}")

    if looks_local(name):
        reason = missing_reason(name, index_file)
        if reason:
            raise ModelNotFoundError(f"{what} {reason}{hint}")
        try:
            return loader(name, **kw)
        except (OSError, ValueError, KeyError) as exc:
            raise ModelCorruptError(f"{what} model folder {name} does not load: {one_line(exc)}") from exc

    if name != model:
        log.info("model %s is now published as %s", model, name)

    # 1. the local cache only: never touches the network
    if cached_file(name, index_file, cache_dir):
        try:
            return loader(name, local_files_only=True, **kw)
        except (OSError, ValueError) as exc:
            partial = exc
            log.debug("cached %s did not load offline: %s", name, exc)
        if offline():
            raise ModelNotFoundError(
                f"{what} model {name} is only partly in the Hugging Face cache and HF_HUB_OFFLINE is set "
                f"({one_line(partial, 120)}); {how_to_get(name)}{hint}"
            ) from partial
    elif offline():
        raise ModelNotFoundError(
            f"{what} model {name} is not in the Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"{how_to_get(name)}{hint}"
        )

    # 2. the network, after a short probe so that a dead network fails fast
    reason = _probe(name)
    if reason:
        raise ModelNotFoundError(f"{what} {reason}; {how_to_get(name)}{hint}")
    log.info("downloading %s model %s from the Hugging Face Hub", what, name)
    try:
        return loader(name, **kw)
    except BackdropError:
        raise
    except Exception as exc:  # HTTP, connection and file errors from the hub client all end here
        raise ModelNotFoundError(f"{what} model {name} could not be downloaded: {one_line(exc)}{hint}") from exc
