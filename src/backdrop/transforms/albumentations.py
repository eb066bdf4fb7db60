"""``ReplaceBackground`` as an ``albumentations.DualTransform`` (albumentations 2.0.x, MIT).

Install: ``pip install 'backdrop[albumentations]'``. Use it first in an ``A.Compose`` (the mask
store is looked up by the image's pixels and boxes as they were loaded)::

    import albumentations as A
    from backdrop.transforms.albumentations import ReplaceBackground

    aug = A.Compose([ReplaceBackground(generator="random", p=0.8), A.HorizontalFlip()],
                    bbox_params=A.BboxParams(format="yolo", label_fields=["labels"]), seed=0)
    out = aug(image=img, bboxes=boxes, labels=labels)  # or mask=..., masks=[...]

The object comes from ``mask`` (or the union of ``masks``) when given, else from the mask store
that ``backdrop masks SRC`` filled (found by the pixels and ``bboxes``), else ``on_miss``. Masks,
boxes and keypoints come back unchanged; the image changes outside the object only. The per-call
seed is drawn from the transform's own ``random_generator``, so ``A.Compose(..., seed=s)`` repeats
a sequence and ``p`` is decided by ``py_random``, as for the library's own transforms. In a
DataLoader with workers, give each worker its own seed as for any albumentations pipeline
(``worker_init_fn=lambda i: aug.set_random_seed(torch.initial_seed() % 2**32)``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional, Union

import numpy as np

from ..registry import require

A = require("albumentations", "albumentations", "the albumentations transform")
from albumentations.core.transforms_interface import BaseTransformInitSchema  # noqa: E402
from pydantic import Field  # noqa: E402  (albumentations' own dependency)

from .core import ReplaceBackground as _Core  # noqa: E402
from .core import check_image  # noqa: E402

__all__ = ["ReplaceBackground"]


class ReplaceBackground(A.DualTransform):
    """A new background on every call; object pixels, masks, boxes and keypoints unchanged.

    Args:
        generator: a backdrop generator name (``random``, ``pool``, ``texture``, ...).
        backgrounds: ``pool``'s folder of background images.
        on_miss: no mask given or stored: ``segment``, ``box``, ``skip`` or ``error``.
        masks: the mask store folder (``"auto"``: ``$BACKDROP_HOME/cache/pixel-masks``; None: none).
        segment: the segmenter backend for ``on_miss="segment"`` (None: backdrop's default).
        box_grow, box_min_cover, box_prompt: the labels-aware rule (as ``backdrop augment``'s options).
        prompt: for generators that read one (Stable Diffusion backends; slow).
        donors: ``swap``'s donor store (the folder an ``augment --generator swap`` run wrote).
        generator_options: other ``GenerateConfig`` fields (``{"random_style": "studio"}``).
        p: probability of applying the transform.

    Targets: image, mask, masks, bboxes, keypoints. Image types: uint8 RGB.
    """

    class InitSchema(BaseTransformInitSchema):
        generator: str
        backgrounds: Optional[Union[str, Path]]
        on_miss: Literal["segment", "box", "skip", "error"]
        masks: Optional[Union[str, Path]]
        segment: Optional[str]
        box_grow: float = Field(ge=0)
        box_min_cover: float = Field(ge=0, le=1)
        box_prompt: bool
        prompt: str
        donors: Optional[Union[str, Path]]
        generator_options: Optional[dict[str, Any]]

    def __init__(
        self,
        generator: str = "random",
        backgrounds: Optional[Union[str, Path]] = None,
        on_miss: Literal["segment", "box", "skip", "error"] = "segment",
        masks: Optional[Union[str, Path]] = "auto",
        segment: Optional[str] = None,
        box_grow: float = 0.05,
        box_min_cover: float = 0.3,
        box_prompt: bool = True,
        prompt: str = "",
        donors: Optional[Union[str, Path]] = None,
        generator_options: Optional[dict[str, Any]] = None,
        p: float = 0.5,
    ):
        super().__init__(p=p)
        self.generator = generator
        self.backgrounds = None if backgrounds is None else str(backgrounds)
        self.on_miss = on_miss
        self.masks = None if masks is None else str(masks)
        self.segment = segment
        self.box_grow = box_grow
        self.box_min_cover = box_min_cover
        self.box_prompt = box_prompt
        self.prompt = prompt
        self.donors = None if donors is None else str(donors)
        self.generator_options = dict(generator_options or {})
        # the core does the work; p is decided here (by albumentations), so the core always applies
        self.core = _Core(generator, backgrounds, p=1.0, on_miss=on_miss, masks=masks, segment=segment,
                          box_grow=box_grow, box_min_cover=box_min_cover, box_prompt=box_prompt, prompt=prompt,
                          donors=donors,
                          **self.generator_options)

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ("generator", "backgrounds", "on_miss", "masks", "segment", "box_grow", "box_min_cover", "box_prompt",
                "prompt", "donors", "generator_options")

    @property
    def targets_as_params(self) -> list[str]:
        return ["image"]

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        image = check_image(data["image"])
        h, w = image.shape[:2]
        mask = data.get("mask")
        masks = data.get("masks")
        if mask is None and masks is not None and len(masks):
            mask = np.any(np.stack([np.asarray(m) != 0 for m in masks]).reshape(len(masks), h, w), axis=0)
        boxes = None
        if mask is None and data.get("bboxes") is not None:
            b = np.asarray(data["bboxes"], dtype=np.float64)
            b = b.reshape(-1, b.shape[-1] if b.ndim == 2 else 4)[:, :4]
            if self.get_processor("bboxes") is not None:  # inside Compose: normalised x_min y_min x_max y_max
                b = b * np.array([w, h, w, h], dtype=np.float64)
            boxes = b
        seed = int(self.random_generator.integers(0, 2**31 - 1))
        return {"seed": seed, "foreground": self.core.foreground(image, mask, boxes)}

    def apply(self, img: np.ndarray, seed: int = 0, foreground: Any = None, **params: Any) -> np.ndarray:
        if foreground is None:
            return img
        return self.core.apply(check_image(img), foreground, seed)

    def apply_to_mask(self, mask: np.ndarray, **params: Any) -> np.ndarray:
        return mask

    def apply_to_masks(self, masks: Any, **params: Any) -> Any:
        return masks

    def apply_to_bboxes(self, bboxes: np.ndarray, **params: Any) -> np.ndarray:
        return bboxes

    def apply_to_keypoints(self, keypoints: np.ndarray, **params: Any) -> np.ndarray:
        return keypoints
