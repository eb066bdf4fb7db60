"""Adding a data set format and a generator takes one module and its registrations, nothing else:
a toy format and a toy generator, written into a temporary module, registered there, and run
end to end through ``backdrop.augment`` and the CLI (the help and the error messages list them)."""

from __future__ import annotations

import importlib
import json
import sys
import textwrap
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw
from typer.testing import CliRunner

TOY_MODULE = '''
"""A toy labelled format (``toy.json``: {image: [x0, y0, x1, y1] box of its one object}) and a
toy generator (a flat colour per seed), registered by this module alone."""

import json
from pathlib import Path

from PIL import Image

from backdrop.datasets import register_format
from backdrop.datasets.base import Dataset, Item, has_images
from backdrop.datasets.labels import Labels, Obj
from backdrop.generate import GENERATORS
from backdrop.stages import Generator


class ToyDataset(Dataset):
    format = "toy"

    def __init__(self, root):
        super().__init__(root, [""])
        self.boxes = json.loads((Path(root) / "toy.json").read_text())

    def _entries(self, chosen):
        return [(name, "", Path(self.root) / name, {}) for name in self.boxes] if self._wants(chosen, "") else []

    def _item(self, rel, split, path, meta):
        return Item(path, rel, split, Labels((Obj(0, tuple(self.boxes[rel])),)), meta)

    def record(self, item, image_rel, size):
        return {"box": self.boxes[item.rel]}

    def finalize(self, dst, records, *, copied=()):
        out = {r["rel"]: r["box"] for r in records}
        (Path(dst) / "toy.json").write_text(json.dumps(out, sort_keys=True))
        return ["toy.json"]


class ToyFormat:
    name = "toy"
    looks_for = "toy.json beside the images"
    fallback = False

    def detect(self, root):
        root = Path(root)
        return "toy set" if (root / "toy.json").is_file() and has_images(root) else None

    def open(self, root):
        return ToyDataset(root)


class FlatGenerator(Generator):
    name = "toy-flat"
    uses_prompt = False
    uses_background = False

    def __init__(self, config):
        self.config = config

    def __call__(self, request):
        return Image.new("RGB", request.image.size, (request.seed % 256, 200, 30))

    def describe(self):
        return {"model": None}


register_format(ToyFormat())
GENERATORS.register("toy-flat", f"{__name__}:FlatGenerator", "a flat colour per seed (a test's toy)")
'''


@pytest.fixture
def toy(tmp_path, monkeypatch):
    """The toy module, imported from a temporary folder; unregistered afterwards."""
    from backdrop.datasets import FORMATS
    from backdrop.generate import GENERATORS

    folder = tmp_path / "plugin"
    folder.mkdir()
    (folder / "backdrop_toy_plugin.py").write_text(textwrap.dedent(TOY_MODULE))
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module("backdrop_toy_plugin")
    yield module
    FORMATS.unregister("toy")
    GENERATORS.unregister("toy-flat")
    sys.modules.pop("backdrop_toy_plugin", None)


def make_toy_set(root, n=3):
    root.mkdir()
    boxes = {}
    for i in range(n):
        img = Image.new("RGB", (64, 48), (180, 180, 180))
        ImageDraw.Draw(img).rectangle((10 + i, 12, 30 + i, 34), fill=(20, 30, 120))
        img.save(root / f"t{i}.png")
        boxes[f"t{i}.png"] = [10 + i, 12, 31 + i, 35]
    (root / "toy.json").write_text(json.dumps(boxes))
    return boxes


def test_toy_format_and_generator_end_to_end(toy, tmp_path):
    from backdrop import GenerateConfig, PipelineConfig, augment
    from backdrop.config import preset

    boxes = make_toy_set(tmp_path / "set")
    cfg = replace(preset("offline", PipelineConfig(variants=2, seed=3)), generate=GenerateConfig(backend="toy-flat"))
    summary = augment(tmp_path / "set", tmp_path / "out", config=cfg)  # format auto: found by its detect()
    assert summary.failed == [] and summary.done == 3 and summary.images == 6
    index = json.loads((tmp_path / "out" / "toy.json").read_text())
    assert sorted(index) == sorted(f"t{i}_bd{k}.png" for i in range(3) for k in (1, 2))
    for rel, box in index.items():
        src = np.asarray(Image.open(tmp_path / "set" / rel.replace("_bd1", "").replace("_bd2", "")).convert("RGB"))
        out = np.asarray(Image.open(tmp_path / "out" / rel).convert("RGB"))
        x0, y0, x1, y1 = box
        assert box == boxes[rel.split("_bd")[0] + ".png"]
        assert np.array_equal(out[y0 + 2:y1 - 2, x0 + 2:x1 - 2], src[y0 + 2:y1 - 2, x0 + 2:x1 - 2])  # object kept
        assert tuple(out[1, 1]) != tuple(src[1, 1]) and out[1, 1][1] == 200  # the toy generator's background
    lines = [json.loads(x) for x in (tmp_path / "out" / "manifest.jsonl").read_text().splitlines()]
    assert {m["backends"]["generate"] for m in lines} == {"toy-flat"}


