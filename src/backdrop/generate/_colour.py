"""Colour and brightness jitter shared by the weight-free generators (texture, pool)."""

from __future__ import annotations

import cv2
import numpy as np


def jitter(rgb: np.ndarray, variation: float, rng: np.random.Generator) -> np.ndarray:
    """Scale brightness by up to ±variation and each channel by up to ±variation/2 (uint8 in and out).

    The same ``rng`` state gives the same gains, so a seed fixes the look.

    >>> a = np.full((2, 2, 3), 100, np.uint8)
    >>> jitter(a, 0.0, np.random.default_rng(0)) is a
    True
    """
    if variation <= 0:
        return rgb
    brightness = 1.0 + variation * rng.uniform(-1.0, 1.0)
    channels = 1.0 + 0.5 * variation * rng.uniform(-1.0, 1.0, size=3)
    gains = brightness * channels
    # one lookup table per channel: much faster than float maths on every pixel
    lut = np.clip(np.arange(256)[:, None] * gains[None, :] + 0.5, 0, 255).astype(np.uint8)
    return cv2.LUT(np.ascontiguousarray(rgb), lut.reshape(256, 1, 3))
