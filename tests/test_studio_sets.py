"""The data-sets page's logic (backdrop.studio.sets, ui.zip_folder) without Streamlit running."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest

from backdrop.errors import InputError
from backdrop.studio import sets

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "datasets"


def test_check_path_keeps_to_the_allowed_folders(tmp_path):
    allowed = tmp_path / "allowed"
    (allowed / "set").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    assert sets.check_path(allowed / "set", [allowed]) == (allowed / "set").resolve()
    assert sets.check_path("set", [allowed]) == (allowed / "set").resolve()  # relative: from the first root
    for bad in (tmp_path / "secret", allowed / ".." / "secret", "../secret", "/etc"):
        with pytest.raises(InputError, match="outside the allowed folders"):
            sets.check_path(bad, [allowed])
    os.symlink(tmp_path / "secret", allowed / "link")
    with pytest.raises(InputError, match="outside the allowed folders"):
        sets.check_path(allowed / "link", [allowed])  # a link out of the root ends outside it
    with pytest.raises(InputError, match="no such folder"):
        sets.check_path(allowed / "nope", [allowed])
    with pytest.raises(InputError, match="--allow-root"):
        sets.check_path(allowed / "set", [])


def test_candidates_list_the_sets_not_the_folder_that_holds_them():
    found = sets.candidates([EXAMPLES])
    assert [p.name for p in found] == ["coco-cells", "masks-cells", "yolo-cells"]
    assert sets.folder_label(found[2], [EXAMPLES]) == "datasets/yolo-cells"


def test_summary_counts_what_the_labels_say():
    s = sets.summarise(EXAMPLES / "yolo-cells")
    assert s.format == "yolo" and s.images == 10 and s.splits == {"train": 8, "val": 2}
    objects = {"parasite": 0, "red_cell": 0}
    for txt in (EXAMPLES / "yolo-cells" / "labels").rglob("*.txt"):
        for line in txt.read_text().splitlines():
            if line.strip():
                objects[["parasite", "red_cell"][int(line.split()[0])]] += 1
    assert s.classes == {k: v for k, v in objects.items() if v}
    assert s.samples and s.samples[0].split == "train" and not s.n_errors
    img = np.asarray(sets.drawn(s.samples[0], s.names))
    assert max(img.shape[:2]) <= 360
    box = s.samples[0].labels.objects[0].box  # the box's left edge is drawn in its class colour
    scale = img.shape[1] / 256
    x, y = int(box[0] * scale), int((box[1] + box[3]) / 2 * scale)
    assert tuple(img[y, x]) == sets._colour(s.samples[0].labels.objects[0].category)


def test_summary_reports_bad_labels(tmp_path):
    import shutil

    root = tmp_path / "cells"
    shutil.copytree(EXAMPLES / "yolo-cells", root)
    (root / "labels/train/cells_001.txt").write_text("7 0.5 0.5 0.1 0.1\n")
    s = sets.summarise(root)
    assert s.n_errors == 1 and "cells_001.txt" in s.errors[0] and s.images == 10


def test_zip_of_a_job_output_keeps_the_sheet_and_leaves_the_record(tmp_path):
    pytest.importorskip("streamlit")
    from typer.testing import CliRunner

    from backdrop.cli import app
    from backdrop.studio.ui import zip_folder

    out = tmp_path / "aug"
    res = CliRunner().invoke(app, ["augment", str(EXAMPLES / "coco-cells"), "-o", str(out), "-n", "1",
                                   "--generator", "texture", "--seed", "2", "-q"])
    assert res.exit_code == 0, res.output
    with zipfile.ZipFile(io.BytesIO(zip_folder(out))) as zf:
        names = set(zf.namelist())
    assert "preview.html" in names and "manifest.jsonl" in names
    assert any(n.startswith(".backdrop/preview/thumbs/") for n in names)
    assert not any(n.startswith((".backdrop/items", ".backdrop/locks", ".backdrop/tmp")) for n in names)
    assert ".backdrop/set.json" not in names
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file() and ".backdrop" not in p.parts}
    assert on_disk <= names
