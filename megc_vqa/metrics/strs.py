"""ME-STR metric (SPEC section 6): STRS = spotting F1 x analysis F1, in two modes.

``official`` reproduces the public reference scorer that the MEGC challenges use:
genbing99/STRS-Metric, ``strs_metric.py`` (``Evaluator.evaluate_STRS``, latest version, commit eb86468,
the one with the ``analysis_emotion`` argument). Its behaviour, kept on purpose because the leaderboard
numbers carry it:

1. Matching is greedy in prediction order: each prediction, in file order, claims *every* still
   unclaimed ground-truth interval of its video with IoU >= 0.5, so one prediction can be several TPs.
2. Only subjects that appear in the prediction file are scored; the ground truth of other subjects is
   never a false negative.
3. Only videos present in the ground truth are scored; predictions on other videos are never false
   positives.
4. Its "UAR" is the mean per-class *precision*.
5. Per class it unpacks a 2x2 ``sklearn.metrics.confusion_matrix`` of one-vs-rest labels; when every
   analysed pair has that class on both sides the matrix is 1x1 and the class counts zero.
6. Analysis F1 = harmonic mean of mean P and mean R, computed with numpy: 0/0 is NaN, so with TPs but no
   correctly classified pair (or only the quirk-5 case) STRS is NaN.
7. With no spotting TP at all the reference crashes (``KeyError: 'gt'`` on an empty frame; on pandas >= 2
   it crashes earlier, ``DataFrame.append`` is gone). Here both modes return 0 for the analysis and STRS.

Analysed pairs are the spotting TPs whose ground-truth emotion is one of the analysis classes: the
``emotions`` argument, or every emotion in the ground truth (the reference's default).

``strict`` uses the textbook definitions: one-to-one matching (maximum number of pairs, then the largest
total IoU; inputs sorted first so row order never matters), every ground-truth video and subject counted,
predictions on unknown videos are FPs, UAR = mean per-class recall, 0 instead of NaN.

Input normalisation for both modes: subjects written as digits are compared as integers (``006`` ==
``6``, as pandas reads them), emotions are stripped and lower-cased, frames must be integers.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from megc_vqa.errors import MegcError, cut, unknown_keys_error
from megc_vqa.fileio import Problem
from megc_vqa.labels import STR_CLASSES
from megc_vqa.limits import JSONL_BYTES, read_bounded
from megc_vqa.records import Event

log = logging.getLogger(__name__)

Mode = Literal["official", "strict"]
MODES: tuple[str, ...] = ("official", "strict")
REQUIRED_COLUMNS: tuple[str, ...] = ("subject", "video", "onset", "offset", "emotion")
IOU_THRESHOLD = 0.5
_INT_RE = re.compile(r"^[+-]?\d+$")
# A prediction has exactly the official columns; ground truth may also say the dataset and expression type.
PREDICTION_COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS
GROUND_TRUTH_COLUMNS: tuple[str, ...] = (*REQUIRED_COLUMNS, "dataset", "type")
# No long video comes near this many frames (14 h at 200 fps): a larger number is a typo or garbage.
MAX_FRAME = 10_000_000
Role = Literal["prediction", "ground_truth"]
RESULT_KEYS: tuple[str, ...] = (
    "strs", "tp_spot", "fp_spot", "fn_spot", "precision_spot", "recall_spot", "f1_spot",
    "precision_analysis", "recall_analysis", "f1_analysis", "uf1_analysis", "uar_analysis",
)  # fmt: skip


@dataclass(frozen=True)
class Interval:
    """One row of an STR CSV: an inclusive frame range of one video, with its emotion."""

    subject: str
    video: str
    onset: int
    offset: int
    emotion: str
    dataset: str | None = None
    type: str | None = None
    line: int = field(default=0, compare=False)
    # the subject as the file writes it (``006``; ``subject`` is canonical, ``6``): names matched to folders
    subject_text: str = field(default="", compare=False)

    @property
    def key(self) -> tuple[str, str]:
        return (self.subject, self.video)


class StrInputError(MegcError, ValueError):
    """An STR CSV that cannot be scored; the message lists every problem with its line."""


def canonical_subject(value: str) -> str:
    """``"006"`` -> ``"6"`` (pandas reads both as the integer 6); other names unchanged.

    >>> canonical_subject(" 006 "), canonical_subject("spNO.1")
    ('6', 'spNO.1')
    """
    v = str(value).strip()
    return str(int(v)) if _INT_RE.match(v) else v


def expression_type(value: str) -> str | None:
    """``micro`` / ``macro`` from ``Micro - 1/2``, ``macro-expression``, ...; ``None`` if neither."""
    v = str(value).strip().lower()
    if "micro" in v:
        return "micro"
    if "macro" in v:
        return "macro"
    return None


def parse_str_csv(
    data: bytes | str,
    name: str,
    *,
    emotions: Iterable[str] | None = None,
    role: Role = "ground_truth",
    videos: Mapping[tuple[str, str], tuple[int, int] | None] | None = None,
) -> tuple[list[Interval], list[Problem]]:
    """Parse an STR CSV: the one reader of the validator and the scorer, so both judge a file alike.

    Never raises; every defect is a problem with its line (1 = header). ``role="prediction"``: exactly the
    columns ``subject,video,onset,offset,emotion`` (any other column is an error: the local scorer would
    split by a ``type`` column the leaderboard never sees) and a duplicated interval is an error;
    ``"ground_truth"`` also allows ``dataset`` and ``type``. ``emotions``, when given, is the allowed emotion
    set. ``videos``, when given, maps the known ``(subject, video)`` to their ``(first, last)`` frame (or
    ``None``): a row on another video is a warning, a frame outside its video an error. Frames must be
    integers in ``0..MAX_FRAME``.
    """
    problems: list[Problem] = []
    if isinstance(data, bytes):
        if data.startswith(b"\xef\xbb\xbf"):
            problems.append(Problem(name, 1, "file starts with a UTF-8 BOM", "warning"))
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            return [], [Problem(name, data[: err.start].count(b"\n") + 1, f"not valid UTF-8 ({err.reason})")]
    else:
        text = data.removeprefix("\ufeff")
    if not text.strip():
        return [], [Problem(name, 0, f"empty file: expected the header {','.join(REQUIRED_COLUMNS)}")]
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip().lower() for h in next(reader)]
    except csv.Error as err:
        return [], [Problem(name, 1, f"not a CSV header ({err})")]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        problems.append(
            Problem(
                name, 1, f"missing column(s) {', '.join(missing)}; header is {cut(','.join(header), 200)}"
            )
        )
        return [], problems
    allowed_columns = PREDICTION_COLUMNS if role == "prediction" else GROUND_TRUTH_COLUMNS
    extra = [c for c in header if c not in allowed_columns]
    if extra:
        what = "an STR prediction" if role == "prediction" else "STR ground truth"
        message = str(unknown_keys_error(extra, allowed_columns, "", "column")).split(": ", 1)[1]
        message = message.split("; known:")[0]
        problems.append(Problem(name, 1, f"{message} ({what} has {','.join(allowed_columns)})"))
        return [], problems
    duplicated = [c for c in header if header.count(c) > 1]
    if duplicated:
        problems.append(Problem(name, 1, f"column(s) {', '.join(sorted(set(duplicated)))} appear twice"))
        return [], problems
    col = {c: header.index(c) for c in header}
    allowed = None if emotions is None else {e.strip().lower() for e in emotions}
    known = None if videos is None else {(canonical_subject(s), str(v)): r for (s, v), r in videos.items()}
    unknown_videos: dict[tuple[str, str], int] = {}
    first_line: dict[tuple[str, str, int, int], int] = {}
    first_label: dict[tuple[str, str, int, int], tuple[str, str | None]] = {}
    intervals: list[Interval] = []
    while True:
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as err:
            problems.append(Problem(name, reader.line_num, f"not valid CSV ({err})"))
            break
        line = reader.line_num
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            problems.append(Problem(name, line, f"{len(cells)} fields, the header has {len(header)}"))
            continue
        row = {c: cells[i].strip() for c, i in col.items()}
        bad = False
        for c in ("subject", "video", "emotion"):
            if not row[c]:
                problems.append(Problem(name, line, f"empty {c}"))
                bad = True
        frames: dict[str, int] = {}
        for c in ("onset", "offset"):
            if not _INT_RE.match(row[c]):
                problems.append(Problem(name, line, f"{c} {cut(row[c], 40)} is not an integer frame number"))
                bad = True
            elif not 0 <= int(row[c]) <= MAX_FRAME:
                problems.append(
                    Problem(name, line, f"{c} {cut(row[c], 40)} is not a frame number (0..{MAX_FRAME:,})")
                )
                bad = True
            else:
                frames[c] = int(row[c])
        if len(frames) == 2 and frames["onset"] > frames["offset"]:
            problems.append(
                Problem(name, line, f"onset {frames['onset']} is after offset {frames['offset']}")
            )
            bad = True
        emotion = row["emotion"].lower()
        if allowed is not None and row["emotion"] and emotion not in allowed:
            problems.append(
                Problem(
                    name,
                    line,
                    f"emotion {cut(row['emotion'], 40)} is not one of {', '.join(sorted(allowed))}",
                )
            )
            bad = True
        etype = None
        if row.get("type"):
            etype = expression_type(row["type"])
            if etype is None:
                problems.append(
                    Problem(name, line, f"type {cut(row['type'], 40)} is neither micro nor macro")
                )
                bad = True
        if bad:
            continue
        subject = canonical_subject(row["subject"])
        key = (subject, row["video"])
        if known is not None and key not in known:
            unknown_videos.setdefault(key, line)
        elif known is not None and known[key] is not None:
            first, last = known[key]
            if frames["onset"] < first or frames["offset"] > last:
                problems.append(
                    Problem(
                        name,
                        line,
                        f"frames {frames['onset']}..{frames['offset']} are outside the video's "
                        f"frames {first}..{last} (subject {row['subject']}, video {row['video']})",
                    )
                )
                continue
        frame_key = (*key, frames["onset"], frames["offset"])
        if frame_key in first_line:
            # ground truth: the row is dropped (a copied row adds nothing; counting it twice would count
            # one event as two); a different label on the copy is said, the first line's label is kept
            kept = first_label[frame_key]
            differs = "" if kept == (emotion, etype) or role == "prediction" else (
                f"; its label {emotion}/{etype or '-'} differs from the kept {kept[0]}/{kept[1] or '-'}"
            )  # fmt: skip
            dropped = "" if role == "prediction" else ", dropped"
            problems.append(
                Problem(
                    name,
                    line,
                    f"duplicate interval {frames['onset']}..{frames['offset']} of subject "
                    f"{row['subject']}, video {row['video']} (first on line {first_line[frame_key]}"
                    f"{dropped}{differs})",
                    "error" if role == "prediction" else "warning",
                )
            )
            continue
        first_line[frame_key] = line
        first_label[frame_key] = (emotion, etype)
        intervals.append(
            Interval(subject, row["video"], frames["onset"], frames["offset"], emotion,
                     (row.get("dataset") or "").lower() or None, etype, line, row["subject"])
        )  # fmt: skip
    for (subject, video), at in unknown_videos.items():
        problems.append(
            Problem(
                name,
                at,
                f"subject {subject} video {cut(video, 60)} is not one of the known videos "
                "(official scoring ignores it, strict scoring counts its rows as false positives)",
                "warning",
            )
        )
    return intervals, problems


def read_intervals(
    path: str | os.PathLike[str],
    *,
    emotions: Iterable[str] | None = None,
    role: Role = "ground_truth",
    videos: Mapping[tuple[str, str], tuple[int, int] | None] | None = None,
    warnings: list[Problem] | None = None,
) -> list[Interval]:
    """Intervals of an STR CSV (see :func:`parse_str_csv`); raises ``StrInputError`` listing every error with
    its line (the first 20); warnings go to ``warnings`` when given, else to the log."""
    path = Path(path)
    if not path.is_file():
        raise StrInputError(f"{path}: no such STR CSV")
    intervals, problems = parse_str_csv(
        read_bounded(path, JSONL_BYTES, "STR CSV"), str(path), emotions=emotions, role=role, videos=videos
    )
    errors = [p for p in problems if p.level == "error"]
    if errors:
        more = f"\n... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise StrInputError("\n".join(p.located() for p in errors[:20]) + more)
    if warnings is not None:
        warnings.extend(problems)
    else:
        for p in problems:
            log.warning("%s", p)
    return intervals


def read_events(
    path: str | os.PathLike[str],
    fps: float | Mapping[tuple[str, str], float] | None = None,
    frames: Mapping[tuple[str, str], tuple[int, int]] | None = None,
    warnings: list[Problem] | None = None,
) -> dict[tuple[str, str], list[Event]]:
    """Ground-truth STR CSV (``subject,video,onset,offset,emotion[,type]``) -> (subject, video) -> typed
    ``Event``s, keyed by the file's own names (the subject as written, ``006``): the STR reader
    (:func:`read_intervals`, ground-truth role) with its one rule for numbers (integer frames from 0, as
    written: ``12.0`` is an error naming its line), every row checked as the scorer checks it.

    ``frames``: each video's (first, last) frame on disk; a row outside its video is an error. A row
    without a ``type``: with ``fps`` (one rate, or one per (subject, video)), micro when the interval is
    at most 0.5 s and macro otherwise; without ``fps``, micro. Warnings go to ``warnings`` when given,
    else to the log."""
    intervals = read_intervals(
        path, emotions=STR_CLASSES, role="ground_truth", videos=frames, warnings=warnings
    )
    events: dict[tuple[str, str], list[Event]] = {}
    for iv in intervals:
        key = (iv.subject_text, iv.video)
        rate = fps.get(key) if isinstance(fps, Mapping) else fps
        kind = iv.type or ("micro" if rate is None or (iv.offset - iv.onset) <= 0.5 * rate else "macro")
        events.setdefault(key, []).append(
            Event(iv.onset, iv.offset, coarse_emotion=iv.emotion, expression_type=kind, row=iv.line)
        )
    return events


def iou(onset_a: int, offset_a: int, onset_b: int, offset_b: int) -> float:
    """IoU of two inclusive integer frame ranges.

    >>> iou(0, 9, 5, 14)  # 5 shared frames of 15
    0.3333333333333333
    """
    inter = min(offset_a, offset_b) - max(onset_a, onset_b) + 1
    if inter <= 0:
        return 0.0
    union = (offset_a - onset_a + 1) + (offset_b - onset_b + 1) - inter
    return inter / union if union > 0 else 0.0


@dataclass(frozen=True)
class Spotting:
    pairs: list[tuple[Interval, Interval]]  # (prediction, ground truth)
    false_positives: list[Interval]
    false_negatives: list[Interval]


def _unique(values: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(values))


def match_official(
    preds: Sequence[Interval], gts: Sequence[Interval], threshold: float = IOU_THRESHOLD
) -> Spotting:
    """The reference's matching, quirks 1-3 of the module docstring."""
    pairs: list[tuple[Interval, Interval]] = []
    fps: list[Interval] = []
    fns: list[Interval] = []
    for subject in _unique(p.subject for p in preds):
        for video in _unique(g.video for g in gts if g.subject == subject):
            video_gts = [g for g in gts if g.key == (subject, video)]
            claimed: set[int] = set()
            for pred in (p for p in preds if p.key == (subject, video)):
                matched = False
                for i, gt in enumerate(video_gts):
                    if i not in claimed and iou(pred.onset, pred.offset, gt.onset, gt.offset) >= threshold:
                        pairs.append((pred, gt))
                        claimed.add(i)
                        matched = True
                if not matched:
                    fps.append(pred)
            fns.extend(g for i, g in enumerate(video_gts) if i not in claimed)
    return Spotting(pairs, fps, fns)


