"""Working resolutions: the reduced copies the weight-free stages compute on.

A stage that works at "long side at most N" must not squash the short side of a very long image
to a pixel or two (a 10x10000 input became 1x512, too small to segment or sample). Each side is
therefore reduced by the same scale but never below ``MIN_WORK_SIDE`` pixels (or its full length
when shorter), so an extreme aspect gets a slightly stretched working copy instead of a line. The
working area stays at most ``N * max(N, MIN_WORK_SIDE)`` pixels whatever the input.

>>> working_size(10, 10000, 512)
(10, 512)
>>> working_size(4000, 3000, 512)
(512, 384)
>>> working_size(300, 200, 512)
(300, 200)
"""

from __future__ import annotations

MIN_WORK_SIDE = 64  # a working copy's side is at least this many pixels (or the whole side)


def scaled_size(width: int, height: int, scale: float, *, min_side: int = MIN_WORK_SIDE) -> tuple[int, int]:
    """(width, height) times ``scale`` (at most 1), each side kept at least ``min(side, min_side)``."""
    scale = min(1.0, scale)
    return (max(min(width, min_side), round(width * scale), 1),
            max(min(height, min_side), round(height * scale), 1))


def working_size(width: int, height: int, long_side: int, *, min_side: int = MIN_WORK_SIDE) -> tuple[int, int]:
    """The size of a working copy whose long side is at most ``long_side`` (see module docstring)."""
    return scaled_size(width, height, long_side / max(width, height, 1), min_side=min_side)
