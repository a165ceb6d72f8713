"""Face detection for the visual inputs: OpenCV's bundled Haar cascade (the floor) and dlib's HOG
detector with 68 landmarks (the face pipeline, :mod:`megc_vqa.visual.facepipe`).

The earlier face crop (``face: box``, what ``face_crop: true`` meant): one box per clip: the face is detected on the onset frame and the same box is applied to every frame,
so the crop never jitters and the motion between frames (what micro-expression models look at) is the
face's own. When no face is found the full frame is used, with a logged warning.

The Haar cascade files ship inside ``opencv-python(-headless)`` 4.x (``cv2.data.haarcascades``).
OpenCV 5 moved ``CascadeClassifier`` out of the main package; there :func:`detect_face` raises a
:class:`FaceDetectorUnavailable` that says so rather than silently skipping the crop.

dlib comes from the ``dlib-bin`` wheel and its model files from ``face-recognition-models`` (both on PyPI,
installed by ``make install``; nothing is downloaded at run time). The 68-landmark model was trained on the
iBUG 300-W data set, whose licence excludes commercial use: a commercial user must train or buy another
landmark model. :func:`locate_face` is the one face finder of the pipeline; it never falls back silently.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from megc_vqa.errors import MegcError
from megc_vqa.face_settings import FACE_DETECTORS, FACE_MODES, MAX_MAGNIFY, FaceSettings
from megc_vqa.visual.errors import FaceSkip

__all__ = [
    "FACE_DETECTORS",
    "FACE_MODES",
    "MAX_MAGNIFY",
    "Box",
    "Face",
    "FaceDetectorUnavailable",
    "FaceSettings",
    "FaceSkip",
    "crop",
    "detect_face",
    "face_box",
    "locate_face",
]

logger = logging.getLogger(__name__)

Box = tuple[int, int, int, int]  # x, y, width, height in pixels
CASCADE_FILE = "haarcascade_frontalface_default.xml"
# Detection runs on a copy whose shorter side is at most this many pixels: plenty for a face
# filling most of the frame, and much faster than native resolution.
_DETECT_SIDE = 320


class FaceDetectorUnavailable(MegcError, RuntimeError):
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


# ---------------------------------------------------------------------------------------------------------
# The face pipeline's detector: dlib (HOG frontal detector + 68 landmarks), Haar as the floor.

# Two detections whose widths are within this ratio are two faces: which one is the subject cannot be
# guessed. A much smaller detection (a photo on the wall, a false hit in the background) is ignored.
SIMILAR_FACE_RATIO = 0.6
LANDMARKS_68 = "shape_predictor_68_face_landmarks.dat"


@dataclass(frozen=True)
class Face:
    """One detected face in source pixels: the detector's box, the 68 landmarks (``None`` with Haar) and
    which detector found it."""

    box: Box
    landmarks: np.ndarray | None
    detector: str

    def eyes(self) -> tuple[np.ndarray, np.ndarray]:
        """Centres of the eye on the image's left and the one on its right (landmarks 36-41, 42-47)."""
        if self.landmarks is None:
            raise ValueError("eye positions need landmarks (dlib)")
        return self.landmarks[36:42].mean(axis=0), self.landmarks[42:48].mean(axis=0)

    def extent(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)`` of the face: the landmarks' bounds (brows to chin), else the box."""
        if self.landmarks is not None:
            x0, y0 = self.landmarks.min(axis=0)
            x1, y1 = self.landmarks.max(axis=0)
            return float(x0), float(y0), float(x1), float(y1)
        x, y, w, h = self.box
        return float(x), float(y), float(x + w), float(y + h)


def _models_folder() -> Path | None:
    """Where ``face_recognition_models`` keeps its model files, found without importing the package (its
    ``__init__`` imports ``pkg_resources``, which recent setuptools no longer ship)."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("face_recognition_models")
    except (ImportError, ValueError):
        return None
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) / "models" if locations else None


@lru_cache(maxsize=1)
def _dlib_models() -> tuple[Any, Any] | None:
    """dlib's HOG frontal detector and the 68-landmark predictor, or ``None`` when either is missing."""
    try:
        import dlib
    except ImportError:
        return None
    folder = _models_folder()
    if folder is None or not (folder / LANDMARKS_68).is_file():
        return None
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(str(folder / LANDMARKS_68))


def dlib_available() -> bool:
    """Whether dlib and the 68-landmark model (``dlib-bin`` + ``face-recognition-models``) are installed."""
    return _dlib_models() is not None


_SAID_DETECTOR: set[str] = set()


