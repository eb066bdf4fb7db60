"""COCO instances: the documented structure read, round trip checked by pycocotools, bad input."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mu
from pycocotools.coco import COCO

from backdrop.datasets import FORMATS, detect, open_dataset
from writers import write_copies
from backdrop.errors import InputError

W, H = 64, 48
# pycocotools' decode, under numpy 2, warns about its own __array__; nothing to act on here
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (iscrowd): run lengths of the column-major pixels, zeros first."""
    flat = mask.flatten(order="F").astype(np.uint8)
    counts, cur, run = [], 0, 0
    for v in flat:
        if v == cur:
            run += 1
        else:
            counts.append(run)
            cur, run = v, 1
    counts.append(run)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts}


def crowd_mask() -> np.ndarray:
    m = np.zeros((H, W), bool)
    m[30:40, 5:25] = True
    m[32:36, 40:50] = True
    return m


def compressed_rle(mask: np.ndarray) -> dict:
    r = mu.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": r["size"], "counts": r["counts"].decode("ascii")}


def documented_json() -> dict:
    """The structure of cocodataset.org's "Data format" page: info, licenses, images with their
    fields, annotations with polygon / RLE segmentation and iscrowd, categories."""
    ell = np.zeros((H, W), bool)
    ell[5:15, 40:60] = True
    return {
        "info": {"year": 2026, "version": "1.0", "description": "backdrop test", "contributor": "t",
                 "url": "https://example.org", "date_created": "2026-01-01"},
        "licenses": [{"id": 1, "name": "CC BY 4.0", "url": "https://creativecommons.org/licenses/by/4.0/"}],
        "images": [
            {"id": 397133, "width": W, "height": H, "file_name": "000000397133.jpg", "license": 1,
             "flickr_url": "", "coco_url": "", "date_captured": "2013-11-14 17:02:52"},
            {"id": 37777, "width": W, "height": H, "file_name": "sub/000000037777.png", "license": 1,
             "date_captured": "2013-11-14 20:55:31", "extra_field": [1, 2]},
        ],
        "annotations": [
            {"id": 1, "image_id": 397133, "category_id": 18, "iscrowd": 0, "area": 120.0,
             "segmentation": [[10.5, 10.0, 30.0, 10.0, 30.0, 22.0, 10.5, 22.0], [2.0, 2.0, 6.0, 2.0, 4.0, 6.0]],
             "bbox": [2.0, 2.0, 28.0, 20.0], "attributes": {"occluded": False}},
            {"id": 2, "image_id": 397133, "category_id": 1, "iscrowd": 1, "area": 240.0,
             "segmentation": uncompressed_rle(crowd_mask()), "bbox": [5.0, 30.0, 45.0, 10.0]},
            {"id": 3, "image_id": 37777, "category_id": 1, "iscrowd": 0, "area": 200.0,
             "segmentation": compressed_rle(ell), "bbox": [40.0, 5.0, 20.0, 10.0]},
            {"id": 4, "image_id": 37777, "category_id": 18, "iscrowd": 0, "area": 50.0,
             "segmentation": [], "bbox": [0.0, 0.0, 10.0, 5.0]},  # a box-only annotation
        ],
        "categories": [{"id": 1, "name": "person", "supercategory": "person"},
                       {"id": 18, "name": "dog", "supercategory": "animal"}],
        "custom_top_level": {"kept": True},
    }


def _img(path: Path, size=(W, H), color=(90, 140, 60)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path)


