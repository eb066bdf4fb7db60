"""Class folders and plain folders; ``detect`` over every layout; the label model's edge cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from backdrop.datasets import FORMATS, Item, Labels, Obj, detect, open_dataset
from writers import write_copies
from backdrop.errors import InputError


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), (1, 2, 3)).save(path)


def test_split_class_folders(tmp_path):
    root = tmp_path / "s"
    for rel in ("train/cat/001.jpg", "train/dog/001.jpg", "train/dog/x/002.png", "valid/cat/009.jpg"):
        _img(root / rel)
    name, what = detect(root)
    assert name == "folders" and "2 classes: cat, dog" in what and "splits train, valid" in what
    ds = open_dataset(root)
    assert ds.splits == ["train", "val"] and ds.info["classes"] == ["cat", "dog"]
    items = list(ds.items())
    assert [it.rel for it in items] == ["train/cat/001.jpg", "train/dog/001.jpg", "train/dog/x/002.png",
                                        "valid/cat/009.jpg"]
    assert [it.meta["class"] for it in items] == ["cat", "dog", "dog", "cat"]
    assert [it.split for it in items] == ["train", "train", "train", "val"]
    assert all(it.labels is None and it.error is None for it in items)
    # same stems in different classes stay apart: the class is in the path
    assert ds.variant_rel(items[0], 1, ".jpg") == "train/cat/001_bd1.jpg"
    assert ds.variant_rel(items[1], 1, ".jpg") == "train/dog/001_bd1.jpg"
    res = write_copies(ds, tmp_path / "o", 3)
    assert res["index"] == [] and len(res["images"]) == 10
    back = open_dataset(tmp_path / "o")
    assert back.format == "folders"
    assert [it.meta["class"] for it in back.items(["train"])] == ["cat"] * 3 + ["dog"] * 6
    assert [it.rel for it in back.items(["val"])] == ["valid/cat/009.jpg"]


def test_class_folders_without_splits(tmp_path):
    root = tmp_path / "s"
    for rel in ("cat/a.jpg", "dog/b.jpg"):
        _img(root / rel)
    ds = open_dataset(root)
    assert ds.format == "folders" and ds.splits == [""]
    assert [(it.split, it.meta["class"]) for it in ds.items()] == [("", "cat"), ("", "dog")]


def test_plain_folder(tmp_path):
    root = tmp_path / "s"
    for rel in ("b.png", "a.jpg", "sub/c.jpg", ".hidden/d.jpg"):
        _img(root / rel)
    (root / "notes.txt").write_text("x")
    name, what = detect(root)
    assert name == "plain" and "3 images" in what
    ds = open_dataset(root)
    assert [it.rel for it in ds.items()] == ["a.jpg", "b.png", "sub/c.jpg"]
    assert ds.splits == [""] and all(it.labels is None for it in ds.items())
    assert ds.passthrough(next(ds.items())) == {"a.jpg": root / "a.jpg"}
    for other in ("yolo", "coco", "imagefolder", "masks", "folders"):
        assert FORMATS[other].detect(root) is None, other


def test_one_folder_is_not_class_folders(tmp_path):
    _img(tmp_path / "s/only/a.jpg")
    assert FORMATS["folders"].detect(tmp_path / "s") is None
    assert detect(tmp_path / "s")[0] == "plain"


def test_nothing_found(tmp_path):
    (tmp_path / "e").mkdir()
    (tmp_path / "e/readme.txt").write_text("no images")
    with pytest.raises(InputError, match="no data set found; looked for yolo"):
        detect(tmp_path / "e")
    with pytest.raises(InputError, match="no such folder"):
        open_dataset(tmp_path / "missing")
    with pytest.raises(InputError, match="unknown data set format 'voc'"):
        open_dataset(tmp_path / "e", "voc")


def test_items_are_streamed_and_filtered(tmp_path):
    for rel in ("train/cat/1.jpg", "test/cat/2.jpg", "test/dog/3.jpg", "train/dog/4.jpg"):
        _img(tmp_path / "s" / rel)
    ds = open_dataset(tmp_path / "s")
    it = ds.items(["test"])
    assert iter(it) is it  # a generator, not a list
    assert [i.rel for i in it] == ["test/cat/2.jpg", "test/dog/3.jpg"]
    assert [i.rel for i in ds.items(["testing"])] == ["test/cat/2.jpg", "test/dog/3.jpg"]  # aliases


# -- the label model ---------------------------------------------------------------------------

def test_obj_and_labels():
    box = Obj(3, (1.5, 2.0, 4.2, 5.0))
    assert not box.has_mask() and box.extra == {}
    m = box.mask((8, 6))
    assert m.shape == (6, 8) and m.sum() == 3 * 4 and m[2:5, 1:5].all()  # partly covered pixels count
    tri = Obj(1, (0, 0, 7, 5), polygons=((0.0, 0.0, 7.0, 0.0, 0.0, 5.0),))
    assert Labels((tri,)).has_masks() and not Labels((tri, box)).has_masks()
    assert Labels((tri, box)).foreground((8, 6)) is None
    assert Labels((tri, box)).boxes() == [(0, 0, 7, 5), (1.5, 2.0, 4.2, 5.0)]
    empty = Labels(())
    assert empty.has_masks() and not empty.foreground((8, 6)).any()  # a background image: nothing kept
    assert Obj(1, (0, 0, 1, 1), extra={"id": 1}) == Obj(1, (0, 0, 1, 1), extra={"id": 2})
    hash(tri)
    rle = Obj(1, (0, 0, 2, 2), rle={"size": [6, 8], "counts": [0, 2, 4, 2, 40]})
    got = rle.mask((8, 6))
    want = np.zeros((6, 8), bool)
    want[0:2, 0] = True
    want[0:2, 1] = True
    assert np.array_equal(got, want)  # column-major runs: 2 on, 4 off, 2 on, 40 off
    with pytest.raises(ValueError, match="RLE is 8x6"):
        rle.mask((6, 8))
    assert Item(Path("a.jpg"), "a.jpg", "", None, meta={"x": 1}) == Item(Path("a.jpg"), "a.jpg", "", None)
