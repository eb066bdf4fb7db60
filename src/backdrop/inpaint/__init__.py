"""Stage 2, inpaint: image + mask -> clean background with the object's hole filled."""

from __future__ import annotations

from typing import Protocol

from PIL import Image

from ..registry import Registry


class Inpainter(Protocol):
    name: str

    def __call__(self, image: Image.Image, mask: Image.Image) -> Image.Image: ...


INPAINTERS = Registry(
    "inpaint",
    {
        "telea": ".inpaint.opencv:TeleaInpainter",
        "ns": ".inpaint.opencv:NavierStokesInpainter",
    },
    {
        "telea": "OpenCV fast marching (Telea 2004)",
        "ns": "OpenCV Navier-Stokes (Bertalmio 2001)",
    },
)
