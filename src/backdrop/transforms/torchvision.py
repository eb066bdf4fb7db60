"""``ReplaceBackground`` as a ``torchvision.transforms.v2.Transform``.

Takes ``tv_tensors`` (``Image``, ``Mask``, ``BoundingBoxes``, ``KeyPoints``), plain tensors as
images (``C x H x W``, uint8 or float in 0..1) and PIL images; only the image changes, outside
the object::

    from torchvision.transforms import v2
    from backdrop.transforms.torchvision import ReplaceBackground

    tf = v2.Compose([ReplaceBackground(generator="random", p=0.8), v2.RandomHorizontalFlip(),
                     v2.ToDtype(torch.float32, scale=True)])
    img, target = tf(tv_tensors.Image(img), {"boxes": boxes, "masks": masks})

Each call's seed (and ``p``) comes from torch's global generator: ``torch.manual_seed(s)``
reproduces an epoch, and a DataLoader's per-worker seeds give each worker, and each epoch, its
own backgrounds.

Packaging: PyPI's torchvision 0.28.0 (the pair of the pinned CPU torch 2.13.0) is a CUDA build;
its C operators cannot load on CPU torch, and ``import torchvision`` then fails with
``operator torchvision::nms does not exist``. The transforms used here are pure Python, so when
that import fails this module declares the two operator schemas torchvision's import registers
fakes for (``nms``, ``qnms``; they stay without a kernel) and imports again. ``scripts/setup.sh``
installs torchvision apart, in ``.venv/torchvision-isolated`` (add it to ``PYTHONPATH``), because
a torchvision that fails to import also breaks ``transformers``' image processors.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

import numpy as np

from ..registry import require

log = logging.getLogger(__name__)

torch = require("torch", "caption", "the torchvision transform")


def _import_torchvision() -> Any:
    try:
        return require("torchvision", "torchvision", "the torchvision transform")
    except RuntimeError:
        # a torchvision built for CUDA torch on a CPU torch: its C ops did not load (see above)
        for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[name]
        lib = torch.library.Library("torchvision", "FRAGMENT")
        for op in ("nms", "qnms"):
            if not hasattr(torch.ops.torchvision, op):
                lib.define(f"{op}(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _import_torchvision.lib = lib  # keep the definitions alive
        log.debug("torchvision's C operators are unavailable (a CUDA build on CPU torch); pure-Python transforms only")
        return require("torchvision", "torchvision", "the torchvision transform")


_import_torchvision()
from PIL import Image  # noqa: E402
from torchvision import tv_tensors  # noqa: E402
from torchvision.transforms import v2  # noqa: E402
from torchvision.transforms.v2 import functional as F  # noqa: E402

from ..errors import InputError  # noqa: E402
from .core import ReplaceBackground as _Core  # noqa: E402

__all__ = ["ReplaceBackground"]


def _is_image(x: Any) -> bool:
    return isinstance(x, (tv_tensors.Image, Image.Image)) or (
        isinstance(x, torch.Tensor) and not isinstance(x, tv_tensors.TVTensor))


class ReplaceBackground(v2.Transform):
    """A new background on every call; masks, boxes and keypoints come back unchanged.

    Arguments as :class:`backdrop.transforms.ReplaceBackground` (``generator``, ``backgrounds``,
    ``p``, ``on_miss``, ``masks``, ``segment``, ``box_grow``, ``box_min_cover``, ``prompt``,
    generator options), except ``seed``: torch's generator decides.
    """

    def __init__(self, generator: str = "random", backgrounds: Any = None, p: float = 1.0, **options: Any):
        super().__init__()
        if "seed" in options:
            raise TypeError("seed: the torchvision transform draws from torch's generator (torch.manual_seed)")
        self.p = float(p)
        self.core = _Core(generator, backgrounds, p=1.0, **options)
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be between 0 and 1, got {p!r}")

    def extra_repr(self) -> str:
        return f"generator={self.core.generator!r}, p={self.p}, on_miss={self.core.on_miss!r}"

    def forward(self, *inputs: Any) -> Any:
        if self.p < 1.0 and torch.rand(1).item() >= self.p:
            return inputs if len(inputs) > 1 else inputs[0]
        return super().forward(*inputs)

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        image = next((x for x in flat_inputs if _is_image(x)), None)
        if image is None:
            raise InputError("ReplaceBackground: no image in the sample (a tv_tensors.Image, a tensor or a PIL image)")
        arr = _to_hwc_uint8(image)
        h, w = arr.shape[:2]
        masks = [x for x in flat_inputs if isinstance(x, tv_tensors.Mask)]
        mask = None
        if masks:
            mask = np.zeros((h, w), bool)
            for m in masks:
                t = m.as_subclass(torch.Tensor)
                if tuple(t.shape[-2:]) != (h, w):
                    raise InputError(f"mask is {tuple(t.shape)}, the image {h}x{w}: they must match")
                mask |= (t.reshape(-1, h, w) != 0).any(dim=0).numpy()
        boxes = None
        found = [x for x in flat_inputs if isinstance(x, tv_tensors.BoundingBoxes)]
        if mask is None and found:
            xyxy = [F.convert_bounding_box_format(b, new_format=tv_tensors.BoundingBoxFormat.XYXY) for b in found]
            boxes = torch.cat([b.as_subclass(torch.Tensor).reshape(-1, 4) for b in xyxy]).double().numpy()
        seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
        return {"image": image, "array": arr, "seed": seed, "foreground": self.core.foreground(arr, mask, boxes)}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if inpt is not params["image"] or params["foreground"] is None:
            return inpt
        out = self.core.apply(params["array"], params["foreground"], params["seed"])
        return _like(out, inpt, params["foreground"])


def _to_hwc_uint8(image: Any) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    t = image.as_subclass(torch.Tensor) if isinstance(image, tv_tensors.TVTensor) else image
    if t.ndim != 3 or t.shape[0] != 3:
        raise InputError(f"image must be a 3 x H x W tensor (RGB), got shape {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        arr = t
    elif t.is_floating_point():
        arr = (t.clamp(0, 1) * 255).round().to(torch.uint8)
    else:
        raise InputError(f"image must be uint8 or float in 0..1, got {t.dtype}")
    return np.ascontiguousarray(arr.detach().cpu().permute(1, 2, 0).numpy())


def _like(out: np.ndarray, inpt: Any, fg: np.ndarray) -> Any:
    if isinstance(inpt, Image.Image):
        return Image.fromarray(out, "RGB")
    t = torch.from_numpy(out).permute(2, 0, 1).contiguous()
    plain = inpt.as_subclass(torch.Tensor) if isinstance(inpt, tv_tensors.TVTensor) else inpt
    if plain.is_floating_point():
        # only the background is new: the object's float pixels are kept exactly as given
        t = torch.where(torch.from_numpy(fg).to(plain.device), plain, (t.to(plain.dtype) / 255).to(plain.device))
    t = t.to(plain.device)
    return tv_tensors.wrap(t, like=inpt) if isinstance(inpt, tv_tensors.TVTensor) else t
