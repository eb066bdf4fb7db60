"""`backdrop augment`: labelled sets in, bigger sets out, in the same format, labels carried over.

The sets are built here (images with drawn objects whose true masks are known), augmented
through the real CLI, and read back with the formats' own readers (pycocotools for COCO).
Every labelled object's pixels are compared with the source, object by object.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from backdrop.cli import app
from backdrop.datasets import open_dataset
from backdrop.seeds import item_seed, variant_seed

ROOT = Path(__file__).resolve().parents[1]
W, H = 160, 120
FAST = ["--generator", "texture", "--segmenter", "classical", "-q"]


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def scene(seed: int, objects: list[tuple[int, int, int]], *, bg=None, extra: list | None = None):
    """An image with a textured background and filled disks (cx, cy, r); returns (image, masks)."""
    rng = np.random.default_rng(seed)
    base = np.array(bg if bg is not None else rng.integers(150, 230, 3), float)
    arr = base + rng.normal(0, 6, (H, W, 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    masks = []
    for i, (cx, cy, r) in enumerate(objects):
        colour = (40 + 60 * (i % 2), 30, 120 - 40 * (i % 2))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        m = Image.new("L", (W, H), 0)
        ImageDraw.Draw(m).ellipse((cx - r, cy - r, cx + r, cy + r), fill=255)
        masks.append(np.asarray(m) > 0)
    for cx, cy, r in extra or []:  # unlabelled things
        draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=(20, 160, 40))
    return img, masks


OBJECTS = [[(40, 40, 16), (110, 80, 20)], [(60, 60, 22)], [(30, 90, 14), (120, 30, 15)], [(80, 60, 25)]]


def make_yolo(root: Path, *, extra=None, ext=".png") -> dict[str, list[np.ndarray]]:
    """A YOLO detection set (boxes): 4 train + 1 val images. Returns rel -> true object masks."""
    truth = {}
    for split, idx in (("train", range(4)), ("val", [4])):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for i in idx:
            objs = OBJECTS[i % 4]
            img, masks = scene(i, objs, extra=extra)
            name = f"img{i}"
            img.save(root / "images" / split / f"{name}{ext}", quality=95)
            lines = [f"{j % 2} {cx / W:.6f} {cy / H:.6f} {2 * r / W:.6f} {2 * r / H:.6f}"
                     for j, (cx, cy, r) in enumerate(objs)]
            (root / "labels" / split / f"{name}.txt").write_text("\n".join(lines) + "\n")
            truth[f"images/{split}/{name}{ext}"] = masks
    (root / "data.yaml").write_text("path: .\ntrain: images/train\nval: images/val\nnames:\n  0: cell\n  1: parasite\n")
    return truth


def polygon(cx, cy, r, n=24):
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return [float(v) for xy in zip(cx + r * np.cos(a), cy + r * np.sin(a)) for v in xy]


def make_coco(root: Path) -> None:
    """A COCO instances set with polygon masks: 3 train + 1 val images."""
    for split, idx in (("train", range(3)), ("val", [3])):
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        images, anns = [], []
        for i in idx:
            img, _ = scene(10 + i, [])
            draw = ImageDraw.Draw(img)
            for j, (cx, cy, r) in enumerate(OBJECTS[i]):
                draw.polygon(polygon(cx, cy, r), fill=(50, 20, 110))
                x, y = cx - r, cy - r
                anns.append({"id": 100 * i + j, "image_id": i, "category_id": 1 + j % 2, "iscrowd": 0,
                             "segmentation": [polygon(cx, cy, r)], "bbox": [x, y, 2 * r, 2 * r],
                             "area": float(np.pi * r * r), "note": f"kept {i}-{j}"})
            img.save(root / "images" / split / f"p{i}.png")
            images.append({"id": i, "file_name": f"p{i}.png", "width": W, "height": H, "license": 1})
        data = {"info": {"description": "test set"}, "licenses": [{"id": 1, "name": "CC0"}], "images": images,
                "annotations": anns, "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}]}
        (root / "annotations").mkdir(exist_ok=True)
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(data))


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def manifest(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


# -- YOLO (boxes) -----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def yolo_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("yolo")
    with pytest.MonkeyPatch.context() as mp:  # module scope: its own empty model store
        mp.setenv("BACKDROP_HOME", str(work / "home"))
        return _yolo_run(work)


def _yolo_run(work):
    src = work / "src"
    truth = make_yolo(src, extra=[(140, 105, 8)])  # an unlabelled green square, outside every box
    out = work / "out"
    result = invoke("augment", src, "-o", out, "-n", "3", "--seed", "11", *FAST)
    return src, out, truth, result


def test_yolo_set_written_in_its_own_format(yolo_run):
    src, out, truth, result = yolo_run
    assert result.exit_code == 0, result.output
    ds = open_dataset(out)  # our YOLO reader, through the new data.yaml
    assert ds.format == "yolo" and set(ds.splits) == {"train", "val"}
    # the source's data.yaml as it was ("path: ." names its own folder): no absolute path in it
    assert (out / "data.yaml").read_text() == (src / "data.yaml").read_text()
    items = {it.rel: it for it in ds.items()}
    train = sorted(r for r in items if r.startswith("images/train/"))
    assert train == sorted(f"images/train/img{i}_bd{k}.png" for i in range(4) for k in (1, 2, 3))
    source = {it.rel: it for it in open_dataset(src).items()}
    for rel in train:
        stem = rel.split("/")[-1].rsplit("_bd", 1)[0]
        assert items[rel].labels == source[f"images/train/{stem}.png"].labels  # labels carried over
        assert (out / "labels/train" / f"{Path(rel).stem}.txt").read_bytes() == \
            (src / "labels/train" / f"{stem}.txt").read_bytes()
    # val is copied unchanged, never augmented
    assert (out / "images/val/img4.png").read_bytes() == (src / "images/val/img4.png").read_bytes()
    assert not list((out / "images/val").glob("*_bd*"))


def test_yolo_every_labelled_object_unchanged(yolo_run):
    src, out, truth, _ = yolo_run
    for rel, masks in truth.items():
        if "/train/" not in rel:
            continue
        before = pixels(src / rel)
        for k in (1, 2, 3):
            after = pixels(out / rel.replace(".png", f"_bd{k}.png"))
            for obj, m in enumerate(masks):
                assert np.array_equal(after[m], before[m]), (rel, k, obj)
    checks = [m["label_check"] for m in manifest(out) if m.get("variant")]
    assert len(checks) == 12 and all(c["objects"] == c["unchanged"] > 0 for c in checks)


def test_yolo_unlabelled_things_outside_boxes_become_background(yolo_run):
    src, out, _, _ = yolo_run
    square = (slice(99, 112), slice(134, 147))
    for i in range(4):
        before = pixels(src / f"images/train/img{i}.png")[square]
        after = pixels(out / f"images/train/img{i}_bd1.png")[square]
        assert np.abs(after.astype(int) - before.astype(int)).mean() > 20, i
    assert all(m["mask"] == "segmenter within boxes" for m in manifest(out) if m.get("variant"))


def test_yolo_seeds_derive_from_relative_paths(yolo_run):
    _, out, _, _ = yolo_run
    from backdrop.seeds import retry_seed

    for m in manifest(out):
        if m.get("variant"):
            want = variant_seed(item_seed(11, m["source"]), m["variant"])
            tries = m.get("checks", {}).get("tries", 1)  # a background made again after a failed check
            assert m["seed"] == (want if tries == 1 else retry_seed(want, tries - 1))


def test_yolo_texture_skips_caption_and_refine(yolo_run):
    _, out, _, _ = yolo_run
    for m in manifest(out):
        if m.get("variant"):
            assert "prompt" not in m and set(m["backends"]) == {"segment", "inpaint", "generate"}
    meta = Image.open(out / "images/train/img0_bd1.png").text
    assert json.loads(meta["backdrop"])["backends"]["caption"]["skipped"]
    assert "professional photograph" not in meta["parameters"]  # no unused prompt recorded


def test_rerun_resumes_and_adding_files_changes_nothing_else(yolo_run, tmp_path):
    src, out, _, _ = yolo_run
    again = invoke("augment", src, "-o", out, "-n", "3", "--seed", "11", *FAST[:-1])
    assert again.exit_code == 0, again.output
    assert "0 done, 5 already done" in again.output  # 4 augmented + 1 copied
    # a bigger set (a new image added) in another output: the shared images come out pixel-identical
    # (their metadata differ: creation time, source path)
    bigger = tmp_path / "src2"
    shutil.copytree(src, bigger)
    img, _ = scene(99, [(50, 50, 18)])
    img.save(bigger / "images/train/img00.png")
    (bigger / "labels/train/img00.txt").write_text("0 0.3125 0.416667 0.225 0.3\n")
    out2 = tmp_path / "out2"
    assert invoke("augment", bigger, "-o", out2, "-n", "3", "--seed", "11", *FAST).exit_code == 0
    for i in range(4):
        for k in (1, 2, 3):
            rel = f"images/train/img{i}_bd{k}.png"
            assert np.array_equal(pixels(out2 / rel), pixels(out / rel)), rel


def test_no_two_images_share_a_background_texture(yolo_run):
    src, out, truth, _ = yolo_run
    # compare the new backgrounds of different images for variant 1, away from every object
    bgs = []
    for i in range(4):
        comp = pixels(out / f"images/train/img{i}_bd1.png").astype(int)
        bgs.append(comp[:12, :])  # the top rows hold no object in any image
    for a in range(4):
        for b in range(a + 1, 4):
            assert np.abs(bgs[a] - bgs[b]).mean() > 3, (a, b)


# -- pool spreads its pictures over the set -----------------------------------------------------------------------


def test_pool_spreads_backgrounds_and_reports_use(tmp_path):
    src = tmp_path / "src"
    make_yolo(src)
    pool = tmp_path / "pool"
    pool.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8)).save(pool / f"bg{i}.png")
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "2", "--seed", "3", "--backgrounds", pool,
                    "--segmenter", "classical")
    assert result.exit_code == 0, result.output
    picks = [m["background"] for m in manifest(out) if m.get("variant")]
    assert len(picks) == 8 and len(set(picks)) == 8  # 4 images x 2 variants: every picture once
    assert "pool: 8 background(s) used, each 1-1 time(s)" in result.output
    assert all(m["backends"]["generate"] == "pool" for m in manifest(out) if m.get("variant"))


# -- COCO (polygons): pycocotools reads the output ---------------------------------------------------------------


def test_coco_output_loads_in_pycocotools_with_objects_unchanged(tmp_path):
    from pycocotools.coco import COCO

    src = tmp_path / "src"
    make_coco(src)
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "3", "--seed", "5", *FAST)
    assert result.exit_code == 0, result.output
    source = COCO(str(src / "annotations/instances_train.json"))
    coco = COCO(str(out / "annotations/instances_train.json"))
    assert len(coco.getImgIds()) == 9 and len(coco.getAnnIds()) == 3 * len(source.getAnnIds())
    by_name = {im["file_name"]: im for im in source.dataset["images"]}
    for img in coco.dataset["images"]:
        stem = img["file_name"].rsplit("_bd", 1)[0]
        src_img = by_name[f"{stem}.png"]
        assert img["source_image_id"] == src_img["id"] and img["license"] == 1
        before = pixels(src / "images/train" / src_img["file_name"])
        after = pixels(out / "images/train" / img["file_name"])
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img["id"]))
        src_anns = source.loadAnns(source.getAnnIds(imgIds=src_img["id"]))
        assert [a["segmentation"] for a in anns] == [a["segmentation"] for a in src_anns]
        assert [a["note"] for a in anns] == [a["note"] for a in src_anns]  # every other field kept
        for a in anns:
            m = coco.annToMask(a) > 0
            assert m.sum() > 100 and np.array_equal(after[m], before[m]), (img["file_name"], a["id"])
        assert not np.array_equal(after, before)  # and the background did change
    assert json.loads((out / "annotations/instances_val.json").read_text()) == \
        json.loads((src / "annotations/instances_val.json").read_text())
    assert all(m["mask"] == "labels" for m in manifest(out) if m.get("variant"))
    assert "segment" not in json.loads(Image.open(out / "images/train/p0_bd1.png").text["backdrop"])["backends"] \
        or json.loads(Image.open(out / "images/train/p0_bd1.png").text["backdrop"])["backends"]["segment"].get("skipped")


# -- class folders and imagefolder ------------------------------------------------------------------------------


def test_class_folders_keep_class_and_names(tmp_path):
    src = tmp_path / "src"
    for split in ("train", "val"):
        for cls, seed in (("cat", 1), ("dog", 2)):
            (src / split / cls).mkdir(parents=True)
            img, _ = scene(seed + (split == "val"), [(80, 60, 30)])
            img.save(src / split / cls / "001.jpg", quality=95)  # same file name in both classes
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "2", "--seed", "1", *FAST)
    assert result.exit_code == 0, result.output
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.jpg") if ".backdrop" not in p.parts)
    assert got == ["train/cat/001_bd1.jpg", "train/cat/001_bd2.jpg", "train/dog/001_bd1.jpg",
                   "train/dog/001_bd2.jpg", "val/cat/001.jpg", "val/dog/001.jpg"]
    assert Image.open(out / "train/cat/001_bd1.jpg").format == "JPEG"  # JPEG in, JPEG out
    ds = open_dataset(out)
    assert ds.format == "folders"


def test_imagefolder_columns_copied_file_name_rewritten(tmp_path):
    src = tmp_path / "src" / "train"
    src.mkdir(parents=True)
    rows = []
    for i in range(2):
        img, _ = scene(i, [(80, 60, 25)])
        img.save(src / f"{i}.png")
        rows.append({"file_name": f"{i}.png", "text": f"a cell {i}", "label": i})
    (src / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    result = invoke("augment", tmp_path / "src", "-o", out, "-n", "2", "--seed", "1", *FAST)
    assert result.exit_code == 0, result.output
    got = [json.loads(line) for line in (out / "train" / "metadata.jsonl").read_text().splitlines()]
    assert sorted(r["file_name"] for r in got) == ["0_bd1.png", "0_bd2.png", "1_bd1.png", "1_bd2.png"]
    for r in got:
        i = int(r["file_name"][0])
        assert r["text"] == f"a cell {i}" and r["label"] == i
        assert (out / "train" / r["file_name"]).is_file()


# -- the bundled example sets -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["yolo-cells", "coco-cells", "masks-cells"])
def test_bundled_examples(tmp_path, name):
    src = ROOT / "examples" / "datasets" / name
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "3", "--seed", "2", *FAST)
    assert result.exit_code == 0, result.output
    source = open_dataset(src)
    train = [it for it in source.items() if it.split in ("train", "")]
    got = {it.rel: it for it in open_dataset(out).items()}
    for it in train:
        before = pixels(it.path)
        fg = it.labels.foreground(before.shape[1::-1]) if it.labels is not None else None
        for k in (1, 2, 3):
            rel = source.variant_rel(it, k, Path(it.rel).suffix)
            assert rel in got, rel
            if it.labels is not None and it.labels.mask_file is not None:  # mask pairs: the same mask
                assert np.array_equal(got[rel].labels.foreground(before.shape[1::-1]), fg)
            else:
                assert got[rel].labels == it.labels
            if fg is not None and Path(rel).suffix == ".png":
                assert np.array_equal(pixels(out / rel)[fg], before[fg])
    checks = [m["label_check"] for m in manifest(out) if m.get("variant")]
    assert len(checks) == 3 * len(train)
    assert all(c.get("unchanged", 0) == c["objects"] and c.get("foreground_unchanged", True) for c in checks)


# -- options and bad input ----------------------------------------------------------------------------------------


def test_include_originals_and_png_output(tmp_path):
    src = tmp_path / "src"
    make_yolo(src, ext=".jpg")
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "1", "--seed", "1", "--include-originals",
                    "--image-format", "png", *FAST)
    assert result.exit_code == 0, result.output
    for i in range(4):
        assert (out / f"images/train/img{i}.jpg").read_bytes() == (src / f"images/train/img{i}.jpg").read_bytes()
        assert Image.open(out / f"images/train/img{i}_bd1.png").format == "PNG"
        assert (out / f"labels/train/img{i}_bd1.txt").is_file() and (out / f"labels/train/img{i}.txt").is_file()
    assert len([it for it in open_dataset(out).items() if it.split == "train"]) == 8


def test_bad_label_reported_rest_goes_on(tmp_path):
    src = tmp_path / "src"
    make_yolo(src)
    (src / "labels/train/img2.txt").write_text("0 0.5 0.5 0.2\n")  # 4 columns
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "1", "--seed", "1", *FAST[:-1])
    assert result.exit_code != 0
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "labels/train/img2.txt:1:" in errors[0] and "columns" in errors[0], result.output
    assert sorted(p.name for p in (out / "images/train").iterdir()) == ["img0_bd1.png", "img1_bd1.png",
                                                                       "img3_bd1.png"]
    assert "3 done, 0 already done, 1 copied unchanged, 1 failed" in result.output


def test_box_fallback_keeps_the_whole_box_or_skips(tmp_path):
    """An object the segmenter cannot find (same colour as its background) inside a labelled box."""
    src = tmp_path / "src"
    make_yolo(src)
    (src / "labels/train/img0.txt").write_text("1 0.15625 0.83333 0.1875 0.25\n")  # a box on plain background
    out = tmp_path / "out"
    assert invoke("augment", src, "-o", out, "-n", "1", "--seed", "1", *FAST).exit_code == 0
    line = next(m for m in manifest(out) if m["source"] == "images/train/img0.png" and m.get("variant"))
    assert line["label_check"]["box_fallback"] == [0]
    before, after = pixels(src / "images/train/img0.png"), pixels(out / "images/train/img0_bd1.png")
    box = (slice(85, 115), slice(10, 40))
    assert np.array_equal(after[box], before[box])  # the whole box kept
    skip = tmp_path / "skip"
    result = invoke("augment", src, "-o", skip, "-n", "1", "--seed", "1", "--box-fallback", "skip", *FAST[:-1])
    assert result.exit_code != 0 and "img0" in result.output and "--box-fallback box" in result.output
    assert not (skip / "images/train/img0_bd1.png").exists() and (skip / "images/train/img1_bd1.png").exists()


def test_set_level_errors_are_one_line(tmp_path):
    (tmp_path / "coco" / "annotations").mkdir(parents=True)
    (tmp_path / "coco" / "images").mkdir()
    (tmp_path / "coco" / "annotations" / "instances_train.json").write_text("{not json")
    result = invoke("augment", tmp_path / "coco", "-o", tmp_path / "out", *FAST[:-1])
    assert result.exit_code == 2
    assert len([line for line in result.output.splitlines() if line.startswith("error:")]) == 1
    assert not (tmp_path / "out").exists()
    inside = invoke("augment", tmp_path / "coco", "-o", tmp_path / "coco" / "aug", *FAST[:-1])
    assert inside.exit_code == 2 and "inside the source" in inside.output


def test_python_api(tmp_path):
    from backdrop import GenerateConfig, PipelineConfig, augment
    from backdrop.config import SegmentConfig

    src = tmp_path / "src"
    make_yolo(src)
    cfg = PipelineConfig(variants=2, seed=4, generate=GenerateConfig(backend="texture"),
                         segment=SegmentConfig(backend="classical"))
    summary = augment(src, tmp_path / "out", config=cfg)
    assert summary.done == 4 and summary.copied == 1 and summary.images == 8 and not summary.failed
    assert len(list((tmp_path / "out/images/train").glob("*_bd2.png"))) == 4


def test_mask_cache_skips_the_segmenter_when_augmenting_again(tmp_path):
    """The same images augmented again (another seed, another output): the segmenter's masks come
    from the cache, the results keep every labelled object, and --mask-cache off runs it again."""
    src = tmp_path / "src"
    truth = make_yolo(src)
    first = invoke("augment", src, "-o", tmp_path / "o1", "-n", "1", "--seed", "1", *FAST[:-1])
    assert first.exit_code == 0 and "segment" in first.output
    again = invoke("augment", src, "-o", tmp_path / "o2", "-n", "1", "--seed", "2", *FAST[:-1])
    assert again.exit_code == 0, again.output
    assert "time per stage" in again.output and "segment" not in again.output.split("time per stage")[1]
    masks1 = {m["source"]: m["label_check"] for m in manifest(tmp_path / "o1") if m.get("variant")}
    masks2 = {m["source"]: m["label_check"] for m in manifest(tmp_path / "o2") if m.get("variant")}
    assert masks1 == masks2  # the same masks (the same pixels kept per object)
    for rel, masks in truth.items():
        if "/train/" in rel:
            before, after = pixels(src / rel), pixels(tmp_path / "o2" / rel.replace(".png", "_bd1.png"))
            assert all(np.array_equal(after[m], before[m]) for m in masks)
    off = invoke("augment", src, "-o", tmp_path / "o3", "-n", "1", "--seed", "3", "--mask-cache", "off", *FAST[:-1])
    assert off.exit_code == 0 and "segment" in off.output.split("time per stage")[1]


def test_yolo_image_without_label_file_is_a_background_only_image(tmp_path):
    src = tmp_path / "src"
    make_yolo(src)
    (src / "labels/train/img1.txt").unlink()  # a negative: no object in it
    out = tmp_path / "out"
    assert invoke("augment", src, "-o", out, "-n", "1", "--seed", "1", *FAST).exit_code == 0
    line = next(m for m in manifest(out) if m["source"] == "images/train/img1.png" and m.get("variant"))
    assert line["background_only"] is True and line["label_check"]["objects"] == 0
    assert not (out / "labels/train/img1_bd1.txt").exists() or (out / "labels/train/img1_bd1.txt").read_text() == ""
    assert not any(m.get("background_only") for m in manifest(out) if m["source"] != "images/train/img1.png")


def test_python_api_default_is_the_commands_default(tmp_path):
    """augment(src, dst) with no config does what `backdrop augment SRC` does: 3 variants, the
    default generator (swap, chosen by benchmarks/augmentation_value.py)."""
    from backdrop import augment
    from backdrop.generate import AUGMENT_DEFAULT

    src = tmp_path / "src"
    make_yolo(src)
    summary = augment(src, tmp_path / "out")
    assert summary.images == 12 and not summary.failed
    lines = [m for m in manifest(tmp_path / "out") if m.get("variant")]
    assert {m["backends"]["generate"] for m in lines} == {AUGMENT_DEFAULT} == {"swap"}


def test_splits_named_as_the_set_names_them_or_by_alias(tmp_path):
    """`--splits training` and `--splits valid` mean the set's `train` and `val` (the names are
    canonicalised on both sides), so an alias never silently plans nothing."""
    src = tmp_path / "src"
    for split in ("training", "validation"):
        (src / split / "cat").mkdir(parents=True)
        img, _ = scene(3, [(80, 60, 30)])
        img.save(src / split / "cat" / "001.png")
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "1", "--seed", "1", "--splits", "valid", *FAST)
    assert result.exit_code == 0, result.output
    got = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png") if ".backdrop" not in p.parts)
    assert got == ["training/cat/001.png", "validation/cat/001_bd1.png"]  # val augmented, train copied
