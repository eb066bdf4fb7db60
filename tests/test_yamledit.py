"""The line-level data.yaml edit: only the changed keys' lines change; anything unsure is refused."""

from __future__ import annotations

import yaml

from backdrop.datasets.yamledit import DELETE, set_keys

# the shape of Ultralytics' coco8.yaml: a comment header, trailing comments, an empty key,
# a names block and a multi-line download script
COCO8 = """\
# COCO8 dataset (first 8 images of COCO train2017)
# parent
# └── datasets
#     └── coco8  <- downloads here

# Train/val/test sets as 1) dir, 2) file: path/to/imgs.txt, or 3) list
path: ../datasets/coco8 # dataset root dir
train: images/train # train images (relative to 'path') 4 images
val: images/val # val images (relative to 'path') 4 images
test: # test images (optional)

# Classes
names:
  0: person
  1: 'bicycle'   # quoted on purpose
  2: "car"

# Download script/URL (optional)
download: |
  from pathlib import Path
  print('fetch')
"""

# Roboflow's export: four-space blocks and flow lists
ROBOFLOW = """\
train: ../train/images
val: ../valid/images
test: ../test/images

nc: 2
names: ['cell', 'parasite']

roboflow:
    workspace: lab
    version: 3
    url: https://universe.roboflow.com/lab/cells/3
"""


def test_changed_keys_only_every_other_byte_kept():
    new = set_keys(COCO8, {"path": DELETE, "download": DELETE, "train": "train.txt"})
    lines = COCO8.splitlines(keepends=True)
    want = [ln for ln in lines if not ln.startswith(("path:", "download:", "  from", "  print"))]
    want = [("train: train.txt # train images (relative to 'path') 4 images\n" if ln.startswith("train:") else ln)
            for ln in want]
    assert new == "".join(want)
    data = yaml.safe_load(new)
    assert list(data) == ["train", "val", "test", "names"] and data["names"][1] == "bicycle"


def test_four_space_blocks_and_flow_lists_untouched():
    new = set_keys(ROBOFLOW, {"train": "train/images", "val": "valid/images", "test": DELETE})
    assert new == ROBOFLOW.replace("train: ../train/images", "train: train/images") \
        .replace("val: ../valid/images", "val: valid/images").replace("test: ../test/images\n", "")
    assert "    workspace: lab\n" in new  # not re-indented


def test_crlf_and_quoted_hash_kept():
    text = 'path: "/data/a # b"  # where\r\ntrain: images/train\r\nnames: [a]\r\n'
    new = set_keys(text, {"path": ".", "train": "x"})
    assert new == "path: .  # where\r\ntrain: x\r\nnames: [a]\r\n"


def test_a_list_value_and_sequences_at_column_zero():
    text = "train:\n- images/a\n- images/b\n# the val set\nval: images/val\nnames: [a]\n"
    new = set_keys(text, {"train": ["images/a"]})
    assert new == "train:\n- images/a\n# the val set\nval: images/val\nnames: [a]\n"


def test_unsure_layouts_are_refused():
    assert set_keys("---\ntrain: a\n", {"train": "b"}) is None  # a document marker
    assert set_keys("{train: a, val: b}\n", {"train": "b"}) is None  # a flow mapping
    assert set_keys("train: a\ntrain: b\n", {"train": "c"}) is None  # a duplicate key
    assert set_keys("- a\n- b\n", {"train": "c"}) is None  # not a mapping
    assert set_keys("train: [a\n", {"train": "c"}) is None  # not YAML
    # removing the anchor would break the alias: the parsed result differs, so nothing is returned
    assert set_keys("base: &root images\ntrain: *root\n", {"base": DELETE}) is None


def test_missing_key_to_delete_is_fine_but_no_key_is_added():
    assert set_keys("train: a\n", {"download": DELETE}) == "train: a\n"
    assert set_keys("train: a\n", {"val": "b"}) is None
