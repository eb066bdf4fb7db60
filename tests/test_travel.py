"""Sets that travel (issue 19): a written set stays correct when moved or copied, side files never
reach a loader, the summary counts what happened by kind, and the log says warnings only when
there is something to act on.

Every written set is read by the format's own rules (tests/loaders.py: Ultralytics' and the
``datasets`` imagefolder builder's, written from their code and docs; pycocotools itself for
COCO), after being moved, and after being copied: a copy must resolve only inside itself.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw
from typer.testing import CliRunner

from backdrop.cli import app
from loaders import hf_files, hf_imagefolder, ultralytics_load

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "datasets"
EXE = ROOT / ".venv" / "bin" / "backdrop"
FAST = ["--generator", "random", "--segmenter", "classical", "-q"]


@pytest.fixture(autouse=True)
def _restore_backdrop_logger():
    """The CLI sets up the 'backdrop' logger for its process; in-process runs must not leak that."""
    logger = logging.getLogger("backdrop")
    saved = (logger.handlers[:], logger.level, logger.propagate)
    yield
    logger.handlers[:], logger.level, logger.propagate = saved


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def cli(*args, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [str(EXE)] if EXE.exists() else [sys.executable, "-c", "from backdrop.cli import main; main()"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, timeout=300, cwd=cwd,
                          env={**os.environ, **(env or {})})


def move_and_copy(out: Path, tmp: Path) -> tuple[Path, Path]:
    """The written set moved to another folder, then copied to a third; the moved one stays."""
    moved = tmp / "elsewhere" / "moved-set"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))
    copy = tmp / "third" / "copied-set"
    copy.parent.mkdir()
    shutil.copytree(moved, copy)
    return moved, copy


def inside(path: Path, folder: Path) -> bool:
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(folder))


def index_texts(folder: Path) -> dict[str, str]:
    """Every index file of a set (what a loader reads to find images), by relative path."""
    names = {"data.yaml", "data.yml", "metadata.jsonl", "metadata.csv"}
    out = {}
    for p in folder.rglob("*"):
        rel = p.relative_to(folder).as_posix()
        if ".backdrop" in p.parts or not p.is_file():
            continue
        if p.name in names or p.suffix == ".json" or (p.suffix == ".txt" and "labels" not in p.parts):
            out[rel] = p.read_text(encoding="utf-8")
    return out


def assert_points_only_inside(copy: Path, *elsewhere: Path) -> None:
    texts = index_texts(copy)
    assert texts
    for rel, text in texts.items():
        for other in elsewhere:
            assert str(other) not in text and str(other.resolve()) not in text, (rel, other)


def scene(seed: int, size=(96, 72), objects=((30, 30, 12), (66, 44, 14))) -> Image.Image:
    rng = np.random.default_rng(seed)
    arr = np.array(rng.integers(150, 230, 3), float) + rng.normal(0, 6, (size[1], size[0], 3))
    img = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for cx, cy, r in objects:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(60, 30, 120))
    return img


def yolo_boxes(size=(96, 72), objects=((30, 30, 12), (66, 44, 14))) -> str:
    w, h = size
    return "".join(f"{i % 2} {cx / w:.6f} {cy / h:.6f} {2 * r / w:.6f} {2 * r / h:.6f}\n"
                   for i, (cx, cy, r) in enumerate(objects))


# -- YOLO ------------------------------------------------------------------------------------------------------------


def test_yolo_example_moved_and_copied_loads_by_ultralytics_rules(tmp_path):
    src = EXAMPLES / "yolo-cells"
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "2", "--seed", "3", *FAST)
    assert result.exit_code == 0, result.output
    # nothing in the source's data.yaml needed a change: it is the same file, comments and all
    assert (out / "data.yaml").read_bytes() == (src / "data.yaml").read_bytes()
    moved, copy = move_and_copy(out, tmp_path)
    elsewhere = tmp_path / "cwd"  # a working directory unrelated to any set
    elsewhere.mkdir()
    for where in (moved, copy):
        got = ultralytics_load(where / "data.yaml", cwd=elsewhere, datasets_dir=tmp_path / "datasets")
        assert len(got["train"]) == 16 and len(got["val"]) == 2
        for image, label in got["train"] + got["val"]:
            assert inside(image, where) and inside(label, where), (image, where)
            assert image.is_file() and label.is_file()  # every image here has boxes
        assert {p.name for p, _ in got["train"]} == {f"cells_{i:03d}_bd{k}.jpg" for i in range(8) for k in (1, 2)}
        # each variant's label file is its source's, line for line
        for image, label in got["train"]:
            source = re.sub(r"_bd\d", "", label.name)
            assert label.read_bytes() == (src / "labels" / "train" / source).read_bytes()
    assert_points_only_inside(copy, moved, out, src)


def _yolo_tree(root: Path, splits=("train", "val"), n=2) -> None:
    for split in splits:
        for i in range(n):
            (root / "images" / split).mkdir(parents=True, exist_ok=True)
            (root / "labels" / split).mkdir(parents=True, exist_ok=True)
            scene(i + 10 * (split == "val")).save(root / "images" / split / f"c{i}.png")
            (root / "labels" / split / f"c{i}.txt").write_text(yolo_boxes())


def test_yolo_absolute_path_and_lists_become_relative_comments_kept(tmp_path):
    src = tmp_path / "src"
    _yolo_tree(src)
    # lists in both styles: absolute lines (relative to nothing) and ./ lines
    (src / "train.txt").write_text("".join(f"{src}/images/train/c{i}.png\n" for i in range(2)))
    (src / "val.txt").write_text("./images/val/c0.png\n./images/val/c1.png\n")
    text = (f"# blood smears, two classes\npath: {src}  # where the set lives\ntrain: train.txt  # the list\n"
            "val: val.txt\n\n# classes\nnames:\n  0: cell  # round\n  1: parasite\n"
            "download: https://example.invalid/smears.zip\n")
    (src / "data.yaml").write_text(text)
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "1", "--seed", "1", *FAST)
    assert result.exit_code == 0, result.output
    assert (out / "data.yaml").read_text() == ("# blood smears, two classes\ntrain: train.txt  # the list\n"
                                               "val: val.txt\n\n# classes\nnames:\n  0: cell  # round\n"
                                               "  1: parasite\n")
    assert (out / "train.txt").read_text() == "./images/train/c0_bd1.png\n./images/train/c1_bd1.png\n"
    assert (out / "val.txt").read_text() == "./images/val/c0.png\n./images/val/c1.png\n"
    moved, copy = move_and_copy(out, tmp_path)
    for where in (moved, copy):
        got = ultralytics_load(where / "data.yaml", cwd=tmp_path, datasets_dir=tmp_path / "datasets")
        assert [p.name for p, _ in got["train"]] == ["c0_bd1.png", "c1_bd1.png"]
        assert all(inside(p, where) and inside(lb, where) and lb.is_file() for p, lb in got["train"] + got["val"])
    assert_points_only_inside(copy, moved, out, src)


def test_roboflow_layout_reads_and_travels(tmp_path):
    """Roboflow's export: split/images + split/labels, ``train: ../train/images`` from the yaml's
    folder (which Ultralytics and backdrop resolve by dropping the ``../``), four-space blocks."""
    src = tmp_path / "rf"
    for split, folder in (("train", "train"), ("val", "valid")):
        for i in range(2):
            (src / folder / "images").mkdir(parents=True, exist_ok=True)
            (src / folder / "labels").mkdir(parents=True, exist_ok=True)
            scene(i).save(src / folder / "images" / f"r{i}.jpg", quality=95)
            (src / folder / "labels" / f"r{i}.txt").write_text(yolo_boxes())
    text = ("train: ../train/images\nval: ../valid/images\n\nnc: 2\nnames: ['cell', 'parasite']\n\n"
            "roboflow:\n    workspace: lab\n    version: 3\n")
    (src / "data.yaml").write_text(text)
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "1", "--seed", "1", *FAST)
    assert result.exit_code == 0, result.output
    assert (out / "data.yaml").read_text() == text.replace("../train/images", "train/images") \
        .replace("../valid/images", "valid/images")
    moved, copy = move_and_copy(out, tmp_path)
    # the place where "../train/images" would have led from the copy: it must not be used
    (copy.parent / "train" / "images").mkdir(parents=True)
    scene(9).save(copy.parent / "train" / "images" / "stranger.jpg")
    got = ultralytics_load(copy / "data.yaml", cwd=tmp_path, datasets_dir=tmp_path / "datasets")
    assert [p.name for p, _ in got["train"]] == ["r0_bd1.jpg", "r1_bd1.jpg"]
    assert all(inside(p, copy) and lb.is_file() for p, lb in got["train"] + got["val"])


def test_yolo_path_dot_is_kept_as_the_source_had_it(tmp_path):
    src = tmp_path / "src"
    _yolo_tree(src)
    (src / "data.yaml").write_text("path: .  # run from this folder\ntrain: images/train\nval: images/val\n"
                                   "names: [a, b]\n")
    out = tmp_path / "out"
    assert invoke("augment", src, "-o", out, "-n", "1", "--seed", "1", *FAST).exit_code == 0
    assert (out / "data.yaml").read_bytes() == (src / "data.yaml").read_bytes()
    moved, copy = move_and_copy(out, tmp_path)
    # Ultralytics takes a relative path from the working directory: run from the set, as for the source
    got = ultralytics_load(copy / "data.yaml", cwd=copy, datasets_dir=tmp_path / "datasets")
    assert len(got["train"]) == 2 and all(inside(p, copy) for p, _ in got["train"] + got["val"])


# -- COCO ------------------------------------------------------------------------------------------------------------


def test_coco_example_moved_and_copied_loads_in_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    src = EXAMPLES / "coco-cells"
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "2", "--seed", "3", *FAST)
    assert result.exit_code == 0, result.output
    moved, copy = move_and_copy(out, tmp_path)
    source = COCO(str(src / "annotations" / "instances_train.json"))
    per_source = {im["file_name"]: len(source.getAnnIds(imgIds=im["id"])) for im in source.dataset["images"]}
    for where in (moved, copy):
        for split, count in (("train", 16), ("val", 2)):
            coco = COCO(str(where / "annotations" / f"instances_{split}.json"))
            images = coco.loadImgs(coco.getImgIds())
            assert len(images) == count
            for im in images:
                path = Path(os.path.join(where / "images" / split, im["file_name"]))  # CocoDetection's rule
                assert path.is_file() and inside(path, where), path
                with Image.open(path) as pil:
                    assert pil.size == (im["width"], im["height"])
                anns = coco.loadAnns(coco.getAnnIds(imgIds=im["id"]))
                if split == "train":
                    assert len(anns) == per_source[re.sub(r"_bd\d", "", im["file_name"])]
                assert all(coco.annToMask(a).sum() > 0 for a in anns)
    assert_points_only_inside(copy, moved, out, src)


def test_coco_copied_split_with_absolute_file_names_made_relative(tmp_path):
    from pycocotools.coco import COCO

    src = tmp_path / "src"
    shutil.copytree(EXAMPLES / "coco-cells", src)
    val = src / "annotations" / "instances_val.json"
    data = json.loads(val.read_text())
    for im in data["images"]:
        im["file_name"] = str(src / "images" / "val" / im["file_name"])  # as some export scripts write them
    val.write_text(json.dumps(data))
    out = tmp_path / "out"
    assert invoke("augment", src, "-o", out, "-n", "1", "--seed", "3", *FAST).exit_code == 0
    got = json.loads((out / "annotations" / "instances_val.json").read_text())
    assert [im["file_name"] for im in got["images"]] == ["smear_008.jpg", "smear_009.jpg"]
    assert {k: v for k, v in got.items() if k != "images"} == {k: v for k, v in data.items() if k != "images"}
    moved, copy = move_and_copy(out, tmp_path)
    coco = COCO(str(copy / "annotations" / "instances_val.json"))
    assert all(inside(Path(os.path.join(copy / "images" / "val", im["file_name"])), copy)
               for im in coco.dataset["images"])
    assert_points_only_inside(copy, moved, out, src)


def test_coco_loads_in_torchvision_cocodetection(tmp_path):
    """torchvision's own COCO reader on a copied set (in a subprocess: set-up keeps torchvision in
    .venv/torchvision-isolated, importable after backdrop.transforms.torchvision)."""
    import subprocess
    import sys

    from test_transforms_torchvision import SRC, torchvision_path

    extra = torchvision_path()
    if extra is None:
        pytest.skip("torchvision is not installed (scripts/setup.sh installs it in .venv/torchvision-isolated)")
    src = EXAMPLES / "coco-cells"
    out = tmp_path / "out"
    assert invoke("augment", src, "-o", out, "-n", "1", "--seed", "3", *FAST).exit_code == 0
    _, copy = move_and_copy(out, tmp_path)
    code = (
        "import backdrop.transforms.torchvision, sys\n"
        "from torchvision import datasets\n"
        "ds = datasets.CocoDetection(sys.argv[1], sys.argv[2])\n"
        "image, target = ds[0]\n"
        "print(len(ds), image.size, len(target))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(SRC), extra) if p)}
    proc = subprocess.run([sys.executable, "-c", code, str(copy / "images" / "train"),
                           str(copy / "annotations" / "instances_train.json")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    last = proc.stdout.strip().splitlines()[-1]  # pycocotools prints its own lines first
    n, size, objects = last.split(" ", 1)[0], last.split(" (")[1].split(")")[0], last.split()[-1]
    assert n == "8" and size == "256, 192" and int(objects) > 0


# -- Hugging Face imagefolder ----------------------------------------------------------------------------------------


def test_imagefolder_moved_and_copied_loads_by_datasets_rules(tmp_path):
    src = tmp_path / "src"
    for split, n in (("train", 3), ("test", 2)):
        (src / split).mkdir(parents=True)
        rows = []
        for i in range(n):
            scene(i + 5 * (split == "test")).save(src / split / f"{i}.png")
            name = f"{i}.png" if not (split == "test" and i == 1) else str(src / split / f"{i}.png")  # one absolute
            rows.append({"file_name": name, "text": f"cell {i}", "label": i % 2})
        (src / split / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "2", "--seed", "1", *FAST)
    assert result.exit_code == 0, result.output
    moved, copy = move_and_copy(out, tmp_path)
    for where in (moved, copy):
        got = hf_imagefolder(where)
        assert set(got) == {"train", "test"}
        assert len(got["train"]) == 6 and len(got["test"]) == 2
        for row in got["train"] + got["test"]:
            assert Path(row["image"]).is_file() and inside(Path(row["image"]), where), row
            assert set(row) == {"image", "text", "label"}
        assert sorted(Path(r["image"]).name for r in got["test"]) == ["0.png", "1.png"]
    assert_points_only_inside(copy, moved, out, src)


# -- side files ------------------------------------------------------------------------------------------------------


def test_save_masks_side_files_are_where_no_loader_looks(tmp_path):
    src = tmp_path / "src"
    for split, per_class in (("train", 3), ("val", 1)):
        for c, cls in enumerate(("cat", "dog")):
            (src / split / cls).mkdir(parents=True)
            for i in range(per_class):
                scene(10 * c + i + 100 * (split == "val")).save(src / split / cls / f"{i:03d}.jpg", quality=95)
    out = tmp_path / "out"
    result = invoke("augment", src, "-o", out, "-n", "2", "--seed", "1", "--save-masks", *FAST)
    assert result.exit_code == 0, result.output
    # the imagefolder builder sees the set's images only: labels inferred from the class folders
    got = hf_imagefolder(out)
    assert set(got) == {"train", "validation"}
    assert len(got["train"]) == 12 and len(got["validation"]) == 2
    assert sorted({r["label"] for r in got["train"]}) == ["cat", "dog"]
    assert all(re.fullmatch(r"\d{3}_bd[12]\.jpg", Path(r["image"]).name) for r in got["train"])
    # nothing but the set's images anywhere a walker of the split folders would look
    images = sorted(p.relative_to(out).as_posix() for p in out.rglob("*")
                    if p.suffix.lower() in (".png", ".jpg") and ".backdrop" not in p.parts)
    want = sorted([f"train/{c}/{i:03d}_bd{k}.jpg" for c in ("cat", "dog") for i in range(3) for k in (1, 2)]
                  + ["val/cat/000.jpg", "val/dog/000.jpg"])
    assert images == want and [f for f in hf_files(out) if f.endswith(".png")] == []
    # the side files are where the README says, one mask and one background per training image
    for cls in ("cat", "dog"):
        for i in range(3):
            rel = f"train/{cls}/{i:03d}.jpg"
            mask = Image.open(out / ".backdrop" / "side" / "mask" / f"{rel}.png")
            bg = Image.open(out / ".backdrop" / "side" / "background" / f"{rel}.png")
            assert mask.mode == "L" and mask.size == bg.size == (96, 72) and bg.mode == "RGB"
            values = set(np.unique(np.asarray(mask)).tolist())
            assert values <= {0, 255} and 255 in values
    sides = [p for p in (out / ".backdrop" / "side").rglob("*.png")]
    assert len(sides) == 12
    # a rerun resumes without writing them again; --overwrite replaces them: they are backdrop's own
    before = {p: p.read_bytes() for p in sides}
    again = invoke("augment", src, "-o", out, "-n", "2", "--seed", "1", "--save-masks", *FAST)
    assert again.exit_code == 0, again.output
    assert {p: p.read_bytes() for p in (out / ".backdrop" / "side").rglob("*.png")} == before
    sides[0].write_bytes(b"")  # spoilt: only a rewrite makes it whole again
    redo = invoke("augment", src, "-o", out, "-n", "2", "--seed", "1", "--save-masks", "--overwrite", *FAST)
    assert redo.exit_code == 0, redo.output
    assert {p: p.read_bytes() for p in (out / ".backdrop" / "side").rglob("*.png")} == before


# -- the summary -----------------------------------------------------------------------------------------------------


def test_summary_counts_by_kind_with_include_originals(tmp_path):
    from backdrop import PipelineConfig, augment
    from backdrop.config import GenerateConfig, SegmentConfig

    src = EXAMPLES / "yolo-cells"
    out = tmp_path / "out"
    result = cli("augment", src, "-o", out, "-n", "2", "--seed", "5", "--include-originals",
                 "--generator", "random", "--segmenter", "classical")
    assert result.returncode == 0, result.stderr
    on_disk = [p.name for p in (out / "images" / "train").iterdir()]
    variants = [n for n in on_disk if re.search(r"_bd\d+\.", n)]
    originals = [n for n in on_disk if n not in variants]
    assert len(variants) == 16 and len(originals) == 8
    line = next(x for x in result.stderr.splitlines() if " already done, " in x)
    assert line.startswith("8 done, 0 already done, 2 copied unchanged, 0 failed; "
                           "16 new image(s) written, 8 original(s) copied beside them, in "), line
    # the Python API's summary: the rate counts new images only
    out2 = tmp_path / "out2"
    cfg = PipelineConfig(variants=2, seed=5, generate=GenerateConfig(backend="random"),
                         segment=SegmentConfig(backend="classical"))
    summary = augment(src, out2, config=cfg, include_originals=True)
    assert (summary.done, summary.copied, summary.images, summary.originals) == (8, 2, 16, 8)
    assert f"({summary.images / summary.seconds:.2f} new images/s)" in summary.lines(out2)[0]
    # a rerun: all kept, nothing written
    again = augment(src, out2, config=cfg, include_originals=True)
    assert (again.done, again.skipped, again.images, again.originals) == (0, 10, 0, 0)


# -- log levels ------------------------------------------------------------------------------------------------------


def test_default_augment_prints_the_plan_and_no_warning(tmp_path):
    src = EXAMPLES / "coco-cells"  # polygons: the labels are the masks, no segmenter to choose
    result = cli("augment", src, "-o", tmp_path / "out", "-n", "1", "--seed", "1")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert not [x for x in lines if x.lower().startswith("warning")], result.stderr
    plan = f"{src}: COCO instances data set"
    assert any(x.startswith(plan) and x.endswith("8 image(s) to augment (splits train), 2 to copy unchanged")
               for x in lines), result.stderr
    assert all(not re.match(r"(INFO|DEBUG|debug):", x) for x in lines)
    # -q: errors only (none here); -v: each image's details too
    quiet = cli("augment", src, "-o", tmp_path / "quiet", "-n", "1", "--seed", "1", "-q")
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    verbose = cli("augment", src, "-o", tmp_path / "verbose", "-n", "1", "--seed", "1", "-v")
    assert verbose.returncode == 0 and any(x.startswith(plan) for x in verbose.stderr.splitlines())
    assert len([x for x in verbose.stderr.splitlines() if x.startswith("debug: input ")]) == 8


def test_a_warning_is_for_what_the_user_should_act_on(tmp_path):
    # boxes need a segmenter; "auto" with an empty model store falls back and says how to do better
    result = cli("augment", EXAMPLES / "yolo-cells", "-o", tmp_path / "out", "-n", "1", "--seed", "1",
                 env={"BACKDROP_HOME": str(tmp_path / "empty-home")})
    assert result.returncode == 0, result.stderr
    warnings = [x for x in result.stderr.splitlines() if x.lower().startswith("warning")]
    assert len(warnings) == 1 and warnings[0].startswith("warning: segment: ") and "models pull" in warnings[0]


def test_an_empty_plan_is_a_warning(tmp_path):
    result = cli("augment", EXAMPLES / "coco-cells", "-o", tmp_path / "out", "-n", "1", "--seed", "1",
                 "--splits", "training-set")
    warnings = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert warnings == ["warning: nothing to augment: --splits training-set names none of the set's splits "
                        "(train, val)"], result.stderr
