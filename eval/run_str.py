"""ME-STR: spot every long video under --videos-root, recognise each interval's emotion, write the STR CSV.

    python eval/run_str.py --videos-root DIR --out OUT [--gt CSV] [--spotter CKPT] [--model M --adapter A]
    python eval/run_str.py --videos P/samm_lv_videos.json --videos-under DATA --gt P/samm_lv_str_gt.csv --out OUT
        (after `megc-vqa prep --data-root DATA --out P`: the sidecar names frame folders under DATA)

DIR holds one frame folder per video, named by the video (SAMM-LV naming: DIR/006_1/ is subject 006, video
006_1; see megc_vqa.annotations.long_videos for the rule and how ground truth in another naming is matched). The
fps of every video comes from --fps / --fps-for, else DIR/videos.json (synth-test and prep write it), else
--dataset NAME; a video of unknown fps stops the run before any work. Writes OUT/str_pred.csv
(subject,video,onset,offset,emotion) per video as it finishes (a rerun skips finished videos when the
earlier run used the same spotter, model and options, and refuses otherwise: --restart discards the
earlier run's files, only those),
OUT/plots/*.png, OUT/summary.json (spotter, fps per video) and, with --gt, OUT/scores.json as
{"official": {...}, "strict": {...}} from megc_vqa.metrics.strs plus OUT/plots/threshold_curve.png.
Without --spotter the model-free MEGC-style baseline spots (the summary and scores say so). Emotion:
--model/--adapter ask the VQA model on onset/apex/offset; else the spotter's emotion head when it has one;
else --fallback-emotion.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    from megc_vqa.annotations.long_videos import add_video_arguments
    from megc_vqa.spotting.pipeline import add_run_arguments

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_video_arguments(p, "a videos.json sidecar (prep writes one)")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--gt", type=Path, help="ground-truth STR CSV: scores.json and plots with GT intervals")
    p.add_argument(
        "--spotter", type=Path, help="spotter checkpoint (megc-vqa spot-train); default: motion baseline"
    )
    p.add_argument("--model", help="VQA base model for the emotion of each interval")
    p.add_argument("--adapter", help="LoRA adapter for --model")
    p.add_argument(
        "--emotion", choices=("vqa", "head", "constant"), help="default: vqa with --model, else head"
    )
    p.add_argument("--fallback-emotion", default="negative")
    p.add_argument("--threshold", type=float, help="override the checkpoint's score threshold")
    add_run_arguments(p)
    p.add_argument("-v", "--verbose", action="store_true")
    return p


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    from megc_vqa.annotations.long_videos import check_fps
    from megc_vqa.errors import UsageError, check_device, check_number
    from megc_vqa.limits import check_image_size

    check_fps("--fps", args.fps)
    check_image_size("--image-size", args.image_size)
    check_device("--device", args.device)
    check_number("--threshold", args.threshold, minimum=0, maximum=1)
    if args.gt and not args.gt.is_file():
        raise UsageError(f"--gt {args.gt}: no such ground-truth file")
    from megc_vqa.annotations.long_videos import check_video_arguments, video_jobs
    from megc_vqa.metrics.strs import read_events
    from megc_vqa.spotting.pipeline import (
        STRConfig,
        load_spotter,
        open_str_run,
    )

    if args.adapter and not args.model:  # it would be ignored: the emotions would silently not be the VQA's
        raise UsageError("--adapter needs --model (the base model it was trained on)")
    check_video_arguments(args.videos_root, args.videos, args.out)
    gt = read_events(args.gt) if args.gt else {}
    jobs = video_jobs(args, gt_keys=list(gt))
    if not jobs:
        logging.error("%s: no video folders", args.videos or args.videos_root)
        return 1
    spotter, peaks = load_spotter(args.spotter, args.device)
    config = STRConfig(
        emotion=args.emotion or ("vqa" if args.model else "head"),
        fallback_emotion=args.fallback_emotion,
        device=args.device,
        plots=not args.no_plots,
        peaks={"threshold": args.threshold} if args.threshold is not None else {},
    )
    runner = open_str_run(
        args.out, spotter, peaks, config, videos_root=args.videos_root, sidecar=args.videos, model=args.model,
        adapter=args.adapter, visual_spec=args.visual_spec, image_size=args.image_size, restart=args.restart,
    )  # fmt: skip
    ask = runner.ask
    summary = runner.run(jobs, gt)

    from megc_vqa.fileio import atomic_write_text, strict_json

    # The settings the VQA model was asked with (its training record, any override), for this run.
    summary["vqa"] = ask.settings if ask else None
    summary["emotion"] = config.emotion
    atomic_write_text(args.out / "str_summary.json", strict_json(summary, indent=2, default=str) + "\n")
    logging.info(
        "%d video(s) done, %d skipped (finished earlier), %d failed -> %s",
        len(summary["done"]),
        len(summary["skipped"]),
        len(summary["failed"]),
        runner.csv_path,
    )
    logging.info("spotter: %s", runner.spotter_description)
    if args.gt:
        from megc_vqa.spotting.report import write_str_scores

        scores = write_str_scores(runner, args.gt)
        s = scores["strict"]["overall"]
        logging.info(
            "strict: spotting F1 %.3f, STRS %.3f (%s) -> %s",
            s["f1_spot"],
            s["strs"],
            runner.spotter_description,
            args.out / "scores.json",
        )
    return 1 if summary["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    """The command behind the project's error boundary (one line and exit 2 for a project error)."""
    from megc_vqa.errors import run_command

    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
