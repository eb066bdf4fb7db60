"""YOLO (Ultralytics layout): the documented examples read, round trip, bad input, detection."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from backdrop.datasets import FORMATS, Labels, detect, open_dataset
from writers import write_copies
from backdrop.datasets.yolo import label_rel_for
from backdrop.errors import InputError

W, H = 64, 48
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

# Ultralytics docs, "Instance Segmentation Datasets Overview": one image, two objects, a
# 3-point and a 5-point polygon.
DOC_SEGMENT = ("0 0.681 0.485 0.670 0.487 0.676 0.487\n"
               "1 0.504 0.000 0.501 0.004 0.498 0.004 0.493 0.010 0.492 0.0104\n")
# Ultralytics docs, "Object Detection Datasets Overview": ``class x_center y_center width height``.
DOC_DETECT = "0 0.481719 0.634028 0.690625 0.713278\n1 0.741094 0.524306 0.314750 0.933389\n"
# coco8.yaml's shape: path, train/val/test relative to path, names as {id: name}
DOC_YAML = "path: {path}\ntrain: images/train\nval: images/val\ntest: # optional\nnames:\n  0: person\n  1: bicycle\n"


def _img(path: Path, size=(W, H), color=(120, 80, 200), exif_orientation: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.new("RGB", size, color)
    kw = {}
    if exif_orientation is not None:
        ex = Image.Exif()
        ex[0x0112] = exif_orientation
        kw["exif"] = ex.tobytes()
    im.save(path, quality=90, **kw)


def make_set(root: Path, *, yaml_text: str | None = None, path_value: str = ".") -> Path:
    _img(root / "images/train/a.jpg")
    _img(root / "images/train/sub/b.jpg", color=(10, 200, 30))
    _img(root / "images/train/c.jpg", color=(1, 2, 3))  # no label file: a background image
    _img(root / "images/val/v.jpg")
    (root / "labels/train/sub").mkdir(parents=True)
    (root / "labels/val").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text(DOC_SEGMENT)
    (root / "labels/train/sub/b.txt").write_text(DOC_DETECT)
    (root / "labels/val/v.txt").write_text("1 0.5 0.5 0.25 0.25\n")
    (root / "data.yaml").write_text(yaml_text if yaml_text is not None else DOC_YAML.format(path=path_value))
    return root


def by_rel(ds, splits=None):
    return {it.rel: it for it in ds.items(splits)}


def test_documented_examples_read_in_pixels(tmp_path):
    ds = open_dataset(make_set(tmp_path / "set"), "yolo")
    assert ds.format == "yolo" and ds.splits == ["train", "val"]
    assert ds.info["names"] == {0: "person", 1: "bicycle"}
    items = by_rel(ds)
    assert list(items) == sorted(items) == ["images/train/a.jpg", "images/train/c.jpg",
                                           "images/train/sub/b.jpg", "images/val/v.jpg"]
    a = items["images/train/a.jpg"]
    assert a.error is None and a.split == "train"
    o0, o1 = a.labels.objects
    assert o0.category == 0 and o1.category == 1
    assert o0.polygons == ((0.681 * W, 0.485 * H, 0.670 * W, 0.487 * H, 0.676 * W, 0.487 * H),)
    assert len(o1.polygons[0]) == 10
    assert o0.box == pytest.approx((0.670 * W, 0.485 * H, 0.681 * W, 0.487 * H))
    assert a.labels.has_masks()
    b = items["images/train/sub/b.jpg"].labels
    assert [o.category for o in b.objects] == [0, 1]
    cx, cy, w, h = 0.481719, 0.634028, 0.690625, 0.713278
    assert b.objects[0].box == pytest.approx(((cx - w / 2) * W, (cy - h / 2) * H, (cx + w / 2) * W, (cy + h / 2) * H))
    assert not b.has_masks() and b.foreground((W, H)) is None and not b.objects[0].polygons
    c = items["images/train/c.jpg"]
    assert c.labels == Labels(()) and c.meta["background"] is True and c.error is None
    assert items["images/val/v.jpg"].split == "val"
    assert list(by_rel(ds, ["val"])) == ["images/val/v.jpg"]


def test_polygon_mask_is_coco_fill_and_box_mask_is_box(tmp_path):
    from pycocotools import mask as mu

    root = tmp_path / "s"
    _img(root / "images/train/a.png", size=(40, 30))
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/train/a.txt").write_text("0 0.1 0.1 0.9 0.1 0.5 0.9\n1 0.5 0.5 0.5 0.2\n")
    ds = open_dataset(root)
    tri, box = next(ds.items()).labels.objects
    poly = [0.1 * 40, 0.1 * 30, 0.9 * 40, 0.1 * 30, 0.5 * 40, 0.9 * 30]
    want = mu.decode([mu.merge(mu.frPyObjects([poly], 30, 40))])[:, :, 0].astype(bool)
    assert tri.mask((40, 30)).shape == (30, 40)
    assert np.array_equal(tri.mask((40, 30)), want) and want.sum() > 100
    bm = box.mask((40, 30))
    assert bm[12:18, 10:30].all() and bm.sum() == 6 * 20  # x 10..30, y 12..18


def test_round_trip_three_variants(tmp_path):
    src = make_set(tmp_path / "set")
    ds = open_dataset(src)
    dst = tmp_path / "out"
    res = write_copies(ds, dst, 3)
    assert res["errors"] == []
    assert "images/train/a_bd1.jpg" in res["images"] and "images/train/sub/b_bd3.jpg" in res["images"]
    assert (dst / "labels/train/a_bd2.txt").read_bytes() == (src / "labels/train/a.txt").read_bytes()
    assert not (dst / "labels/train/c_bd1.txt").exists()  # a background image stays one
    assert (dst / "labels/val/v.txt").read_bytes() == (src / "labels/val/v.txt").read_bytes()
    assert res["index"] == ["data.yaml"]
    # the source's file with nothing changed: "path: ." (relative) and the empty test key kept
    assert (dst / "data.yaml").read_text() == (src / "data.yaml").read_text()
    data = yaml.safe_load((dst / "data.yaml").read_text())
    assert data["path"] == "." and data["train"] == "images/train" and data["val"] == "images/val"
    assert data["names"] == {0: "person", 1: "bicycle"} and data["test"] is None

    back = open_dataset(dst)
    assert back.format == "yolo"
    src_items, out_items = by_rel(ds), by_rel(back)
    train = [r for r, it in out_items.items() if it.split == "train"]
    assert len(train) == 9 and "images/train/a.jpg" not in train
    for rel, it in out_items.items():
        if it.split != "train":
            continue
        source = rel.replace("_bd1", "").replace("_bd2", "").replace("_bd3", "")
        assert it.labels == src_items[source].labels, rel
        assert it.meta["background"] == src_items[source].meta["background"]
    assert out_items["images/val/v.jpg"].labels == src_items["images/val/v.jpg"].labels


def test_variant_rel_and_label_rel(tmp_path):
    ds = open_dataset(make_set(tmp_path / "set"))
    it = next(ds.items())
    assert ds.variant_rel(it, 0, ".jpg") == "images/train/a.jpg"
    assert ds.variant_rel(it, 2, "png") == "images/train/a_bd2.png"
    assert ds.variant_rel(it, 1, None) == "images/train/a_bd1.jpg"
    assert label_rel_for("images/train/images/x_bd1.png") == "images/train/labels/x_bd1.txt"
    assert set(ds.label_files(it, "images/train/a_bd1.png")) == {"labels/train/a_bd1.txt"}
    assert ds.passthrough(it) == {"images/train/a.jpg": it.path,
                                  "labels/train/a.txt": tmp_path / "set/labels/train/a.txt"}
    assert ds.record(it, "images/train/a_bd1.jpg", (W, H)) == {}


def test_yaml_variants_lists_txt_and_moved_path(tmp_path):
    root = make_set(tmp_path / "set", yaml_text=(
        "path: /nonexistent/where/it/was\ntrain: [images/train, images/val]\nval: val.txt\n"
        "names: [person, bicycle]\n"))
    (root / "val.txt").write_text("./images/val/v.jpg\n")
    ds = open_dataset(root)
    assert ds.root == root and ds.info["names"] == {0: "person", 1: "bicycle"}
    items = by_rel(ds)
    assert items["images/val/v.jpg"].split == "train"  # listed under train first
    assert {it.split for it in ds.items(["val"])} == {"val"}
    dst = tmp_path / "out"
    write_copies(ds, dst, 1, splits=["val"], copy_splits=[])
    data = yaml.safe_load((dst / "data.yaml").read_text())
    assert data["val"] == "val.txt" and "train" not in data
    assert (dst / "val.txt").read_text() == "./images/val/v_bd1.jpg\n"
    back = open_dataset(dst)
    assert [it.rel for it in back.items(["val"])] == ["images/val/v_bd1.jpg"]


def test_without_data_yaml(tmp_path):
    root = make_set(tmp_path / "set")
    (root / "data.yaml").unlink()
    assert FORMATS["yolo"].detect(root) == "YOLO data set (images/ and labels/, no data.yaml)"
    ds = open_dataset(root)
    assert ds.splits == ["train", "val"] and ds.info["names"] is None
    assert len(next(ds.items()).labels.objects) == 2
    assert write_copies(ds, tmp_path / "out", 1)["index"] == []


def test_exif_rotated_image_uses_upright_size(tmp_path):
    root = tmp_path / "s"
    _img(root / "images/train/r.jpg", size=(60, 20), exif_orientation=6)  # shown 20 wide, 60 high
    (root / "labels/train").mkdir(parents=True)
    (root / "labels/train/r.txt").write_text("0 0.5 0.5 1 1\n")
    it = next(open_dataset(root).items())
    assert it.meta["size"] == (20, 60) and it.labels.objects[0].box == pytest.approx((0, 0, 20, 60))


@pytest.mark.parametrize("line, why", [
    ("0 0.5 0.5 0.2", "4 columns"),
    ("0 0.5 0.5 0.2 0.2 0.3", "6 columns"),
    ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4", "8 columns"),
    ("0 0.5 0.5", "3 columns"),  # a polygon of one point
    ("0 1.5 0.5 0.2 0.2", "coordinate 1.5 outside 0..1"),
    ("0 0.1 0.1 0.9 -0.2 0.5 0.9", "coordinate -0.2 outside 0..1"),
    ("7 0.5 0.5 0.2 0.2", "unknown class id 7"),
    ("x 0.5 0.5 0.2 0.2", "not numbers"),
    ("0.5 0.5 0.5 0.2 0.2", "not a class number"),
])
def test_bad_label_lines_are_one_line_item_errors(tmp_path, line, why):
    root = make_set(tmp_path / "set")
    (root / "labels/train/a.txt").write_text("0 0.5 0.5 0.2 0.2\n\n" + line + "\n")
    items = by_rel(open_dataset(root))
    bad = items["images/train/a.jpg"]
    assert bad.labels is None and why in bad.error and "\n" not in bad.error
    assert bad.error.startswith(f"{root / 'labels/train/a.txt'}:3: ")
    assert all(it.error is None for rel, it in items.items() if rel != "images/train/a.jpg")  # the rest go on


def test_set_level_errors(tmp_path):
    root = make_set(tmp_path / "set", yaml_text="train: images/train\nval: images/nope\nnames: [a, b]\n")
    with pytest.raises(InputError, match=r"data.yaml: val: .*images/nope does not exist"):
        open_dataset(root)
    (root / "data.yaml").write_text("train: [images/train\nnames: {0: a\n")
    with pytest.raises(InputError, match="not valid YAML"):
        open_dataset(root, "yolo")
    (root / "data.yaml").write_text("names: [a]\n")
    with pytest.raises(InputError, match="no train/val/test"):
        FORMATS["yolo"].open(root)


def test_list_file_naming_a_missing_image(tmp_path):
    root = make_set(tmp_path / "set", yaml_text="train: train.txt\nnames: [a, b]\n")
    (root / "train.txt").write_text("images/train/a.jpg\nimages/train/gone.jpg\n")
    items = by_rel(open_dataset(root))
    assert items["images/train/a.jpg"].error is None
    assert "train.txt:2: images/train/gone.jpg: no such image" in items["images/train/gone.jpg"].error


def test_detect_recognises_yolo_only(tmp_path):
    root = make_set(tmp_path / "set")
    name, what = detect(root)
    assert name == "yolo" and "data.yaml" in what and "2 classes" in what
    for other in ("coco", "imagefolder", "masks", "folders", "plain"):
        assert FORMATS[other].detect(root) is None, other


@pytest.mark.parametrize("value, kept", [("", True), (".", True), ("./", True), ("{abs}", False),
                                         ("../set", False), ("{abs}/../set", False)])
def test_output_path_kept_only_where_it_names_its_own_folder(tmp_path, value, kept):
    """``path`` that means "the yaml's folder" wherever the set is stays; one that names a place
    (an absolute path, ``../set``: the source's own name) would point the new set at the source."""
    src = tmp_path / "set"
    value = value.format(abs=src)
    text = f"# cells\npath: {value}  # the root\ntrain: images/train\nval: images/val\nnames: [a, b]\n"
    make_set(src, yaml_text=text)
    dst = tmp_path / "out"
    assert write_copies(open_dataset(src), dst, 1)["errors"] == []
    out = (dst / "data.yaml").read_text()
    assert out == (text if kept else text.replace(f"path: {value}  # the root\n", ""))
    assert str(src) not in out and str(tmp_path) not in out
