"""Stage 2, inpaint: image + mask -> clean background with the object's hole filled."""

from __future__ import annotations

from ..registry import Registry
from ..stages import Inpainter  # noqa: F401 - the stage's contract (backdrop.stages)

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
