"""A minimal synthetic long-video writer for the fast spotting tests (smaller and quicker than the synth
feature's long videos, which the slow learning bar uses): a grey face-like drawing with sensor noise, blinks as distractors, and expression events
that move brows or mouth corners by a few pixels over an onset-apex-offset course (micro <= 0.5 s, macro
longer). Writes ``out/long/<subject>_<video>/img<k>.jpg`` and ``out/gt/str_gt.csv`` (with ``type``), and
returns the ``LongVideo`` records."""

from __future__ import annotations

import csv
from pathlib import Path

import cv2
import numpy as np

from megc_vqa.records import Event, FrameSource, LongVideo

EMOTION_REGION = {"positive": "mouth", "surprise": "brows_up", "negative": "brows_down"}


def _draw(size: int, base: np.ndarray, brow: float, mouth: float, eye_open: float) -> np.ndarray:
    img = base.copy()
    s = size / 96
    cx = size // 2
    for side in (-1, 1):
        ex = int(cx + side * 18 * s)
        ey = int(40 * s)
        cv2.ellipse(img, (ex, ey), (int(7 * s), max(1, int(4 * s * eye_open))), 0, 0, 360, 40, -1)
        by = round((30 - brow) * s)
        cv2.line(img, (int(ex - 9 * s), by), (int(ex + 9 * s), by), 50, max(1, int(3 * s)))
    my = int(70 * s)
    corner = round((70 - mouth) * s)
    pts = np.array([[cx - 15 * s, corner], [cx, my + 2 * s], [cx + 15 * s, corner]], np.int32)
    cv2.polylines(img, [pts], False, 45, max(1, int(3 * s)))
    return img


def _profile(t: np.ndarray, onset: int, apex: int, offset: int) -> np.ndarray:
    up = np.clip((t - onset) / max(apex - onset, 1), 0, 1)
    down = np.clip((offset - t) / max(offset - apex, 1), 0, 1)
    return np.where(t <= apex, np.sin(up * np.pi / 2) ** 2, np.sin(down * np.pi / 2) ** 2)


def make_events(rng: np.random.Generator, n_frames: int, fps: float, n_events: int) -> list[Event]:
    events: list[Event] = []
    cursor = int(fps * 1.0)
    for _ in range(n_events):
        kind = "micro" if rng.random() < 0.5 else "macro"
        seconds = rng.uniform(0.25, 0.45) if kind == "micro" else rng.uniform(1.0, 2.5)
        length = max(3, int(seconds * fps))
        onset = cursor + int(rng.uniform(0.8, 2.0) * fps)
        offset = onset + length - 1
        if offset >= n_frames - fps:
            break
        apex = onset + int(length * rng.uniform(0.35, 0.55))
        emotion = str(rng.choice(list(EMOTION_REGION)))
        events.append(Event(onset, offset, apex, coarse_emotion=emotion, expression_type=kind))
        cursor = offset
    return events


def write_long_video(
    out: Path,
    subject: str,
    video: str,
    fps: float,
    seconds: float,
    seed: int,
    n_events: int = 6,
    size: int = 96,
) -> LongVideo:
    rng = np.random.default_rng(seed)
    n = int(fps * seconds)
    folder = out / "long" / f"{subject}_{video}"
    folder.mkdir(parents=True, exist_ok=True)
    base = np.full((size, size), 110, np.uint8)
    cv2.ellipse(
        base,
        (size // 2, size // 2),
        (int(size * 0.38), int(size * 0.47)),
        0,
        0,
        360,
        int(rng.integers(150, 200)),
        -1,
    )
    base = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
    events = make_events(rng, n, fps, n_events)
    t = np.arange(n)
    brow = np.zeros(n)
    mouth = np.zeros(n)
    for ev in events:
        amp = rng.uniform(2.0, 3.0) if ev.expression_type == "micro" else rng.uniform(4.0, 6.0)
        prof = amp * _profile(t, ev.onset, ev.apex, ev.offset)
        region = EMOTION_REGION[ev.coarse_emotion]
        if region == "mouth":
            mouth += prof
        else:
            brow += prof if region == "brows_up" else -prof
    eye = np.ones(n)
    blink_at = int(rng.uniform(0.5, 2.0) * fps)
    while blink_at < n:
        length = max(2, int(rng.uniform(0.1, 0.2) * fps))
        eye[blink_at : blink_at + length] = 1 - 0.9 * _profile(
            np.arange(blink_at, min(blink_at + length, n)),
            blink_at,
            blink_at + length // 2,
            blink_at + length - 1,
        )
        blink_at += int(rng.uniform(2.0, 4.0) * fps)
    for k in range(n):
        img = _draw(size, base, brow[k], mouth[k], eye[k]).astype(np.float32)
        img += rng.normal(0, 3, img.shape)
        cv2.imwrite(str(folder / f"img{k + 1}.jpg"), np.clip(img, 0, 255).astype(np.uint8))
    events = [
        Event(
            e.onset + 1,
            e.offset + 1,
            e.apex + 1,
            coarse_emotion=e.coarse_emotion,
            expression_type=e.expression_type,
        )
        for e in events
    ]
    return LongVideo("synth", subject, video, FrameSource("folder", folder), fps, tuple(events))


def write_long_videos(
    out: Path, n: int, seed: int = 0, fps: float = 30.0, seconds: float = 20.0, size: int = 96
) -> list[LongVideo]:
    out = Path(out)
    videos = [
        write_long_video(out, f"s{k // 2 + 1:02d}", f"v{k % 2 + 1}", fps, seconds, seed * 1000 + k, size=size)
        for k in range(n)
    ]
    (out / "gt").mkdir(parents=True, exist_ok=True)
    with open(out / "gt" / "str_gt.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["subject", "video", "onset", "offset", "emotion", "type"])
        for v in videos:
            for e in v.events:
                w.writerow([v.subject, v.video_id, e.onset, e.offset, e.coarse_emotion, e.expression_type])
    return videos
