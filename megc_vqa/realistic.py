"""``make realistic``: the realistic recipe's chosen visual defaults on seeds that chose nothing, with bars.

    python -m megc_vqa.realistic --out runs/realistic [--seed 3] [--spot-train-seed 3 --spot-eval-seed 4]

1. release-like short clips of ``--seed`` (``megc-vqa synth --realism release``), the realistic tiny recipe
   (``recipes/tiny/realistic.yaml``, its own visual settings: the chosen row of docs/ablation.md) trained with
   pixels and with blanked pixels, both scored on the held-out subjects (:mod:`megc_vqa.ablation`);
2. the spotter (``recipes/spotting/realistic.yaml``) trained on release-like long videos of
   ``--spot-train-seed`` and, with the model-free baseline, run through ``eval/run_str.py`` on long videos of
   ``--spot-eval-seed`` at 30 and at 200 fps.

Bars: coarse and fine UF1 each beat blanked pixels by >= 0.25; the spotter's strict F1 beats the baseline's
by >= 0.15 at each fps. Prints the table, writes OUT/realistic.json/.md/.png, exits 1 when a bar misses.
Resumable: what is done under OUT (same settings) is read back.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path

from megc_vqa import ablation
from megc_vqa.fileio import atomic_write_text

VQA_BAR = 0.25
SPOT_BAR = 0.15


def recipe_row(recipe: Path) -> ablation.Row:
    """The recipe's own visual settings as a row (no overrides: the recipe is what is measured)."""
    from megc_vqa.training.config import load_yaml

    keys = load_yaml(recipe)
    shown = {k: str(keys.get(k)) for k in ("face", "register", "magnify", "image_size") if k in keys}
    return ablation.Row("recipe", {}, ", ".join(f"{k} {v}" for k, v in shown.items()))


def bars(table: list[dict], spots: dict) -> list[str]:
    """The bars that miss, one line each (empty: every bar holds)."""
    misses = []
    for t in table:
        for q in ablation.SCORES:
            margin = t["median"][f"{q}_margin"]
            if margin < VQA_BAR:
                misses.append(f"{q} UF1 beats blanked pixels by {margin:.3f} < {VQA_BAR}")
    for fps, s in spots.get("fps", {}).items():
        margin = s["spotter"] - s["baseline"]
        if margin < SPOT_BAR:
            misses.append(f"spotter strict F1 at {fps} fps beats the baseline by {margin:.3f} < {SPOT_BAR}")
    return misses


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m megc_vqa.realistic", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/realistic"))
    p.add_argument("--recipe", type=Path, default=ablation.RECIPE)
    p.add_argument("--seed", type=int, default=3, help="seed of the short clips and training (not 0-2)")
    p.add_argument("--spot-train-seed", type=int, default=3)
    p.add_argument("--spot-eval-seed", type=int, default=4)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(max(1, args.threads))
    start, load = time.perf_counter(), os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    row = recipe_row(args.recipe)
    results = {
        "rows": {row.name: {args.seed: ablation.train_and_score(args.out, args.seed, "recipe", [], args.recipe)}},
        "blanked": {"blanked@recipe": {args.seed: ablation.train_and_score(
            args.out, args.seed, "blanked", [], args.recipe, blank=True)}},
        "seeds": [args.seed],
    }  # fmt: skip
    spots = ablation.run_spotting(args.out, args.spot_train_seed, args.spot_eval_seed)
    table, _ = ablation.write_report(args.out, results, [row], spots, stem="realistic")
    misses = bars(table, spots)
    if not table:  # no row with its control: a bar that cannot be checked is a miss, never a pass
        misses.insert(0, "no held-out VQA figures with their blanked control")
    took = time.perf_counter() - start
    doc = json.loads((args.out / "realistic.json").read_text())
    doc.update({"wall_s": round(took, 1), "load_at_start": load, "load_at_end": os.getloadavg()[0],
                "misses": misses})  # fmt: skip
    atomic_write_text(args.out / "realistic.json", json.dumps(doc, indent=2, default=str))
    print((args.out / "realistic.md").read_text())
    print(
        f"wall {took / 60:.1f} min; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end"
    )
    for line in misses:
        print(f"BAR MISSED: {line}")
    print("every bar holds" if not misses else f"{len(misses)} bar(s) missed")
    return 1 if misses else 0


if __name__ == "__main__":
    raise SystemExit(main())
