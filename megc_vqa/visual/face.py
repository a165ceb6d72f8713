"""Optional face crop with OpenCV's bundled Haar cascade.

One box per clip: the face is detected on the onset frame and the same box is applied to every frame,
so the crop never jitters and the motion between frames (what micro-expression models look at) is the
face's own. When no face is found the full frame is used, with a logged warning.

The Haar cascade files ship inside ``opencv-python(-headless)`` 4.x (``cv2.data.haarcascades``).
OpenCV 5 moved ``CascadeClassifier`` out of the main package; there :func:`detect_face` raises a
:class:`FaceDetectorUnavailable` that says so rather than silently skipping the crop.
"""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x, y, width, height in pixels
CASCADE_FILE = "haarcascade_frontalface_default.xml"
# Detection runs on a copy whose shorter side is at most this many pixels: plenty for a face
# filling most of the frame, and much faster than native resolution.
_DETECT_SIDE = 320


class FaceDetectorUnavailable(RuntimeError):
    """This OpenCV build has no Haar cascade face detector."""


@lru_cache(maxsize=1)
def _cascade() -> Any:
    data = getattr(cv2, "data", None)
    folder = getattr(data, "haarcascades", None)
    if not hasattr(cv2, "CascadeClassifier") or folder is None or not (Path(folder) / CASCADE_FILE).is_file():
        raise FaceDetectorUnavailable(
            f"face crop needs OpenCV's Haar cascade (cv2.CascadeClassifier and cv2.data.haarcascades/"
            f"{CASCADE_FILE}); OpenCV {cv2.__version__} does not ship it (OpenCV 5 moved it out): "
            "install opencv-python-headless<5, or run without face crop"
        )
    classifier = cv2.CascadeClassifier(str(Path(folder) / CASCADE_FILE))
    if classifier.empty():
        raise FaceDetectorUnavailable(f"cannot load {Path(folder) / CASCADE_FILE}")
    return classifier


def face_detector_available() -> bool:
    """Whether :func:`detect_face` can run with this OpenCV build."""
    try:
        _cascade()
    except FaceDetectorUnavailable:
        return False
    return True


def detect_face(image: np.ndarray) -> Box | None:
    """The largest frontal face in an RGB (or grey) uint8 image as ``(x, y, w, h)``, or ``None``."""
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    height, width = grey.shape
    shrink = min(1.0, _DETECT_SIDE / min(height, width))
    small = (
        grey if shrink == 1.0 else cv2.resize(grey, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    )
    small = cv2.equalizeHist(small)
    min_side = max(24, int(min(small.shape) * 0.2))  # a face in these datasets fills most of the frame
    found = _cascade().detectMultiScale(small, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    if len(found) == 0:
        return None
    x, y, w, h = max(found, key=lambda box: box[2] * box[3])
    return (int(x / shrink), int(y / shrink), int(w / shrink), int(h / shrink))


def expand_box(box: Box, shape: tuple[int, ...], margin: float = 0.15) -> Box:
    """Grow a box by ``margin`` of its size on each side (Haar boxes cut off brows and chin), clamped to the image."""
    x, y, w, h = box
    height, width = shape[:2]
    dx, dy = round(w * margin), round(h * margin)
    x0, y0 = max(0, x - dx), max(0, y - dy)
    x1, y1 = min(width, x + w + dx), min(height, y + h + dy)
    return (x0, y0, x1 - x0, y1 - y0)


def face_box(onset_frame: np.ndarray, *, margin: float = 0.15, label: str = "") -> Box | None:
    """The clip's crop box, detected on its onset frame, or ``None`` (full frame) with a warning."""
    box = detect_face(onset_frame)
    if box is None:
        logger.warning(
            "%sno face found on the onset frame; using the full frame", f"{label}: " if label else ""
        )
        return None
    return expand_box(box, onset_frame.shape, margin)


def crop(frames: np.ndarray, box: Box | None) -> np.ndarray:
    """Apply one box to a frame ``(H, W, ...)`` or a stack ``(N, H, W, ...)``; ``None`` returns them unchanged."""
    if box is None:
        return frames
    x, y, w, h = box
    if frames.ndim == 4:
        return frames[:, y : y + h, x : x + w]
    return frames[y : y + h, x : x + w]
