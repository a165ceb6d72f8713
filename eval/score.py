"""Score predictions locally: ME-VQA, ME-STR or ME-LVQA. Prints the scores as JSON on stdout.

    python eval/score.py vqa --pred me_vqa_samm_test_pred.jsonl --gt samm_gt.jsonl [--bleu corpus] [--report DIR]
    python eval/score.py str --pred str_pred.csv --gt str_gt.csv --mode official|strict
    python eval/score.py lvqa --pred me_lvqa_samm_test_pred.jsonl --gt lvqa_gt.jsonl

Ground truth for VQA/LVQA: the question file rows with ``answer`` filled (an optional ``dataset`` field).
Ground truth for STR: a CSV ``subject,video,onset,offset,emotion`` with optional ``dataset`` and ``type``.
Official STRS can be NaN (printed as ``NaN``), as the public reference scorer gives.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

# Run from a checkout without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def build_parser() -> argparse.ArgumentParser:
    from megc_vqa.metrics.vqa import BLEU_VARIANTS, ROUGE_VARIANTS, ROWS_VARIANTS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="task", required=True)
    vqa = sub.add_parser("vqa", help="ME-VQA: UF1/UAR coarse and fine, BLEU, ROUGE")
    vqa.add_argument("--pred", nargs="+", required=True, help="prediction JSONL file(s)")
    vqa.add_argument("--gt", nargs="+", required=True, help="ground-truth JSONL file(s)")
    vqa.add_argument(
        "--bleu", choices=BLEU_VARIANTS, default="sentence", help="BLEU variant (default: sentence)"
    )
    vqa.add_argument("--rouge", choices=ROUGE_VARIANTS, default="rouge1_recall", help="ROUGE variant")
    vqa.add_argument("--rows", choices=ROWS_VARIANTS, default="all", help="rows covered by BLEU/ROUGE")
    vqa.add_argument("--report", metavar="DIR", help="also write report.md, confusion PNGs, wrong_rows.csv")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )
    from megc_vqa.submission.files import read_jsonl

    try:
        if args.task == "str":
            from megc_vqa.metrics.strs import read_intervals, score_str

            emotions = [e.strip() for e in args.emotions.split(",") if e.strip()] if args.emotions else None
            result = score_str(
                read_intervals(args.pred), read_intervals(args.gt), args.mode, emotions, args.iou
            )
        else:
            preds = [row for path in args.pred for row in read_jsonl(path)]
            gts = [row for path in args.gt for row in read_jsonl(path)]
            if args.task == "lvqa":
                from megc_vqa.metrics.lvqa import score_lvqa

                result = score_lvqa(preds, gts)
            else:
                from megc_vqa.metrics.vqa import VqaVariant, align, score_aligned

                rows, problems = align(preds, gts)
                result = score_aligned(rows, VqaVariant(args.bleu, args.rouge, args.rows), problems)
                if args.report:
                    from megc_vqa.submission.report import write_vqa_report

                    write_vqa_report(args.report, rows, result)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
