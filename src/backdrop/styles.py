"""Style presets: prompt templates with paired negative prompts.

The bundled presets live in ``backdrop/data/styles.toml``; a user file (TOML or JSON, the same
shape) is merged over them: a new name adds a preset, a known name overrides only the fields
it gives. Every refiner (template, LLM) and the studio use this one small API:

- :class:`Style`: one preset (``name``, ``prompt`` template with ``{prompt}``, ``negative``, ``description``);
- :func:`load_styles`: all presets by name, bundled plus an optional user file;
- :func:`get_style`: one preset by name, or a ConfigError listing the valid names;
- :func:`apply_style`: fill a preset's template with a description, within CLIP's token budget;
- :func:`approx_tokens`: a rough (over-)estimate of CLIP tokens, without a tokenizer;
- :func:`shorten`: cut a text to a token budget at clause, then word, boundaries.

>>> style = get_style("photographic")
>>> apply_style(style, "a pale pink wall").positive.startswith("professional photograph of a pale pink wall")
True

A user file (``my_styles.toml``)::

    [underwater]
    description = "an underwater scene"
    prompt = "underwater photograph of {prompt}, caustics, blue-green light"
    negative = "fish, divers, text"

    [photographic]          # override one field of a bundled preset
    negative = "people, text, watermark"
"""

from __future__ import annotations

import functools
import json
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .errors import ConfigError
from .runlog import note
from .types import Prompt

PLACEHOLDER = "{prompt}"
# CLIP's text encoder reads 77 tokens, two of which are the start and end markers.
CLIP_TOKENS = 75

_FIELDS = ("prompt", "negative", "description")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_BUNDLED = "styles.toml"
# words a shortened text must not end on: they promise more
_DANGLING = {"a", "an", "the", "and", "or", "with", "of", "in", "on", "at", "to", "from", "by", "for", "under", "over"}


@dataclass(frozen=True)
class Style:
    """One style preset. ``prompt`` contains ``{prompt}`` where the description goes."""

    name: str
    prompt: str
    negative: str = ""
    description: str = ""


def load_styles(extra_file: str | Path | None = None) -> dict[str, Style]:
    """All style presets by name: the bundled ones, then ``extra_file`` (TOML or JSON) merged over.

    Raises ConfigError naming the file and the problem when ``extra_file`` cannot be used.

    >>> {"photographic", "microscopy", "none"} <= set(load_styles())
    True
    """
    styles = dict(_bundled())
    if extra_file is not None:
        path = Path(extra_file)
        styles = _merge(styles, _read_user_file(path), str(path))
    return styles


def get_style(name: str, extra_file: str | Path | None = None) -> Style:
    """The preset called ``name``; ConfigError listing the valid names when there is none.

    >>> get_style("minimal").name
    'minimal'
    """
    styles = load_styles(extra_file)
    if name not in styles:
        raise ConfigError(f"unknown style {name!r}; choose one of: {', '.join(styles)}")
    return styles[name]


def apply_style(style: Style, text: str, max_tokens: int | None = CLIP_TOKENS) -> Prompt:
    """The style's template filled with ``text``, as a Prompt with the style's negative.

    When the result would exceed ``max_tokens`` (approximate CLIP tokens, see
    :func:`approx_tokens`), ``text`` is shortened first (whole trailing clauses, then words),
    so the style's own words survive, and the cut is noted in the run record (``prompt_shortened``).
    ``None`` turns the limit off (use it for a prompt a person typed).

    >>> apply_style(get_style("none"), "a grey wall")
    Prompt(positive='a grey wall', negative='')
    """
    text = " ".join(text.split())
    positive = _fill(style.prompt, text)
    if max_tokens is not None and approx_tokens(positive) > max_tokens:
        note("prompt_shortened", {"style": style.name, "approx_tokens": approx_tokens(positive), "limit": max_tokens})
        budget = max_tokens - approx_tokens(_fill(style.prompt, ""))
        text = shorten(text, budget) if budget > 0 else ""
        positive = _fill(style.prompt, text)
        if approx_tokens(positive) > max_tokens:  # the template alone is too long
            positive = shorten(positive, max_tokens)
    return Prompt(positive=positive, negative=style.negative)


