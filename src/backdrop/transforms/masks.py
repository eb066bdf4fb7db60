"""``backdrop masks SRC``: fill the mask store once, so a training loop never runs the segmenter.

Walks any data set ``augment`` reads (the same format detection), and for each image stores the
mask that ``augment`` would use, by the same labels-aware rule
(:func:`backdrop.datasets.labels.segment_plan`, :func:`backdrop.segment.itemmask.item_mask`):
polygons/RLE/mask files are the foreground themselves; boxes-only labels get box-prompted masks
(each box segmented on its own; ``box_prompt=False``: the whole-frame mask inside the grown
boxes, each box covered enough, :func:`backdrop.datasets.labels.cover_boxes`); unlabelled images
the segmenter's mask of the whole image. Masks are keyed by the decoded pixels (:mod:`backdrop.maskstore`), so
:class:`backdrop.transforms.ReplaceBackground` finds them from the image (and its boxes) alone.

Resume: a mask already stored is not made again; every write is atomic (a killed run leaves no
partial mask). Images are streamed: nothing of the set is held beyond the current image.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class MasksSummary:
    images: int = 0
    from_labels: int = 0
    segmented: int = 0
    present: int = 0  # stored by an earlier run
    nothing: int = 0  # no object at all (a background image): the transform needs no mask
    failed: list[str] = field(default_factory=list)

    def line(self, store: Any) -> str:
        return (f"masks: {self.images} image(s): {self.from_labels} from labels, {self.segmented} segmented, "
                f"{self.present} already stored, {self.nothing} without objects, {len(self.failed)} failed; "
                f"store: {store.folder}")


def fill_masks(source: str | Path, *, format: str = "auto", splits: Optional[Iterable[str]] = ("train",),
               store: Any = None, segment: Any = None, box_grow: float = 0.05, box_min_cover: float = 0.3,
               box_prompt: bool = True,
               max_pixels: int = 60_000_000, on_item: Optional[Callable[[str], None]] = None,
               pipeline: Any = None) -> MasksSummary:
    """Store every image's mask (see the module docstring). ``splits`` None: all of them.
    ``segment``: a :class:`~backdrop.config.SegmentConfig` or a backend name (the transform
    must be given the same). ``pipeline``: a ready pipeline whose segmenter to use.
    ``on_item(rel)`` is called after each image."""
    from ..config import SegmentConfig
    from ..datasets import open_dataset
    from ..datasets.labels import segment_plan
    from ..errors import BackdropError, OutputError
    from ..images import load_image
    from ..maskstore import MaskStore
    from .core import build_pipeline, segment_mask, store_settings

    if isinstance(segment, str):
        segment = SegmentConfig(backend=segment)
    segment = segment or SegmentConfig()
    store = store if isinstance(store, MaskStore) else MaskStore(store)
    labels_settings = store_settings("labels", segment, box_grow, box_min_cover, box_prompt)
    segment_settings = store_settings("segment", segment, box_grow, box_min_cover, box_prompt)
    ds = open_dataset(source, format)
    summary = MasksSummary()
    pipe = pipeline
    for item in ds.items(splits):
        summary.images += 1
        try:
            if item.error:
                raise BackdropError(item.error)
            image = np.asarray(load_image(item.path, max_pixels=max_pixels).image)
            h, w = image.shape[:2]
            labels = item.labels
            fg, region, boxes = segment_plan(labels, (w, h), box_grow)
            key_boxes = labels.boxes() if labels is not None and labels.objects else None
            if fg is not None and labels is not None and not labels.objects and labels.mask_file is None:
                summary.nothing += 1  # no objects: the transform knows that from its empty boxes
                continue
            settings = labels_settings if fg is not None else segment_settings
            facts = store.facts(image, key_boxes, settings)
            if store.get(image, key_boxes, settings, facts=facts) is not None:
                summary.present += 1
                continue
            if fg is None:
                if pipe is None:
                    pipe = build_pipeline(segment)
                fg = segment_mask(pipe, image, region, boxes, box_min_cover, box_grow, box_prompt)
                summary.segmented += 1
            else:
                summary.from_labels += 1
            store.put(image, key_boxes, settings, fg, extra={"made_by": "backdrop masks", "source": item.rel},
                      facts=facts)
        except OutputError:
            raise  # the store's disk: no point going on
        except BackdropError as exc:
            msg = str(exc)
            summary.failed.append(msg if str(item.path) in msg or item.rel in msg else f"{item.rel}: {msg}")
            log.warning("%s", summary.failed[-1])
        finally:
            if on_item is not None:
                on_item(item.rel)
    return summary
