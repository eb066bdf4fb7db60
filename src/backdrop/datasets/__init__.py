"""Labelled data sets: read a set's images and labels, write the labels of an augmented copy.

One module per format, each a :class:`DatasetFormat` (``detect`` + ``open``) in :data:`FORMATS`.
``open`` returns a :class:`Dataset` that streams :class:`Item` s (sorted by their path relative
to the set's root, the identity that output names and seeds come from) and knows how to write
the output set: the rel path of each variant (``variant_rel``), the label files beside it
(``label_files``), the fields an index file needs (``record``) and the index files themselves
(``finalize``: COCO JSON, data.yaml, metadata.jsonl), written atomically.

>>> from backdrop.datasets import FORMATS
>>> list(FORMATS)
['yolo', 'coco', 'imagefolder', 'masks', 'folders', 'plain']
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from .base import VARIANT_TAG, Dataset, DatasetFormat, Item, canonical_split
from .labels import Labels, Obj

__all__ = ["FORMATS", "Dataset", "DatasetFormat", "Item", "Labels", "Obj", "VARIANT_TAG",
           "canonical_split", "detect", "open_dataset"]


def _formats() -> dict[str, DatasetFormat]:
    from . import coco, folders, imagefolder, masks, yolo

    # detection order: the most specific layouts first; plain takes any folder of images
    return {f.name: f for f in (yolo.FORMAT, coco.FORMAT, imagefolder.FORMAT, masks.FORMAT,
                                folders.FORMAT, folders.PLAIN)}


FORMATS: dict[str, DatasetFormat] = _formats()

_LOOKED_FOR = ("yolo (data.yaml, or images/ + labels/), coco (annotations/instances_<split>.json, "
               "<split>/*.json or one *.json beside images/), imagefolder (metadata.jsonl/.csv), "
               "masks (images/ + masks/), folders (class folders, split/class/file), "
               "plain (any folder of images)")


def detect(root: str | Path) -> tuple[str, str]:
    """(format name, one-line description of what was found) for ``--format auto``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    for name, fmt in FORMATS.items():
        found = fmt.detect(root)
        if found:
            return name, found
    raise InputError(f"{root}: no data set found; looked for {_LOOKED_FOR}")


def open_dataset(root: str | Path, format: str = "auto") -> Dataset:
    """Open the data set at ``root`` as ``format`` ("auto": :func:`detect` decides)."""
    root = Path(root)
    if format == "auto":
        format, _ = detect(root)
    fmt = FORMATS.get(format)
    if fmt is None:
        raise InputError(f"unknown data set format {format!r}; choose one of: auto, {', '.join(FORMATS)}")
    return fmt.open(root)