def make_set(root: Path, data: dict | None = None, *, layout: str = "official") -> Path:
    data = data if data is not None else documented_json()
    if layout == "official":
        jpath, img_dir = root / "annotations/instances_train.json", root / "train"
    elif layout == "images-split":
        jpath, img_dir = root / "annotations/instances_train.json", root / "images/train"
    elif layout == "roboflow":
        jpath, img_dir = root / "train/_annotations.coco.json", root / "train"
    else:  # single
        jpath, img_dir = root / "dataset.json", root / "images"
    for rec in data["images"]:
        _img(img_dir / rec["file_name"], (rec["width"], rec["height"]))
    jpath.parent.mkdir(parents=True, exist_ok=True)
    jpath.write_text(json.dumps(data))
    if layout in ("official", "images-split"):
        val = {"info": {}, "images": [{"id": 5, "width": W, "height": H, "file_name": "v.jpg"}],
               "annotations": [{"id": 9, "image_id": 5, "category_id": 1, "bbox": [1, 1, 5, 5],
                                "iscrowd": 0, "area": 25, "segmentation": [[1, 1, 6, 1, 6, 6]]}],
               "categories": data.get("categories", [])}
        _img(img_dir.parent / "val" / "v.jpg")
        (jpath.parent / "instances_val.json").write_text(json.dumps(val))
    return root


def items_of(ds, splits=None):
    return {it.rel: it for it in ds.items(splits)}


def test_documented_structure_reads(tmp_path):
    ds = open_dataset(make_set(tmp_path / "set"), "coco")
    assert ds.format == "coco" and ds.splits == ["train", "val"]
    items = items_of(ds)
    assert list(items) == ["train/000000397133.jpg", "train/sub/000000037777.png", "val/v.jpg"]
    a = items["train/000000397133.jpg"]
    assert a.error is None and a.split == "train" and a.meta["image"]["id"] == 397133
    poly, crowd = a.labels.objects
    assert poly.category == 18 and poly.box == (2.0, 2.0, 30.0, 22.0) and len(poly.polygons) == 2
    assert poly.extra["iscrowd"] == 0 and poly.extra["attributes"] == {"occluded": False} and poly.extra["id"] == 1
    assert crowd.category == 1 and crowd.rle["size"] == [H, W] and crowd.extra["iscrowd"] == 1
    assert np.array_equal(crowd.mask((W, H)), crowd_mask())  # independent of pycocotools' encoder
    assert a.labels.has_masks()
    b = items["train/sub/000000037777.png"].labels
    assert b.objects[0].rle is not None and not b.objects[1].has_mask() and not b.has_masks()
    assert b.foreground((W, H)) is None
    fg = a.labels.foreground((W, H))
    assert fg.shape == (H, W) and fg[32, 10] and fg[15, 20] and not fg[45, 60]


@pytest.mark.parametrize("layout", ["official", "images-split", "roboflow", "single"])
def test_round_trip_three_variants_pycocotools_loads(tmp_path, layout):
    src = make_set(tmp_path / "set", layout=layout)
    ds = open_dataset(src)
    assert ds.format == "coco"
    dst = tmp_path / "out"
    res = write_copies(ds, dst, 3)
    assert res["errors"] == []
    jrel = {"official": "annotations/instances_train.json", "images-split": "annotations/instances_train.json",
            "roboflow": "train/_annotations.coco.json", "single": "dataset.json"}[layout]
    assert jrel in res["index"]
    source = documented_json()
    coco = COCO(str(dst / jrel))
    out = json.loads((dst / jrel).read_text())
    # every other field kept, new ids 1..N in order of the images' paths, source ids recorded
    assert out["info"] == source["info"] and out["licenses"] == source["licenses"]
    assert out["categories"] == source["categories"] and out["custom_top_level"] == {"kept": True}
    assert [im["id"] for im in out["images"]] == list(range(1, 7))
    names = [im["file_name"] for im in out["images"]]
    assert names == sorted(names) and names[0] == "000000397133_bd1.jpg" and names[3] == "sub/000000037777_bd1.png"
    assert [im["source_image_id"] for im in out["images"]] == [397133] * 3 + [37777] * 3
    assert out["images"][4]["extra_field"] == [1, 2] and out["images"][0]["date_captured"] == "2013-11-14 17:02:52"
    assert [a["id"] for a in out["annotations"]] == list(range(1, 13))
    assert {a["image_id"] for a in out["annotations"]} == set(range(1, 7))
    base = {"official": dst / "train", "images-split": dst / "images/train", "roboflow": dst / "train",
            "single": dst / "images"}[layout]
    for im in out["images"]:
        assert (base / im["file_name"]).is_file()
    # labels equal to the source's; masks equal pycocotools' annToMask
    back = open_dataset(dst)
    src_items = items_of(ds, ["train"])
    out_items = items_of(back, ["train"])
    assert len(out_items) == 6
    for rel, it in out_items.items():
        srel = rel.replace("_bd1", "").replace("_bd2", "").replace("_bd3", "")
        assert it.labels == src_items[srel].labels
        assert [o.extra["iscrowd"] for o in it.labels.objects] == [o.extra["iscrowd"] for o in src_items[srel].labels.objects]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[it.meta["image"]["id"]]))
        assert len(anns) == len(it.labels.objects)
        for ann, obj in zip(anns, it.labels.objects):
            if obj.has_mask():
                assert np.array_equal(obj.mask((W, H)), coco.annToMask(ann).astype(bool))
                assert obj.mask((W, H)).any()
    if layout in ("official", "images-split"):  # val copied unchanged, its JSON with it
        vrel = "annotations/instances_val.json"
        assert vrel in res["index"]
        assert (dst / vrel).read_bytes() == (src / vrel).read_bytes()
        vimg = "val/v.jpg" if layout == "official" else "images/val/v.jpg"
        assert items_of(open_dataset(dst), ["val"])[vimg].labels == items_of(ds, ["val"])[vimg].labels


