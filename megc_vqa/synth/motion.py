"""Time courses for the synthetic faces: AU onset-apex-offset curves, head sway and blinks."""

from __future__ import annotations

import numpy as np


def au_course(n_frames: int, onset: int, apex: int, offset: int) -> np.ndarray:
    """Intensity per frame: 0 up to ``onset``, smooth rise to 1 at ``apex``, smooth fall to 0 at ``offset``.

    Frame positions are indices into the returned array (0-based), ``onset <= apex <= offset``.
    """
    if not 0 <= onset <= apex <= offset:
        raise ValueError(f"need 0 <= onset <= apex <= offset, got {onset}, {apex}, {offset}")
    t = np.arange(n_frames, dtype=np.float64)
    rise = np.clip((t - onset) / max(apex - onset, 1), 0, 1)
    fall = np.clip((offset - t) / max(offset - apex, 1), 0, 1)
    course = np.where(t <= apex, rise, fall)
    course[(t < onset) | (t > offset)] = 0.0
    return 0.5 - 0.5 * np.cos(np.pi * course)  # smoothstep: no jumps at onset/offset


def head_motion(n_frames: int, fps: float, rng: np.random.Generator, amplitude: float = 0.6) -> np.ndarray:
    """Slow head sway (a few random sinusoids, ``amplitude`` px at 128 px) plus a tiny tremor: (T, 2)."""
    t = np.arange(n_frames) / fps
    motion = np.zeros((n_frames, 2))
    for axis in range(2):
        for _ in range(3):
            freq, phase = rng.uniform(0.1, 0.6), rng.uniform(0, 2 * np.pi)
            motion[:, axis] += amplitude / 3 * np.sin(2 * np.pi * freq * t + phase)
    return motion + rng.normal(0, 0.04 * amplitude, (n_frames, 2))


def blink_course(
    n_frames: int, fps: float, rng: np.random.Generator, rate: float = 0.2, avoid: np.ndarray | None = None
) -> np.ndarray:
    """Blinks (about 150 ms each) at ``rate`` per second, never over frames where ``avoid`` is true."""
    course = np.zeros(n_frames)
    length = max(3, round(0.15 * fps))
    for start in np.flatnonzero(rng.random(n_frames) < rate / fps):
        end = start + length
        if end >= n_frames or (avoid is not None and avoid[max(start - length, 0) : end + length].any()):
            continue
        course = np.maximum(course, au_course(n_frames, start, start + length // 2, end))
    return course
