"""backdrop.transforms.albumentations.ReplaceBackground inside real albumentations pipelines."""

from __future__ import annotations

import json

import numpy as np
import pytest

A = pytest.importorskip("albumentations")

from backdrop.maskstore import MaskStore  # noqa: E402
from backdrop.transforms.albumentations import ReplaceBackground  # noqa: E402


def scene():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    mask = np.zeros((96, 128), np.uint8)
    mask[10:40, 20:50] = 1
    mask[50:80, 70:110] = 2
    boxes = [[20, 10, 50, 40], [70, 50, 110, 80]]
    return img, mask, boxes


def compose(first, seed=3, fmt="pascal_voc"):
    rest = [A.HorizontalFlip(p=1.0), A.RandomBrightnessContrast(p=0.0)]
    return A.Compose([first, *rest] if first is not None else rest,
                     bbox_params=A.BboxParams(format=fmt, label_fields=["labels"]),
                     keypoint_params=A.KeypointParams(format="xy"), seed=seed)


def test_in_compose_with_other_transforms_after_it():
    img, mask, boxes = scene()
    data = dict(image=img, mask=mask, bboxes=boxes, labels=[1, 2], keypoints=[(25, 15), (80, 60)])
    out = compose(ReplaceBackground(p=1.0))(**data)
    ref = compose(None)(**data)  # the same pipeline without it
    assert np.array_equal(out["mask"], ref["mask"])
    assert np.allclose(out["bboxes"], ref["bboxes"]) and list(out["labels"]) == [1, 2]
    assert np.allclose(out["keypoints"], ref["keypoints"])
    fg = ref["mask"] > 0
    assert np.array_equal(out["image"][fg], ref["image"][fg])  # the object, flipped, every pixel
    assert (out["image"][~fg] != ref["image"][~fg]).any(axis=-1).mean() > 0.9


def test_boxes_only_find_the_stored_masks(tmp_path):
    img, mask, boxes = scene()
    t = ReplaceBackground(p=1.0, masks=tmp_path, on_miss="error")  # a Path or a str
    MaskStore(tmp_path).put(img, boxes, t.core.store_settings("segment"), mask > 0)
    h, w = mask.shape
    # YOLO boxes: normalised centres, so the pixels the transform sees differ by float noise
    yolo = [[(x0 + x1) / 2 / w, (y0 + y1) / 2 / h, (x1 - x0) / w, (y1 - y0) / h] for x0, y0, x1, y1 in boxes]
    out = compose(t, fmt="yolo")(image=img, bboxes=yolo, labels=[0, 1], keypoints=[])
    fg = mask[:, ::-1] > 0
    assert np.array_equal(out["image"][fg], img[:, ::-1][fg])
    assert (out["image"][~fg] != img[:, ::-1][~fg]).any(axis=-1).mean() > 0.9
    assert np.allclose(out["bboxes"], compose(None, fmt="yolo")(image=img, bboxes=yolo, labels=[0, 1],
                                                                 keypoints=[])["bboxes"])
    # on its own (never put in a Compose), boxes are pixels
    alone = ReplaceBackground(p=1.0, masks=str(tmp_path), on_miss="error")(image=img, bboxes=np.array(boxes, float))
    assert np.array_equal(alone["image"][mask > 0], img[mask > 0]) and not np.array_equal(alone["image"], img)


def test_masks_target_union_is_the_object():
    img, mask, _ = scene()
    masks = [(mask == 1).astype(np.uint8), (mask == 2).astype(np.uint8)]
    out = A.Compose([ReplaceBackground(p=1.0)], seed=0)(image=img, masks=masks)
    assert np.array_equal(out["image"][mask > 0], img[mask > 0]) and not np.array_equal(out["image"], img)
    assert all(np.array_equal(a, b) for a, b in zip(out["masks"], masks))


def test_seed_p_and_replay_behave_as_the_librarys_own():
    img, mask, _ = scene()

    def run(seed, p=1.0, n=3):
        aug = A.Compose([ReplaceBackground(p=p)], seed=seed)
        return [aug(image=img, mask=mask)["image"] for _ in range(n)]

    a, b = run(7), run(7)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # Compose(seed=) repeats the sequence
    assert not np.array_equal(a[0], a[1])  # a new background every call
    assert not np.array_equal(run(8)[0], a[0])
    applied = sum(not np.array_equal(x, img) for x in run(1, p=0.5, n=40))
    assert 8 <= applied <= 32
    replay = A.ReplayCompose([ReplaceBackground(p=1.0)])
    first = replay(image=img, mask=mask)
    again = A.ReplayCompose.replay(first["replay"], image=img, mask=mask)
    assert np.array_equal(first["image"], again["image"])


def test_serialisation_round_trip(tmp_path):
    img, mask, _ = scene()
    aug = A.Compose([ReplaceBackground(generator="random", masks=None, on_miss="skip",
                                       generator_options={"random_style": "studio"}, p=1.0)], seed=5)
    path = tmp_path / "aug.json"
    A.save(aug, str(path))
    spec = json.loads(path.read_text())["transform"]["transforms"][0]
    assert spec["__class_fullname__"] == "backdrop.transforms.albumentations.ReplaceBackground"
    assert spec["generator_options"] == {"random_style": "studio"} and spec["on_miss"] == "skip"
    loaded = A.load(str(path))
    loaded.set_random_seed(5)
    aug.set_random_seed(5)
    assert np.array_equal(loaded(image=img, mask=mask)["image"], aug(image=img, mask=mask)["image"])


def test_invalid_arguments_fail_like_albumentations():
    with pytest.raises(ValueError):
        ReplaceBackground(on_miss="maybe")
    with pytest.raises(ValueError):
        ReplaceBackground(p=1.5)
