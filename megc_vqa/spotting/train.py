"""Training the spotter with leave-one-subject-out evaluation.

For each test subject (a LOSO fold), the remaining subjects are split again: a few whole subjects become the
*inner validation* split. The network trains on the rest; after every epoch it scores the validation videos,
and the epoch and the post-processing (threshold, extent) with the best strict spotting F1 on validation are
kept. Only then is the held-out subject scored, once, with those choices: nothing is ever chosen on the test
fold. The deployable model (``fit`` on every subject) follows the same inner-validation rule.

Recipes (``recipes/spotting/*.yaml``) have four sections: ``model`` (``SpotterConfig``), ``train``
(``TrainConfig``), ``peaks`` (``PeakParams`` defaults) and ``data`` (where the videos are: ``gt_csv`` +
``videos_root`` in the STR layout, or ``loader: NAME`` + ``roots`` for the dataset loaders, NAME one of
:data:`LOADERS`: a recipe names a loader from that fixed table and never a module, so no recipe can run code).

Command: ``megc-vqa spot-train --recipe R.yaml --out DIR [--loso]`` writes ``DIR/spotter.pt`` (plus
``DIR/loso.json`` with per-fold and pooled strict spotting scores when ``--loso``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import itertools
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from megc_vqa.annotations.common import add_sheet_limit_arguments, sheet_limits_from_args, using_sheet_limits
from megc_vqa.annotations.long_videos import check_fps
from megc_vqa.errors import InputError, UsageError, check_device, cut, set_output_folder
from megc_vqa.fileio import (
    TOLERATED_PROBLEMS,
    claim_outputs,
    is_inside,
    is_regular_file,
    load_yaml_file,
    parse_jsonl,
    read_jsonl_bytes,
    resolve_inside,
)
from megc_vqa.limits import BATCH_SIZE, EPOCHS, SAMPLES, WORKERS, check_count

log = logging.getLogger(__name__)

# What spot-train writes in --out; nothing else there is its to replace.
OUTPUT_NAMES = ("spotter.pt", "history.json", "loso.json")
WRITER = "megc-vqa spot-train"


@dataclass
class TrainConfig:
    """Optimisation and model-selection settings."""

    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    balance: float = 1.0  # total sampling weight of event windows relative to background windows
    samples_per_epoch: int | None = None  # windows drawn per epoch (default: all windows once)
    pos_weight_max: float = 10.0  # cap of the BCE positive weight (label mass imbalance)
    emotion_weight: float = 0.5
    val_subjects: float = (
        0.2  # fraction (or count when >= 1) of training subjects held out as inner validation
    )
    thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    extents: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6)
    smooths: tuple[float, ...] = (0.05,)  # PeakParams.smooth_seconds candidates (a recipe may add more)
    # PeakParams.micro_cut_seconds candidates, picked after the others by typed strict F1
    # (empty: the 0.5 s rule)
    micro_cuts: tuple[float, ...] = ()
    iou: float = 0.5
    phases: int = 1  # sampling-grid offsets prepared per training video (augmentation)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None


@dataclass
class FitResult:
    model: object
    epoch: int
    peaks: object
    val: dict
    history: list[dict] = field(default_factory=list)


def spotting_scores(curves, videos, params, iou: float = 0.5) -> dict:
    """Pooled strict spotting scores of ``extract_intervals(curve, params)`` against each video's events,
    from the project's one STR scorer (``megc_vqa.metrics.strs``, strict mode): the F1 selected on is the
    F1 ``run_str`` reports. ``typed_f1``: the same, but a hit must also have the event's type."""
    return strict_spotting(*spotted_and_true(curves, videos, params), iou)


def spotted_and_true(curves, videos, params) -> tuple[list, list]:
    """(spotted, annotated) intervals of every video, as the STR scorer's records, with their types."""
    from .infer import extract_intervals

    preds, gts = [], []
    for curve, video in zip(curves, videos, strict=True):
        preds += [_interval(video, iv.onset, iv.offset, iv.type) for iv in extract_intervals(curve, params)]
        gts += [_interval(video, e.onset, e.offset, e.expression_type) for e in video.events]
    return preds, gts