def _order(i: Interval) -> tuple[Any, ...]:
    return (i.subject, i.video, i.onset, i.offset, i.emotion, i.dataset or "", i.type or "")


def match_strict(
    preds: Sequence[Interval], gts: Sequence[Interval], threshold: float = IOU_THRESHOLD
) -> Spotting:
    """One-to-one matching per video: most pairs, then most total IoU; independent of row order."""
    import numpy as np
    from scipy.optimize import linear_sum_assignment

    pairs: list[tuple[Interval, Interval]] = []
    fps: list[Interval] = []
    fns: list[Interval] = []
    keys = _unique(sorted([g.key for g in gts] + [p.key for p in preds]))
    for key in keys:
        video_preds = sorted((p for p in preds if p.key == key), key=_order)
        video_gts = sorted((g for g in gts if g.key == key), key=_order)
        if not video_preds or not video_gts:
            fps.extend(video_preds)
            fns.extend(video_gts)
            continue
        # A valid pair is worth 1 + iou/(n+1): the count of pairs dominates, total IoU breaks ties.
        bonus = 1.0 / (min(len(video_preds), len(video_gts)) + 1)
        gain = np.zeros((len(video_preds), len(video_gts)))
        for i, p in enumerate(video_preds):
            for j, g in enumerate(video_gts):
                v = iou(p.onset, p.offset, g.onset, g.offset)
                if v >= threshold:
                    gain[i, j] = 1.0 + v * bonus
        rows, cols = linear_sum_assignment(gain, maximize=True)
        used_p, used_g = set(), set()
        for i, j in zip(rows, cols, strict=True):
            if gain[i, j] > 0:
                pairs.append((video_preds[i], video_gts[j]))
                used_p.add(i)
                used_g.add(j)
        fps.extend(p for i, p in enumerate(video_preds) if i not in used_p)
        fns.extend(g for j, g in enumerate(video_gts) if j not in used_g)
    return Spotting(pairs, fps, fns)


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def _analysis_official(pairs: Sequence[tuple[Interval, Interval]], classes: Sequence[str]) -> dict[str, Any]:
    precisions, recalls, f1s = [], [], []
    for e in classes:
        truth = [g.emotion == e for _, g in pairs]
        pred = [p.emotion == e for p, _ in pairs]
        if len(set(truth) | set(pred)) < 2:
            tp = fp = fn = 0  # quirk 5: 1x1 (or empty) confusion matrix, the reference's except branch
        else:
            tp = sum(t and p for t, p in zip(truth, pred, strict=True))
            fp = sum(p and not t for t, p in zip(truth, pred, strict=True))
            fn = sum(t and not p for t, p in zip(truth, pred, strict=True))
        p_e, r_e, f_e = _prf(tp, fp, fn)
        precisions.append(p_e)
        recalls.append(r_e)
        f1s.append(f_e)
    precision, recall = _mean(precisions), _mean(recalls)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else math.nan  # quirk 6
    wrong = sum(1 for p, g in pairs if p.emotion != g.emotion and p.emotion in classes)
    return {
        "precision_analysis": precision, "recall_analysis": recall, "f1_analysis": f1,
        "uf1_analysis": _mean(f1s), "uar_analysis": precision,  # quirk 4: "UAR" is mean precision
        "tp_analysis": sum(1 for p, g in pairs if p.emotion == g.emotion),
        "fp_analysis": wrong, "fn_analysis": wrong,  # the reference counts the same rows for both
    }  # fmt: skip


