"""Apex estimation for clips that do not give one (SMIC, MEGC test clips, CASME II apex ``/``).

The apex is taken as the frame of largest motion against the onset frame: every candidate frame in
``onset..offset`` is decoded small and grey, and scored by its mean absolute grey-level difference from
the onset frame; the highest score wins (the earliest frame on ties). This is the "largest motion
against the first frame" rule MEGC teams use. Its known weakness is head movement, which also scores
as motion: pass the clip's face ``box`` so only the face counts.

Cost and memory: JPEG folders are decoded directly at 1/``reduce`` scale (the decoder skips most of the
work), frames are read ``chunk`` at a time and only their scores are kept, so memory does not grow with
the clip's length. ``stride`` > 1 scores every stride-th frame (the offset frame is always scored).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from megc_vqa.records import Clip
from megc_vqa.visual.face import Box
from megc_vqa.visual.frames import FrameReader


def candidate_indices(reader: FrameReader, onset: int, offset: int, stride: int = 1) -> np.ndarray:
    """Existing frame indices in ``onset..offset`` (every ``stride``-th, offset included) to score."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    inside = reader.indices[(reader.indices >= onset) & (reader.indices <= offset)]
    if inside.size == 0:
        return np.asarray(reader.resolve([onset]), dtype=np.int64)
    picked = inside[::stride]
    if picked[-1] != inside[-1]:
        picked = np.append(picked, inside[-1])
    return picked


def motion_scores(
    reader: FrameReader,
    onset: int,
    candidates: np.ndarray,
    *,
    box: Box | None = None,
    reduce: int = 4,
    chunk: int = 32,
) -> np.ndarray:
    """Mean absolute grey difference of each candidate frame from the onset frame (one float per candidate).

    ``box`` is in full-resolution pixels; it is scaled to the reduced frames here.
    """
    reference = _prepare(reader.read_grey([onset], reduce=reduce)[0], box, reduce)
    scores = np.empty(len(candidates), dtype=np.float64)
    for start in range(0, len(candidates), chunk):
        batch = reader.read_grey(candidates[start : start + chunk].tolist(), reduce=reduce)
        for k, frame in enumerate(batch):
            scores[start + k] = (
                cv2.norm(_prepare(frame, box, reduce), reference, cv2.NORM_L1) / reference.size
            )
    return scores


def estimate_apex(
    clip: Clip,
    *,
    reader: FrameReader | None = None,
    box: Box | None = None,
    stride: int = 1,
    reduce: int | None = None,
    chunk: int = 32,
    root: Path | None = None,
) -> int:
    """The absolute index of the frame in ``clip.onset..clip.offset`` that differs most from the onset frame.

    reader: an already opened :class:`FrameReader` for ``clip.source`` (opened here otherwise).
    box: face box ``(x, y, w, h)`` in full-resolution pixels to restrict the comparison to the face.
    stride: score every stride-th frame (faster on long clips, less exact).
    reduce: decode at 1/reduce scale (1, 2, 4 or 8); ``None`` picks the largest reduction that keeps
        the shorter side at least 96 px, where facial regions still move visibly.
    chunk: frames decoded at once; memory stays flat in the clip's length.
    """
    own_reader = reader is None
    if reader is None:
        reader = FrameReader(clip.source, root=root)
    try:
        onset = reader.resolve([clip.onset])[0]
        candidates = candidate_indices(reader, onset, clip.offset, stride)
        if len(candidates) <= 1:
            return int(candidates[0]) if len(candidates) else onset
        if reduce is None:
            reduce = auto_reduce(reader, onset)
        scores = motion_scores(reader, onset, candidates, box=box, reduce=reduce, chunk=chunk)
        return int(candidates[int(np.argmax(scores))])
    finally:
        if own_reader:
            reader.close()


def auto_reduce(reader: FrameReader, index: int, min_side: int = 96) -> int:
    """The largest decoder reduction (8, 4, 2 or 1) that keeps the frame's shorter side >= ``min_side``."""
    shorter = min(reader.read_grey([index], reduce=8)[0].shape) * 8  # an 1/8 decode is nearly free
    for reduce in (8, 4, 2):
        if shorter // reduce >= min_side:
            return reduce
    return 1


def _prepare(grey: np.ndarray, box: Box | None, reduce: int) -> np.ndarray:
    if box is not None:
        x, y, w, h = (max(0, v // reduce) for v in box)
        cropped = grey[y : y + max(1, h), x : x + max(1, w)]
        if cropped.size:
            grey = cropped
    # A light blur keeps JPEG blocking and sensor noise from outscoring a real movement.
    return cv2.GaussianBlur(grey, (3, 3), 0)
