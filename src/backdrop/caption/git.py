"""Captioning with Microsoft GIT (or BLIP) through transformers.

``GitCaptioner`` loads the processor and model once per instance (at the first call, or with
``load()``) and captions the clean background with greedy decoding (``num_beams=1``,
``do_sample=False``, at most ``max_tokens`` new tokens), so the same image always gets the
same caption. The model type is read from the model's config: ``blip`` loads
``BlipForConditionalGeneration``, anything else ``AutoModelForCausalLM`` (GIT).

>>> from backdrop.config import CaptionConfig
>>> cap = GitCaptioner(CaptionConfig(backend="git", model="microsoft/git-large-coco"))  # doctest: +SKIP
>>> cap(background)                                                                      # doctest: +SKIP
'a view of a beach with the ocean'
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from PIL import Image

from .. import hf, runlog
from ..config import CaptionConfig
from ..devices import pick_device, pick_dtype
from ..errors import ConfigError
from ..registry import has_module, require
from ..stages import Captioner

log = logging.getLogger(__name__)

EXTRA = "caption"
_HINT = "or use --captioner describe (no weights)"


class GitCaptioner(Captioner):
    """``git``: an image-captioning transformer (GIT or BLIP) on the clean background."""

    name = "git"

    def __init__(self, config: CaptionConfig):
        self.config = config
        self.model_id = hf.canonical(config.model)
        self._model: Any = None
        self._processor: Any = None
        self._device: str | None = None
        self._dtype: Any = None
        self.model_type: str | None = None
        self._lock = threading.RLock()

    @classmethod
    def availability(cls, config: CaptionConfig) -> str | None:
        """None when this backend can run here, else one line saying why not."""
        for module in ("torch", "transformers"):
            if not has_module(module):
                return f"needs the '{module}' package: pip install 'backdrop[{EXTRA}]'"
        try:
            pick_device(config.device, EXTRA)
        except ConfigError as exc:
            return str(exc)
        return hf.missing_reason(config.model, "config.json")

    def load(self) -> None:
        """Load processor and model now (once)."""
        with self._lock:
            if self._model is None:
                self._load()

    def _load(self) -> None:
        require("torch", EXTRA, "the git captioner")
        transformers = require("transformers", EXTRA, "the git captioner")
        device = pick_device(self.config.device, EXTRA)
        dtype = pick_dtype(device, "auto", EXTRA)
        what = "caption"
        cfg = hf.load_pretrained(transformers.AutoConfig.from_pretrained, self.model_id, what, _HINT)
        self.model_type = getattr(cfg, "model_type", None)
        if self.model_type == "blip":
            model_cls = transformers.BlipForConditionalGeneration
        else:
            model_cls = transformers.AutoModelForCausalLM
        processor = hf.load_pretrained(transformers.AutoProcessor.from_pretrained, self.model_id, what, _HINT)
        model = hf.load_pretrained(model_cls.from_pretrained, self.model_id, what, _HINT, dtype=dtype)
        model.to(device).eval()
        self._processor, self._model, self._device, self._dtype = processor, model, device, dtype
        log.info("loaded caption model %s (%s) on %s", self.model_id, self.model_type, device)
        runlog.note("caption.device", device)

    def __call__(self, image: Image.Image) -> str:
        """A caption of ``image`` (stripped text; same image -> same caption)."""
        import torch

        self.load()
        with self._lock:
            inputs = self._processor(images=image.convert("RGB"), return_tensors="pt")
            pixel_values = inputs["pixel_values"].to(self._device, self._dtype)
            with torch.inference_mode():
                ids = self._model.generate(
                    pixel_values=pixel_values,
                    max_new_tokens=self.config.max_tokens,
                    num_beams=1,
                    do_sample=False,
                )
            text = self._processor.batch_decode(ids, skip_special_tokens=True)[0]
        return " ".join(text.split())

    def describe(self) -> dict[str, Any]:
        return {"model": self.model_id, "model_type": self.model_type, "max_tokens": self.config.max_tokens}