def test_toy_registrations_reach_the_cli(toy, tmp_path):
    from backdrop.cli import app

    make_toy_set(tmp_path / "set", n=1)
    result = CliRunner().invoke(app, ["augment", str(tmp_path / "set"), "-o", str(tmp_path / "out"), "-n", "1",
                                      "--format", "toy", "--generator", "toy-flat", "--segmenter", "classical", "-q"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "t0_bd1.png").is_file()
    bad = CliRunner().invoke(app, ["augment", str(tmp_path / "set"), "-o", str(tmp_path / "o2"), "--format", "nope"])
    assert bad.exit_code == 2 and "toy" in bad.output  # the allowed values come from the registry
    backends = CliRunner().invoke(app, ["backends"])
    assert "toy-flat" in backends.output


def test_auto_detection_message_lists_registered_formats(toy, tmp_path):
    from backdrop.datasets import detect
    from backdrop.errors import InputError

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=r"toy \(toy.json beside the images\).*plain \(any folder of images\)$"):
        detect(tmp_path / "empty")


# -- the README's tables are the registries' lists ------------------------------------------------------------

def _readme_rows(header: str) -> list[list[str]]:
    from pathlib import Path

    lines = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8").splitlines()
    start = lines.index(header)
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def _names(cell: str) -> list[str]:
    import re

    return re.findall(r"`([^`]+)`", cell.split("(")[0])


def test_readme_formats_table_is_the_registry():
    from backdrop.datasets import FORMATS

    rows = _readme_rows("| format | layout read and written | labels | foreground |")
    assert [_names(r[0])[0] for r in rows] == list(FORMATS)


def test_readme_backends_table_is_the_registries():
    from backdrop.caption import CAPTIONERS
    from backdrop.generate import GENERATORS
    from backdrop.inpaint import INPAINTERS
    from backdrop.refine import REFINERS
    from backdrop.segment import SEGMENTERS

    rows = _readme_rows("| stage | backend | needs | extra | what it does |")
    table: dict[str, list[str]] = {}
    for r in rows:
        table.setdefault(r[0], []).extend(_names(r[1]))
    registries = {"segment": SEGMENTERS, "inpaint": INPAINTERS, "caption": CAPTIONERS, "refine": REFINERS,
                  "generate": GENERATORS}
    # every backend has its row and no row names one that is gone (the rows' order is the README's)
    assert {k: sorted(v) for k, v in table.items()} == {k: sorted(r.names()) for k, r in registries.items()}


def test_readme_presets_table_is_the_registry():
    from backdrop.config import PRESETS

    rows = _readme_rows("| preset | segment | inpaint | caption | refine | generate |")
    assert [_names(r[0])[0] for r in rows] == list(PRESETS)


def test_a_capability_is_read_from_the_contract_before_a_backend_is_built():
    """Registry.capability: what a registered generator declares (swap needs the set's donor
    store), and the contract's default for a class that does not subclass the stage's base."""
    from backdrop.generate import GENERATORS as registry

    class Plain:  # a caller's own generator class: no flags declared
        def __init__(self, config):
            pass

    registry.register("test-plain", Plain)
    try:
        assert registry.capability("swap", "needs_set") is True
        assert registry.capability("random", "needs_set") is False
        assert registry.capability("test-plain", "needs_set") is False
        assert registry.capability("test-plain", "uses_prompt") is True  # the contract's default
        names = registry.single_image_names()
        assert "test-plain" in names and "random" in names and "swap" not in names
    finally:
        registry.unregister("test-plain")
