"""Seeds: where every random choice of a run comes from.

A run has a base seed (given, or drawn once and kept in the output set). An image's seed derives
from the base seed and its path relative to its input root (:func:`item_seed`), so reordering,
resuming, sharding or adding files changes no image's seed; variant *k* of an image uses
``item seed + k - 1`` (:func:`variant_seed`, A1111's batch numbering), so one variant can be
made again alone with ``--seed that_seed -n 1``.
"""

from __future__ import annotations

import hashlib
import secrets


def variant_seed(base: int, k: int) -> int:
    """Seed of variant ``k`` (1-based): ``base + k - 1``, as A1111 numbers a batch."""
    return (base + k - 1) % 2**32


def retry_seed(seed: int, attempt: int) -> int:
    """The seed of a variant's ``attempt``-th regeneration after a failed background check: far
    from every other variant's seed (``seed + k`` would repeat the next variant's background)."""
    return (seed + attempt * 0x9E3779B1) % 2**32


def item_seed(base: int, rel: str) -> int:
    """An image's own seed: from the run's base seed and the image's path relative to its data
    set root, so every image gets other backgrounds, and reordering, resuming, sharding or adding
    files changes no image's seed.

    >>> item_seed(7, "train/cat/001.jpg") == item_seed(7, "train/cat/001.jpg") != item_seed(7, "train/dog/001.jpg")
    True
    """
    digest = hashlib.sha256(f"{int(base)}\0{rel}".encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big")


def draw_seed() -> int:
    """A fresh base seed, for a run that was given none (it is recorded, so the run can be repeated)."""
    return secrets.randbelow(2**31)