def test_record_fields(tmp_path):
    ds = open_dataset(make_set(tmp_path / "set"))
    it = next(ds.items())
    rec = ds.record(it, "train/000000397133_bd2.jpg", (W, H))
    assert rec["image"]["file_name"] == "000000397133_bd2.jpg" and rec["image"]["source_image_id"] == 397133
    assert "id" not in rec["image"] and rec["image"]["license"] == 1
    assert [a["id"] for a in rec["annotations"]] == [1, 2]
    json.dumps(rec)
    assert ds.label_files(it, "train/x_bd1.jpg") == {}
    assert ds.passthrough(it) == {it.rel: it.path}


def test_finalize_streams_and_is_deterministic(tmp_path):
    ds = open_dataset(make_set(tmp_path / "set"))
    its = list(ds.items(["train"]))
    recs = [{"rel": ds.variant_rel(it, k, None), "source": it.rel, "split": "train", "variant": k,
             **ds.record(it, ds.variant_rel(it, k, None), (W, H))} for it in its for k in (1, 2)]
    a = ds.finalize(tmp_path / "o1", iter(recs))
    b = ds.finalize(tmp_path / "o2", iter(reversed(recs)))
    assert a == b == ["annotations/instances_train.json"]
    assert (tmp_path / "o1" / a[0]).read_bytes() == (tmp_path / "o2" / a[0]).read_bytes()
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "o1").rglob("*"))


# -- bad input -------------------------------------------------------------------------------------

def _bad(tmp_path, mutate) -> dict:
    data = documented_json()
    mutate(data)
    return items_of(open_dataset(make_set(tmp_path / "set", data), "coco"), ["train"])


@pytest.mark.parametrize("mutate, rel, why", [
    (lambda d: d["annotations"][0].update(category_id=99), "train/000000397133.jpg",
     "annotation 1: unknown category_id 99"),
    (lambda d: d["annotations"][0].update(bbox=[40.0, 2.0, 28.0, 20.0]), "train/000000397133.jpg",
     "outside the 64x48 image"),
    (lambda d: d["annotations"][0].update(bbox=[2.0, -3.0, 8.0, 8.0]), "train/000000397133.jpg",
     "outside the 64x48 image"),
    (lambda d: d["annotations"][0].update(segmentation=[[1.0, 1.0, 5.0, 5.0]]), "train/000000397133.jpg",
     "polygon with 2 points"),
    (lambda d: d["annotations"][2]["segmentation"].update(size=[H + 1, W]), "train/sub/000000037777.png",
     "annotation 3: segmentation RLE size [49, 64] is not the image's [48, 64]"),
    (lambda d: d["annotations"][1]["segmentation"]["counts"].append(7), "train/000000397133.jpg",
     "counts sum to"),
])
def test_bad_annotations_are_item_errors(tmp_path, mutate, rel, why):
    items = _bad(tmp_path, mutate)
    assert why in items[rel].error and items[rel].labels is None and "\n" not in items[rel].error
    assert str(tmp_path / "set/annotations/instances_train.json") in items[rel].error
    others = [it for r, it in items.items() if r != rel]
    assert others and all(it.error is None for it in others)  # the rest go on


