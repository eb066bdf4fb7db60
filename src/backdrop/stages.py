"""The written contract of each stage: one base class per stage, with every capability the
pipeline and the engines read declared here, with its default.

A backend subclasses its stage's class, sets ``name`` and what differs from the defaults, and
implements ``__call__``; it is registered by name in its stage's registry (``segment/__init__.py``
and so on). Nothing else asks a backend what it can do: the pipeline reads these attributes, never
``getattr`` with a fallback, and no code outside a registry tests a backend's name.

=========================  =========  ======================================================
capability                 default    read by
=========================  =========  ======================================================
``name``                   ""         run.json, the manifest, error messages
``load()``                 no-op      ``Pipeline.load`` (weights load once, before a batch)
``describe()``             {}         run.json and the A1111 fields (model, steps, size, ...)
``availability(config)``   None       ``backdrop backends`` (None: usable; else why not)
``uses_gpu``               False      engines: a GPU per worker is worth asking for
``model_name``             None       what model made the output (metadata), when one did
Segmenter ``crop_probabilities(crop)``  the mask as 0/1  segment.boxes: a box's crop, as the model's
                                      probabilities (0..1, the crop's size), without the
                                      whole-image checks (a crop's border is not the image's)
Generator ``generative``   False      IPTC source types: a trained model made the pixels
Generator ``uses_prompt``  True       caption and refine are skipped when False
Generator ``uses_background``  True   the inpainter is skipped (data sets) when False
Generator ``batched``      False      ``generate_batch`` takes several requests per call
Generator ``max_batch()``  1          requests per ``generate_batch`` call
Generator ``keeps_background_colours``  False  too_close / near_duplicate checks do not apply
Generator ``background_source_type``    None   overrides the background's IPTC source type
Generator ``needs_set``    False      the engine builds the set's donor store first (swap) and
                                      calls ``bind_set(store, variants=, base_seed=)``
=========================  =========  ======================================================

An object that does not subclass its stage's class (a caller's own, handed to
``Pipeline.from_config``) is wrapped once by :func:`adopt`: the one place that reads what such
an object declares.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Sequence

from PIL import Image

from .errors import GenerationError
from .types import GenerateRequest, Prompt


class Backend:
    """What every stage backend declares (see the module's table)."""

    stage: ClassVar[str] = ""
    name: str = ""
    uses_gpu: ClassVar[bool] = False

    def load(self) -> None:
        """Load weights now (they may load lazily otherwise); a missing model fails here, once."""

    def describe(self) -> dict[str, Any]:
        """What goes into run.json and the image metadata about this backend."""
        return {}

    @classmethod
    def availability(cls, config: Any) -> Optional[str]:
        """None when the backend can run here, else a one-line reason."""
        return None

    @property
    def model_name(self) -> Optional[str]:
        return None


class Segmenter(Backend):
    """image -> foreground mask (mode L, 255 = foreground)."""

    stage = "segment"

    def __call__(self, image: Image.Image) -> Image.Image:
        raise NotImplementedError

    def crop_probabilities(self, crop: Image.Image) -> "np.ndarray":
        """A box's crop as probabilities of foreground (float32 0..1, the crop's size). A segmenter
        that gives only binary masks counts its mask as certain."""
        import numpy as np

        return np.asarray(self(crop).convert("L"), np.float32) / 255.0


class Inpainter(Backend):
    """image + mask -> the clean background, the object's hole filled."""

    stage = "inpaint"

    def __call__(self, image: Image.Image, mask: Image.Image) -> Image.Image:
        raise NotImplementedError


class Captioner(Backend):
    """clean background -> a sentence describing it."""

    stage = "caption"

    def __call__(self, image: Image.Image) -> str:
        raise NotImplementedError


class Refiner(Backend):
    """caption (+ style) -> Prompt(positive, negative)."""

    stage = "refine"

    def __call__(self, caption: str) -> Prompt:
        raise NotImplementedError


class Generator(Backend):
    """GenerateRequest -> one new background (RGB, the input's size)."""

    stage = "generate"
    generative: bool = False
    uses_prompt: bool = True
    uses_background: bool = True
    # reads ``request.background`` itself; False: only ``known`` (texture), so a caller that needs
    # no clean background of its own (the training-loop transform) need not inpaint for it
    reads_background: bool = True
    batched: bool = False
    keeps_background_colours: bool = False
    background_source_type: Optional[str] = None
    needs_set: bool = False

    def bind_set(self, store: Any, *, variants: int, base_seed: int) -> None:
        """``needs_set`` generators: the run's donor store, variants per image and base seed."""

    def __call__(self, request: GenerateRequest) -> Image.Image:
        raise NotImplementedError

    def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[Image.Image]:
        """Several requests at once (``batched`` generators do it in fewer calls)."""
        return [self(r) for r in requests]

    def max_batch(self) -> int:
        return 1


class Skipped(Backend):
    """Stands in for a stage that this run does not need: never built, never loaded, never called."""

    def __init__(self, stage: str, reason: str):
        self.name = "-"
        self.stage = stage  # type: ignore[misc]
        self.reason = reason

    def __call__(self, *args: Any) -> Any:  # pragma: no cover - the pipeline never calls it
        raise GenerationError(f"{self.stage} is skipped in this run ({self.reason})")


STAGES: dict[str, type[Backend]] = {c.stage: c for c in (Segmenter, Inpainter, Captioner, Refiner, Generator)}

_FLAGS = ("generative", "uses_prompt", "uses_background", "reads_background", "keeps_background_colours",
          "background_source_type", "uses_gpu", "name", "needs_set")


def adopt(obj: Any, stage: str) -> Any:
    """``obj`` as a backend of ``stage``: itself when it subclasses the stage's class, else wrapped
    so that what it declares (and the defaults for what it does not) is read once, here."""
    base = STAGES[stage]
    if isinstance(obj, (base, Skipped)):
        return obj
    return _adapter(base)(obj)


_ADAPTERS: dict[type, type] = {}


def _adapter(base: type[Backend]) -> type:
    if base in _ADAPTERS:
        return _ADAPTERS[base]

    class Adopted(base):  # type: ignore[misc, valid-type]
        def __init__(self, inner: Any):
            self.inner = inner
            for flag in _FLAGS:
                if hasattr(inner, flag):
                    setattr(self, flag, getattr(inner, flag))
            if not self.name:
                self.name = type(inner).__name__
            self.batched = callable(getattr(inner, "generate_batch", None))
            if callable(getattr(inner, "crop_probabilities", None)):
                self.crop_probabilities = inner.crop_probabilities  # a segmenter's own, over the default

        def __call__(self, *args: Any) -> Any:
            return self.inner(*args)

        def __getattr__(self, attr: str) -> Any:  # anything else the object has (only for missing names)
            if attr == "inner":
                raise AttributeError(attr)
            return getattr(self.inner, attr)

        def load(self) -> None:
            fn = getattr(self.inner, "load", None)
            if callable(fn):
                fn()

        def describe(self) -> dict[str, Any]:
            fn = getattr(self.inner, "describe", None)
            return dict(fn()) if callable(fn) else {}

        def generate_batch(self, requests: Sequence[GenerateRequest]) -> list[Image.Image]:
            return list(self.inner.generate_batch(requests)) if self.batched else [self.inner(r) for r in requests]

        def max_batch(self) -> int:
            fn = getattr(self.inner, "max_batch", None)
            return int(fn()) if callable(fn) else int(getattr(self.inner, "batch_size", 1) or 1)

    Adopted.__name__ = Adopted.__qualname__ = f"Adopted{base.__name__}"
    _ADAPTERS[base] = Adopted
    return Adopted
