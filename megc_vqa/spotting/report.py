"""Run reports for ME-STR and ME-LVQA: ``scores.json`` with both STRS modes, the spotting curve (strict
precision, recall and F1 against the score threshold) and the LVQA per-video table.

Scores come from the project's one scorer (``megc_vqa.metrics.strs`` strict mode for the curve, both modes
for ``scores.json``); every file names the spotter (the model-free baseline says so).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from megc_vqa.fileio import atomic_write_text, read_jsonl, strict_json
from megc_vqa.labels import STR_CLASSES
from megc_vqa.metrics.lvqa import (
    METRIC_NOTE,
    normalise_event_type,
    parse_au_set,
    parse_count,
    score_lvqa,
    set_f1,
)
from megc_vqa.metrics.strs import Interval, canonical_subject, read_intervals, score_str
from megc_vqa.qa.templates import classify_question
from megc_vqa.spotting.pipeline import read_intervals as read_run_intervals

log = logging.getLogger(__name__)

CURVE_THRESHOLDS = tuple(round(float(t), 3) for t in np.linspace(0.05, 0.95, 19))


def load_curve(path: str | Path):
    """A ``ScoreCurve`` saved by ``STRRunner`` (``OUT/curves/<name>.npz``)."""
    from .infer import ScoreCurve

    with np.load(path) as data:
        grid = data["grid"]
        last = int(data["last"]) if "last" in data else int(grid[-1])
        stride = (
            int(data["stride"]) if "stride" in data else int(np.diff(grid[:2])[0] if len(grid) > 1 else 1)
        )
        return ScoreCurve(grid, data["scores"], float(data["fps"]), stride, int(grid[0]), last)


def threshold_sweep(
    curves: Mapping[tuple[str, str], object],
    gt_csv: str | Path,
    peaks,
    thresholds: Sequence[float] = CURVE_THRESHOLDS,
) -> list[dict]:
    """Strict spotting precision/recall/F1 of ``extract_intervals`` at every threshold (other settings as
    ``peaks``), pooled over the videos, against the ground-truth CSV."""
    from .infer import extract_intervals

    gts = read_intervals(gt_csv)
    rows = []
    for t in thresholds:
        params = dataclasses.replace(peaks, threshold=float(t))
        preds = [
            Interval(canonical_subject(subject), video, iv.onset, iv.offset, "negative")
            for (subject, video), curve in curves.items()
            for iv in extract_intervals(curve, params)
        ]
        spot = score_str(preds, gts, "strict")["overall"]
        rows.append(
            {
                "threshold": float(t),
                "precision": spot["precision_spot"],
                "recall": spot["recall_spot"],
                "f1": spot["f1_spot"],
                "n_pred": len(preds),
            }
        )
    return rows


def plot_threshold_curve(rows: Sequence[dict], used: float, path: str | Path, title: str = "") -> Path:
    """PNG: strict spotting precision, recall and F1 against the threshold, the threshold used marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.6))
    x = [r["threshold"] for r in rows]
    for key, colour in (("f1", "black"), ("precision", "tab:blue"), ("recall", "tab:orange")):
        ax.plot(x, [r[key] for r in rows], color=colour, lw=1.5 if key == "f1" else 1, label=key)
    ax.axvline(used, color="grey", ls="--", lw=1, label=f"used ({used:g})")
    ax.set_xlabel("score threshold")
    ax.set_ylabel("strict spotting score (IoU >= 0.5)")
    ax.set_ylim(0, 1.02)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def write_str_scores(runner, gt_csv: str | Path) -> dict:
    """``OUT/scores.json`` ({"spotter", "official", "strict", "threshold_curve"}) and
    ``OUT/plots/threshold_curve.png`` for a finished ``STRRunner`` run scored against ``gt_csv``."""
    # The validator's reader and rules, as eval/score.py str reads them.
    gts = read_intervals(gt_csv, role="ground_truth")
    preds = read_intervals(
        runner.csv_path, emotions=STR_CLASSES, role="prediction", videos={g.key: None for g in gts}
    )
    scores: dict = {"spotter": runner.spotter_description, "baseline": runner.spotter is None}
    scores.update({mode: score_str(preds, gts, mode) for mode in ("official", "strict")})
    curves = {}
    for name, rec in read_run_intervals(runner.out).items():
        path = runner.out / "curves" / f"{name}.npz"
        if path.exists():
            curves[(rec["subject"], rec["video"])] = load_curve(path)
    if curves:
        rows = threshold_sweep(curves, gt_csv, runner.peaks)
        scores["threshold_curve"] = {
            "mode": "strict",
            "peaks": dataclasses.asdict(runner.peaks),
            "rows": rows,
        }
        if runner.config.plots:
            plot_threshold_curve(
                rows, runner.peaks.threshold, runner.out / "plots" / "threshold_curve.png",
                title=f"{runner.spotter_description.split('(')[0].strip()}: {runner.peaks.mode} threshold",
            )  # fmt: skip
    atomic_write_text(runner.out / "scores.json", strict_json(scores, indent=2, default=str) + "\n")
    return scores