def test_image_size_differing_from_its_record(tmp_path):
    root = make_set(tmp_path / "set")
    _img(root / "train/sub/000000037777.png", size=(100, 48))
    items = items_of(open_dataset(root), ["train"])
    assert "image id 37777 says 64x48, but" in items["train/sub/000000037777.png"].error
    assert "is 100x48" in items["train/sub/000000037777.png"].error
    assert items["train/000000397133.jpg"].error is None


def test_annotation_pointing_at_missing_image(tmp_path):
    def mutate(d):
        d["annotations"].append({"id": 77, "image_id": 555, "category_id": 1, "bbox": [1, 1, 2, 2]})
        d["annotations"].append({"id": 78, "image_id": 555, "category_id": 1, "bbox": [1, 1, 2, 2]})
    items = _bad(tmp_path, mutate)
    bad = items["annotations/instances_train.json#image_id=555"]
    assert "annotation 77 (and 1 more) points at image id 555, which is not in 'images'" in bad.error
    assert items["train/000000397133.jpg"].error is None


def test_listed_image_missing_on_disk_and_duplicate_names(tmp_path):
    root = make_set(tmp_path / "set")
    (root / "train/000000397133.jpg").unlink()
    items = items_of(open_dataset(root), ["train"])
    assert "is listed but" in items["train/000000397133.jpg"].error and "missing" in items["train/000000397133.jpg"].error
    assert items["train/sub/000000037777.png"].error is None

    def dup(d):
        d["images"].append(dict(d["images"][0], id=12))
    items = _bad(tmp_path / "d", dup)
    err = items["train/000000397133.jpg"].error
    assert "listed 2 times in 'images' (ids 397133, 12)" in err


def test_not_json_is_a_set_error(tmp_path):
    root = make_set(tmp_path / "set")
    (root / "annotations/instances_train.json").write_text('{"images": [1, 2,\n  oops')
    assert detect(root)[0] == "coco"
    with pytest.raises(InputError, match=r"instances_train.json: not JSON \(line 2, column 3"):
        open_dataset(root)
    (root / "annotations/instances_train.json").write_text('{"annotations": []}')
    with pytest.raises(InputError, match="no 'images' list"):
        open_dataset(root, "coco")


def test_detect_recognises_coco_only(tmp_path):
    for layout in ("official", "roboflow", "single"):
        root = make_set(tmp_path / layout, layout=layout)
        name, what = detect(root)
        assert name == "coco" and "COCO" in what, layout
        for other in ("yolo", "imagefolder", "masks", "folders", "plain"):
            assert FORMATS[other].detect(root) is None, (layout, other)


def test_source_json_is_not_modified(tmp_path):
    root = make_set(tmp_path / "set")
    before = (root / "annotations/instances_train.json").read_bytes()
    ds = open_dataset(root)
    snapshot = copy.deepcopy(next(ds.items()).meta["image"])
    write_copies(ds, tmp_path / "out", 2)
    assert (root / "annotations/instances_train.json").read_bytes() == before
    assert next(ds.items()).meta["image"] == snapshot


def test_file_name_outside_the_root_is_an_item_error(tmp_path):
    def mutate(d):
        d["images"][1]["file_name"] = "../../outside.png"
    root = tmp_path / "set"
    _img(tmp_path / "outside.png")
    items = _bad(tmp_path, mutate)
    bad = [it for it in items.values() if it.rel.startswith("../")]
    assert len(bad) == 1 and "lies outside the data set root" in bad[0].error
    assert items["train/000000397133.jpg"].error is None and root.is_dir()