def resolve_detector(detector: str, face: str = "crop") -> str:
    """The detector that will run for a setting: ``auto`` is dlib when installed, else Haar (said once).
    ``align`` without dlib, or ``dlib`` asked for and missing, is a :class:`FaceDetectorUnavailable`."""
    if face == "box":
        return "haar"
    if detector == "auto":
        detector = "dlib" if dlib_available() else "haar"
        if detector == "haar" and "auto" not in _SAID_DETECTOR:
            _SAID_DETECTOR.add("auto")
            logger.warning(
                "face detection uses OpenCV's Haar cascade: dlib is not installed (pip install dlib-bin "
                "face-recognition-models for the HOG detector and 68 landmarks)"
            )
    if detector == "dlib" and not dlib_available():
        raise FaceDetectorUnavailable(
            "face_detector dlib needs dlib and its 68-landmark model: pip install dlib-bin "
            "face-recognition-models (or make install), or use face_detector: haar"
        )
    if face == "align" and detector != "dlib":
        raise FaceDetectorUnavailable(
            "face: align needs the 68 landmarks of dlib (pip install dlib-bin face-recognition-models); "
            "with OpenCV's Haar cascade only face: crop is possible"
        )
    return detector


def _detections(grey: np.ndarray, detector: str) -> tuple[list[Box], float]:
    """Face boxes on a copy whose shorter side is at most ``_DETECT_SIDE`` (in that copy's pixels), and the
    scale of the copy; a small image with no hit is searched again at twice the size (dlib's HOG window is
    80 px)."""
    height, width = grey.shape
    shrink = min(1.0, _DETECT_SIDE / min(height, width))
    small = (
        grey if shrink == 1.0 else cv2.resize(grey, None, fx=shrink, fy=shrink, interpolation=cv2.INTER_AREA)
    )
    if detector == "haar":
        equalised = cv2.equalizeHist(small)
        min_side = max(24, int(min(small.shape) * 0.1))
        found = _cascade().detectMultiScale(
            equalised, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side)
        )
        return [tuple(int(v) for v in box) for box in found], shrink  # type: ignore[misc]
    hog = _dlib_models()[0]  # type: ignore[index]
    rects = hog(small, 0)
    if len(rects) == 0 and min(small.shape) < _DETECT_SIDE:
        # dlib maps boxes found on the upsampled pyramid level back to the input's pixels itself
        rects = hog(small, 1)
    boxes = [(r.left(), r.top(), r.width(), r.height()) for r in rects]
    return boxes, shrink  # type: ignore[return-value]


def locate_face(image: np.ndarray, detector: str = "auto", *, label: str = "", face: str = "crop") -> Face:
    """The one face of a frame (RGB or grey uint8): detection on a reduced copy, landmarks at full
    resolution. Raises :class:`FaceSkip` naming ``label`` when there is no face, two faces of similar size
    (widths within :data:`SIMILAR_FACE_RATIO`; a much smaller second detection is ignored), or a face cut
    by the frame's border."""
    used = resolve_detector(detector, face)
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    height, width = grey.shape
    boxes, shrink = _detections(grey, used)
    where = f"{label}: " if label else ""
    if not boxes:
        raise FaceSkip(
            f"{where}skipped: no face found on the onset frame ({used} detector, {width}x{height})"
        )
    boxes.sort(key=lambda b: b[2] * b[3], reverse=True)
    if len(boxes) > 1 and boxes[1][2] >= SIMILAR_FACE_RATIO * boxes[0][2]:
        raise FaceSkip(
            f"{where}skipped: {len(boxes)} faces of similar size on the onset frame (widths "
            f"{round(boxes[0][2] / shrink)} and {round(boxes[1][2] / shrink)} px): which is the subject cannot "
            "be told"
        )
    x, y, w, h = (v / shrink for v in boxes[0])
    box = (round(x), round(y), round(w), round(h))
    landmarks = None
    if used == "dlib":
        import dlib

        predictor = _dlib_models()[1]  # type: ignore[index]
        rect = dlib.rectangle(box[0], box[1], box[0] + box[2], box[1] + box[3])
        shape = predictor(np.ascontiguousarray(grey), rect)
        landmarks = np.array([(p.x, p.y) for p in shape.parts()], np.float32)
    found = Face(box, landmarks, used)
    x0, y0, x1, y1 = found.extent()
    if x0 < 1 or y0 < 1 or x1 > width - 2 or y1 > height - 2:
        raise FaceSkip(
            f"{where}skipped: the face is cut by the frame's border (face {x0:.0f}..{x1:.0f} x {y0:.0f}..{y1:.0f} "
            f"in a {width}x{height} frame)"
        )
    return found
