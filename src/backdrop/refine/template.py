"""A weight-free refiner: the caption, rephrased as a background, put into a style template.

The caption of a clean background may still talk about a subject ("a photo of a cat on a
wooden table") or start with filler. :func:`background_phrase` keeps the scene and drops the
rest ("a wooden table background"); the style preset (``backdrop.styles``) then wraps it and
supplies the negative prompt. The positive prompt is kept within CLIP's 77-token window.

>>> from backdrop.config import RefineConfig
>>> TemplateRefiner(RefineConfig(style="none"))("a photo of a cat sitting on a wooden table")
Prompt(positive='a wooden table background', negative='')
"""

from __future__ import annotations

import logging
import re

from ..config import RefineConfig
from ..runlog import note, warn
from ..styles import CLIP_TOKENS, apply_style, approx_tokens, get_style, shorten
from ..types import Prompt
from ..stages import Refiner

log = logging.getLogger(__name__)

FALLBACK = "a plain, softly lit neutral background"

# Openers that describe the picture rather than the scene: "a close up photo of", "there is".
_OPENER = re.compile(
    r"^(?:(?:a|an|the|this|it is a|it's a)\s+)?"
    r"(?:(?:close[- ]?up|closeup|blurry|black and white|high resolution|low resolution|stock|"
    r"color|colour|digital|aerial|wide|cropped)\s+)*"
    r"(?:photo(?:graph)?|picture|image|pic|view|shot|snapshot|render(?:ing)?|close[- ]?up|closeup|"
    r"scene|frame|microscope image|micrograph)\s+"
    r"(?:of|showing|with|from)(?:\s+|$)",
    re.IGNORECASE,
)
_FILLER = re.compile(
    r"^(?:there (?:is|are)|this is|it is|here is|here are|we see|you can see|showing|an? image shows)\s+",
    re.IGNORECASE,
)
# Words some captioners emit that mean nothing ("arafed" is a well-known BLIP artefact).
_JUNK = re.compile(r"\b(?:arafed|araffe|arafe|araffed|arafly)\b\s*", re.IGNORECASE)
# Phrases that relate a subject to the scene around it; the scene is what follows them.
_VERBS = (
    "standing", "sitting", "lying", "laying", "resting", "placed", "floating", "posing", "running",
    "walking", "flying", "swimming", "growing", "shown", "seen", "isolated",
)
_RELATIONS = (
    "in front of", "on top of", "in the middle of", "next to", "surrounded by", "close to",
    "against", "on", "in", "at", "over", "under", "near", "by", "inside", "beside", "across",
    "along", "through", "among", "amid",
)
_RELATION = re.compile(
    r"\b(?:(?:" + "|".join(_VERBS) + r")\s+)?(?:" + "|".join(re.escape(r) for r in _RELATIONS) + r")\s+",
    re.IGNORECASE,
)
# What may follow "at"/"in" without being a place: "at night", "in the rain", "in focus".
_NOT_A_PLACE = re.compile(
    r"(?:the\s+)?(?:night|nighttime|dusk|dawn|sunset|sunrise|daytime|day|morning|evening|afternoon|"
    r"winter|summer|autumn|fall|spring|rain|snow|fog|mist|dark|darkness|sun|sunlight|shade|shadow|"
    r"focus|color|colour|black and white|style of|distance|light)\b",
    re.IGNORECASE,
)
_MICROSCOPE = re.compile(r"\b(?:seen\s+|viewed\s+)?(?:under|through|with|in)\s+(?:a|the)\s+microscope\b", re.IGNORECASE)
_COMPLEX = re.compile(r"\b(?:with|of|and|or)\b|,", re.IGNORECASE)
_BACKGROUND = re.compile(r"\b(?:background|backdrop)s?\b", re.IGNORECASE)
_IN_THE_BACKGROUND = re.compile(r"\s*\b(?:in|into) the (?:background|distance|back)\b", re.IGNORECASE)
_DANGLING_END = re.compile(
    r"(?:[\s,;:]+(?:a|an|the|and|or|with|of|in|on|at|to|from|by|for|under|over))+[\s,;:]*$", re.IGNORECASE
)
_ARTICLE = re.compile(r"^(?:a|an|the|some)\s+", re.IGNORECASE)


