"""How a frame's index is read from its file name: one rule for the loaders and the frame reader.

Datasets number frames in the file name (``img46.jpg``, ``reg_img46.jpg``, ``006_05562.jpg``,
``image000012.jpg``): the index is the *last integer group* of the stem, compared as a number so
``img100`` sorts after ``img46``. This module imports nothing heavy, so loaders can use it.
"""

from __future__ import annotations

import os
import re

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
_INTEGER = re.compile(r"\d+")


def frame_number(name: str) -> int | None:
    """The frame index in a file name, or ``None`` if its stem has no digit.

    >>> frame_number("reg_img100.jpg"), frame_number("006_05562.jpg"), frame_number("notes.txt")
    (100, 5562, None)
    """
    groups = _INTEGER.findall(os.path.splitext(os.path.basename(name))[0])
    return int(groups[-1]) if groups else None


def is_image(name: str) -> bool:
    """Whether a file name has an image suffix we decode."""
    return os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES
