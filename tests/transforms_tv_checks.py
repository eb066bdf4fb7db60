"""Checks of the torchvision adapter and of DataLoader workers, run by test_transforms_torchvision.py
in a subprocess each: torchvision lives apart from the shared environment (see scripts/setup.sh),
and a forked DataLoader inside pytest's process is not safe. Each function raises on failure."""

from __future__ import annotations

import sys
import tempfile
import warnings

import numpy as np
import torch


def scene():
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 255, (3, 96, 128), dtype=torch.uint8, generator=g)
    mask = torch.zeros(96, 128, dtype=torch.uint8)
    mask[10:40, 20:50] = 1
    mask[50:80, 70:110] = 2
    boxes = [[20, 10, 50, 40], [70, 50, 110, 80]]
    return img, mask, boxes


def replaced(out, img, fg):
    assert torch.equal(out[:, fg], img[:, fg]), "object pixels changed"
    assert (out[:, ~fg] != img[:, ~fg]).any(dim=0).float().mean() > 0.9, "background not replaced"


def targets_unchanged_in_compose():
    from torchvision import tv_tensors
    from torchvision.transforms import v2

    from backdrop.maskstore import MaskStore
    from backdrop.transforms.torchvision import ReplaceBackground

    img, mask, boxes = scene()
    fg = mask > 0
    b = tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(96, 128))
    kp = tv_tensors.KeyPoints([[25, 15]], canvas_size=(96, 128))
    flip = v2.RandomHorizontalFlip(p=1.0)
    store = tempfile.mkdtemp()
    # mask only, mask + boxes, boxes only (the stored mask)
    t = ReplaceBackground(masks=store, on_miss="error")
    MaskStore(store).put(img.permute(1, 2, 0).numpy(), boxes, t.core.store_settings("segment"), fg.numpy())
    for target in ({"masks": tv_tensors.Mask(mask[None])},
                   {"masks": tv_tensors.Mask(mask[None]), "boxes": b, "kp": kp},
                   {"boxes": b, "kp": kp}):
        tf = v2.Compose([t, flip])
        out_img, out_t = tf(tv_tensors.Image(img), target)
        ref_img, ref_t = flip(tv_tensors.Image(img), target)
        assert type(out_img) is tv_tensors.Image
        for k in target:
            assert type(out_t[k]) is type(ref_t[k]) and torch.equal(out_t[k], ref_t[k]), k
        replaced(out_img.flip(-1), img, fg)
    # boxes in another format (CXCYWH) find the same stored mask
    c = v2.functional.convert_bounding_box_format(b, new_format="CXCYWH")
    replaced(t(tv_tensors.Image(img), c)[0], img, fg)


def plain_float_and_pil_images():
    from PIL import Image
    from torchvision import tv_tensors

    from backdrop.transforms.torchvision import ReplaceBackground

    img, mask, _ = scene()
    fg = mask > 0
    t = ReplaceBackground()
    m = tv_tensors.Mask(mask)
    out, _ = t(img, m)  # a plain tensor is the image
    assert type(out) is torch.Tensor
    replaced(out, img, fg)
    f = img.float() / 255 + 1e-4  # float pixels that uint8 cannot hold: kept exactly
    out, _ = t(f, m)
    assert out.dtype == torch.float32 and torch.equal(out[:, fg], f[:, fg]) and not torch.equal(out, f)
    pil = Image.fromarray(img.permute(1, 2, 0).numpy())
    out, _ = t(pil, m)
    arr = torch.from_numpy(np.asarray(out)).permute(2, 0, 1)
    replaced(arr, img, fg)
    try:
        t(torch.zeros(1, 3, 8, 8, dtype=torch.uint8), tv_tensors.Mask(torch.zeros(8, 8)))
    except Exception as exc:
        assert type(exc).__name__ == "InputError" and "3 x H x W" in str(exc), exc
    else:
        raise AssertionError("a batch was accepted")


def seeds_and_p():
    from torchvision import tv_tensors

    from backdrop.transforms.torchvision import ReplaceBackground

    img, mask, _ = scene()
    t = ReplaceBackground(p=0.5)
    m = tv_tensors.Mask(mask)

    def run():
        return [t(tv_tensors.Image(img), m)[0] for _ in range(20)]

    torch.manual_seed(3)
    a = run()
    torch.manual_seed(3)
    b = run()
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    applied = sum(not torch.equal(x, img) for x in a)
    assert 3 <= applied <= 17, applied


class Set(torch.utils.data.Dataset):
    def __init__(self, transform, kind):
        self.transform, self.kind = transform, kind
        self.img, self.mask, _ = scene()

    def __len__(self):
        return 6

    def __getitem__(self, i):
        img = torch.roll(self.img, i, dims=-1)
        if self.kind == "torchvision":
            from torchvision import tv_tensors

            return self.transform(tv_tensors.Image(img), tv_tensors.Mask(self.mask))[0].as_subclass(torch.Tensor)
        out = self.transform(image=img.permute(1, 2, 0).numpy(), mask=self.mask.numpy())
        return torch.from_numpy(out["image"]).permute(2, 0, 1)


def dataloader(kind):
    """2 workers: torch.manual_seed(s) reproduces an epoch, two epochs differ, the object stays."""
    init = None
    if kind == "torchvision":
        from backdrop.transforms.torchvision import ReplaceBackground

        transform = ReplaceBackground()
    elif kind == "albumentations":
        import albumentations as A

        from backdrop.transforms.albumentations import ReplaceBackground

        transform = A.Compose([ReplaceBackground(p=1.0)], seed=0)

        def init(worker_id):  # the README's recipe: each worker its own seed, from torch's
            transform.set_random_seed(torch.initial_seed() % 2**32)
    else:
        from backdrop.transforms import ReplaceBackground

        transform = ReplaceBackground()
    ds = Set(transform, kind)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, worker_init_fn=init)

    def epoch():
        return torch.cat(list(loader))

    torch.manual_seed(11)
    e1, e2 = epoch(), epoch()
    torch.manual_seed(11)
    e1again = epoch()
    assert torch.equal(e1, e1again), "the same seed did not reproduce the epoch"
    assert not torch.equal(e1, e2), "two epochs gave the same backgrounds"
    # each worker draws its own backgrounds (not the same as its neighbour's)
    assert not torch.equal(e1[0], torch.roll(e1[2], -2, dims=-1))
    fg = ds.mask > 0
    for i in range(len(ds)):
        img = torch.roll(ds.img, i, dims=-1)
        assert torch.equal(e1[i][:, fg], img[:, fg])


if __name__ == "__main__":
    warnings.simplefilter("error", RuntimeWarning)
    name, *args = sys.argv[1:]
    if name != "dataloader" or args[0] == "torchvision":
        # first: on this CPU set-up it makes PyPI's (CUDA) torchvision importable (see its docstring)
        import backdrop.transforms.torchvision  # noqa: F401
    globals()[name](*args)
    print("ok", name, *args)
