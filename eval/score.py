"""Score predictions locally: ME-VQA, ME-STR or ME-LVQA. Prints the scores as JSON on stdout.

    python eval/score.py vqa --pred me_vqa_samm_test_pred.jsonl --gt samm_gt.jsonl [--bleu corpus] [--report DIR]
    python eval/score.py vqa --pred P.jsonl --gt GT.jsonl --report DIR --frames-root TEST_FRAMES --visual-from ADAPTER
    python eval/score.py vqa --pred generated_predictions.jsonl --exported X/megc_val.jsonl --gt P/qa.jsonl
    python eval/score.py str --pred str_pred.csv --gt str_gt.csv --mode official|strict
    python eval/score.py lvqa --pred me_lvqa_samm_test_pred.jsonl --gt lvqa_gt.jsonl

Ground truth for VQA/LVQA: the question file rows with ``answer`` filled (an optional ``dataset`` field),
or a ``qa.jsonl`` (rows matched on ``id``). VQA predictions may also be trainer outputs of a
``megc-vqa export`` dataset: LLaMA-Factory's ``generated_predictions.jsonl`` or ms-swift's inference JSONL
(``--exported`` names the exported file they answer; see ``megc_vqa.training.trainers``).
Ground truth for STR: a CSV ``subject,video,onset,offset,emotion`` with optional ``dataset`` and ``type``.
Official STRS can be NaN, as the public reference scorer gives; the JSON says ``null`` (NaN is not JSON).

``--report DIR`` writes ``report.html`` too: scores, confusion matrices, per-class figures and the wrong rows
with the frames the model saw, found from the ground truth's frame locations (a ``prep`` qa.jsonl), from
``--clips QA.jsonl`` by id, or under ``--frames-root`` by the rows' ``video``, and sampled with the visual
settings of ``--visual-from ADAPTER`` (its training record; else the defaults).
"""

from __future__ import annotations

import argparse
import logging
import sys
import zipfile
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    from megc_vqa.metrics.vqa import BLEU_VARIANTS, ROUGE_VARIANTS, ROWS_VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="task", required=True)
    vqa = sub.add_parser("vqa", help="ME-VQA: UF1/UAR coarse and fine, BLEU, ROUGE")
    vqa.add_argument("--pred", nargs="+", required=True, help="prediction JSONL file(s)")
    vqa.add_argument(
        "--gt",
        nargs="+",
        help="ground-truth JSONL file(s); with --exported, default: the exported file's answers (and only its "
        "rows are scored)",
    )
    vqa.add_argument(
        "--bleu", choices=BLEU_VARIANTS, default="sentence", help="BLEU variant (default: sentence)"
    )
    vqa.add_argument("--rouge", choices=ROUGE_VARIANTS, default="rouge1_recall", help="ROUGE variant")
    vqa.add_argument("--rows", choices=ROWS_VARIANTS, default="all", help="rows covered by BLEU/ROUGE")
    vqa.add_argument(
        "--report",
        metavar="DIR",
        help="also write report.md, confusion PNGs, wrong_rows.csv and report.html (the wrong rows with the "
        "frames the model saw)",
    )
    gallery = vqa.add_argument_group("report.html: where the frames of the wrong rows are (with --report)")
    gallery.add_argument("--frames-root", metavar="DIR", help="test frames, as run_vqa --frames-root")
    gallery.add_argument(
        "--clips", metavar="QA.jsonl", help="a prep output whose rows locate the clips by id"
    )
    gallery.add_argument(
        "--visual-from",
        metavar="FOLDER",
        help="adapter or model folder whose training record gives the settings",
    )
    gallery.add_argument("--visual-spec", help="sampler spec (default: the record's, else oao+flow)")
    gallery.add_argument(
        "--image-size", type=int, help="frame size in pixels (default: the record's, else 224)"
    )
    gallery.add_argument("--report-rows", type=int, default=24, help="wrong rows shown per kind (default 24)")
    vqa.add_argument(
        "--pred-format",
        choices=("auto", "megc", "llamafactory", "swift"),
        default="auto",
        help="prediction format (default: told by the keys of the first row)",
    )
    vqa.add_argument(
        "--exported",
        metavar="FILE",
        help="for trainer predictions: the `megc-vqa export` file they answer, whose rows they follow in order",
    )
    strp = sub.add_parser("str", help="ME-STR: STRS, spotting and analysis scores")
    strp.add_argument("--pred", required=True, help="prediction CSV")
    strp.add_argument("--gt", required=True, help="ground-truth CSV")
    strp.add_argument("--mode", choices=("official", "strict"), default="official")
    strp.add_argument(
        "--emotions", help="analysis classes, comma-separated (default: those of the ground truth)"
    )
    strp.add_argument("--iou", type=float, default=0.5, help="IoU threshold for a spotting TP (default 0.5)")
    lvqa = sub.add_parser(
        "lvqa", help="ME-LVQA: counts MAE/RMSE, AU set F1/Jaccard, type UF1/UAR (a 2026 team's description)"
    )
    lvqa.add_argument("--pred", nargs="+", required=True)
    lvqa.add_argument("--gt", nargs="+", required=True)
    for task in (vqa, lvqa):
        task.add_argument(
            "--strict",
            action="store_true",
            help="score only what the leaderboard would accept: refuse a file the validator rejects (an "
            "empty answer, an extra row) or that leaves questions unanswered. Without it, empty, "
            "unparseable and off-vocabulary answers are scored as wrong and counted (invalid_answers), "
            "extra rows are listed and ignored, and a subset of the questions is scored on that subset",
        )
    return parser


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _is_megc_format(path: str, fmt: str) -> bool:
    """Whether a prediction file is in the MEGC format (not a trainer's output that is mapped back)."""
    if fmt != "auto":
        return fmt == "megc"
    from megc_vqa.fileio import read_jsonl
    from megc_vqa.training.trainers import detect_format

    rows = read_jsonl(path)
    return not rows or detect_format(rows[0], path) == "megc"


