"""Run reports for ME-STR and ME-LVQA: ``scores.json`` with both STRS modes, the spotting curve (strict
precision, recall and F1 against the score threshold) and the LVQA per-video table.

Scores come from the project's one scorer (``megc_vqa.metrics.strs`` strict mode for the curve, both modes
for ``scores.json``); every file names the spotter (the model-free baseline says so).
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

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
    from megc_vqa.metrics.strs import Interval, canonical_subject, read_intervals, score_str

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
    from megc_vqa.fileio import atomic_write_text
    from megc_vqa.metrics.strs import read_intervals, score_str

    from .pipeline import read_intervals as read_run_intervals

    preds, gts = read_intervals(runner.csv_path), read_intervals(gt_csv)
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
    atomic_write_text(runner.out / "scores.json", json.dumps(scores, indent=2, default=str) + "\n")
    return scores
