"""Image + mask pairs: matched by name, the user's mask is the foreground, masks copied beside variants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backdrop.datasets import FORMATS, detect, open_dataset
from backdrop.datasets.masks import mask_rel_for
from writers import write_copies

W, H = 32, 24


def _mask(path: Path, mode: str = "L", size=(W, H)) -> np.ndarray:
    fg = np.zeros((size[1], size[0]), bool)
    fg[5:15, 8:20] = True
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.fromarray(np.where(fg, 255, 0).astype(np.uint8), "L").save(path)
    elif mode == "P":  # a palette mask: index 0 background, 1 object (VOC style)
        im = Image.fromarray(fg.astype(np.uint8), "P")
        im.putpalette([0, 0, 0, 200, 30, 30] + [0] * 762)
        im.save(path)
    else:  # RGB, object in the red channel only
        arr = np.zeros((size[1], size[0], 3), np.uint8)
        arr[fg, 0] = 1
        Image.fromarray(arr, "RGB").save(path)
    return fg


def _img(path: Path, size=(W, H)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (200, 100, 50)).save(path, quality=95)


def make_set(root: Path, split: bool = True) -> dict[str, np.ndarray]:
    pre = "train/" if split else ""
    _img(root / f"images/{pre}a.jpg")
    _img(root / f"images/{pre}b.jpg")
    _img(root / f"images/{pre}deep/c.png")
    fgs = {f"images/{pre}a.jpg": _mask(root / f"masks/{pre}a.png"),
           f"images/{pre}b.jpg": _mask(root / f"masks/{pre}b_mask.png", "P"),
           f"images/{pre}deep/c.png": _mask(root / f"masks/{pre}deep/c-mask.png", "RGB")}
    if split:
        _img(root / "images/val/v.jpg")
        fgs["images/val/v.jpg"] = _mask(root / "masks/val/v.png")
    return fgs


def test_pairs_matched_and_mask_is_foreground(tmp_path):
    fgs = make_set(tmp_path / "s")
    ds = open_dataset(tmp_path / "s")
    assert ds.format == "masks" and ds.splits == ["train", "val"]
    items = {it.rel: it for it in ds.items()}
    assert list(items) == sorted(fgs)
    for rel, it in items.items():
        assert it.error is None and it.labels.has_masks() and it.labels.objects == ()
        assert np.array_equal(it.labels.foreground((W, H)), fgs[rel]), rel
    assert items["images/train/b.jpg"].meta["mask_rel"] == "masks/train/b_mask.png"


def test_round_trip_masks_beside_variants(tmp_path):
    fgs = make_set(tmp_path / "s")
    ds = open_dataset(tmp_path / "s")
    dst = tmp_path / "o"
    res = write_copies(ds, dst, 3)
    assert res["errors"] == [] and res["index"] == []
    assert "masks/train/deep/c_bd2-mask.png" in res["labels"] and "masks/val/v.png" in res["labels"]
    assert (dst / "masks/train/b_bd3_mask.png").read_bytes() == (tmp_path / "s/masks/train/b_mask.png").read_bytes()
    back = {it.rel: it for it in open_dataset(dst).items(["train"])}
    assert len(back) == 9
    for rel, it in back.items():
        src = rel.replace("_bd1", "").replace("_bd2", "").replace("_bd3", "")
        assert np.array_equal(it.labels.foreground((W, H)), fgs[src]), rel
    assert mask_rel_for("images/train/x_bd1.jpg", "_mask", ".png") == "masks/train/x_bd1_mask.png"


def test_unsplit_set(tmp_path):
    make_set(tmp_path / "s", split=False)
    ds = open_dataset(tmp_path / "s")
    assert ds.splits == [""] and all(it.split == "" for it in ds.items())


def test_missing_and_mis_sized_masks_are_item_errors(tmp_path):
    make_set(tmp_path / "s")
    _img(tmp_path / "s/images/train/lonely.jpg")
    _mask(tmp_path / "s/masks/train/a.png", size=(W + 1, H))
    items = {it.rel: it for it in open_dataset(tmp_path / "s").items()}
    assert "no mask for it in" in items["images/train/lonely.jpg"].error
    assert items["images/train/a.jpg"].error == f"{tmp_path / 's/masks/train/a.png'}: mask is 33x24, its image 32x24"
    assert items["images/train/b.jpg"].error is None


def test_mask_file_of_wrong_size_in_foreground_raises(tmp_path):
    from backdrop.datasets import Labels

    _mask(tmp_path / "m.png")
    with pytest.raises(ValueError, match="mask is 32x24, the image 10x10"):
        Labels((), mask_file=tmp_path / "m.png").foreground((10, 10))


def test_detect_recognises_masks_only(tmp_path):
    make_set(tmp_path / "s")
    name, what = detect(tmp_path / "s")
    assert name == "masks" and "images/ and masks/" in what
    for other in ("yolo", "coco", "imagefolder", "folders", "plain"):
        assert FORMATS[other].detect(tmp_path / "s") is None, other
