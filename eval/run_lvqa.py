"""ME-LVQA: answer the six questions per long video from spotted events.

    python eval/run_lvqa.py --questions F... --videos-root DIR --out OUT [--gt G...] [--spotter CKPT]
                            [--model M --adapter A]

Each question row's `video` names the frame folder DIR/<video> (megc_vqa.annotations.long_videos: the naming rule
and where fps comes from: --fps / --fps-for, DIR/videos.json, --dataset; unknown fps stops the run before
any work). Spotting runs (or resumes) through the STR pipeline in OUT (OUT/str_pred.csv,
OUT/intervals.jsonl; a rerun resumes only a run made with the same spotter, model and options, else it
is refused unless --restart discards the earlier run's files); answers go to OUT/<question file>_pred.jsonl (`_to_answer` replaced by `_pred`),
same rows, order and keys. Distinct AUs come from --model on each event, else the documented fallback of
megc_vqa.spotting.lvqa; rows answered by a fallback (an event beyond those spotted) are flagged in
OUT/lvqa_flags.jsonl and the report. OUT/lvqa_report.md and OUT/lvqa_videos.csv: a per-video table; with
--gt (e.g. synth-test's OUT/gt/me_lvqa_*_to_answer.jsonl) also OUT/lvqa_scores.json (megc_vqa.metrics.lvqa,
as described by a 2026 team's evaluation code; the official scorer is unpublished).
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
    p.add_argument("--questions", required=True, nargs="+", type=Path)
    add_video_arguments(p, "a videos.json sidecar instead")
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--gt", nargs="+", type=Path, default=[], help="LVQA ground truth (answers filled)")
    p.add_argument("--spotter", type=Path, help="spotter checkpoint; default: the model-free baseline")
    p.add_argument("--model", help="VQA base model (AUs of each event, and emotions)")
    p.add_argument("--adapter")
    add_run_arguments(p)
    return p


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from megc_vqa.annotations.long_videos import check_fps
    from megc_vqa.errors import UsageError, check_device
    from megc_vqa.fileio import write_jsonl
    from megc_vqa.limits import check_image_size
    from megc_vqa.qa.io import read_questions
    from megc_vqa.spotting.lvqa import answer_file, vqa_event_aus

    check_fps("--fps", args.fps)
    check_image_size("--image-size", args.image_size)
    check_device("--device", args.device)
    for q in args.questions:
        if not q.is_file():
            raise UsageError(f"--questions {q}: no such question file")
    for g in args.gt:
        if not g.is_file():
            raise UsageError(f"--gt {g}: no such ground-truth file")
    if args.adapter and not args.model:
        raise UsageError("--adapter needs --model (the base model it was trained on)")
    from megc_vqa.annotations.long_videos import check_video_arguments, video_jobs
    from megc_vqa.spotting.pipeline import (
        STRConfig,
        load_spotter,
        open_str_run,
        read_intervals,
    )
    from megc_vqa.spotting.report import write_lvqa_report

    check_video_arguments(args.videos_root, args.videos, args.out)
    videos = sorted({row.video for q in args.questions for row in read_questions(q)})
    jobs = video_jobs(args, names=videos)
    spotter, peaks = load_spotter(args.spotter, args.device)
    config = STRConfig(emotion="vqa" if args.model else "head", device=args.device, plots=not args.no_plots)
    runner = open_str_run(
        args.out, spotter, peaks, config, videos_root=args.videos_root, sidecar=args.videos, model=args.model,
        adapter=args.adapter, visual_spec=args.visual_spec, image_size=args.image_size, restart=args.restart,
    )  # fmt: skip
    ask = runner.ask
    summary = runner.run(jobs)
    records = read_intervals(args.out)
    events = {name: rec["intervals"] for name, rec in records.items()}
    by_name = {job.name: job for job in jobs}
    event_aus_for = (
        (lambda video: vqa_event_aus(ask, by_name[video].source, by_name[video].fps)) if ask else None
    )
    flags: list[dict] = []
    preds = []
    for q in args.questions:
        out = answer_file(q, events, args.out, event_aus_for, flags=flags)
        preds.append(out)
        runner.record.own(out.relative_to(args.out))  # a --restart removes it with the run's other files
        logging.info("%s -> %s", q, out)
    write_jsonl(args.out / "lvqa_flags.jsonl", flags)
    if flags:
        logging.warning(
            "%d row(s) answered by a documented fallback: %s", len(flags), args.out / "lvqa_flags.jsonl"
        )
    scores = write_lvqa_report(args.out, preds, args.gt, flags, runner.spotter_description)
    if scores is not None:
        o = scores["overall"]
        logging.info(
            "count MAE total %.3f micro %.3f macro %.3f, AU F1 %.3f, type UF1 %.3f (%s) -> %s",
            o["count_total_mae"], o["count_micro_mae"], o["count_macro_mae"], o["au_f1"] or 0.0,
            o["type_uf1"] or 0.0, runner.spotter_description, args.out / "lvqa_scores.json",
        )  # fmt: skip

    from megc_vqa.fileio import atomic_write_text, strict_json

    # The settings the VQA model was asked with (its training record, any override), for this run.
    summary.update(vqa=ask.settings if ask else None, predictions=[str(p) for p in preds])
    atomic_write_text(args.out / "lvqa_summary.json", strict_json(summary, indent=2, default=str) + "\n")
    return 1 if summary["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    """The command behind the project's error boundary (one line and exit 2 for a project error)."""
    from megc_vqa.errors import run_command

    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
