"""Refine with a local chat LLM: caption (+ style) -> one Stable Diffusion background prompt.

Two runtimes share everything but the model call:

- ``llama-cpp``: any GGUF chat model through llama-cpp-python (``pip install 'backdrop[llm]'``);
  the small default is SmolLM2-135M-Instruct (``backdrop models pull smollm2-135m-instruct``).
- ``gpt4all``: a GGUF model through GPT4All (``pip install 'backdrop[gpt4all]'``); downloads
  only when ``allow_download`` is set.

The model is asked, with a few worked examples, for one line ``Background: <scene>``. Its answer
is cleaned (one line, labels/quotes/markdown/trailing notes removed, cut to the CLIP budget of
77 tokens together with the style's words) and checked; an empty, looping, refusing, chatty or
off-topic answer, or one that puts people or a subject into the background, is replaced by the
template refiner's prompt, and the reason is recorded (``refine_fallback`` in run.json).

>>> from backdrop.config import RefineConfig
>>> refine = LlamaCppRefiner(RefineConfig(backend="llama-cpp", model="smollm2-135m-instruct"))  # doctest: +SKIP
>>> refine("a sandy beach next to the ocean").positive                                   # doctest: +SKIP
'professional photograph of a sandy beach, ocean, clear blue sky, empty scene, natural light, ...'
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any, Optional

from .. import runlog, styles
from ..config import RefineConfig
from ..errors import GenerationError, ModelCorruptError, ModelNotFoundError
from ..registry import has_module, require
from ..types import Prompt
from ..stages import Refiner

log = logging.getLogger(__name__)

# the shortest answer worth keeping, in words
MIN_WORDS = 3
# the small GGUF chat model of the model store (backdrop.models), suggested when none is found
SMOLLM2 = "smollm2-135m-instruct"

# -- what the model is told ------------------------------------------------------------------

SYSTEM_PROMPT = (
    "You write prompts for an image generator. The user gives a caption of a photo of an empty "
    "background, and sometimes words to leave out. Describe only the empty background as a scene: "
    "the place, the surfaces, the colours and the light. Never mention people, animals or any object "
    "in front, nor the photo, camera or image quality. Answer with exactly one short line that starts "
    "with \"Background:\"."
)

# Worked examples shown to the model before the real caption: (caption, answer). They cover the
# kinds of images backdrop's users bring (micrographs, histology, studio shots, outdoor scenes)
# and show a subject in the caption being left out. The style is not shown to the model: small
# models copy its words; its template is applied to the answer afterwards.
FEW_SHOT: tuple[tuple[str, str], ...] = (
    (
        "a close up of a microscope slide with pink cells",
        "pink stained tissue on a glass microscope slide, scattered cells, soft even light",
    ),
    (
        "a man standing on a sandy beach next to the ocean",
        "an empty sandy beach by the calm ocean, gentle waves, clear blue sky, soft daylight",
    ),
    (
        "a bottle on a white table in a studio",
        "a seamless white studio backdrop, smooth white surface, soft diffuse lighting",
    ),
    (
        "a dog in a forest with tall trees",
        "a quiet green forest, tall trees, mossy ground, soft light through the leaves",
    ),
    # the weight-free `describe` captioner's phrasing: keep it a plain surface, keep its colours
    (
        "a dim deep blue background with a coarse mottled texture",
        "a deep blue mottled surface with a coarse texture, dim soft light",
    ),
    (
        "a smooth, evenly lit pale grey background",
        "a smooth pale grey seamless backdrop, even soft light",
    ),
)

# -- what a good answer looks like -----------------------------------------------------------

_STOP = frozenset(
    """a an the and or but of in on at to for from by with without into onto over under near
    next behind above below between through across along around up down out off this that these
    those it its is are was were be been being has have had there here some any each every very
    as than then so such no not only just also which who whom whose what where when how all
    both few more most other same own too can will one two three""".split()
)

# words that tell a scene: places, surfaces, materials, light, and the stuff of micrographs
_SCENE = frozenset(
    """background backdrop scene landscape environment setting view interior exterior room space
    studio wall walls floor ceiling corner window windows door curtain curtains shelf shelves
    office desk table tabletop counter countertop bench kitchen laboratory lab hallway corridor
    building buildings street road city town alley park garden yard courtyard
    beach sand sandy dunes dune sea ocean water waves wave shore coast coastline bay harbour harbor
    lake river stream pond waterfall sky skies cloud clouds cloudy sunset sunrise dusk dawn horizon
    forest woods woodland jungle trees tree leaves leaf foliage moss mossy grass grassy meadow field
    fields hill hills mountain mountains valley cliff cliffs rock rocks rocky stone stones pebbles
    desert snow snowy ice icy frost glacier canyon cave path trail bridge
    surface texture textured pattern gradient plain seamless smooth rough matte glossy
    paper fabric cloth linen velvet wood wooden concrete marble tile tiles tiled brick bricks
    plaster metal metallic glass steel granite slate carpet rug
    light lighting lit daylight sunlight sunlit shadow shadows shade bokeh blur blurred blurry
    glow haze fog foggy mist misty bright dark dim soft diffuse
    white black grey gray blue green red pink purple violet yellow orange brown beige cream golden
    tissue tissues cell cells cellular slide slides stain stained staining microscope microscopy
    micrograph microscopic histology histological nuclei nucleus cytoplasm membrane fibers fibres
    fiber fibre collagen matrix stroma culture dish petri agar plate well wells specimen sample
    blood smear field-of-view magnification fluorescence fluorescent
    """.split()
)

# people and animals that a background must not contain; poses that only a subject takes
_BEINGS = frozenset(
    """person persons people man men woman women child children kid kids boy boys girl girls baby
    guy guys lady ladies gentleman human humans someone somebody anyone crowd crowds tourist
    tourists worker workers player players doctor nurse student students face faces
    portrait selfie silhouette
    dog dogs cat cats puppy kitten bird birds horse horses cow cows animal animals pet pets""".split()
)
_SUBJECT = _BEINGS | frozenset(
    """he she him her his hers himself herself
    standing sitting holding posing wearing walking running smiling
    object objects subject subjects product products""".split()
)
_NEGATORS = frozenset("no without free devoid empty lacking absent zero never nor".split())

_REFUSAL = re.compile(
    r"\b(?:i'?m sorry|i am sorry|sorry,|i apologi[sz]e|i can(?:no|')t|i cannot|i'?m unable|i am unable|"
    r"i'?m not able|i am not able|i won'?t|as an ai|as a language model|unable to (?:help|assist|comply)|"
    r"not (?:able|allowed) to (?:help|assist)|against (?:my|the) (?:guidelines|policy))",
    re.IGNORECASE,
)
_CHATTY = re.compile(
    r"\b(?:i|i'm|i'll|i've|i'd|me|my|mine|we|we're|us|our|you|you're|your|yours|hope|let me|feel free|"
    r"happy to|glad to|here's|here is|sure|certainly|of course)\b",
    re.IGNORECASE,
)
_META = re.compile(
    r"\b(?:prompts?|stable diffusion|caption|captions|image generator|the user|assistant)\b",
    re.IGNORECASE,
)

_LABEL = re.compile(
    r"^(?:(?:new|improved|refined|final|positive|stable diffusion|sd|background|scene|image|output|"
    r"generated)\s+)*(?:background|prompt|answer|output|result|response|description|scene|text)"
    r"\s*(?:\d+\s*)?(?:[:=]|\s[-–—])\s*",
    re.IGNORECASE,
)
_PREAMBLE = re.compile(
    r"^(?:sure|okay|ok|certainly|of course|absolutely|great|alright|yes|here(?:'s| is| are)|"
    r"below is|this is|the (?:background |new |improved )?(?:prompt|description|answer) (?:is|would be))"
    r"\b[^:]*:\s*",
    re.IGNORECASE,
)
_PREAMBLE_LINE = re.compile(
    r"^(?:sure|okay|ok|certainly|of course|absolutely|great|alright|yes|here(?:'s| is| are)|below is)\b"
    r"[^.!?]*[.!:]?$",
    re.IGNORECASE,
)
_NOTES = re.compile(
    r"\s*(?:[(\[]\s*)?\b(?:note|notes|nb|p\.s|ps|negative prompt|negative|explanation|style|caption|"
    r"tags?|keywords?)\s*(?::|\s[-–—]\s).*$",
    re.IGNORECASE,
)
_AFTERWORD = re.compile(
    r"(?<=[.!?])\s+(?:this|these|the above|i\b|i'|hope|let me|feel free|note|it captures|it evokes|"
    r"you can|enjoy)\b.*$",
    re.IGNORECASE,
)
# "a natural photograph of ...", "a black and white photo, ...": the style says how it is shot
_OPENER = re.compile(
    r"^(?:(?:a|an|the)\s+)?(?:(?:natural|professional|black and white|blurry|close[- ]?up|high[- ]resolution|"
    r"stock|digital|realistic|detailed)\s+)*(?:photo(?:graph)?|picture|image|shot|snapshot)\s*(?:of\b|showing\b|,)\s*",
    re.IGNORECASE,
)
_QUOTES = "\"'`“”‘’«»„‚"
_TEMPLATE_TOKENS = re.compile(r"<\|im_start\|>(?:system|user|assistant)?|<\|[^|>]{0,40}\|>|</?s>|\[/?INST\]|<<SYS>>|<</SYS>>|<end_of_turn>|<start_of_turn>")
_WORD = re.compile(r"[a-z]+(?:[-'][a-z]+)*", re.IGNORECASE)


def clean_answer(raw: str) -> str:
    """The model's answer as one prompt line: labels, quotes, markdown and trailing notes removed.

    >>> clean_answer('Sure! Here is the prompt:\\n\\n"Background: a foggy pine forest at dawn."\\nNote: no people.')
    'a foggy pine forest at dawn'
    """
    text = _TEMPLATE_TOKENS.sub("\n", raw or "").replace("\r", "\n")
    text = re.sub(r"```[\w-]*", "\n", text)
    for line in text.split("\n"):
        line = _clean_line(line)
        if line:
            return line
    return ""


def _clean_line(line: str) -> str:
    line = line.strip()
    if not line:
        return ""
    if re.match(r"^#{1,6}\s", line):  # a markdown heading is never the answer
        return ""
    # markdown: quotes, bullets, numbering, emphasis, inline code
    line = re.sub(r"^(?:>\s*|[-*•+]\s+|\d{1,2}[.)]\s+)", "", line)
    line = re.sub(r"(\*\*|__|\*|`)", "", line).strip()
    for _ in range(4):  # labels and quotes can nest: '"Prompt: "a beach""'
        before = line
        if re.match(r"^(?:negative(?: prompt)?|caption|style|user|system)\s*[:=]", line, re.IGNORECASE):
            return ""  # a negative prompt, or the question echoed back
        line = _PREAMBLE.sub("", line, count=1)
        line = _LABEL.sub("", line, count=1)
        line = _strip_quotes(line)
        if line == before:
            break
    if not line or _PREAMBLE_LINE.match(line):
        return ""
    line = _NOTES.sub("", line)
    line = _AFTERWORD.sub("", line)
    # one sentence: small models ramble on after the first ("The scene is surrounded by ...")
    first = re.split(r"(?<=[\w)])[.!?]\s+(?=[A-Z])", line, maxsplit=1)[0]
    if len(_words(first)) >= MIN_WORDS:
        line = first
    line = _OPENER.sub("", line)
    line = _strip_quotes(line)
    line = re.sub(r"\s+", " ", line)
    line = re.sub(r"\s+([,.;:!?])", r"\1", line)
    line = line.strip(" ,;:-–—.!").strip()
    return line if _WORD.search(line) else ""


def _strip_quotes(text: str) -> str:
    text = text.strip()
    while text and text[0] in _QUOTES:
        closed = re.match(rf"^.(.*)[{_QUOTES}][\s.,;:!]*$", text, re.DOTALL)
        # a quoted answer loses both marks; an unclosed quote (a cut answer) its opening one
        text = (closed.group(1) if closed else text[1:]).strip()
    if text.endswith(tuple('"“”«»`')):
        text = text[:-1].strip()
    return text


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _stem(word: str) -> str:
    for suffix in ("ies", "es", "s", "ing", "ed", "y"):
        if len(word) - len(suffix) >= 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def _content(words: list[str]) -> set[str]:
    return {_stem(w) for w in words if len(w) >= 3 and w not in _STOP}


_SCENE_STEMS = frozenset(_stem(w) for w in _SCENE)


def drop_style_echo(text: str, template: str) -> str:
    """``text`` without the comma-separated parts whose words the style template already has.

    >>> drop_style_echo("a wooden table, natural light, sharp detail", "photo of {prompt}, natural light, sharp focus, high detail")
    'a wooden table'
    """
    have = _content(_words(template))
    parts = [p.strip() for p in text.split(",")]
    kept = [p for p in parts if not (_content(_words(p)) and _content(_words(p)) <= have)]
    return ", ".join(kept)


def _looping(words: list[str]) -> bool:
    if not words:
        return False
    run = 1
    for a, b in zip(words, words[1:]):
        run = run + 1 if a == b else 1
        if run >= 3:
            return True
    for n, limit in ((2, 3), (3, 2), (4, 2)):
        seen: dict[tuple[str, ...], int] = {}
        for i in range(len(words) - n + 1):
            gram = tuple(words[i : i + n])
            if all(w in _STOP for w in gram):
                continue
            seen[gram] = seen.get(gram, 0) + 1
            if seen[gram] >= limit:
                return True
    counts: dict[str, int] = {}
    for w in words:
        if w not in _STOP:
            counts[w] = counts.get(w, 0) + 1
            if counts[w] >= 4:
                return True
    return len(words) >= 12 and len(set(words)) / len(words) < 0.45


def _subjects(words: list[str]) -> list[str]:
    found = []
    for i, w in enumerate(words):
        if w in _SUBJECT:
            before = words[max(0, i - 3) : i]
            if not any(b in _NEGATORS for b in before):
                found.append(w)
    return found


def check_answer(text: str, caption: str) -> Optional[str]:
    """Why the cleaned answer ``text`` cannot be used for ``caption``; None when it is fine.

    >>> check_answer("a foggy pine forest at dawn, soft light", "trees in a forest") is None
    True
    >>> check_answer("I'm sorry, I cannot help with that.", "a beach")
    'refusal'
    """
    if not text.strip():
        return "empty"
    words = _words(text)
    if _REFUSAL.search(text):
        return "refusal"
    if len(words) < MIN_WORDS:
        return "too short"
    if _looping(words):
        return "looping"
    if _CHATTY.search(text):
        return "chatty"
    if _META.search(text):
        return "talks about the task"
    subjects = _subjects(words)
    if subjects:
        return f"mentions a subject ({subjects[0]})"
    content = _content(words)
    if not content & _content(_words(caption)) and not content & _SCENE_STEMS:
        return "off-topic"
    caption_words = set(_words(caption))
    said = caption_words & _COLOURS
    new = sorted((set(words) & _COLOURS) - said)
    if said and new and caption_words & {"background", "backdrop"}:
        # a caption of the background's own colours (the describe captioner's "a pale pink
        # background ..."): the prompt must keep them, or the new background will not match
        return f"changes the colours ({', '.join(new)})"
    return None


_COLOURS = frozenset(
    """white black grey gray blue green red pink purple violet yellow orange brown beige cream golden
    gold silver teal turquoise cyan magenta maroon navy olive lavender lilac salmon tan khaki ochre
    crimson scarlet amber indigo""".split()
)


def scene_caption(caption: str) -> str:
    """What the model is shown: the caption, or just its scene when it names people or animals.

    Small models copy the caption's subject into their answer however they are told; the
    template refiner's rephrasing keeps the scene only.

    >>> scene_caption("a man standing in front of a brick wall")
    'a brick wall background'
    >>> scene_caption("a sandy beach next to the ocean")
    'a sandy beach next to the ocean'
    """
    if not any(w in _BEINGS for w in _words(caption)):
        return caption
    from .template import background_phrase

    scene = background_phrase(caption)
    if scene and not any(w in _BEINGS for w in _words(scene)):
        runlog.note("refine_scene", scene)
        return scene
    return caption


def ask(caption: str) -> str:
    """The user turn for one caption: the caption, and the beings in it to leave out.

    >>> print(ask("a man on a beach"))
    Caption: a man on a beach
    Leave out: man
    """
    lines = [f"Caption: {caption[:300]}"]
    beings = [w for w in dict.fromkeys(_words(caption)) if w in _BEINGS]
    if beings:
        lines.append(f"Leave out: {', '.join(beings)}")
    return "\n".join(lines)


# -- styles, fallback and the model store (written by other parts of backdrop) -----------------


def _store_dir() -> Path:
    from .. import models

    return models.models_dir()


def _spec_for(name: str) -> Any:
    """The model-store entry named ``name`` or holding the file ``name``; None if none."""
    from .. import models

    if models.is_store_name(name):
        return models.get_spec(name)
    return next((s for s in models.CATALOGUE.values() if s.filename == name and s.task == "refine"), None)


def resolve_model(config: RefineConfig) -> Path:
    """The GGUF file that ``config.model`` names: a model-store name (``smollm2-135m-instruct``), a
    path, or a file name looked up in ``config.model_path`` (default: the model store's folder).

    Raises ModelNotFoundError saying how to get the model.
    """
    from .. import models

    name = config.model
    as_path = Path(os.path.expanduser(name))
    if models.is_store_name(name) and not config.model_path:
        found = models.find(name)
        if found is None:
            raise ModelNotFoundError(f"refine model {name!r} is not installed: run `backdrop models pull {name}`")
        return found
    if as_path.is_absolute() or "/" in name or os.sep in name:
        if as_path.is_file():
            return as_path
        raise ModelNotFoundError(f"refine model file {name} does not exist; give the path of a .gguf file")
    folder = Path(os.path.expanduser(config.model_path)) if config.model_path else _store_dir()
    if (folder / name).is_file():
        return folder / name
    spec = _spec_for(name)
    if spec is not None and not config.model_path:
        raise ModelNotFoundError(
            f"refine model {name!r} is not in {folder}: run `backdrop models pull {spec.name}` or put the file there"
        )
    raise ModelNotFoundError(
        f"refine model {name!r} is not in {folder}: put the GGUF file there or set refine.model to its path "
        f"(a small one: `backdrop models pull {SMOLLM2}`, then refine.model={SMOLLM2})"
    )


# -- the shared refiner ----------------------------------------------------------------------


class _LLMRefiner(Refiner):
    """Prompt building, answer cleaning and checking; subclasses only run the model."""

    name = "llm"
    module = ""  # the runtime's import name
    extra = ""  # the pip extra that installs it

    def __init__(self, config: RefineConfig):
        self.config = config
        # fails early (ConfigError listing the names) on an unknown style or a bad styles file
        self.style = styles.get_style(config.style, config.styles_file)
        self.model_file = self._find_model()
        self._runtime: Any = None
        self._fallback: Any = None
        self._n_threads: Optional[int] = None
        # what the answer may take of CLIP's window once the style's own words are in
        template = styles.apply_style(self.style, "", max_tokens=None).positive
        self.budget = max(8, styles.CLIP_TOKENS - styles.approx_tokens(template))

    def _find_model(self) -> Path:
        return resolve_model(self.config)

    def _threads(self) -> int:
        """The CPU threads the runtime gets, chosen once at load (see devices.pick_threads)."""
        if self._n_threads is None:
            from ..devices import pick_threads

            self._n_threads = pick_threads(self.config.threads)
            log.info("%s runs on %d CPU thread(s)", self.name, self._n_threads)
        return self._n_threads

    # -- what the pipeline sees --------------------------------------------------------------
    @classmethod
    def availability(cls, config: RefineConfig) -> Optional[str]:
        if not has_module(cls.module):
            return f"the '{cls.module}' package is not installed: pip install 'backdrop[{cls.extra}]'"
        try:
            resolve_model(config)
        except ModelNotFoundError as exc:
            return str(exc)
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_file.name,
            "style": self.config.style,
            "temperature": self.config.temperature,
            "seed": self.config.seed,
            "max_tokens": self.config.max_tokens,
            **({"threads": self._n_threads} if self._n_threads else {}),
        }

    def __call__(self, caption: str) -> Prompt:
        caption = " ".join((caption or "").split())
        raw = self.complete(self.messages(scene_caption(caption)))
        runlog.note("refine_raw", raw)
        text = drop_style_echo(clean_answer(raw), self.style.prompt)
        reason = check_answer(text, caption)
        if reason is not None:
            return self._fall_back(caption, reason)
        return styles.apply_style(self.style, styles.shorten(text, self.budget))

    # -- prompt building ---------------------------------------------------------------------
    def messages(self, caption: str) -> list[dict[str, str]]:
        """The chat sent to the model: system prompt, worked examples, then ``caption``."""
        out = [{"role": "system", "content": SYSTEM_PROMPT}]
        for example, answer in FEW_SHOT:
            out.append({"role": "user", "content": ask(example)})
            out.append({"role": "assistant", "content": f"Background: {answer}"})
        out.append({"role": "user", "content": ask(caption or "an empty background")})
        return out

    # -- the runtime ------------------------------------------------------------------------
    def load(self) -> Any:
        """Load the model (once); later calls return the same runtime object."""
        if self._runtime is None:
            self._runtime = self._load()
        return self._runtime

    def _load(self) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def complete(self, messages: list[dict[str, str]]) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    # -- helpers -----------------------------------------------------------------------------
    def _fall_back(self, caption: str, reason: str) -> Prompt:
        runlog.note("refine_fallback", reason)
        runlog.warn(f"refine: the {self.name} answer was not usable ({reason}); used the template prompt")
        if self._fallback is None:
            from .template import TemplateRefiner

            self._fallback = TemplateRefiner(self.config)
        return self._fallback(caption)


class LlamaCppRefiner(_LLMRefiner):
    """A GGUF chat model through llama-cpp-python (CPU threads: ``devices.pick_threads``, the free
    physical cores unless ``refine.threads`` or ``$BACKDROP_THREADS`` says otherwise)."""

    name = "llama-cpp"
    module = "llama_cpp"
    extra = "llm"

    def _load(self) -> Any:
        llama_cpp = require("llama_cpp", self.extra, "the llama-cpp refiner")
        try:
            return llama_cpp.Llama(
                model_path=str(self.model_file),
                n_ctx=max(1024, 640 + self.config.max_tokens),  # the worked examples take about 400
                seed=self.config.seed,
                n_threads=self._threads(),
                n_threads_batch=self._threads(),  # llama-cpp-python's default is every logical CPU
                verbose=False,
            )
        except (ValueError, RuntimeError, OSError) as exc:
            raise ModelCorruptError(
                f"llama.cpp cannot load {self.model_file}: {_one_line(exc)}; is it a GGUF chat model?"
            ) from exc

    def complete(self, messages: list[dict[str, str]]) -> str:
        llm = self.load()
        try:
            out = llm.create_chat_completion(
                messages=messages,
                temperature=self.config.temperature,
                seed=self.config.seed,  # per call: the same caption gives the same answer
                max_tokens=self.config.max_tokens,
                top_p=0.9,
                repeat_penalty=1.15,
                stop=["\n\n", "Caption:", "<|im_end|>"],
            )
        except (ValueError, RuntimeError) as exc:
            raise GenerationError(f"llama.cpp failed while refining the prompt: {_one_line(exc)}") from exc
        return out["choices"][0]["message"]["content"] or ""


class GPT4AllRefiner(_LLMRefiner):
    """A GGUF chat model through GPT4All on the CPU; downloads only with ``allow_download``.

    GPT4All 2.8.2 takes no sampling seed, so its answers repeat only at ``temperature=0``.
    Its bundled llama.cpp predates some models (SmolLM2's GGUF does not load: "unknown
    pre-tokenizer type 'smollm'"); those raise ModelCorruptError pointing to ``llama-cpp``.
    """

    name = "gpt4all"
    module = "gpt4all"
    extra = "gpt4all"

    def _find_model(self) -> Path:
        try:
            return resolve_model(self.config)
        except ModelNotFoundError:
            if not self.config.allow_download or os.sep in self.config.model:
                raise
            # GPT4All fetches it into model_path (or the store) when first loaded
            folder = Path(os.path.expanduser(self.config.model_path)) if self.config.model_path else _store_dir()
            return folder / self.config.model

    @classmethod
    def availability(cls, config: RefineConfig) -> Optional[str]:
        if config.allow_download and has_module(cls.module):
            return None
        reason = super().availability(config)
        if reason is None and "smollm" in resolve_model(config).name.lower():
            return "GPT4All 2.8.2 cannot load SmolLM2 (unknown pre-tokenizer 'smollm'); use refine.backend=llama-cpp"
        return reason

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "seed": None}  # GPT4All takes no seed

    def _load(self) -> Any:
        gpt4all = require("gpt4all", self.extra, "the gpt4all refiner")
        folder, present = self.model_file.parent, self.model_file.is_file()
        if not present:  # only reached with allow_download (resolve_model raised otherwise)
            folder.mkdir(parents=True, exist_ok=True)
        try:
            return gpt4all.GPT4All(
                model_name=self.model_file.name,
                model_path=str(folder),
                allow_download=self.config.allow_download,
                device="cpu",
                n_threads=self._threads(),  # also makes GPT4All raise when the load failed
                verbose=False,
            )
        except Exception as exc:  # noqa: BLE001 - GPT4All raises bare Exception("Model not loaded")
            if not present:
                raise ModelNotFoundError(
                    f"GPT4All could not download {self.model_file.name!r} into {folder}: {_one_line(exc)}"
                ) from exc
            raise ModelCorruptError(
                f"GPT4All cannot load {self.model_file}: {_one_line(exc)} (its bundled llama.cpp may be too "
                f"old for this model; try refine.backend=llama-cpp)"
            ) from exc

    def complete(self, messages: list[dict[str, str]]) -> str:
        model = self.load()
        system, template = _gpt4all_chat(self.model_file.name, messages)
        pieces: list[str] = []

        def until_first_line(token_id: int, piece: str) -> bool:
            # GPT4All has no stop strings: end once a first line or sentence is complete, as only
            # that is kept (see clean_answer)
            pieces.append(piece)
            text = "".join(pieces)
            head, newline, _ = text.rpartition("\n")
            if newline and clean_answer(head):
                return False
            return not (re.search(r"[\w)][.!?]\s", text) and len(_words(clean_answer(text))) >= MIN_WORDS)

        try:
            with model.chat_session(system_prompt=system, prompt_template=template):
                return model.generate(
                    messages[-1]["content"],
                    max_tokens=self.config.max_tokens,
                    temp=self.config.temperature,
                    top_k=1 if self.config.temperature == 0 else 40,  # greedy: the one repeatable way
                    top_p=0.9,
                    repeat_penalty=1.15,
                    n_batch=64,  # the default (8) makes reading the worked examples slow
                    callback=until_first_line,
                )
        except Exception as exc:  # noqa: BLE001 - GPT4All raises bare exceptions
            raise GenerationError(f"GPT4All failed while refining the prompt: {_one_line(exc)}") from exc


def _gpt4all_chat(model_name: str, messages: list[dict[str, str]]) -> tuple[str, str]:
    """GPT4All's (system prompt, prompt template) for a chat: the system prompt is fed to the model
    as raw text, so the worked examples go there already written in the model's chat format."""
    lower = model_name.lower()
    if "mistral" in lower or "mixtral" in lower:
        turn, reply = "[INST] {0} [/INST]", "{0}</s> "
        system = f"[INST] {messages[0]['content']} [/INST]Understood.</s> "
    else:  # ChatML: SmolLM2, Qwen, Hermes, ...
        turn, reply = "<|im_start|>user\n{0}<|im_end|>\n<|im_start|>assistant\n", "{0}<|im_end|>\n"
        system = f"<|im_start|>system\n{messages[0]['content']}<|im_end|>\n"
    for message in messages[1:-1]:
        if message["role"] == "user":
            system += turn.format(message["content"])
        else:
            system += reply.format(message["content"])
    return system, turn


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."