def background_phrase(caption: str, max_tokens: int | None = None) -> str:
    """Rephrase an image caption as a description of a background with no subject in it.

    ``max_tokens`` (approximate CLIP tokens) bounds the result, "background" words included.

    >>> background_phrase("a photo of a dog running on the beach")
    'a beach background'
    >>> background_phrase("arafed man standing in front of a brick wall")
    'a brick wall background'
    >>> background_phrase("a smooth, evenly lit pale pink background with a fine grainy texture")
    'a smooth, evenly lit pale pink background with a fine grainy texture'
    """
    text = " ".join(_JUNK.sub("", caption).split()).strip(" .!;:,\"'")
    previous = None
    while text != previous:  # openers can nest: "there is a close up photo of ..."
        previous = text
        text = _FILLER.sub("", _OPENER.sub("", text)).strip()
    if not text:
        return ""

    if _MICROSCOPE.search(text):  # "cells under a microscope": the field, without the cells
        return "an empty microscope field of view"
    mark = _IN_THE_BACKGROUND.search(text)
    if mark:  # "a man with mountains in the background" -> "mountains"
        head = text[: mark.start()]
        rel = _relations(head, len(head))
        if rel:
            text = head[rel[0].end():]
        elif re.search(r"\bwith\s+", head):
            text = re.split(r"\bwith\s+", head)[-1]
        else:
            text = head
    else:
        bg = _BACKGROUND.search(text)
        rel = _relations(text, bg.start() if bg else len(text))
        if rel:
            # the relation nearest the scene: "a cat on a table in front of a white background"
            # -> "a white background"; "a bowl on a table in a kitchen" -> "a kitchen"
            rest = text[rel[-1].end():].strip()
            if rest:
                text = rest
    text = _DANGLING_END.sub("", text)  # "... under strong light and" -> "... under strong light"
    if max_tokens is not None:
        text = shorten(text, max_tokens - (0 if _BACKGROUND.search(text) else 6))  # room for ", empty background"
    text = text.strip(" ,.;:")
    if not text:
        return ""
    if not _BACKGROUND.search(text):
        core = _ARTICLE.sub("", text)
        if _COMPLEX.search(core) or _RELATION.search(core):
            text = f"{_article(core)} {core}, " + ("background" if "empty" in core else "empty background")
        elif core.endswith("s") and not core.endswith("ss"):  # plural: "mountains background"
            text = f"{core} background"
        else:
            text = f"{_article(core)} {core} background"
    return text[0].lower() + text[1:] if not text[:2].isupper() else text


def _relations(text: str, limit: int) -> list[re.Match]:
    """Subject-to-scene relations in ``text`` ending before ``limit`` (not "at night", "in focus")."""
    return [
        m for m in _RELATION.finditer(text)
        if m.end() <= limit and not _NOT_A_PLACE.match(text, m.end())
    ]


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


class TemplateRefiner(Refiner):
    """Caption -> Prompt by rephrasing and a style preset's template (no weights).

    >>> TemplateRefiner(RefineConfig(style="photographic"))("a grey wall").negative.startswith("people")
    True
    """

    name = "template"

    def __init__(self, config: RefineConfig | None = None):
        self.config = config if config is not None else RefineConfig()
        # fails early (ConfigError listing the names) on an unknown style or a bad styles file
        self.style = get_style(self.config.style, self.config.styles_file)

    @classmethod
    def availability(cls, config: RefineConfig) -> str | None:
        return None

    def __call__(self, caption: str) -> Prompt:
        budget = CLIP_TOKENS - approx_tokens(apply_style(self.style, "", max_tokens=None).positive)
        phrase = background_phrase(caption, max_tokens=max(budget, 8))
        if not phrase:
            warn(f"refine: the caption {caption!r} says nothing usable; using {FALLBACK!r}")
            phrase = FALLBACK
        log.debug("caption %r -> background phrase %r", caption, phrase)
        note("refine.style", self.style.name)
        return apply_style(self.style, phrase)