def _main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from megc_vqa.errors import InputError, UsageError, check_number
    from megc_vqa.fileio import input_file_problem, strict_json
    from megc_vqa.metrics.scoring import invalid_lines
    from megc_vqa.metrics.vqa import align
    from megc_vqa.submission.files import read_jsonl

    gallery = ("frames_root", "clips", "visual_from", "visual_spec", "image_size")
    if args.task == "vqa" and not args.report and any(getattr(args, k) is not None for k in gallery):
        from megc_vqa.errors import UsageError

        raise UsageError(
            "--frames-root, --clips, --visual-from, --visual-spec and --image-size need --report DIR"
        )
    suffix = ".csv" if args.task == "str" else ".jsonl"
    for path in [*_as_list(args.pred), *_as_list(args.gt or [])]:
        problem = input_file_problem(path, suffix=suffix)
        if problem:
            raise InputError(f"{path}: {problem}")
        if zipfile.is_zipfile(path):  # a submission.zip given as predictions: say so, not "not valid UTF-8"
            raise InputError(
                f"{path}: is a zip archive, not a {suffix} file; give the prediction files inside it to --pred "
                "(unzip it; run_vqa also writes them beside its submission.zip)"
            )
    try:
        if args.task == "str":
            from megc_vqa.labels import STR_CLASSES
            from megc_vqa.metrics.strs import read_intervals, score_str

            check_number("--iou", args.iou, above=0, maximum=1)
            emotions = (
                None if args.emotions is None else [e.strip() for e in args.emotions.split(",") if e.strip()]
            )
            # The validator's reader and rules: a prediction the validator rejects is never scored.
            warnings: list = []
            gts = read_intervals(args.gt, role="ground_truth", warnings=warnings)
            if not gts:  # every score would be 0 of 0, reported as a result
                raise InputError(
                    f"--gt {args.gt}: no ground-truth intervals (a header only); give the STR ground truth"
                )
            known = [*STR_CLASSES, *sorted({g.emotion for g in gts} - set(STR_CLASSES))]
            if emotions is not None and (not emotions or not set(emotions) <= set(known)):
                # an empty or unknown class would be scored as nothing, silently (was: the default set)
                raise UsageError(
                    f"--emotions {args.emotions!r}: give comma-separated classes among {', '.join(known)} "
                    "(or leave it out: those of the ground truth)"
                )
            preds = read_intervals(
                args.pred,
                emotions=STR_CLASSES,
                role="prediction",
                videos={g.key: None for g in gts},
                warnings=warnings,
            )
            for w in warnings:  # the validator's warnings, word for word
                print(w, file=sys.stderr)
            result = score_str(preds, gts, args.mode, emotions, args.iou)
        else:
            mapping_problems: list[str] = []
            if args.task == "vqa":
                from megc_vqa.training.trainers import read_predictions

                preds, mapping_problems = read_predictions(args.pred, args.pred_format, args.exported)
                for problem in mapping_problems:
                    print(f"warning: {problem}", file=sys.stderr)
            else:
                preds = [row for path in args.pred for row in read_jsonl(path)]
            gts = [row for path in args.gt or () for row in read_jsonl(path)]
            if args.task == "vqa" and args.exported:
                from megc_vqa.training.trainers import read_exported

                exported = read_exported(args.exported)
                ids = {row.id for row in exported}
                if not gts:
                    gts = [row.ground_truth() for row in exported]
                elif any(str(row.get("id", row.get("video_id"))) not in ids for row in gts):
                    kept = [row for row in gts if str(row.get("id", row.get("video_id"))) in ids]
                    mapping_problems.append(
                        f"{len(gts) - len(kept)} ground-truth rows are not in {args.exported}: not scored"
                    )
                    gts = kept
            if not gts:
                raise ValueError("no ground truth: give --gt (or --exported for trainer predictions)")
            # Files in the MEGC format that are not well-formed are never scored (with --strict: nothing the
            # validator rejects is); what the leaderboard would still reject is reported and scored.
            native = [
                path for path in args.pred if args.task != "vqa" or _is_megc_format(path, args.pred_format)
            ]
            if args.gt and native:
                from megc_vqa.submission.validate import check_predictions_for_scoring

                rejected, reported = check_predictions_for_scoring(native, args.gt, strict=args.strict)
                if rejected:
                    listing = "; ".join(p.located() for p in rejected[:10])
                    more = f" (and {len(rejected) - 10} more)" if len(rejected) > 10 else ""
                    raise InputError(f"the validator rejects the predictions, not scored: {listing}{more}")
                for problem in reported[:10]:
                    print(f"warning: the leaderboard would reject this: {problem.located()}", file=sys.stderr)
                if len(reported) > 10:
                    print(
                        f"warning: ... and {len(reported) - 10} more (eval/validate.py lists them all)",
                        file=sys.stderr,
                    )
                mapping_problems += [f"for a leaderboard upload: {p.located()}" for p in reported]
            # A MEGC file for a subset of the questions is scored on that subset; a trainer's row that does
            # not map onto its exported row stays a missing answer, scored wrong (listed above).
            subset = not args.strict and len(native) == len(args.pred)
            rows, problems = align(preds, gts, missing="skip" if subset else "wrong")
            if args.strict and any(r.prediction is None for r in rows):
                absent = [r.video_id for r in rows if r.prediction is None]
                raise InputError(
                    f"{len(absent)} of {len(rows)} ground-truth questions have no prediction "
                    f"({', '.join(absent[:5])}{' ...' if len(absent) > 5 else ''}): --strict scores complete "
                    "files only; leave out --strict to score the answered subset"
                )
            if not rows:
                raise InputError(
                    f"no prediction answers any of the {len(gts)} ground-truth questions: check that --pred "
                    "and --gt are files of the same questions (video_id)"
                )
            for problem in problems:
                if problem.startswith("predictions for a subset"):
                    print(f"warning: {problem}", file=sys.stderr)
            if args.task == "lvqa":
                from megc_vqa.metrics.lvqa import score_lvqa_aligned

                try:
                    result = score_lvqa_aligned(rows, [*mapping_problems, *problems])
                except InputError as err:  # the rows' fault: name their files
                    raise InputError(f"--gt {' '.join(map(str, args.gt))}: {err}") from None
            else:
                from megc_vqa.metrics.vqa import VqaVariant, score_aligned

                result = score_aligned(
                    rows, VqaVariant(args.bleu, args.rouge, args.rows), [*mapping_problems, *problems]
                )
            for line in invalid_lines(result["invalid_answers"]):
                print(f"warning: {line}", file=sys.stderr)
                if args.report:
                    from megc_vqa.submission.html_report import report_options, write_html_report
                    from megc_vqa.submission.report import write_vqa_report

                    options = report_options(  # checked before anything is written
                        gts, gt_files=args.gt or (), frames_root=args.frames_root, clips=args.clips,
                        visual_from=args.visual_from, spec=args.visual_spec, size=args.image_size,
                        max_wrong=args.report_rows,
                    )  # fmt: skip
                    write_vqa_report(args.report, rows, result)
                    sources = [f"predictions: {p}" for p in args.pred]
                    write_html_report(args.report, rows, result, sources=sources, **options)
    except ValueError as err:  # the readers' ValueErrors name the file and the line: a project error
        if isinstance(err, InputError):
            raise
        raise InputError(str(err)) from None
    print(strict_json(result, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command behind the project's error boundary (one line and exit 2 for a project error)."""
    from megc_vqa.errors import run_command

    return run_command(_main, argv)


if __name__ == "__main__":
    raise SystemExit(main())
