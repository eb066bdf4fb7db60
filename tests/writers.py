"""Writers the tests use to make files the way backdrop's outputs look, without the pipeline.

- :func:`save_image`: an image with backdrop's metadata, written atomically (the library writes
  encoded bytes through :mod:`backdrop.outputs`; this is the same in one call).
- :func:`write_copies`: a reference writer of augmented sets where each "variant" is a copy of
  its source: how a writer uses a Dataset (``variant_rel``, ``label_files``, ``record``,
  ``passthrough``, ``finalize``), so the tests can check that an output set reads back with the
  same labels. It is not ``augment``: that writes the pipeline's images through the output protocol.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

from backdrop.datasets.base import Dataset, image_size
from backdrop.metadata import encode_image
from backdrop.outputs import atomic_write_bytes


def save_image(image: Image.Image, path: str | Path, **kwargs: Any) -> Path:
    """Write ``image`` atomically to ``path`` (format from the suffix) with metadata; see encode_image."""
    path = Path(path)
    fmt = "JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else "PNG"
    atomic_write_bytes(path, encode_image(image, fmt, **kwargs))
    return path


def write_copies(ds: Dataset, dst: Path, n: int = 3, *, splits: Iterable[str] = ("train",),
                 copy_splits: Iterable[str] = ("val", "test"), include_originals: bool = False,
                 ext: str | None = None) -> dict:
    """Write ``n`` copies of every image of ``splits`` (and the originals if asked) with their
    labels, copy ``copy_splits`` unchanged, write the index files. Returns a summary dict:
    ``{"images": [rel, ...], "labels": [...], "index": [...], "errors": [line, ...]}``."""
    dst = Path(dst)
    splits = [s for s in splits if s in ds.splits] if ds.splits != [""] else [""]
    copy_splits = [s for s in copy_splits if s in ds.splits and s not in splits]
    images, labels, errors, records = [], [], [], []

    def put(rel: str, data: bytes | Path) -> None:
        out = dst / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, Path):
            shutil.copyfile(data, out)
        else:
            out.write_bytes(data)

    for item in ds.items(splits):
        if item.error:
            errors.append(item.error)
            continue
        size = image_size(item.path)
        for k in range(0 if include_originals else 1, n + 1):
            rel = ds.variant_rel(item, k, ext)
            put(rel, item.path)
            images.append(rel)
            for lrel, data in ds.label_files(item, rel).items():
                put(lrel, data)
                labels.append(lrel)
            records.append({"rel": rel, "source": item.rel, "split": item.split, "variant": k,
                            **ds.record(item, rel, size)})
    for item in ds.items(copy_splits):
        if item.error:
            errors.append(item.error)
            continue
        for rel, src in ds.passthrough(item).items():
            put(rel, src)
            (images if rel == item.rel else labels).append(rel)
    index = ds.finalize(dst, iter(records), copied=copy_splits)
    return {"images": images, "labels": labels, "index": index, "errors": errors}
