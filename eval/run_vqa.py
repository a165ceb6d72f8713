"""Answer MEGC question files with a model and write the leaderboard files.

    python eval/run_vqa.py --questions ../shared/megc/2025/*_to_answer.jsonl --frames-root TEST_FRAMES \
        --model qwen2.5-vl-3b --adapter runs/lora --out runs/pred [--gt GT_FILES...]

Writes OUT/<official prediction name> per question file, OUT/submission.zip, OUT/run_summary.json and,
with --gt, OUT/scores.json plus a report (report.md, and report.html with the wrong rows' frames). Rerun
the same command after an interruption to resume. Exits 1 when more than --max-fallback-share of the rows
got a fallback answer (the files are written all the same).
"""

from __future__ import annotations

import argparse
import logging
import os
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
        "--label-scores",
        action="store_true",
        help="also write OUT/label_scores.jsonl: each closed question's label log-probabilities and "
        "probabilities (they are always in OUT/answers.jsonl as label_logprobs)",
    )
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
    p.add_argument(
        "--all-fine-labels",
        action="store_true",
        help="answer every clip among the whole fine vocabulary (default: a SAMM or CAS(ME)^3 clip, named "
        "so by its video id or question file, among that dataset's own fine labels)",
    )
    p.add_argument("--visual-spec", help="sampler spec (default: what training recorded, else oao+flow)")
    p.add_argument("--image-size", type=int, help="frame size in pixels (default: training's, else 224)")
    p.add_argument(
        "--fps",
        type=float,
        help="frame rate of every clip (default by the dataset its video id or file name names: SAMM, "
        "CASME II 200, SMIC 100, CAS(ME)^3 30; else 30)",
    )
    p.add_argument("--visual-cache", type=Path, help="cache sampled visual inputs here (.npz)")
    p.add_argument(
        "--backend",
        choices=("transformers", "vllm"),
        default="transformers",
        help="decoding backend (vllm only when installed)",
    )
    p.add_argument(
        "--tensor-parallel-size",
        type=int,
        default=1,
        help="with --backend vllm: split the model over this many GPUs of this machine (default 1)",
    )
    p.add_argument(
        "--max-fallback-share",
        type=float,
        default=0.05,
        help="fail (exit 1) when more than this share of rows got a fallback answer (default 0.05)",
    )
    p.add_argument(
        "--report-rows",
        type=int,
        default=24,
        help="with --gt: wrong rows of each question kind shown in report.html (default 24)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    from megc_vqa.answering.engine import EngineOptions
    from megc_vqa.answering.grammar import AnswerVocabulary
    from megc_vqa.answering.run_vqa import (
        LOG_NAME,
        VisualSettings,
        check_run_options,
        fallback_failure,
        format_summary,
        run_vqa,
    )
    from megc_vqa.errors import UsageError

    check_run_options(
        batch_size=args.batch_size,
        votes=args.votes,
        temperature=args.temperature,
        image_size=args.image_size,
        fps=args.fps,
        max_fallback_share=args.max_fallback_share,
        fine_labels=args.fine_labels,
    )
    # Its files would lie among the test clips it reads (a sub-folder of the frames root is the user's layout).
    if args.out.exists() and args.frames_root.exists() and os.path.samefile(args.out, args.frames_root):
        raise UsageError(
            f"--out {args.out}: is --frames-root {args.frames_root}; the answers and the zip would lie among "
            "the clip folders it reads. Choose another --out (e.g. a folder beside it)"
        )

    vocab = AnswerVocabulary(fine=tuple(args.fine_labels)) if args.fine_labels else AnswerVocabulary()
    options = EngineOptions(
        batch_size=args.batch_size,
        constrained=not args.free_decoding,
        consistency=not args.no_consistency,
        votes=args.votes,
        temperature=args.temperature,
        seed=args.seed,
        vocab=vocab,
        dataset_labels=not args.all_fine_labels,
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
            tensor_parallel_size=args.tensor_parallel_size,
            progress=not args.quiet,
            label_scores=args.label_scores,
            visual=VisualSettings(args.visual_spec, args.image_size, None, args.visual_cache),
            report_rows=args.report_rows,
        )
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: answers so far are in {args.out / LOG_NAME}; rerun the same command to resume",
            file=sys.stderr,
        )
        return 130
    print(format_summary(result))
    failure = fallback_failure(result, args.max_fallback_share)
    if failure:  # a submission made mostly of fallbacks is useless: say so, last, and fail
        print(f"error: {failure}", file=sys.stderr)
        return 1
    return 1 if result.summary["validator_errors"] else 0


def main(argv: list[str] | None = None) -> int:
    """The command behind the project's error boundary (one line and exit 2 for a project error)."""
    from megc_vqa.errors import run_command

    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
