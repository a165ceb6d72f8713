"""Apex estimation for clips that do not give one (SMIC, MEGC test clips, CASME II apex ``/``).

A clip runs from a neutral onset through the apex back to a neutral offset, so the apex is taken as the
frame that differs most from *both* ends: every candidate frame in ``onset..offset`` is decoded small and
grey, and scored by its mean absolute grey-level difference from the onset frame plus that from the
offset frame; the highest score wins (the earliest frame on ties). Comparing with the onset alone (the
usual "largest motion against the first frame" rule) lets slow head drift or a lighting change, which
grow over the clip, outscore a faint expression: on the synthetic sets that rule missed the apex by
more than a quarter of the clip for up to 16% of a dataset's clips, most of them one-sided mouth AUs, and picked
the last frame, where the face is neutral again. Against both ends such a drift scores about the same
everywhere while the expression still stands out. Each frame is scaled to the onset's mean brightness
first, so global flicker does not count as motion; pass the clip's face ``box`` so only the face counts.

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
    """Each candidate's mean absolute grey difference from the onset frame plus that from the last
    candidate (the offset), after scaling every frame to the onset's mean brightness (one float each).

    ``box`` is in full-resolution pixels; it is scaled to the reduced frames here.
    """
    start_frame, end_frame = reader.read_grey([onset, int(candidates[-1])], reduce=reduce)
    first = _prepare(start_frame, box, reduce)
    brightness = max(float(first.mean()), 1.0)
    last = _prepare(end_frame, box, reduce, brightness)
    scores = np.empty(len(candidates), dtype=np.float64)
    for start in range(0, len(candidates), chunk):
        batch = reader.read_grey(candidates[start : start + chunk].tolist(), reduce=reduce)
        for k, frame in enumerate(batch):
            grey = _prepare(frame, box, reduce, brightness)
            scores[start + k] = (
                cv2.norm(grey, first, cv2.NORM_L1) + cv2.norm(grey, last, cv2.NORM_L1)
            ) / grey.size
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
    """The absolute index of the frame in ``clip.onset..clip.offset`` that differs most from both ends.

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


def _prepare(grey: np.ndarray, box: Box | None, reduce: int, brightness: float | None = None) -> np.ndarray:
    """The face region, lightly blurred (JPEG blocking and sensor noise must not outscore a movement), as
    float32, scaled to mean ``brightness`` when given."""
    if box is not None:
        x, y, w, h = (max(0, v // reduce) for v in box)
        cropped = grey[y : y + max(1, h), x : x + max(1, w)]
        if cropped.size:
            grey = cropped
    blurred = cv2.GaussianBlur(grey, (3, 3), 0).astype(np.float32)
    if brightness is not None:
        blurred *= brightness / max(float(blurred.mean()), 1.0)
    return blurred