def approx_tokens(text: str) -> int:
    """An over-estimate of the CLIP BPE tokens in ``text`` (no tokenizer needed).

    Words count one token per six letters (common words are one token; rare long words are
    split by BPE), and every digit and punctuation mark counts one.

    >>> approx_tokens("a pale pink wall, soft light")
    7
    """
    count = 0
    for piece in re.findall(r"[^\W\d_]+|\d|[^\w\s]|_", text.lower()):
        count += math.ceil(len(piece) / 6) if piece[0].isalpha() else 1
    return count


def shorten(text: str, budget: int) -> str:
    """Cut ``text`` to at most ``budget`` approximate tokens: drop trailing clauses, then words.

    >>> shorten("a grey wall, soft light, film grain", 6)
    'a grey wall, soft light'
    """
    if approx_tokens(text) <= budget:
        return text
    clauses = [c.strip() for c in text.split(",")]
    while len(clauses) > 1 and approx_tokens(", ".join(clauses)) > budget:
        clauses.pop()
    text = ", ".join(clauses)
    words = text.split()
    while words and approx_tokens(" ".join(words)) > budget:
        words.pop()
    while words and words[-1].lower().strip(",;:") in _DANGLING:
        words.pop()
    return " ".join(words).strip(" ,;:")


# -- internals ---------------------------------------------------------------------------------


def _fill(template: str, text: str) -> str:
    filled = template.replace(PLACEHOLDER, text)
    # a template like "{prompt}, studio light" filled with "" must not start with ", "
    filled = re.sub(r"\s+([,.;:])", r"\1", filled)
    filled = re.sub(r"([,;:])(\s*[,;:])+", r"\1", filled)
    return " ".join(filled.split()).strip(" ,;:")


@functools.lru_cache(maxsize=1)
def _bundled() -> dict[str, Style]:
    text = (Path(__file__).parent / "data" / _BUNDLED).read_text(encoding="utf-8")
    return _merge({}, _toml().loads(text), f"bundled {_BUNDLED}")


def _toml():
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli  # pragma: no cover

    return tomli


def _read_user_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"styles file {path}: cannot read it ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(f"styles file {path}: not UTF-8 text") from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            return json.loads(text)
        if suffix == ".toml":
            return _toml().loads(text)
    except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError both are
        raise ConfigError(f"styles file {path}: not valid {suffix[1:].upper()}: {exc}") from exc
    raise ConfigError(f"styles file {path}: expected a .toml or .json file, got {suffix or 'no extension'!r}")


def _merge(base: Mapping[str, Style], data: Any, where: str) -> dict[str, Style]:
    if not isinstance(data, dict):
        raise ConfigError(f"styles file {where}: expected a table of presets at the top, got {type(data).__name__}")
    out = dict(base)
    for name, entry in data.items():
        if not _NAME.match(name):
            raise ConfigError(f"styles file {where}: bad preset name {name!r} (letters, digits, '_', '-', '.')")
        if not isinstance(entry, dict):
            raise ConfigError(f"styles file {where}: preset {name!r} must be a table with prompt/negative/description")
        unknown = sorted(set(entry) - set(_FIELDS))
        if unknown:
            raise ConfigError(
                f"styles file {where}: preset {name!r} has unknown field(s) {', '.join(unknown)}; "
                f"known: {', '.join(_FIELDS)}"
            )
        for key, value in entry.items():
            if not isinstance(value, str):
                raise ConfigError(f"styles file {where}: preset {name!r} field {key!r} must be a string, got {value!r}")
        old = base.get(name)
        if old is None and "prompt" not in entry:
            raise ConfigError(f"styles file {where}: new preset {name!r} needs a 'prompt' template")
        prompt = entry.get("prompt", old.prompt if old else "")
        if PLACEHOLDER not in prompt:
            raise ConfigError(f"styles file {where}: preset {name!r} prompt must contain {PLACEHOLDER}, got {prompt!r}")
        out[name] = Style(
            name=name,
            prompt=prompt,
            negative=entry.get("negative", old.negative if old else ""),
            description=entry.get("description", old.description if old else ""),
        )
    return out
