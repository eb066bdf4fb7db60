"""Working resolutions keep a usable short side and a bounded area (issue 9, case 11)."""

from __future__ import annotations

import pytest

from backdrop.worksize import MIN_WORK_SIDE, scaled_size, working_size


@pytest.mark.parametrize(
    "size, long_side, want",
    [
        ((10, 10000), 512, (10, 512)),  # was (1, 512)
        ((10000, 10), 512, (512, 10)),
        ((300, 60000), 512, (MIN_WORK_SIDE, 512)),
        ((4000, 3000), 512, (512, 384)),  # ordinary aspects: as before
        ((6000, 300), 512, (512, MIN_WORK_SIDE)),
        ((200, 100), 512, (200, 100)),  # small images are not enlarged
    ],
)
def test_working_size(size, long_side, want):
    assert working_size(*size, long_side) == want


@pytest.mark.parametrize("w, h", [(8, 8), (8, 10**7), (10**7, 9), (7745, 7745), (12345, 77)])
def test_working_area_is_bounded(w, h):
    ws, hs = working_size(w, h, 512)
    assert 1 <= ws <= w and 1 <= hs <= h
    assert ws * hs <= 512 * max(512, MIN_WORK_SIDE)


def test_scaled_size_never_enlarges():
    assert scaled_size(100, 50, 2.0) == (100, 50)
    assert scaled_size(1000, 20, 0.01) == (MIN_WORK_SIDE, 20)