def _interval(video, onset: int, offset: int, kind: str | None = None):
    from megc_vqa.metrics.strs import Interval, canonical_subject

    # emotions play no part in spotting scores; one placeholder class keeps the scorer's analysis quiet
    subject = canonical_subject(video.subject)
    return Interval(subject, video.video_id, int(onset), int(offset), "others", type=kind)


def strict_spotting(preds, gts, iou: float = 0.5) -> dict:
    """``{tp, fp, fn, precision, recall, f1, mean_iou}`` of strict spotting (``megc_vqa.metrics.strs``:
    ``score_str`` and its one-to-one matching); ``mean_iou`` over the true positives breaks F1 ties."""
    from megc_vqa.metrics.strs import iou as interval_iou
    from megc_vqa.metrics.strs import match_strict, score_str

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
    from megc_vqa.training.split import split_by_subject, subjects

    n = len(subjects(videos))
    if n < 2:
        return list(videos), []
    share = fraction / n if fraction >= 1 else fraction
    return split_by_subject(videos, share, seed)


def split_subjects(videos: Sequence, fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """(train, validation) subject names of :func:`split_videos`."""
    train, val = split_videos(videos, fraction, seed)
    return sorted({v.subject for v in train}), sorted({v.subject for v in val})


def _prepare(videos, model_cfg, phases: int = 1):
    from megc_vqa.visual.face import FaceSkip

    from .data import prepare_video

    prepared = []
    skipped = 0
    for v in videos:
        stride = model_cfg.stride_for(v.fps)
        try:
            for phase in sorted({round(k * stride / phases) for k in range(phases)}):
                prepared.append(prepare_video(v, model_cfg, phase=phase))
        except FaceSkip as err:  # no usable face on the first frame: named, counted, left out
            skipped += 1
            log.warning("%s", err)
    if skipped:
        log.warning("face pipeline: %d of %d video(s) skipped; each is named above", skipped, len(videos))
    return prepared


def _curves(model, prepared, device):
    from .infer import score_stream

    return [
        score_stream(
            model, [pv.channels], pv.grid, pv.video.fps, model.config.stride_for(pv.video.fps), device=device
        )
        for pv in prepared
    ]


def fit(
    train_videos, val_videos, model_cfg, train_cfg: TrainConfig, peaks=None, val_prepared=None
) -> FitResult:
    """Train on ``train_videos``; pick the epoch and post-processing on ``val_videos``."""
    import numpy as np
    import torch
    from torch.nn import functional as F
    from tqdm import tqdm

    from .data import WindowDataset
    from .infer import PeakParams
    from .model import OUTPUTS, Spotter

    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    torch.manual_seed(train_cfg.seed)
    peaks = peaks or PeakParams()
    device = train_cfg.device
    train_prepared = _prepare(train_videos, model_cfg, train_cfg.phases)
    val_prepared = val_prepared if val_prepared is not None else _prepare(val_videos, model_cfg)
    dataset = WindowDataset(train_prepared, model_cfg.n_frames)
    if not len(dataset):
        raise InputError("no training windows: are the training videos empty?")
    labels = np.concatenate([pv.labels for pv in train_prepared])
    pos_mass = labels.sum(axis=0)
    pos_weight = np.clip((len(labels) - pos_mass) / np.maximum(pos_mass, 1.0), 1.0, train_cfg.pos_weight_max)
    pos_weight_t = torch.tensor(pos_weight, dtype=torch.float32, device=device)[None, :, None]
    sampler = torch.utils.data.WeightedRandomSampler(
        torch.from_numpy(dataset.weights(train_cfg.balance)),
        train_cfg.samples_per_epoch or len(dataset),
        generator=torch.Generator().manual_seed(train_cfg.seed),
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=train_cfg.batch_size, sampler=sampler, drop_last=False
    )
    model = Spotter(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=train_cfg.lr, total_steps=max(1, train_cfg.epochs * len(loader))
    )
    k = len(OUTPUTS)
    best: FitResult | None = None
    history = []
    for epoch in range(1, train_cfg.epochs + 1):
        model.train()
        started, total, steps = time.perf_counter(), 0.0, 0
        for x, y, e in tqdm(loader, desc=f"epoch {epoch}", leave=False, disable=None):
            x, y, e = x.to(device), y.to(device), e.to(device)
            out = model(x)
            loss = F.binary_cross_entropy_with_logits(out[:, :k], y, pos_weight=pos_weight_t)
            if model_cfg.emotions and (e >= 0).any():
                loss = loss + train_cfg.emotion_weight * F.cross_entropy(out[:, k:], e, ignore_index=-1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total, steps = total + loss.item(), steps + 1
        curves = _curves(model, val_prepared, device)
        params, score = choose_peaks(curves, [pv.video for pv in val_prepared], peaks, train_cfg)
        row = {
            "epoch": epoch,
            "loss": total / max(steps, 1),
            "seconds": time.perf_counter() - started,
            **score,
        }
        row.update(
            threshold=params.threshold,
            extent=params.extent,
            smooth_seconds=params.smooth_seconds,
            micro_cut_seconds=params.micro_cut_seconds,
        )
        history.append(row)
        log.info(
            "epoch %d loss %.4f val F1 %.3f, typed %.3f "
            "(thr %.2f, extent %.2f, smooth %.2f s, micro up to %.2f s)",
            epoch,
            row["loss"],
            score["f1"],
            score["typed_f1"],
            params.threshold,
            params.extent,
            params.smooth_seconds,
            params.micro_cut,
        )
        if best is None or score["f1"] > best.val["f1"]:
            best = FitResult(copy.deepcopy(model).cpu().eval(), epoch, params, score)
    best.history = history
    return best


def loso(
    videos, model_cfg, train_cfg: TrainConfig, peaks=None, test_subjects: Sequence[str] | None = None
) -> dict:
    """Leave-one-subject-out: per fold, fit with an inner validation split, then score the held-out subject."""
    subjects = sorted({v.subject for v in videos})
    if len(subjects) < 3:
        raise InputError(f"LOSO needs at least 3 subjects (train, inner validation, test); got {subjects}")

    folds, pooled_pred, pooled_gt = [], [], []
    for test_subject in test_subjects or subjects:
        rest = [v for v in videos if v.subject != test_subject]
        train_v, val_v = split_videos(rest, train_cfg.val_subjects, train_cfg.seed)
        val_s = sorted({v.subject for v in val_v})
        result = fit(train_v, val_v, model_cfg, train_cfg, peaks)
        test_videos = [v for v in videos if v.subject == test_subject]
        curves = _curves(result.model, _prepare(test_videos, model_cfg), "cpu")
        preds, gts = spotted_and_true(curves, test_videos, result.peaks)
        score = strict_spotting(preds, gts, train_cfg.iou)
        pooled_pred += preds
        pooled_gt += gts
        folds.append(
            {
                "test": test_subject,
                "val": val_s,
                "epoch": result.epoch,
                "threshold": result.peaks.threshold,
                "extent": result.peaks.extent,
                "val_f1": result.val["f1"],
                **score,
            }
        )
        log.info(
            "fold %s: test F1 %.3f (val F1 %.3f, epoch %d)",
            test_subject,
            score["f1"],
            result.val["f1"],
            result.epoch,
        )
    pooled = strict_spotting(pooled_pred, pooled_gt, train_cfg.iou)
    return {"mode": "strict", "iou": train_cfg.iou, "pooled": pooled, "folds": folds}


# --- recipes and data -------------------------------------------------------------------------------------


RECIPE_SECTIONS = ("model", "train", "peaks", "data")
DATA_KEYS = ("long_videos_jsonl", "gt_csv", "videos_root", "fps", "loader", "roots", "datasets")


def check_train_config(cfg: TrainConfig, where: str = "train") -> None:
    """Every ``train:`` value in its allowed range (``UsageError`` naming the key and the range)."""
    from megc_vqa.errors import UsageError, check_number

    def num(key: str, **bounds: float) -> None:
        check_number(f"{where}.{key}", getattr(cfg, key), **bounds)

    check_count(f"{where}.epochs", cfg.epochs, EPOCHS)
    check_count(f"{where}.batch_size", cfg.batch_size, BATCH_SIZE)
    check_count(f"{where}.samples_per_epoch", cfg.samples_per_epoch, SAMPLES)
    num("lr", above=0)
    num("weight_decay", minimum=0)
    num("balance", minimum=0)
    num("pos_weight_max", minimum=1)
    num("emotion_weight", minimum=0)
    num("val_subjects", minimum=0)
    num("iou", above=0, maximum=1)
    num("phases", minimum=1)
    num("seed", minimum=0)
    check_count(f"{where}.threads", cfg.threads, WORKERS)
    for key in ("thresholds", "extents"):
        values = getattr(cfg, key)
        if not values:
            raise UsageError(f"{where}.{key}: give at least one value")
        for v in values:
            if key == "thresholds":
                check_number(f"{where}.{key} entry", v, minimum=0, maximum=1)
            else:
                check_number(f"{where}.{key} entry", v, above=0, maximum=1)
    for v in cfg.smooths:
        check_number(f"{where}.smooths entry", v, minimum=0)
    for v in cfg.micro_cuts:
        check_number(f"{where}.micro_cuts entry", v, above=0)


def load_recipe(path: str | Path) -> tuple[object, TrainConfig, object, dict]:
    """(SpotterConfig, TrainConfig, PeakParams, data section) from a recipe YAML.

    Every key is checked: an unknown one (a typo) is an error with the closest known spelling, and every
    number must be in its range, so a recipe never trains with a value silently dropped."""
    import yaml

    from megc_vqa.errors import InputError, reject_unknown_keys

    from .infer import PeakParams
    from .model import SpotterConfig

    path = Path(path)
    if not path.is_file():
        raise InputError(f"spotting recipe {path} does not exist (see recipes/spotting/*.yaml)")
    try:
        recipe = load_yaml_file(path, "spotting recipe") or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise InputError(f"{path}: not a valid YAML recipe ({' '.join(str(err).split())[:300]})") from None
    reject_unknown_keys(recipe, RECIPE_SECTIONS, str(path), "recipe section")
    sections = {}
    for name in RECIPE_SECTIONS:
        value = recipe.get(name) or {}
        if not isinstance(value, dict):
            raise InputError(f"{path}: section {name}: expected key: value lines, got {type(value).__name__}")
        sections[name] = dict(value)
    train = sections["train"]
    for key in ("thresholds", "extents", "smooths", "micro_cuts"):
        if key in train:
            train[key] = tuple(train[key]) if isinstance(train[key], (list, tuple)) else (train[key],)
    reject_unknown_keys(train, [f.name for f in dataclasses.fields(TrainConfig)], f"{path}: train")
    reject_unknown_keys(sections["data"], DATA_KEYS, f"{path}: data")
    try:
        model_cfg = SpotterConfig.from_dict(sections["model"], where=f"{path}: model")
        peaks = PeakParams.from_dict(sections["peaks"], where=f"{path}: peaks")
        train_cfg = TrainConfig(**train)
    except TypeError as err:
        raise InputError(f"{path}: {err}") from None
    except InputError:
        raise
    except ValueError as err:
        raise InputError(f"{path}: {err}") from None
    check_train_config(train_cfg, f"{path}: train")
    if train_cfg.micro_cuts and peaks.typing != "duration":
        raise InputError(
            f"{path}: train.micro_cuts picks the micro/macro length cut, which only peaks.typing: duration "
            f"uses (this recipe has typing: {peaks.typing}); remove micro_cuts or set typing: duration"
        )
    return model_cfg, train_cfg, peaks, sections["data"]


def read_str_gt(
    gt_csv: str | Path, videos_root: str | Path, fps: float | None = None, dataset: str | None = None
) -> list:
    """Long videos from an STR ground-truth CSV (``subject,video,onset,offset,emotion[,type]``) whose frames
    are in ``videos_root``, matched and given their fps by ``megc_vqa.annotations.long_videos`` (``fps`` or the
    ``videos.json`` sidecar or ``dataset``; never guessed). Every row is checked by the STR reader
    (``read_gt_events``), here also against its video's frames on disk: an event before the first frame
    or past the last one is an error naming its line. Missing ``type``: micro when at most 0.5 s."""
    from megc_vqa.annotations.long_videos import FpsPolicy, discover_videos
    from megc_vqa.records import LongVideo

    from .data import NoFramesError
    from .pipeline import read_gt_events

    # the names, every row checked but for the frame range (its warnings come with the second reading)
    keys = list(read_gt_events(gt_csv, warnings=[]))
    jobs = discover_videos(videos_root, FpsPolicy(fps, dataset=dataset), gt_keys=keys)
    by_key = {(j.subject, j.video): j for j in jobs}
    ranges = {}
    for key in keys:
        try:
            ranges[key] = frame_range(by_key[key].source)
        except NoFramesError as err:
            raise InputError(
                f"{gt_csv}: subject {key[0]} video {key[1]} has no frames to train on ({err}); put its frames "
                "there or remove its rows"
            ) from None
    events = read_gt_events(gt_csv, {key: by_key[key].fps for key in keys}, frames=ranges)
    videos = []
    for subject, video in sorted(keys):
        job = by_key[(subject, video)]
        ordered = tuple(sorted(events[(subject, video)], key=lambda e: e.onset))
        videos.append(LongVideo("str", subject, video, job.source, job.fps, ordered))
    return videos


def frame_range(source) -> tuple[int, int]:
    """(first, last) frame number of a long video on disk (``NoFramesError`` naming it when it has none)."""
    from .data import VideoFrames

    frames = VideoFrames.open(source)
    return frames.first, frames.last


def read_long_videos_jsonl(path: str | Path) -> list:
    """Long videos from a ``long_videos.jsonl`` (one object per video: ``subject, video, folder, fps, events``
    with ``onset, apex, offset, type, emotion``), as ``megc-vqa synth-test --long-videos`` writes it; relative
    folders are taken from the file's parent's parent (the synth-test output folder).

    Checked as the STR ground truth is (``read_str_gt``), each error naming the line and the event: integer
    frames from 0, onset <= apex <= offset, every event inside its video's frames on disk, type micro or
    macro (default micro), emotion one of :data:`~megc_vqa.labels.STR_CLASSES` (or none), fps a positive
    number, each video once; an exact duplicate of an event is dropped with a warning."""
    path = Path(path)
    from megc_vqa.metrics.strs import canonical_subject

    rows, problems = parse_jsonl(read_jsonl_bytes(path), str(path))  # bounded: megc_vqa.limits
    errors: list[str] = [str(p) for p in problems if not p.message.startswith(TOLERATED_PROBLEMS)]
    videos: list = []
    first_line: dict[tuple[str, str], int] = {}
    for line_no, rec in ((r.line, r.data) for r in rows):
        where = f"{path} line {line_no}"
        video = _long_video_record(rec, where, path, errors)
        if video is None:
            continue
        key = (canonical_subject(video.subject), video.video_id)
        if key in first_line:
            errors.append(
                f"{where}: subject {video.subject} video {video.video_id} again (first on line "
                f"{first_line[key]}): give each video once, with all its events"
            )
            continue
        first_line[key] = line_no
        videos.append(video)
    if errors:
        more = f"; ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise InputError("; ".join(errors[:20]) + more)
    return videos


def _long_video_record(rec: object, where: str, path: Path, errors: list[str]):
    """One ``long_videos.jsonl`` line as a ``LongVideo``, or ``None`` with its defects added to ``errors``."""

    from megc_vqa.labels import STR_CLASSES
    from megc_vqa.metrics.strs import MAX_FRAME, expression_type
    from megc_vqa.records import Event, FrameSource, LongVideo

    from .data import NoFramesError

    if not isinstance(rec, dict):
        errors.append(
            f"{where}: expected a JSON object (subject, video, folder, fps, events), got {type(rec).__name__}"
        )
        return None
    missing = [k for k in ("subject", "video", "folder", "fps") if rec.get(k) in (None, "")]
    if missing:
        errors.append(
            f"{where}: missing {', '.join(missing)} (a long-video record has subject, video, folder, fps, events)"
        )
        return None
    fps = rec["fps"]
    try:
        check_fps("fps", fps, where=where)
    except UsageError as err:
        errors.append(str(err))
        return None
    if not isinstance(rec["folder"], str) or not isinstance(rec.get("events", []), list):
        errors.append(f"{where}: folder must be a path (text) and events a list")
        return None
    base = path.parent.parent  # where synth-test and prep put the frame folders of the file's videos
    folder = Path(rec["folder"])
    if not is_inside(base / folder, base):  # an absolute folder elsewhere, or one climbing out
        errors.append(
            f"{where}: folder {cut(str(folder))} is outside {base} (the file's parent's parent, where its "
            "frame folders are); for frames elsewhere use --gt STR_CSV --videos-root DIR"
        )
        return None
    source = FrameSource("folder", Path(os.path.normpath(base / folder)))
    try:
        first, last = frame_range(source)
    except NoFramesError as err:
        errors.append(f"{where}: {err}")
        return None
    events: list = []
    seen: dict[tuple[int, int], int] = {}
    bad = False
    for k, e in enumerate(rec.get("events", []), start=1):
        at = f"{where}, event {k}"
        if not isinstance(e, dict):
            errors.append(f"{at}: expected an object with onset, offset, type, emotion")
            bad = True
            continue
        frames = {c: e.get(c) for c in ("onset", "apex", "offset")}
        wrong = [
            c for c, v in frames.items()
            if (v is not None or c != "apex") and (type(v) is not int or not 0 <= v <= MAX_FRAME)
        ]  # fmt: skip
        if wrong:
            errors.append(
                f"{at}: {', '.join(f'{c} {cut(frames[c], 30)}' for c in wrong)} is not a frame number "
                f"(an integer 0..{MAX_FRAME:,})"
            )
            bad = True
            continue
        onset, apex, offset = frames["onset"], frames["apex"], frames["offset"]
        problem = None
        if onset > offset:
            problem = f"onset {onset} is after offset {offset}"
        elif apex is not None and not onset <= apex <= offset:
            problem = f"apex {apex} is outside onset..offset {onset}..{offset}"
        elif onset < first or offset > last:
            problem = f"frames {onset}..{offset} are outside the video's frames {first}..{last} ({folder})"
        kind = expression_type(e.get("type", "micro")) if isinstance(e.get("type", "micro"), str) else None
        if problem is None and kind is None:
            problem = f"type {cut(e.get('type'), 40)} is neither micro nor macro"
        emotion = e.get("emotion")
        if problem is None and emotion is not None and str(emotion).strip().lower() not in STR_CLASSES:
            problem = f"emotion {cut(emotion, 40)} is not one of {', '.join(STR_CLASSES)}"
        if problem is not None:
            errors.append(f"{at}: {problem}")
            bad = True
            continue
        if (onset, offset) in seen:
            log.warning(
                "%s: duplicate of event %d (%d..%d), dropped", at, seen[(onset, offset)], onset, offset
            )
            continue
        seen[(onset, offset)] = k
        emotion = None if emotion is None else str(emotion).strip().lower()
        events.append(Event(onset, offset, apex, coarse_emotion=emotion, expression_type=kind))
    if bad:
        return None
    return LongVideo("synth", str(rec["subject"]), str(rec["video"]), source, float(fps), tuple(events))


def _long_videos_of_all_datasets(root: Path) -> list:
    """Every long video the annotation loaders find under ``root`` (CAS(ME)^2, SAMM-LV)."""
    from megc_vqa.annotations import load_all

    return list(load_all(root).long_videos)


# The loaders a spotting recipe's ``data.loader`` may name. A fixed table of the project's own functions:
# recipes travel between labs, and a name read from a file must never import or call arbitrary code.
LOADERS = {
    "annotations": _long_videos_of_all_datasets,
    # the spelling of earlier recipes, kept as an alias of the same loader (it is not imported)
    "megc_vqa.annotations:load_all": _long_videos_of_all_datasets,
}


def _recipe_loader(name: object):
    if not isinstance(name, str) or name not in LOADERS:
        raise InputError(
            f"recipe data.loader {name!r} is not a known loader; use one of {sorted(LOADERS)} "
            "(recipes name loaders from this table, never a module)"
        )
    return LOADERS[name]


def load_videos(data: dict, base: Path = Path(".")) -> list:
    """The recipe's ``data`` section -> long videos."""

    check_fps("data.fps", data.get("fps"))
    for key in ("long_videos_jsonl", "gt_csv"):
        if key in data and not (base / str(data[key])).is_file():
            raise InputError(f"recipe data.{key} {data[key]}: no such file (or give --gt)")
    if "long_videos_jsonl" in data:
        return read_long_videos_jsonl(base / data["long_videos_jsonl"])
    if "gt_csv" in data:
        if not data.get("videos_root"):
            raise InputError(
                f"recipe data.gt_csv {data['gt_csv']} needs data.videos_root (its frame folders)"
            )
        fps = data.get("fps")
        return read_str_gt(
            base / data["gt_csv"],
            base / data["videos_root"],
            None if fps is None else float(fps),
            data.get("dataset"),
        )
    if "loader" in data:
        loader = _recipe_loader(data["loader"])
        videos = []
        for root in data.get("roots", []):
            videos.extend(loader(base / root))
        if data.get("datasets"):
            videos = [v for v in videos if v.dataset in data["datasets"]]
        return videos
    raise InputError("recipe data section needs long_videos_jsonl, gt_csv + videos_root, or loader + roots")


# The options that give each data path of a recipe on the command line instead (then any path is taken).
_PATH_OPTIONS = {
    "long_videos_jsonl": "--gt",
    "gt_csv": "--gt",
    "videos_root": "--videos-root",
    "roots": "--data-root",
}


def check_recipe_paths(data: dict, recipe: str | Path, given: set[str] = frozenset()) -> None:
    """A recipe's data paths (relative to the working folder, as documented) must stay below the working
    folder: an absolute path or one climbing out with ``..`` written in a recipe is refused, naming the key
    and the option that gives it on the command line. Keys in ``given`` come from the command line."""
    cwd = Path.cwd()
    for key, option in _PATH_OPTIONS.items():
        if key in given or key not in data:
            continue
        values = data[key] if key == "roots" and isinstance(data[key], list) else [data[key]]
        for value in values:
            if not isinstance(value, str):
                raise InputError(f"{recipe}: data.{key} {cut(value)} is not a path")
            allow = (
                f"a recipe names data below the working folder; give this path on the command line ({option})"
            )
            resolve_inside(value, [cwd], f"{recipe}: data.{key}", allow)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", required=True, help="recipes/spotting/<dataset>.yaml")
    parser.add_argument("--out", required=True, help="output folder (spotter.pt, history.json, loso.json)")
    parser.add_argument(
        "--gt",
        help="override the recipe's data: an STR ground-truth CSV (frames in --videos-root) or a long_videos.jsonl",
    )
    parser.add_argument("--videos-root", help="frame folders <subject>_<video>/ (with --gt)")
    parser.add_argument(
        "--fps", type=float, help="fps of every --gt video (default: videos.json next to them, or data.fps)"
    )
    parser.add_argument(
        "--dataset", help="fps from this dataset's loader for videos without one (e.g. samm_lv)"
    )
    parser.add_argument("--data-root", action="append", help="override the recipe's data.roots (repeatable)")
    parser.add_argument("--loso", action="store_true", help="also run leave-one-subject-out evaluation")
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    parser.add_argument("--device", help="override train.device (cpu, cuda)")
    add_sheet_limit_arguments(parser)  # data.loader reads the dataset spreadsheets


def run(args: argparse.Namespace) -> int:
    from megc_vqa.errors import UsageError
    from megc_vqa.fileio import atomic_write_text

    check_count("--epochs", args.epochs, EPOCHS)
    check_fps("--fps", args.fps)
    if args.device:
        check_device("--device", args.device)
    if args.gt and not Path(args.gt).is_file():
        raise UsageError(f"--gt {args.gt}: no such file")
    if args.gt and not args.gt.endswith(".jsonl") and not args.videos_root:
        raise UsageError(f"--gt {args.gt} is an STR CSV: also give --videos-root (its frame folders)")
    if args.videos_root and not Path(args.videos_root).is_dir():
        raise UsageError(f"--videos-root {args.videos_root}: not a folder")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: is a file, not a folder")
    model_cfg, train_cfg, peaks, data = load_recipe(args.recipe)
    from_cli = {"long_videos_jsonl", "gt_csv", "videos_root", "roots"} if args.gt else set()
    check_recipe_paths(data, args.recipe, from_cli | ({"roots"} if args.data_root else set()))
    if args.gt and args.gt.endswith(".jsonl"):
        data = {"long_videos_jsonl": args.gt}
    elif args.gt:
        data = {"gt_csv": args.gt, "videos_root": args.videos_root, "fps": args.fps or data.get("fps")}
        data["dataset"] = getattr(args, "dataset", None) or data.get("dataset")
    if args.data_root:
        data = {**data, "roots": args.data_root}
    if args.epochs is not None:
        train_cfg.epochs = args.epochs
    if args.device:
        train_cfg.device = args.device
    else:
        check_device(f"{args.recipe}: train.device", train_cfg.device)
    with using_sheet_limits(sheet_limits_from_args(args)):
        videos = load_videos(data)
    if not videos:
        log.error("no long videos found with %s", data)
        return 1
    # A spotter.pt there from elsewhere is kept: only an earlier spot-train's files (history.json beside).
    claim_outputs(out, WRITER, OUTPUT_NAMES, legacy=lambda p: is_regular_file(p.parent / "history.json"))
    set_output_folder(out)
    if args.loso:
        report = loso(videos, model_cfg, train_cfg, peaks)
        atomic_write_text(out / "loso.json", json.dumps(report, indent=2))
        log.info("LOSO strict spotting F1 %.3f -> %s", report["pooled"]["f1"], out / "loso.json")
    model_cfg.train_fps = tuple(sorted({float(v.fps) for v in videos}))
    train_v, val_v = split_videos(videos, train_cfg.val_subjects, train_cfg.seed)
    train_s, val_s = sorted({v.subject for v in train_v}), sorted({v.subject for v in val_v})
    result = fit(train_v, val_v, model_cfg, train_cfg, peaks)
    from .model import save_checkpoint

    save_checkpoint(
        out / "spotter.pt",
        result.model,
        peaks=dataclasses.asdict(result.peaks),
        epoch=result.epoch,
        val=result.val,
        train_subjects=train_s,
        val_subjects=val_s,
    )
    atomic_write_text(out / "history.json", json.dumps(result.history, indent=2))
    log.info("saved %s (epoch %d, val F1 %.3f)", out / "spotter.pt", result.epoch, result.val["f1"])
    return 0
