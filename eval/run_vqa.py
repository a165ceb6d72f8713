"""Answer MEGC question files with a model and write the leaderboard files.

    python eval/run_vqa.py --questions ../shared/megc/2025/*_to_answer.jsonl --frames-root TEST_FRAMES \
        --model qwen2.5-vl-3b --adapter runs/lora --out runs/pred [--gt GT_FILES...]

Writes OUT/<official prediction name> per question file, OUT/submission.zip, OUT/run_summary.json and,
with --gt, OUT/scores.json plus a report. Rerun the same command after an interruption to resume.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--questions", nargs="+", type=Path, required=True, help="organiser *_to_answer.jsonl files"
    )
    p.add_argument(
        "--frames-root",
        type=Path,
        required=True,
        help="test frames: ROOT/<video>/*.jpg (or ROOT/<SAMM|CAS>/<video>/, ROOT/frames/<video>/)",
    )
    p.add_argument(
        "--model", required=True, help="registry name (tiny-qwen2.5-vl, qwen2.5-vl-3b), hub id or folder"
    )
    p.add_argument("--adapter", type=Path, help="PEFT adapter folder trained on --model")
    p.add_argument("--out", type=Path, required=True, help="output folder (resumes from OUT/answers.jsonl)")
    p.add_argument(
        "--gt", nargs="*", type=Path, default=[], help="ground-truth files with answers: score the run"
    )
    p.add_argument("--batch-size", type=int, default=32, help="rows per generate call (default 32)")
    p.add_argument("--free-decoding", action="store_true", help="no label-constrained decoding")
    p.add_argument("--no-consistency", action="store_true", help="keep each answer as decoded")
    p.add_argument(
        "--sort-aus",
        action="store_true",
        help="write AU lists in ascending AU number (default: the order the model wrote them)",
    )
    p.add_argument(
        "--votes", type=int, default=1, help="sample N answers per row and vote (default 1: greedy)"
    )
    p.add_argument("--temperature", type=float, default=0.7, help="sampling temperature when --votes > 1")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fine-labels", nargs="+", help="fine vocabulary (default: the MEGC2025 training labels)")
    p.add_argument("--visual-spec", help="sampler spec (default: what training recorded, else oao+flow)")
    p.add_argument("--image-size", type=int, help="frame size in pixels (default: training's, else 224)")
    p.add_argument("--fps", type=float, help="frame rate of every clip (default: SAMM 200, CAS(ME)^3 30)")
    p.add_argument("--visual-cache", type=Path, help="cache sampled visual inputs here (.npz)")
    p.add_argument(
        "--backend",
        choices=("transformers", "vllm"),
        default="transformers",
        help="decoding backend (vllm only when installed)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from megc_vqa.answering.answer_log import LogMismatchError
    from megc_vqa.answering.engine import EngineError, EngineOptions
    from megc_vqa.answering.grammar import AnswerVocabulary
    from megc_vqa.answering.run_vqa import LOG_NAME, RunError, VisualSettings, format_summary, run_vqa

    vocab = AnswerVocabulary(fine=tuple(args.fine_labels)) if args.fine_labels else AnswerVocabulary()
    options = EngineOptions(
        batch_size=args.batch_size,
        constrained=not args.free_decoding,
        consistency=not args.no_consistency,
        votes=args.votes,
        temperature=args.temperature,
        seed=args.seed,
        vocab=vocab,
        sort_aus=args.sort_aus,
    )
    try:
        result = run_vqa(
            args.questions,
            args.frames_root,
            args.model,
            args.out,
            adapter=args.adapter,
            gt_files=args.gt,
            options=options,
            fps=args.fps,
            backend=args.backend,
            progress=not args.quiet,
            visual=VisualSettings(args.visual_spec, args.image_size, None, args.visual_cache),
        )
    except (RunError, EngineError, LogMismatchError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: answers so far are in {args.out / LOG_NAME}; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    print(format_summary(result))
    return 1 if result.summary["validator_errors"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