# --- ME-LVQA ---------------------------------------------------------------------------------------------

_LVQA_COLUMNS = {
    "lvqa_count_all": "total",
    "lvqa_count_micro": "micro",
    "lvqa_count_macro": "macro",
    "lvqa_aus": "AUs",
    "lvqa_event_type": "types",
}


def lvqa_video_rows(
    predictions: Sequence[Mapping], ground_truth: Sequence[Mapping] = (), flags: Sequence[Mapping] = ()
) -> list[dict]:
    """One row per video: the answers by question kind (event types joined in question order), the ground
    truth's next to them when given (``gt_*`` and absolute count errors), and the fallback flags."""
    truth = {r.get("video_id"): r for r in ground_truth}
    table: dict[str, dict] = {}
    for row in predictions:
        video = str(row["video"])
        entry = table.setdefault(video, {"video": video, "flags": 0})
        column = _LVQA_COLUMNS.get(classify_question(row["question"]))
        if column is None:
            continue
        gt = truth.get(row.get("video_id"))
        answer = str(row.get("answer", ""))
        if column == "types":
            entry["types"] = " ".join(filter(None, [entry.get("types"), answer.split("-")[0]]))
            if gt is not None:
                ok = normalise_event_type(answer) == normalise_event_type(gt["answer"])
                entry["types_right"] = entry.get("types_right", 0) + int(ok)
                entry["types_asked"] = entry.get("types_asked", 0) + 1
            continue
        entry[column] = answer
        if gt is not None:
            if column == "AUs":
                entry["au_f1"] = round(set_f1(parse_au_set(answer), parse_au_set(gt["answer"])), 3)
            else:
                entry[f"gt_{column}"] = gt["answer"]
                entry[f"err_{column}"] = abs((parse_count(answer) or 0) - (parse_count(gt["answer"]) or 0))
    for flag in flags:
        if str(flag["video"]) in table:
            table[str(flag["video"])]["flags"] += 1
    return [table[v] for v in sorted(table)]


def lvqa_markdown(
    rows: Sequence[dict], scores: Mapping | None, spotter: str, flags: Sequence[Mapping]
) -> str:
    """The LVQA report: overall scores (with the metric note), the per-video table, the flagged rows."""
    lines = ["# ME-LVQA run", "", f"Spotter: {spotter}", ""]
    if scores is not None:
        overall = scores["overall"]
        keys = [
            k for k in overall if k.startswith(("count_", "au_", "type_")) and not k.startswith("count_acc")
        ]
        lines += [f"Scores ({METRIC_NOTE}):", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(_fmt(overall[k]) for k in keys) + " |", ""]
    columns = ["video", "total", "micro", "macro", "types", "AUs", "flags"]
    if rows and any("gt_total" in r for r in rows):
        columns[1:1] = []
        columns = ["video", "total", "gt_total", "micro", "gt_micro", "macro", "gt_macro", "types",
                   "types_right", "au_f1", "AUs", "flags"]  # fmt: skip
    lines += ["Per video:", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        cells = []
        for c in columns:
            value = r.get(c, "")
            if c == "types_right" and "types_asked" in r:
                value = f"{r['types_right']}/{r['types_asked']}"
            cells.append(_fmt(value))
        lines.append("| " + " | ".join(cells) + " |")
    if flags:
        lines += ["", f"Answered by a documented fallback ({len(flags)} rows):", ""]
        lines += [f"- {f['video_id']} ({f['video']}): {f['flag']}" for f in flags]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return "" if value is None else str(value).replace("|", "/")


def write_lvqa_report(
    out: str | Path,
    pred_files: Sequence[Path],
    gt_files: Sequence[Path] = (),
    flags: Sequence[Mapping] = (),
    spotter: str = "",
) -> dict | None:
    """``OUT/lvqa_report.md``, ``OUT/lvqa_videos.csv`` and, with ground truth, ``OUT/lvqa_scores.json``;
    returns the scores (``None`` without ground truth)."""
    import csv
    import io

    out = Path(out)
    preds = [row for p in pred_files for row in read_jsonl(p)]
    gts = [row for g in gt_files for row in read_jsonl(g)]
    scores = None
    if gts:
        scores = score_lvqa(preds, gts)
        scores["spotter"] = spotter
        atomic_write_text(out / "lvqa_scores.json", strict_json(scores, indent=2, default=str) + "\n")
    rows = lvqa_video_rows(preds, gts, flags)
    atomic_write_text(out / "lvqa_report.md", lvqa_markdown(rows, scores, spotter, flags))
    buffer = io.StringIO()
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k != "video", k))
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "lvqa_videos.csv", buffer.getvalue())
    return scores
