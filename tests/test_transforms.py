"""backdrop.transforms.ReplaceBackground (the framework-free core) and backdrop.maskstore."""

from __future__ import annotations

import pickle
import warnings

import numpy as np
import pytest

from backdrop.errors import BackdropError, ConfigError, InputError
from backdrop.maskstore import MaskStore
from backdrop.transforms import ReplaceBackground
from backdrop.transforms.core import segment_mask


def scene(h=96, w=128, seed=0):
    """A textured image with two objects; the mask and the boxes of both."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    mask[10:40, 20:50] = 1
    mask[50:80, 70:110] = 2  # an instance mask: any non-zero value is object
    boxes = np.array([[20, 10, 50, 40], [70, 50, 110, 80]], np.float32)
    return img, mask, boxes


def assert_replaced(out, img, fg):
    assert out.dtype == np.uint8 and out.shape == img.shape
    assert np.array_equal(out[fg], img[fg]), "object pixels changed"
    assert (out[~fg] != img[~fg]).any(axis=-1).mean() > 0.9, "background not replaced"


def test_mask_target_keeps_object_and_returns_targets_unchanged():
    img, mask, boxes = scene()
    before = img.copy(), mask.copy(), boxes.copy()
    t = ReplaceBackground(seed=1)
    out = t(image=img, mask=mask, bboxes=boxes, keypoints=[(1, 2)])
    assert set(out) == {"image", "mask", "bboxes", "keypoints"}
    assert out["mask"] is mask and out["bboxes"] is boxes and out["keypoints"] == [(1, 2)]
    assert_replaced(out["image"], img, mask > 0)
    # the inputs are not written to
    assert np.array_equal(img, before[0]) and np.array_equal(mask, before[1]) and np.array_equal(boxes, before[2])


def test_new_background_every_call_and_seeded_instances_repeat():
    img, mask, _ = scene()
    t = ReplaceBackground(seed=3)
    a, b = t(image=img, mask=mask)["image"], t(image=img, mask=mask)["image"]
    assert not np.array_equal(a, b)
    u = ReplaceBackground(seed=3)
    assert np.array_equal(u(image=img, mask=mask)["image"], a)
    assert np.array_equal(u(image=img, mask=mask)["image"], b)
    # an explicit per-call seed fixes the background whatever the instance
    assert np.array_equal(t(image=img, mask=mask, seed=7)["image"], u(image=img, mask=mask, seed=7)["image"])


def test_unseeded_calls_follow_the_frameworks_global_seed():
    import torch

    img, mask, _ = scene()
    t = ReplaceBackground()
    torch.manual_seed(5)
    a = [t(image=img, mask=mask)["image"] for _ in range(2)]
    torch.manual_seed(5)
    b = [t(image=img, mask=mask)["image"] for _ in range(2)]
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], a[1])


def test_p_zero_and_p_half():
    img, mask, _ = scene()
    out = ReplaceBackground(p=0.0, seed=0)(image=img, mask=mask)
    assert out["image"] is img
    t = ReplaceBackground(p=0.5, seed=0)
    changed = sum(not np.array_equal(t(image=img, mask=mask)["image"], img) for _ in range(40))
    assert 8 <= changed <= 32


def test_empty_boxes_mean_all_background():
    img, _, _ = scene()
    out = ReplaceBackground(seed=0, masks=None, on_miss="error")(image=img, bboxes=np.zeros((0, 4)))
    assert (out["image"] != img).any(axis=-1).mean() > 0.9


def test_on_miss_box_skip_error(tmp_path):
    img, mask, boxes = scene()
    store = tmp_path / "store"
    with pytest.warns(RuntimeWarning, match="whole boxes kept"):
        out = ReplaceBackground(seed=0, masks=store, on_miss="box")(image=img, bboxes=boxes)
    fg = np.zeros(mask.shape, bool)
    fg[10:40, 20:50] = fg[50:80, 70:110] = True
    assert_replaced(out["image"], img, fg)
    with pytest.warns(RuntimeWarning, match="left as it is"):
        out = ReplaceBackground(seed=0, masks=store, on_miss="skip")(image=img, bboxes=boxes)
    assert out["image"] is img
    with pytest.raises(InputError, match="backdrop masks"):
        ReplaceBackground(seed=0, masks=store, on_miss="error")(image=img, bboxes=boxes)
    assert not store.exists() or not any(store.rglob("*.png"))  # box/skip/error store nothing


def test_stored_mask_is_found_by_pixels_and_boxes(tmp_path):
    img, mask, boxes = scene()
    t = ReplaceBackground(seed=0, masks=tmp_path, on_miss="error")
    fg = mask > 0
    store = MaskStore(tmp_path)
    assert store.put(img, boxes, t.store_settings("segment"), fg)
    out = t(image=img, bboxes=boxes)
    assert_replaced(out["image"], img, fg)
    assert t.stats["stored"] == 1
    # the loader's boxes differ by float noise and order: still a hit
    jitter = boxes[::-1] + np.float32(1e-4)
    assert t(image=img, bboxes=jitter)["image"] is not img
    # other boxes, other pixels: a miss
    with pytest.raises(InputError):
        t(image=img, bboxes=boxes + 5)
    other = img.copy()
    other[0, 0, 0] ^= 1
    with pytest.raises(InputError):
        t(image=other, bboxes=boxes)


def test_store_compares_its_record_not_only_the_file_name(tmp_path):
    img, mask, boxes = scene()
    store = MaskStore(tmp_path)
    settings = {"source": "labels"}
    store.put(img, boxes, settings, mask > 0)
    other = np.zeros_like(img)
    # a file copied under the other image's name is not taken for its mask
    target = store.path(store.facts(other, boxes, settings))
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(store.path(store.facts(img, boxes, settings)).read_bytes())
    assert store.get(other, boxes, settings) is None
    # a second put of the same key writes nothing (never a replace)
    assert store.put(img, boxes, settings, np.ones(mask.shape, bool)) is False
    assert np.array_equal(store.get(img, boxes, settings), mask > 0)
    # a truncated file is a miss, not an error
    path = store.path(store.facts(img, boxes, settings))
    path.write_bytes(path.read_bytes()[:40])
    assert store.get(img, boxes, settings) is None


def test_read_only_store_put_fails_cleanly_and_transform_goes_on(tmp_path, monkeypatch):
    img, mask, boxes = scene()
    store_dir = tmp_path / "ro"
    store_dir.mkdir()
    t = ReplaceBackground(seed=0, masks=store_dir, on_miss="segment", segment="classical")
    from backdrop import outputs

    def full_disk(path, data):
        raise outputs.io_error(OSError(28, "No space left on device"), path)

    monkeypatch.setattr(outputs, "write_new", full_disk)
    with pytest.warns(RuntimeWarning, match="segmenter"):
        out = t(image=img, bboxes=boxes)
    assert out["image"] is not img and t.stats["segmented"] == 1
    assert not any(store_dir.rglob("*.png"))
    with pytest.raises(BackdropError):
        MaskStore(store_dir).put(img, boxes, {"source": "labels"}, mask > 0)


def test_on_miss_segment_runs_the_segmenter_once_then_the_store_answers(tmp_path):
    img, mask, boxes = scene()
    t = ReplaceBackground(seed=0, masks=tmp_path, segment="classical")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = t(image=img, bboxes=boxes)["image"]
        t(image=img, bboxes=boxes)
    assert sum("segmenter" in str(w.message) for w in caught) == 1  # warned once
    assert t.stats == {**t.stats, "segmented": 1, "stored": 1}
    # what was stored is the labels-aware rule's mask: augment's steps on the same pixels
    stored = MaskStore(tmp_path).get(img, boxes, t.store_settings("segment"))
    from backdrop.datasets.labels import Labels, Obj, segment_plan

    region = segment_plan(Labels(tuple(Obj(-1, tuple(b)) for b in boxes)), (128, 96), t.box_grow)[1]
    assert np.array_equal(stored, segment_mask(t.pipeline, img, region, [tuple(b) for b in boxes], t.box_min_cover))
    assert np.array_equal(first[stored], img[stored])
    # nothing of the object outside the grown boxes
    assert not stored[~region].any()


def test_pickles_without_loaded_state_and_works_after(tmp_path):
    img, mask, _ = scene()
    t = ReplaceBackground(seed=4)
    t(image=img, mask=mask)
    assert t._gen is not None
    u = pickle.loads(pickle.dumps(t))
    assert u._gen is None and u.seed == 4
    assert np.array_equal(u(image=img, mask=mask)["image"], ReplaceBackground(seed=4)(image=img, mask=mask)["image"])


@pytest.mark.parametrize("generator", ["pool", "texture"])
def test_other_generators(tmp_path, generator):
    from PIL import Image

    img, mask, _ = scene()
    kw = {}
    if generator == "pool":
        pool = tmp_path / "pool"
        pool.mkdir()
        Image.fromarray(np.full((60, 80, 3), (10, 200, 30), np.uint8)).save(pool / "green.png")
        kw = {"backgrounds": pool, "variation": 0.0}
    t = ReplaceBackground(generator, seed=0, **kw)
    out = t(image=img, mask=mask)["image"]
    assert np.array_equal(out[mask > 0], img[mask > 0])
    assert not np.array_equal(out, img)
    if generator == "pool":
        assert (np.abs(out[mask == 0].astype(int) - (10, 200, 30)) <= 2).all()


def test_bad_input_is_one_clear_error():
    img, mask, _ = scene()
    t = ReplaceBackground(seed=0)
    with pytest.raises(InputError, match="H x W x 3 uint8"):
        t(image=img.astype(np.float32), mask=mask)
    with pytest.raises(InputError, match="mask is 10x10"):
        t(image=img, mask=np.zeros((10, 10)))
    with pytest.raises(InputError, match="N x 4"):
        t(image=img, bboxes=[1, 2, 3])
    with pytest.raises(ConfigError, match="between 0 and 1"):
        ReplaceBackground(p=2)
    with pytest.raises(ConfigError, match="on_miss"):
        ReplaceBackground(on_miss="maybe")
    with pytest.raises(ConfigError, match="pool needs a folder"):
        ReplaceBackground("pool")
    with pytest.raises(ConfigError, match="unknown generator option"):
        ReplaceBackground(colour="red")
    with pytest.raises(BackdropError, match="choose one of"):
        ReplaceBackground("nope")


@pytest.mark.parametrize("module, absent", [
    ("backdrop.transforms", ("torch", "torchvision", "albumentations", "onnxruntime", "transformers")),
    # albumentations imports torch itself where it is installed; torchvision must stay out
    ("backdrop.transforms.albumentations", ("torchvision", "onnxruntime", "transformers")),
])
def test_core_and_albumentations_adapter_stay_light(module, absent):
    import subprocess
    import sys

    if module.endswith("albumentations"):
        pytest.importorskip("albumentations")
    code = (f"import sys, numpy as np\nfrom {module} import ReplaceBackground\n"
            "img = np.zeros((32, 48, 3), np.uint8); m = np.zeros((32, 48), np.uint8); m[5:9, 5:9] = 1\n"
            f"out = ReplaceBackground(p=1.0)(image=img, mask=m)\n"
            f"print('LOADED=' + ','.join(x for x in {absent!r} if x in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "LOADED=", proc.stdout


def test_swap_draws_from_a_donor_store(tmp_path):
    from backdrop.generate.donors import write_store

    img, mask, _ = scene()
    colours = [(250, 10, 10), (10, 250, 10), (10, 10, 250)]
    entries = [(f"d{i}.png", None, np.full((60, 80, 3), c, np.uint8), np.zeros((60, 80), bool))
               for i, c in enumerate(colours)]
    write_store(tmp_path / "donors", entries)
    with pytest.raises(ConfigError, match="donors=DIR"):
        ReplaceBackground("swap")
    t = ReplaceBackground("swap", donors=tmp_path / "donors", seed=0, variation=0.0)
    seen = set()
    for _ in range(12):
        out = t(image=img, mask=mask)["image"]
        assert np.array_equal(out[mask > 0], img[mask > 0])
        bg = out[mask == 0].astype(int)
        match = [c for c in colours if (np.abs(bg - c) <= 3).all()]
        assert len(match) == 1, bg[:3]
        seen.add(match[0])
    assert len(seen) >= 2  # a new donor along the calls
    assert pickle.loads(pickle.dumps(t)).donors == str(tmp_path / "donors")
