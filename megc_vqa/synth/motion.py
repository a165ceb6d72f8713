"""Time courses for the synthetic faces: AU onset-apex-offset curves, head sway, slow drifts, blinks and
lighting (flicker and slow changes of illumination)."""

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


def slow_drift(n_frames: int, fps: float, rng: np.random.Generator, amplitude: float = 2.0) -> np.ndarray:
    """Slow head drift, as a seated subject settles over tens of seconds: (T, 2) offsets in canonical px,
    two sinusoids per axis with periods of 15-60 s (so far slower than any expression) and ``amplitude``
    px peak, plus a random start offset."""
    t = np.arange(n_frames) / fps
    drift = np.zeros((n_frames, 2))
    for axis in range(2):
        for _ in range(2):
            period, phase = rng.uniform(15.0, 60.0), rng.uniform(0, 2 * np.pi)
            drift[:, axis] += amplitude / 2 * np.sin(2 * np.pi * t / period + phase)
    return drift


def lighting_gain(n_frames: int, fps: float, rng: np.random.Generator, depth: float = 0.02) -> np.ndarray:
    """Per-frame brightness gain around 1 (T,): mains flicker as the camera samples it (an aliased
    3-12 Hz ripple of ``depth / 2``), a slow change of illumination (``depth``, periods of 5-20 s) and a
    small frame-to-frame exposure jitter (``depth / 4``)."""
    t = np.arange(n_frames) / fps
    alias, phase = rng.uniform(3.0, min(12.0, 0.4 * fps)), rng.uniform(0, 2 * np.pi)
    slow_period, slow_phase = rng.uniform(5.0, 20.0), rng.uniform(0, 2 * np.pi)
    gain = 1.0 + depth / 2 * np.sin(2 * np.pi * alias * t + phase)
    gain += depth * np.sin(2 * np.pi * t / slow_period + slow_phase)
    return gain + rng.normal(0, depth / 4, n_frames)
