"""Check prediction files or a submission zip against the organisers' question files before upload.

    python eval/validate.py --questions ../shared/megc/2025/*.jsonl submission.zip
    python eval/validate.py --questions Q.jsonl me_vqa_samm_test_pred.jsonl str_pred.csv

Without --questions the names and formats are checked (official file names, JSON lines, keys, unique ids,
answers); --str-videos DIR_OR_CSV also checks an STR CSV's videos and frame ranges. The STR rules are the
scorer's own (eval/score.py refuses what this rejects). Prints every problem as ``file:line: level: message``
and exits 1 when there is any error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", nargs="*", default=[], metavar="Q", help="question JSONL file(s)")
    parser.add_argument("files", nargs="*", metavar="FILE_OR_ZIP", help="prediction files, STR CSV or zip")
    parser.add_argument(
        "--emotions", default="negative,positive,surprise,others", help="allowed STR emotions"
    )
    parser.add_argument("--no-format-warnings", action="store_true", help="skip answer-format warnings")
    parser.add_argument(
        "--str-videos",
        metavar="DIR_OR_CSV",
        help="the STR test videos: a folder of <subject>_<video>/ frame folders or a ground-truth CSV "
        "(rows on other videos are flagged, frames outside a video are errors)",
    )
    return parser


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from megc_vqa.submission.validate import split_questions, str_videos, validate_files

    if not args.files:  # --questions swallowed the files too: tell them apart by their content
        args.questions, args.files = split_questions(args.questions)
    if not args.files:
        print("error: no prediction file or zip given", file=sys.stderr)
        return 2

    problems = validate_files(
        args.files,
        args.questions,
        emotions=[e.strip() for e in args.emotions.split(",") if e.strip()],
        check_format=not args.no_format_warnings,
        videos=str_videos(args.str_videos) if args.str_videos else None,
    )
    for p in problems:
        print(p)
    errors = sum(p.level == "error" for p in problems)
    warnings = len(problems) - errors
    print(f"{errors} error(s), {warnings} warning(s)", file=sys.stderr)
    return 1 if errors else 0


def main(argv: list[str] | None = None) -> int:
    """The command behind the project's error boundary (one line and exit 2 for a project error)."""
    from megc_vqa.errors import run_command

    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
