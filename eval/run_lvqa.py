"""ME-LVQA: answer the six questions per long video from spotted events.

    python eval/run_lvqa.py --questions F... --videos-root DIR --out OUT [--spotter CKPT] [--model M --adapter A]

Each question row's `video` names the frame folder DIR/<video>. Spotting runs (or resumes) through the STR
pipeline in OUT (OUT/str_pred.csv, OUT/intervals.jsonl); answers go to OUT/<question file>_pred.jsonl
(`_to_answer` replaced by `_pred`), same rows, order and keys. Distinct AUs come from --model on each event,
else the documented fallback of megc_vqa.spotting.lvqa.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--questions", required=True, nargs="+", type=Path)
    p.add_argument("--videos-root", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--spotter", type=Path, help="spotter checkpoint; default: motion baseline")
    p.add_argument("--model", help="VQA base model (AUs of each event, and emotions)")
    p.add_argument("--adapter")
    p.add_argument("--visual-spec", help="override the sampler spec the model was trained with")
    p.add_argument("--image-size", type=int, help="override the frame size the model was trained with")
    p.add_argument("--fps", type=float, default=30.0)
    p.add_argument("--fps-for", action="append", default=[], metavar="PATTERN=FPS")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-plots", action="store_true")
    return p


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from megc_vqa.errors import UsageError, check_number
    from megc_vqa.spotting.lvqa import answer_file, read_questions, vqa_event_aus

    check_number("--fps", args.fps, above=0)
    for q in args.questions:
        if not q.is_file():
            raise UsageError(f"--questions {q}: no such question file")
    if args.adapter and not args.model:
        raise UsageError("--adapter needs --model (the base model it was trained on)")
    if args.out.exists() and not args.out.is_dir():
        raise UsageError(f"--out {args.out}: is a file, not a folder")
    from megc_vqa.spotting.pipeline import (
        STRConfig,
        STRRunner,
        discover_videos,
        engine_ask,
        load_spotter,
        parse_fps_rules,
        read_intervals,
    )

    videos = sorted({row["video"] for q in args.questions for row in read_questions(q)})
    jobs = discover_videos(args.videos_root, parse_fps_rules(args.fps, args.fps_for), names=videos)
    spotter, peaks = load_spotter(args.spotter, args.device)
    ask = engine_ask(args.model, args.adapter, args.visual_spec, args.image_size) if args.model else None
    config = STRConfig(emotion="vqa" if ask else "head", device=args.device, plots=not args.no_plots)
    summary = STRRunner(args.out, spotter, peaks, config, ask).run(jobs)
    records = read_intervals(args.out)
    events = {name: rec["intervals"] for name, rec in records.items()}
    by_name = {job.name: job for job in jobs}
    event_aus_for = (
        (lambda video: vqa_event_aus(ask, by_name[video].source, by_name[video].fps)) if ask else None
    )
    written = []
    for q in args.questions:
        out = answer_file(q, events, args.out, event_aus_for)
        written.append(str(out))
        logging.info("%s -> %s", q, out)
    import json

    from megc_vqa.fileio import atomic_write_text

    # The settings the VQA model was asked with (its training record, any override), for this run.
    summary.update(vqa=ask.settings if ask else None, predictions=written)
    atomic_write_text(args.out / "lvqa_summary.json", json.dumps(summary, indent=2, default=str) + "\n")
    return 1 if summary["failed"] else 0


def main(argv: list[str] | None = None) -> int:
    """The command behind the project's error boundary (one line and exit 2 for a project error)."""
    from megc_vqa.errors import run_command

    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
