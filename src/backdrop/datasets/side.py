"""Side outputs: files a data set run writes for the user that are not part of the set.

``augment --save-masks`` keeps each training image's mask (255 = the object kept) and clean
background (the object removed, the hole inpainted). They must not lie where a loader of the
set's format looks for images: a Hugging Face ``imagefolder`` walk over ``train/`` took
``train/.../mask.png`` files for training images (12 rows became 24 and the ``label`` column
was lost). They go under the output's hidden record folder instead::

    DST/.backdrop/side/mask/<image rel>.png         DST/.backdrop/side/mask/train/cat/001.jpg.png
    DST/.backdrop/side/background/<image rel>.png   DST/.backdrop/side/background/train/cat/001.jpg.png

``<image rel>`` is the source image's path relative to the set, suffix included, so two images
that differ only in their suffix (``a.png``, ``a.jpg``) never share a side file, and the name
depends on that image alone. Why the record folder and not a folder of their own: every loader
that reads the set already has to pass over ``.backdrop/`` (hidden: skipped by ``datasets``'
imagefolder, Ultralytics' ``glob``, Keras' ``image_dataset_from_directory``; never named by an
index file); a second folder at the set's root would be a second thing to pass over. They are
written through the write protocol like every other output: journaled with their image, so a
rerun resumes them and ``--overwrite`` replaces only them.

>>> side_rel("mask", "train/cat/001.jpg")
'.backdrop/side/mask/train/cat/001.jpg.png'
"""

from __future__ import annotations

from ..outputs import RECORD_DIR

SIDE_DIR = f"{RECORD_DIR}/side"
KINDS = ("mask", "background")


def side_rel(kind: str, image_rel: str) -> str:
    """Where side output ``kind`` (``mask`` or ``background``) of the source image at
    ``image_rel`` goes, relative to the output set."""
    if kind not in KINDS:
        raise ValueError(f"side output kind: expected one of {', '.join(KINDS)}, got {kind!r}")
    return f"{SIDE_DIR}/{kind}/{image_rel}.png"
