"""Human-readable VQA reports: a markdown table, confusion matrices (PNG) and a CSV of every wrong row."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from megc_vqa.fileio import claim_outputs, is_regular_file
from megc_vqa.metrics.scoring import answer_problem
from megc_vqa.metrics.vqa import INVALID, AlignedRow, normalise_answer
from megc_vqa.qa.kinds import KINDS
from megc_vqa.submission.files import atomic_write_bytes, atomic_write_text

TABLE_KEYS: tuple[str, ...] = (
    "uf1_coarse", "uar_coarse", "uf1_fine", "uar_fine", "bleu", "rouge",
    "uf1_coarse_parsed", "uar_coarse_parsed", "uf1_fine_parsed", "uar_fine_parsed", "n_rows", "n_missing", "n_invalid",
)  # fmt: skip


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def markdown_table(scores: dict[str, Any]) -> str:
    """The scores of every split as a markdown table, with the BLEU/ROUGE variant and the problems."""
    splits = [k for k, v in scores.items() if isinstance(v, dict) and "n_rows" in v]
    lines = ["| split | " + " | ".join(TABLE_KEYS) + " |", "|---" * (len(TABLE_KEYS) + 1) + "|"]
    lines += [f"| {s} | " + " | ".join(_cell(scores[s].get(k)) for k in TABLE_KEYS) + " |" for s in splits]
    variant = scores.get("variant", {})
    lines += [
        "",
        f"BLEU: {variant.get('bleu_desc', '?')}. ROUGE: {variant.get('rouge_desc', '?')}. "
        f"Rows covered by BLEU/ROUGE: {variant.get('rows_desc', '?')}.",
        "UF1/UAR classes are those of the ground truth; an invalid answer is wrong for its true class. "
        "`*_parsed` scores extract a label from free answers first.",
    ]
    if scores.get("problems"):
        lines += ["", "Problems:", *[f"- {p}" for p in scores["problems"]]]
    return "\n".join(lines) + "\n"


def _status(row: AlignedRow) -> str:
    """``missing``, ``empty``, ``invalid`` (unparseable or off the kind's vocabulary: the registry says) or
    ``wrong``."""
    if row.prediction is None:
        return "missing"
    problem = answer_problem(KINDS[row.qtype], row.prediction)
    return "wrong" if problem is None else ("empty" if problem == "empty" else "invalid")


def confusion_kinds() -> list[str]:
    """The kinds a report draws a confusion matrix for: those scored by UF1/UAR (the registry says)."""
    return [k.name for k in KINDS.values() if "uf1_uar" in k.scoring]


def wrong_rows_csv(rows: Sequence[AlignedRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["video_id", "dataset", "question_type", "question", "reference", "prediction", "status"])
    for r in rows:
        if not r.correct:
            writer.writerow(
                [r.video_id, r.dataset, r.qtype, r.question, r.reference, r.prediction or "", _status(r)]
            )
    return buffer.getvalue()


def confusion_png(rows: Sequence[AlignedRow], kind: str, title: str) -> bytes | None:
    """Confusion matrix of one UF1/UAR kind's rows (ground-truth classes plus an ``invalid`` column)."""
    subset = [r for r in rows if r.qtype == kind]
    if not subset:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np
    from sklearn.metrics import confusion_matrix

    truth = [normalise_answer(r.reference) for r in subset]
    classes = sorted(set(truth))
    pred = [p if p in classes else INVALID for p in (normalise_answer(r.prediction) for r in subset)]
    labels = [*classes, INVALID]
    matrix = confusion_matrix(truth, pred, labels=labels)[: len(classes)]  # no row for "invalid" truth
    fig, ax = plt.subplots(figsize=(1.2 * len(labels) + 2, 0.9 * len(classes) + 2))
    ax.imshow(matrix, cmap="Blues")
    for (i, j), count in np.ndenumerate(matrix):
        colour = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title(title)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


REPORT_TITLE = "# ME-VQA scores"


def vqa_report_names(rows: Sequence[AlignedRow]) -> list[str]:
    """The files :func:`write_vqa_report` may write for ``rows`` (a confusion matrix per kind and split)."""
    splits = ["overall", *sorted({str(r.dataset) for r in rows})]
    pngs = [f"confusion_{kind}_{split}.png" for split in splits for kind in confusion_kinds()]
    return ["report.md", "wrong_rows.csv", *pngs]


def earlier_vqa_report(path: Path) -> bool:
    """Whether ``path`` lies in a report folder written before output markers (its ``report.md`` opens
    with the report's title)."""
    report = path.parent / "report.md"
    if not is_regular_file(report):
        return False
    with open(report, "rb") as handle:
        return handle.read(len(REPORT_TITLE)) == REPORT_TITLE.encode()


def write_vqa_report(
    out_dir: str | os.PathLike[str],
    rows: Sequence[AlignedRow],
    scores: dict[str, Any],
    *,
    writer: str = "megc-vqa score --report",
    legacy: Callable[[Path], bool] | None = None,
    what: str = "--report",
) -> dict[str, Path]:
    """Write ``report.md``, ``wrong_rows.csv`` and ``confusion_<coarse|fine>_<split>.png``; returns the paths.

    Files of those names that ``writer`` did not write (or an earlier report, or what ``legacy``
    recognises) are refused, never replaced (:func:`megc_vqa.fileio.claim_outputs`)."""
    out = Path(out_dir)
    claim_outputs(
        out,
        writer,
        vqa_report_names(rows),
        what=what,
        legacy=lambda p: earlier_vqa_report(p) or (legacy is not None and legacy(p)),
    )
    written = {
        "report": atomic_write_text(out / "report.md", f"{REPORT_TITLE}\n\n" + markdown_table(scores)),
        "wrong_rows": atomic_write_text(out / "wrong_rows.csv", wrong_rows_csv(rows)),
    }
    splits = {"overall": list(rows)}
    for r in rows:
        splits.setdefault(r.dataset, []).append(r)
    for split, subset in splits.items():
        for kind in confusion_kinds():
            png = confusion_png(subset, kind, f"{kind} ({split})")
            if png is not None:
                written[f"confusion_{kind}_{split}"] = atomic_write_bytes(
                    out / f"confusion_{kind}_{split}.png", png
                )
    return written