def _analysis_strict(pairs: Sequence[tuple[Interval, Interval]], classes: Sequence[str]) -> dict[str, Any]:
    from sklearn.metrics import precision_recall_fscore_support

    truth = [g.emotion for _, g in pairs]
    allowed = set(classes)
    pred = [p.emotion if p.emotion in allowed else "<invalid>" for p, _ in pairs]
    if pairs:
        p_e, r_e, f_e, _ = precision_recall_fscore_support(
            truth, pred, labels=list(classes), average=None, zero_division=0
        )
    else:
        p_e = r_e = f_e = [0.0] * len(classes)
    precision, recall = _mean(list(p_e)) if classes else 0.0, _mean(list(r_e)) if classes else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    correct = sum(1 for t, p in zip(truth, pred, strict=True) if t == p)
    return {
        "precision_analysis": float(precision), "recall_analysis": float(recall), "f1_analysis": float(f1),
        "uf1_analysis": float(_mean(list(f_e))) if classes else 0.0, "uar_analysis": float(recall),
        "tp_analysis": correct, "fp_analysis": sum(1 for p in pred if p != "<invalid>") - correct,
        "fn_analysis": len(pairs) - correct,
    }  # fmt: skip


def strs(
    preds: Sequence[Interval],
    gts: Sequence[Interval],
    mode: Mode = "official",
    emotions: Sequence[str] | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> dict[str, Any]:
    """STRS and its parts for one set of predictions and ground truth (keys: ``RESULT_KEYS`` and
    ``tp/fp/fn_analysis``, ``n_pairs_analysed``).

    >>> gt = [Interval("1", "v", 0, 9, "negative"), Interval("1", "v", 100, 109, "positive")]
    >>> strs([Interval("1", "v", 0, 9, "negative"), Interval("1", "v", 100, 109, "negative")], gt, "strict")["strs"]  # spot F1 1, analysis F1 1/3
    0.3333333333333333
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; choose official or strict")
    classes = sorted({e.strip().lower() for e in emotions} if emotions else {g.emotion for g in gts})
    spotting = (match_official if mode == "official" else match_strict)(preds, gts, iou_threshold)
    tp, fp, fn = len(spotting.pairs), len(spotting.false_positives), len(spotting.false_negatives)
    precision_spot, recall_spot, f1_spot = _prf(tp, fp, fn)
    analysed = [(p, g) for p, g in spotting.pairs if g.emotion in classes]
    if tp == 0:
        # The reference crashes here (module docstring, 7); no TP means nothing to analyse: 0.
        analysis = dict.fromkeys(
            ("precision_analysis", "recall_analysis", "f1_analysis", "uf1_analysis", "uar_analysis"), 0.0
        ) | {"tp_analysis": 0, "fp_analysis": 0, "fn_analysis": 0}
    elif mode == "official":
        analysis = _analysis_official(analysed, classes)
    else:
        analysis = _analysis_strict(analysed, classes)
    result: dict[str, Any] = {
        "strs": f1_spot * analysis["f1_analysis"],
        "tp_spot": tp, "fp_spot": fp, "fn_spot": fn,
        "precision_spot": precision_spot, "recall_spot": recall_spot, "f1_spot": f1_spot,
        **analysis,
        "n_pairs_analysed": len(analysed),
    }  # fmt: skip
    return result


def _dataset_lookup(gts: Sequence[Interval]) -> tuple[dict[tuple[str, str], str], dict[str, str]]:
    by_key = {g.key: g.dataset for g in gts if g.dataset}
    by_subject: dict[str, set[str]] = {}
    for g in gts:
        if g.dataset:
            by_subject.setdefault(g.subject, set()).add(g.dataset)
    return by_key, {s: next(iter(d)) for s, d in by_subject.items() if len(d) == 1}


def score_str(
    preds: Sequence[Interval],
    gts: Sequence[Interval],
    mode: Mode = "official",
    emotions: Sequence[str] | None = None,
    iou_threshold: float = IOU_THRESHOLD,
) -> dict[str, Any]:
    """STRS pooled (``overall``), per dataset when the ground truth has a ``dataset`` column, and per
    expression type (``micro`` / ``macro``) when it has a ``type`` column.

    A prediction belongs to the dataset of its video (or of its subject) in the ground truth. For the
    type split, predictions with a ``type`` are scored against the ground truth of that type only;
    predictions without one are scored against each type's ground truth (so hits on the other type are
    false positives there).
    """
    out: dict[str, Any] = {"mode": mode, "iou_threshold": iou_threshold}
    out["overall"] = strs(preds, gts, mode, emotions, iou_threshold)
    by_key, by_subject = _dataset_lookup(gts)
    classes = emotions or sorted({g.emotion for g in gts})  # per-split scores keep the pooled classes
    for dataset in _unique(sorted(g.dataset for g in gts if g.dataset)):
        split_preds = [p for p in preds if (by_key.get(p.key) or by_subject.get(p.subject)) == dataset]
        out[dataset] = strs(
            split_preds, [g for g in gts if g.dataset == dataset], mode, classes, iou_threshold
        )
    if any(g.type for g in gts):
        typed_preds = any(p.type for p in preds)
        for etype in ("micro", "macro"):
            split_preds = [p for p in preds if p.type == etype] if typed_preds else list(preds)
            out[etype] = strs(split_preds, [g for g in gts if g.type == etype], mode, classes, iou_threshold)
    untyped = [g for g in gts if not g.type]
    if any(g.type for g in gts) and untyped:
        log.warning("%d ground-truth rows have no type: only in the pooled scores", len(untyped))
    out["emotions"] = list(classes)
    return out
