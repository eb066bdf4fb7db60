"""Hugging Face imagefolder: the documented metadata examples, round trip, bad rows, detection."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from PIL import Image

from backdrop.datasets import FORMATS, detect, open_dataset
from writers import write_copies
from backdrop.errors import InputError

# The datasets docs ("Create an image dataset"): a text feature, and object-detection metadata
# with nested columns.
DOC_ROWS = [
    {"file_name": "0001.png", "additional_feature": "This is a first value of a text feature you added to your images"},
    {"file_name": "0002.png", "additional_feature": "This is a second value of a text feature you added to your images"},
    {"file_name": "sub/0003.png", "objects": {"bbox": [[302.0, 109.0, 73.0, 52.0]], "categories": [0]}},
]


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (16, 12), (5, 6, 7)).save(path)


def make_set(root: Path, rows=DOC_ROWS, *, csv_form: bool = False, splits=("train", "test")) -> Path:
    for split in splits:
        d = root / split
        for r in rows:
            _img(d / r["file_name"])
        d.mkdir(parents=True, exist_ok=True)
        if csv_form:
            with open(d / "metadata.csv", "w", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=["file_name", "additional_feature"])
                w.writeheader()
                for r in rows:
                    w.writerow({k: r.get(k, "") for k in ("file_name", "additional_feature")})
        else:
            (d / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


def test_documented_rows_read(tmp_path):
    ds = open_dataset(make_set(tmp_path / "s"))
    assert ds.format == "imagefolder" and ds.splits == ["train", "test"]
    items = {it.rel: it for it in ds.items(["train"])}
    assert list(items) == ["train/0001.png", "train/0002.png", "train/sub/0003.png"]
    it = items["train/sub/0003.png"]
    assert it.labels is None and it.error is None and it.split == "train"
    assert it.meta["row"] == DOC_ROWS[2] and it.meta["metadata"] == "train/metadata.jsonl"


@pytest.mark.parametrize("csv_form", [False, True])
def test_round_trip_every_column_copied_file_name_rewritten(tmp_path, csv_form):
    src = make_set(tmp_path / "s", csv_form=csv_form)
    ds = open_dataset(src)
    dst = tmp_path / "out"
    res = write_copies(ds, dst, 3)
    name = "metadata.csv" if csv_form else "metadata.jsonl"
    assert res["errors"] == [] and res["index"] == [f"test/{name}", f"train/{name}"]
    assert (dst / "test" / name).read_bytes() == (src / "test" / name).read_bytes()  # copied unchanged
    back = open_dataset(dst)
    rows = [it.meta["row"] for it in back.items(["train"])]
    assert [r["file_name"] for r in rows] == ["0001_bd1.png", "0001_bd2.png", "0001_bd3.png", "0002_bd1.png",
                                              "0002_bd2.png", "0002_bd3.png", "sub/0003_bd1.png",
                                              "sub/0003_bd2.png", "sub/0003_bd3.png"]
    src_rows = {it.meta["row"]["file_name"]: it.meta["row"] for it in ds.items(["train"])}
    for r in rows:
        stem = r["file_name"].rsplit("_bd", 1)[0]
        srow = next(v for k, v in src_rows.items() if k.rsplit(".", 1)[0] == stem)
        assert {k: v for k, v in r.items() if k != "file_name"} == {k: v for k, v in srow.items() if k != "file_name"}
    assert all((dst / "train" / r["file_name"]).is_file() for r in rows)
    if csv_form:
        header = (dst / "train/metadata.csv").read_text().splitlines()[0]
        assert header == "file_name,additional_feature"


def test_root_metadata_is_the_train_split(tmp_path):
    root = tmp_path / "s"
    for r in DOC_ROWS[:2]:
        _img(root / r["file_name"])
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in DOC_ROWS[:2]))
    ds = open_dataset(root)
    assert ds.splits == ["train"]
    assert ds.record(next(ds.items()), "0001_bd1.png", (16, 12))["row"]["file_name"] == "0001_bd1.png"
    write_copies(ds, tmp_path / "o", 1)
    assert [json.loads(x)["file_name"] for x in (tmp_path / "o/metadata.jsonl").read_text().splitlines()] == [
        "0001_bd1.png", "0002_bd1.png"]


def test_bad_rows(tmp_path):
    root = make_set(tmp_path / "s", splits=("train",))
    lines = (root / "train/metadata.jsonl").read_text().splitlines()
    lines += ['{"file_name": "gone.png", "x": 1}', "{not json", '{"text": "no file"}', "[1, 2]",
              json.dumps(DOC_ROWS[0])]
    (root / "train/metadata.jsonl").write_text("\n".join(lines) + "\n")
    items = {it.rel: it for it in open_dataset(root).items()}
    m = root / "train/metadata.jsonl"
    assert items["train/gone.png"].error == f"{m}:4: 'gone.png': no such image"
    assert items["train/metadata.jsonl#line=5"].error.startswith(f"{m}:5: not JSON")
    assert items["train/metadata.jsonl#line=6"].error == f"{m}:6: no 'file_name'"
    assert "expected a JSON object" in items["train/metadata.jsonl#line=7"].error
    assert items["train/0001.png"].error == f"{m}:8: file_name '0001.png' listed again (first on line 1)"
    assert items["train/0002.png"].error is None and items["train/sub/0003.png"].error is None


def test_csv_without_file_name_is_a_set_error(tmp_path):
    root = tmp_path / "s"
    _img(root / "train/a.png")
    (root / "train/metadata.csv").write_text("name,label\na.png,1\n")
    with pytest.raises(InputError, match="no 'file_name' column"):
        open_dataset(root)


def test_detect_recognises_imagefolder_only(tmp_path):
    root = make_set(tmp_path / "s")
    name, what = detect(root)
    assert name == "imagefolder" and "train/metadata.jsonl (train)" in what
    for other in ("yolo", "coco", "masks", "folders", "plain"):
        assert FORMATS[other].detect(root) is None, other
