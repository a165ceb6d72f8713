"""Tiny synthetic clips with a known apex, for the visual pipeline's tests and benchmarks.

A textured background with a bright square that slides ``shift`` pixels from its rest position at the
onset to its furthest position at the apex and back by the offset (a triangle course), saved as
numbered JPEG frames. Far simpler than the project's synthetic faces (``megc_vqa.synth``); it exists
so the samplers can be checked against a motion whose apex and direction are known exactly.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import cv2
import numpy as np

from megc_vqa.synth.face import render_frames, sample_identity


def toy_shifts(n_frames: int, apex_pos: int, shift: int) -> list[int]:
    """Horizontal displacement (pixels) of the square at each position: 0 at both ends, ``shift`` at the apex."""
    t = np.arange(n_frames, dtype=np.float64)
    rising = t / max(1, apex_pos)
    falling = (n_frames - 1 - t) / max(1, n_frames - 1 - apex_pos)
    return [int(v) for v in np.rint(shift * np.where(t <= apex_pos, rising, falling))]


def toy_frames(
    n_frames: int,
    apex_pos: int,
    *,
    size: tuple[int, int] = (160, 192),
    shift: int = 12,
    seed: int = 0,
    noise: float = 2.0,
    moving: bool = True,
) -> np.ndarray:
    """``(n_frames, H, W, 3)`` uint8 RGB frames; the square is furthest from rest at position ``apex_pos``."""
    rng = np.random.default_rng(seed)
    height, width = size
    coarse = rng.integers(40, 200, size=(height // 8 + 1, width // 8 + 1, 3), dtype=np.uint8)
    background = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    side = max(8, min(height, width) // 5)
    y0, x0 = height // 3, width // 3
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for t, dx in enumerate(toy_shifts(n_frames, apex_pos, shift if moving else 0)):
        frame = background.copy()
        cv2.rectangle(frame, (x0 + dx, y0), (x0 + dx + side, y0 + side), (250, 240, 230), thickness=-1)
        if noise:
            jitter = rng.standard_normal(size=frame.shape, dtype=np.float32) * noise
            frame = np.clip(frame + jitter, 0, 255).astype(np.uint8)
        frames[t] = frame
    return frames


def write_toy_clip(
    folder: Path,
    n_frames: int = 60,
    apex_pos: int = 25,
    *,
    first: int = 1,
    pattern: str = "img{}.jpg",
    drop: Iterable[int] = (),
    grey: bool = False,
    **frame_kwargs: object,
) -> list[int]:
    """Write frames ``first .. first + n_frames - 1`` named by ``pattern``; return the indices written.

    drop: absolute indices to leave out (dropped frames). grey: write single-channel JPEGs (like SAMM).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    dropped = set(drop)
    written = []
    for t, frame in enumerate(toy_frames(n_frames, apex_pos, **frame_kwargs)):  # type: ignore[arg-type]
        index = first + t
        if index in dropped:
            continue
        image = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if grey else cv2.cvtColor(frame, cv2.COLOR_RGB2BGR)
        cv2.imwrite(str(folder / pattern.format(index)), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        written.append(index)
    return written


def toy_face(height: int = 240, width: int = 200) -> np.ndarray:
    """A cartoon frontal face (RGB uint8) that OpenCV's Haar frontal-face cascade detects."""
    image = np.full((height, width, 3), 90, np.uint8)
    cx, cy = width // 2, height // 2
    cv2.ellipse(image, (cx, cy), (int(width * 0.32), int(height * 0.36)), 0, 0, 360, (200, 170, 150), -1)
    for side in (-1, 1):
        ex, ey = cx + side * int(width * 0.13), cy - int(height * 0.08)
        brow = (ex, ey - int(height * 0.06))
        cv2.ellipse(image, brow, (int(width * 0.08), int(height * 0.015)), 0, 0, 360, (60, 40, 30), -1)
        cv2.ellipse(image, (ex, ey), (int(width * 0.06), int(height * 0.025)), 0, 0, 360, (255, 255, 255), -1)
        cv2.circle(image, (ex, ey), int(width * 0.025), (30, 20, 20), -1)
    nose = (cx, cy + int(height * 0.06))
    cv2.ellipse(image, nose, (int(width * 0.03), int(height * 0.06)), 0, 0, 360, (170, 140, 120), -1)
    mouth = (cx, cy + int(height * 0.19))
    cv2.ellipse(image, mouth, (int(width * 0.12), int(height * 0.03)), 0, 0, 360, (120, 50, 50), -1)
    return cv2.GaussianBlur(image, (5, 5), 0)


def face_scene(
    width: int = 640,
    height: int = 480,
    *,
    face_px: int = 280,
    centre: tuple[float, float] | None = None,
    n_frames: int = 5,
    apex_pos: int | None = None,
    au: int = 12,
    intensity: float = 0.25,
    head_angle: float = 0.0,
    head_shift: tuple[float, float] = (0.0, 0.0),
    seed: int = 0,
    noise: float = 2.0,
) -> np.ndarray:
    """``(n_frames, height, width, 3)`` uint8 RGB: the project's synthetic face (``megc_vqa.synth.face``,
    rendered at ``face_px``) pasted off-centre into a large noisy background, as a release frame holds a
    face. Action unit ``au`` rises to ``intensity`` at ``apex_pos`` and falls back (the expression), while
    the head turns by ``head_angle`` degrees and moves by ``head_shift`` pixels on the same course (head
    motion). For the face pipeline's tests and benchmark; a stand-in until a realistic preset exists."""
    rng = np.random.default_rng(seed)
    apex_pos = n_frames // 2 if apex_pos is None else apex_pos
    course = np.asarray(toy_shifts(n_frames, apex_pos, 1000), np.float64) / 1000.0
    faces = render_frames(sample_identity(rng), {au: course * intensity}, {}, rng, size=face_px, noise=0.0)
    background = rng.normal(120, 35, (height, width, 3)).clip(0, 255).astype(np.uint8)
    background = cv2.GaussianBlur(background, (0, 0), 2)
    cx, cy = centre if centre is not None else (width * 0.4, height * 0.55)
    square = np.full((face_px, face_px), 255, np.uint8)
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    for t in range(n_frames):
        k = course[t]
        matrix = cv2.getRotationMatrix2D((face_px / 2, face_px / 2), head_angle * k, 1.0)
        matrix[:, 2] += (cx - face_px / 2 + head_shift[0] * k, cy - face_px / 2 + head_shift[1] * k)
        face = cv2.warpAffine(cv2.cvtColor(faces[t], cv2.COLOR_BGR2RGB), matrix, (width, height))
        inside = cv2.warpAffine(square, matrix, (width, height)) > 128
        frame = background.copy()
        frame[inside] = face[inside]
        if noise:
            frame = (frame + rng.normal(0, noise, frame.shape)).clip(0, 255).astype(np.uint8)
        frames[t] = frame
    return frames


def write_frames(
    folder: Path, frames: np.ndarray, *, first: int = 1, pattern: str = "img{}.jpg"
) -> list[int]:
    """Write RGB frames as numbered JPEG files (quality 95); return the indices written."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for t, frame in enumerate(frames):
        image = cv2.cvtColor(frame, cv2.COLOR_RGB2BGR) if frame.ndim == 3 else frame
        cv2.imwrite(str(folder / pattern.format(first + t)), image, [cv2.IMWRITE_JPEG_QUALITY, 95])
    return list(range(first, first + len(frames)))
