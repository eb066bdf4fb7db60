"""Image + mask pairs matched by name: ``images/`` and ``masks/`` side by side.

::

    images/001.jpg        masks/001.png          (or masks/001_mask.png, 001-mask, _seg, _label, _gt)
    images/train/002.jpg  masks/train/002.png    (split folders under both, if any)

A mask is matched to an image with the same relative folder and the same stem, or the stem with
one of the suffixes above, in any image format. Foreground is where the mask is > 0 (any channel
of an RGB mask, the palette index of a ``P`` mask); it is the user's foreground (``Labels.mask_file``)
and no segmenter is needed. An image with no mask, or a mask of another size, is an item error.
Output masks are copied byte for byte beside each variant (``masks/001_bd1.png``).
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from ..errors import InputError
from .base import (Dataset, Item, canonical_split, has_images, image_size, is_image, is_split_name,
                   posix_rel, scan_images)
from .labels import Labels

MASK_TAGS = ("", "_mask", "-mask", "_masks", "_seg", "_label", "_gt")


def mask_rel_for(image_rel: str, tag: str, suffix: str) -> str:
    """``images/train/001_bd1.jpg`` -> ``masks/train/001_bd1{tag}{suffix}``."""
    parts = list(PurePosixPath(image_rel).parts)
    if "images" in parts:
        parts[parts.index("images")] = "masks"
    p = PurePosixPath(*parts)
    return str(p.with_name(p.stem + tag + suffix))


class MasksDataset(Dataset):
    format = "masks"

    def __init__(self, root: Path, splits: list[str], raw_splits: dict[str, str]):
        super().__init__(root, splits, {"description": "image + mask pairs"})
        self._raw = raw_splits  # split -> folder name under images/ ("" for none)

    def _entries(self, chosen):
        out = []
        for split, raw in self._raw.items():
            if not self._wants(chosen, split):
                continue
            idir, mdir = self.root / "images" / raw, self.root / "masks" / raw
            index: dict[tuple[str, str], Path] = {}
            for m in scan_images(mdir):
                index[(posix_rel(m.parent, mdir), m.stem)] = m
            for p in scan_images(idir):
                sub = posix_rel(p.parent, idir)
                found = next(((index[(sub, p.stem + tag)], tag) for tag in MASK_TAGS
                              if (sub, p.stem + tag) in index), (None, None))
                out.append((posix_rel(p, self.root), split, p, {"mask_file": found[0], "mask_tag": found[1]}))
        return out

    def _item(self, rel, split, path, meta):
        mask = meta["mask_file"]
        if mask is None:
            return Item(path, rel, split, None, meta,
                        error=f"{path}: no mask for it in {self.root / 'masks'} (same name, or with "
                              f"{', '.join(t for t in MASK_TAGS if t)})")
        try:
            size = image_size(path)
        except ValueError as exc:
            return Item(path, rel, split, None, meta, error=f"{path}: {exc}")
        try:
            msize = image_size(mask)
        except ValueError as exc:
            return Item(path, rel, split, None, meta, error=f"{mask}: {exc}")
        if msize != size:
            return Item(path, rel, split, None, meta,
                        error=f"{mask}: mask is {msize[0]}x{msize[1]}, its image {size[0]}x{size[1]}")
        meta = dict(meta, size=size, mask_rel=posix_rel(mask, self.root))
        return Item(path, rel, split, Labels((), mask_file=mask), meta)

    def _mask_rel(self, item: Item, image_rel: str) -> str:
        return mask_rel_for(image_rel, item.meta["mask_tag"], Path(item.meta["mask_file"]).suffix)

    def label_files(self, item: Item, image_rel: str) -> dict[str, bytes]:
        return {self._mask_rel(item, image_rel): Path(item.meta["mask_file"]).read_bytes()}

    def passthrough(self, item: Item) -> dict[str, Path]:
        out = {item.rel: item.path}
        if item.meta.get("mask_file") is not None:
            out[item.meta.get("mask_rel") or self._mask_rel(item, item.rel)] = Path(item.meta["mask_file"])
        return out


class MasksFormat:
    name = "masks"
    looks_for = "images/ + masks/"
    fallback = False

    @staticmethod
    def _splits(root: Path) -> dict[str, str] | None:
        idir, mdir = root / "images", root / "masks"
        if not (idir.is_dir() and mdir.is_dir() and has_images(idir) and has_images(mdir)):
            return None
        subs = sorted(d for d in idir.iterdir() if d.is_dir() and not d.name.startswith("."))
        top = any(p.is_file() and is_image(p) for p in idir.iterdir())
        if subs and not top and all(is_split_name(d.name) for d in subs):
            return {canonical_split(d.name): d.name for d in subs}
        return {"": ""}

    def detect(self, root: Path) -> str | None:
        root = Path(root)
        if not root.is_dir() or (root / "labels").is_dir():
            return None
        splits = self._splits(root)
        if splits is None:
            return None
        n = len(scan_images(root / "images"))
        where = f", splits {', '.join(splits)}" if "" not in splits else ""
        return f"image + mask pairs (images/ and masks/, {n} images{where})"

    def open(self, root: Path) -> MasksDataset:
        root = Path(root)
        splits = self._splits(root) if root.is_dir() else None
        if splits is None:
            raise InputError(f"{root}: expected images/ and masks/ folders with images in both")
        return MasksDataset(root, list(splits), splits)


FORMAT = MasksFormat()
