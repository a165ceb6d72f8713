"""The ``megc-vqa spot-train`` command, and leave-one-subject-out evaluation.

For each test subject (a LOSO fold), the remaining subjects are split again: a few whole subjects become the
*inner validation* split. The network trains on the rest; after every epoch it scores the validation videos,
and the epoch and the post-processing (threshold, extent) with the best strict spotting F1 on validation are
kept. Only then is the held-out subject scored, once, with those choices: nothing is ever chosen on the test
fold. The deployable model (``fit`` on every subject) follows the same inner-validation rule.

The jobs live in their own modules: :mod:`.recipe` (recipes, ``TrainConfig`` and the long videos a recipe
names), :mod:`.selection` (scores and choices on validation), :mod:`.fitting` (the training loop) and
:mod:`.model` (the networks, their registry ``SPOTTERS`` and the checkpoint). Their names used by callers
are re-exported here. ``loso`` stays beside the command: it calls :func:`fit` through this module.

Command: ``megc-vqa spot-train --recipe R.yaml --out DIR [--loso]`` writes ``DIR/spotter.pt`` (plus
``DIR/loso.json`` with per-fold and pooled strict spotting scores when ``--loso``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from collections.abc import Sequence
from pathlib import Path

from megc_vqa.annotations.common import add_sheet_limit_arguments, sheet_limits_from_args, using_sheet_limits
from megc_vqa.annotations.long_videos import check_fps
from megc_vqa.errors import InputError, UsageError, check_device, set_output_folder
from megc_vqa.fileio import atomic_write_text, claim_outputs, is_regular_file, refuse_non_folder
from megc_vqa.limits import EPOCHS, check_count

from .fitting import FitResult, _curves, _prepare, fit  # noqa: F401  (re-exported)
from .recipe import (  # noqa: F401  (re-exported)
    LOADERS,
    TrainConfig,
    check_recipe_paths,
    load_recipe,
    load_videos,
    read_long_videos_jsonl,
    read_str_gt,
)
from .selection import choose_peaks, split_videos, spotted_and_true, spotting_scores, strict_spotting  # noqa: F401

log = logging.getLogger(__name__)

# What spot-train writes in --out; nothing else there is its to replace.
OUTPUT_NAMES = ("spotter.pt", "history.json", "loso.json")
WRITER = "megc-vqa spot-train"


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
    refuse_non_folder(out)
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
    from .model import save_checkpoint  # torch: a command module stays light until it runs

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
