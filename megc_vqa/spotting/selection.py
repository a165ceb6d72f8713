"""Choosing on validation, by the project's one STR scorer (:mod:`megc_vqa.metrics.strs`, strict mode):
pooled strict spotting scores of spotted intervals, the post-processing (threshold, extent, smoothing,
micro/macro cut) with the best F1, and the split of videos into training and inner-validation subjects.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Sequence

from megc_vqa.metrics.strs import Interval, canonical_subject, match_strict, score_str
from megc_vqa.metrics.strs import iou as interval_iou
from megc_vqa.training.split import split_by_subject, subjects

from .recipe import TrainConfig


def spotting_scores(curves, videos, params, iou: float = 0.5) -> dict:
    """Pooled strict spotting scores of ``extract_intervals(curve, params)`` against each video's events,
    from the project's one STR scorer (``megc_vqa.metrics.strs``, strict mode): the F1 selected on is the
    F1 ``run_str`` reports. ``typed_f1``: the same, but a hit must also have the event's type."""
    return strict_spotting(*spotted_and_true(curves, videos, params), iou)


def spotted_and_true(curves, videos, params) -> tuple[list, list]:
    """(spotted, annotated) intervals of every video, as the STR scorer's records, with their types."""
    from .infer import extract_intervals  # torch, OpenCV: a command module stays light until it runs

    preds, gts = [], []
    for curve, video in zip(curves, videos, strict=True):
        preds += [_interval(video, iv.onset, iv.offset, iv.type) for iv in extract_intervals(curve, params)]
        gts += [_interval(video, e.onset, e.offset, e.expression_type) for e in video.events]
    return preds, gts


def _interval(video, onset: int, offset: int, kind: str | None = None):
    # emotions play no part in spotting scores; one placeholder class keeps the scorer's analysis quiet
    subject = canonical_subject(video.subject)
    return Interval(subject, video.video_id, int(onset), int(offset), "others", type=kind)


def strict_spotting(preds, gts, iou: float = 0.5) -> dict:
    """``{tp, fp, fn, precision, recall, f1, mean_iou}`` of strict spotting (``megc_vqa.metrics.strs``:
    ``score_str`` and its one-to-one matching); ``mean_iou`` over the true positives breaks F1 ties."""
    scores = score_str(preds, gts, "strict", iou_threshold=iou)
    r = scores["overall"]
    typed_tp = sum(scores[kind]["tp_spot"] for kind in ("micro", "macro") if kind in scores)
    pairs = match_strict(preds, gts, iou).pairs
    overlaps = [interval_iou(p.onset, p.offset, g.onset, g.offset) for p, g in pairs]
    return {
        "mean_iou": sum(overlaps) / len(overlaps) if overlaps else 0.0,
        "tp": r["tp_spot"],
        "fp": r["fp_spot"],
        "fn": r["fn_spot"],
        "precision": r["precision_spot"],
        "recall": r["recall_spot"],
        "f1": r["f1_spot"],
        "typed_f1": 2 * typed_tp / (len(preds) + len(gts)) if preds or gts else 0.0,
    }


def choose_peaks(curves, videos, base, train_cfg: TrainConfig) -> tuple[object, dict]:
    """The (threshold, extent, smoothing) with the best pooled strict F1 on the given (validation) curves;
    ties (a small validation split has many) go to the larger mean IoU of the true positives, i.e. the
    boundaries with the most margin above the IoU bar. Then, given ``micro_cuts``, the micro/macro length
    cut with the best typed strict F1 (ties: the cut nearest the 0.5 s definition)."""
    best = None
    grid = itertools.product(
        train_cfg.thresholds, train_cfg.extents, train_cfg.smooths or (base.smooth_seconds,)
    )
    for thr, ext, smooth in grid:
        params = dataclasses.replace(base, threshold=thr, extent=ext, smooth_seconds=smooth)
        score = spotting_scores(curves, videos, params, train_cfg.iou)
        if best is None or (score["f1"], score["mean_iou"]) > (best[1]["f1"], best[1]["mean_iou"]):
            best = (params, score)
    if train_cfg.micro_cuts and base.typing == "duration":
        rule = base.micro_max_seconds
        typed = []
        for cut in sorted({rule, *train_cfg.micro_cuts}, key=lambda c: abs(c - rule)):
            params = dataclasses.replace(best[0], micro_cut_seconds=cut)
            typed.append((params, spotting_scores(curves, videos, params, train_cfg.iou)))
        best = max(typed, key=lambda ps: ps[1]["typed_f1"])  # max keeps the first of equals: nearest 0.5 s
    return best


def split_videos(videos: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    """(train, validation) videos with whole subjects held out, by the project's one subject splitter
    (``megc_vqa.training.split.split_by_subject``); ``fraction`` >= 1 is a number of subjects."""
    n = len(subjects(videos))
    if n < 2:
        return list(videos), []
    share = fraction / n if fraction >= 1 else fraction
    return split_by_subject(videos, share, seed)
