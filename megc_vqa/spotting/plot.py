"""Per-video plot for run reports: score curves over time with ground-truth and predicted intervals."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from .model import OUTPUTS

COLOURS = {"micro": "tab:red", "macro": "tab:blue"}


def plot_video(curve, predicted: Sequence, ground_truth: Sequence, path: str | Path, title: str = "") -> Path:
    """Write a PNG: micro/macro score curves against time (s); ground-truth intervals as shaded bands in the
    upper half, predicted ones (with their type's colour) in the lower half. ``ground_truth`` items need
    ``onset``, ``offset`` and ``expression_type`` (``Event``) or ``type``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fps = curve.fps
    fig, ax = plt.subplots(figsize=(12, 3.2))
    for k, kind in enumerate(OUTPUTS):
        if curve.scores[:, k].any():
            ax.plot(curve.grid / fps, curve.scores[:, k], color=COLOURS[kind], lw=1, label=f"{kind} score")
    for ev in ground_truth:
        kind = getattr(ev, "expression_type", None) or getattr(ev, "type", "micro")
        ax.axvspan(
            ev.onset / fps, ev.offset / fps, ymin=0.5, ymax=1.0, color=COLOURS.get(kind, "grey"), alpha=0.2
        )
    for iv in predicted:
        ax.axvspan(iv.onset / fps, iv.offset / fps, ymin=0.0, ymax=0.5, color=COLOURS[iv.type], alpha=0.35)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("score")
    ax.set_title(f"{title}   (top bands: ground truth, bottom bands: predicted)", fontsize=9)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
