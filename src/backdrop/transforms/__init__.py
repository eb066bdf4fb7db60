"""Background replacement inside a training loop: a new background on every call.

- :class:`ReplaceBackground` (this package): framework-free, numpy in and out;
- :mod:`backdrop.transforms.albumentations`: the same as an ``albumentations.DualTransform``
  (extra ``backdrop[albumentations]``);
- :mod:`backdrop.transforms.torchvision`: the same as a ``torchvision.transforms.v2.Transform``
  (torchvision, see the README's set-up).

Masks come from the caller, or from the mask store that ``backdrop masks SRC`` fills
(:mod:`backdrop.maskstore`), so no epoch runs the segmenter.
"""

from .core import ReplaceBackground, draw_seed

__all__ = ["ReplaceBackground", "draw_seed"]
