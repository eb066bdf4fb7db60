"""Labelled data sets: read a set's images and labels, write the labels of an augmented copy.

One module per format, each a :class:`DatasetFormat` (``detect`` + ``open``) registered in
:data:`FORMATS` (:mod:`.registry`), the one list of formats.
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
from . import coco, folders, imagefolder, masks, yolo
from .base import VARIANT_TAG, Dataset, DatasetFormat, Item, canonical_split
from .labels import Labels, Obj
from .registry import FORMATS, FormatRegistry

__all__ = ["FORMATS", "Dataset", "DatasetFormat", "FormatRegistry", "Item", "Labels", "Obj", "VARIANT_TAG",
           "canonical_split", "detect", "open_dataset", "register_format"]


# the built-in formats, most specific layouts first (plain, a fallback, is tried last whatever the order)
for _fmt in (yolo.FORMAT, coco.FORMAT, imagefolder.FORMAT, masks.FORMAT, folders.FORMAT, folders.PLAIN):
    FORMATS.register(_fmt)
del _fmt


def register_format(fmt: DatasetFormat, *, replace: bool = False) -> DatasetFormat:
    """Add a data set format (one module and this call): ``--format NAME``, ``--format auto``,
    the help and the error messages take it from here."""
    return FORMATS.register(fmt, replace=replace)


def detect(root: str | Path) -> tuple[str, str]:
    """(format name, one-line description of what was found) for ``--format auto``."""
    root = Path(root)
    if not root.is_dir():
        raise InputError(f"{root}: no such folder")
    for name, fmt in FORMATS.items():
        found = fmt.detect(root)
        if found:
            return name, found
    raise InputError(f"{root}: no data set found; looked for {FORMATS.looked_for()}")


def open_dataset(root: str | Path, format: str = "auto") -> Dataset:
    """Open the data set at ``root`` as ``format`` ("auto": :func:`detect` decides)."""
    root = Path(root)
    if format == "auto":
        format, _ = detect(root)
    fmt = FORMATS.get(format)
    if fmt is None:
        raise InputError(f"unknown data set format {format!r}; choose one of: {FORMATS.choices()}")
    return fmt.open(root)
