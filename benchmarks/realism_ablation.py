"""The realism ablation (issue 22, deliver 3): face-pipeline rows of the realistic tiny recipe, each against
its blanked-pixel control, on held-out subjects of release-like synthetic clips; and the spotter against
the model-free baseline on release-like long videos at 30 and 200 fps, through eval/run_str.py.

    python benchmarks/realism_ablation.py --work runs/ablation [--seeds 0,1,2] [--rows none,crop,...]
        [--spot-train-seed 0 --spot-eval-seed 1] [--no-spotting] [--max_steps 1500 ...]

Rows (megc_vqa.ablation.ROWS): none | crop | align (crop+align) | register | magnify | register@112 |
magnify@112. The blanked control is trained once per seed and image size and shared by the rows of that
size. Resumable: a row already measured with the same settings is read back (--report-only: only those,
nothing trained). Writes WORK/ablation.json, WORK/ablation.md (the table: medians over seeds with each
seed's figure) and WORK/ablation.png; the chosen row (largest median coarse + fine margin over blanked)
is printed last.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    from megc_vqa import ablation

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("runs/ablation"))
    p.add_argument("--recipe", type=Path, default=ablation.RECIPE)
    p.add_argument("--seeds", default="0,1,2", help="seeds of the data and training (selection seeds)")
    p.add_argument("--rows", default=",".join(ablation.ROW_NAMES), help="rows to run, in this order")
    p.add_argument("--spot-train-seed", type=int, default=0)
    p.add_argument("--spot-eval-seed", type=int, default=1)
    p.add_argument("--no-spotting", action="store_true", help="leave out the spotter and baseline rows")
    p.add_argument("--spotting-only", action="store_true", help="only the spotter and baseline rows")
    p.add_argument("--report-only", action="store_true", help="train nothing: the table of what is done")
    p.add_argument("--threads", type=int, default=1, help="torch threads (as the demo)")
    args, extra = p.parse_known_args(argv)  # anything else: recipe overrides (--max_steps 1000, ...)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(max(1, args.threads))
    by_name = {r.name: r for r in ablation.ROWS}
    unknown = [n for n in args.rows.split(",") if n not in by_name]
    if unknown:
        p.error(f"--rows: unknown {', '.join(unknown)}; known: {', '.join(by_name)}")
    rows = [by_name[n] for n in args.rows.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = {"rows": {}, "blanked": {}, "seeds": seeds}
    if not args.spotting_only:
        results = ablation.run_ablation(args.work, seeds, rows, args.recipe, extra, args.report_only)
    spots = {}
    if not args.no_spotting:
        spots = ablation.run_spotting(
            args.work, args.spot_train_seed, args.spot_eval_seed, read_only=args.report_only
        )
    _table, chosen = ablation.write_report(args.work, results, rows, spots)
    print((args.work / "ablation.md").read_text())
    print(f"chosen row: {chosen} ({time.perf_counter() - start:.0f} s); {args.work / 'ablation.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
