"""Learning bar: the tiny demo recipe trained from scratch on synthetic data, with pixels vs blanked pixels.

Generates the demo's synthetic datasets (``megc-vqa synth`` with the demo's datasets and size), turns them
into QA records (``megc-vqa prep``), then trains ``recipes/tiny/demo.yaml`` (every question type) twice on
the same subject split: once with the real pixels and once with every image blanked. Both models answer
the held-out subjects' clips through the inference engine (:mod:`megc_vqa.eval_heldout`, the demo's
held-out evaluation, consistency pass off so that no question borrows another's answer) and the table
gives each question type's score with pixels, with blanked pixels, and the margin. Every type must beat
its blanked control by at least ``--min-margin`` (0.25); the last line names any that does not.

    python benchmarks/learning_bar.py --work runs/learning-bar [--seed 0] [--max_steps 400 ...]

Writes ``WORK/learning_bar.json``; exit status 1 when a question type misses its margin.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

# question type -> the held-out score that measures it (megc_vqa.metrics.vqa keys).
TYPE_SCORES: dict[str, str] = {
    "coarse": "uf1_coarse",
    "fine": "uf1_fine",
    "au": "au_f1",
    "presence": "presence_acc",
    "side": "side_acc",
    "joint": "joint_exact",
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/learning-bar"), help="working folder")
    parser.add_argument("--recipe", default="recipes/tiny/demo.yaml")
    parser.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and training")
    parser.add_argument("--min-margin", type=float, default=0.25, help="pixels minus blanked, per type")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (as the demo)")
    # Anything else is a recipe override (--max_steps 400, --learning_rate 5e-4, ...).
    args, extra = parser.parse_known_args(argv)
    try:
        import megc_vqa  # noqa: F401
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    from megc_vqa.answering.engine import EngineOptions
    from megc_vqa.cli import main as cli
    from megc_vqa.demo import SYNTH_DATASETS, SYNTH_SIZE
    from megc_vqa.eval_heldout import evaluate_heldout, heldout_records
    from megc_vqa.training.config import parse_config
    from megc_vqa.training.data import load_records
    from megc_vqa.training.finetune import load_training_meta, train

    torch.set_num_threads(max(1, args.threads))
    synth, prep = args.work / "synth", args.work / "prep"
    if not (prep / "qa.jsonl").is_file():
        synth_args = ["--datasets", SYNTH_DATASETS, "--seed", str(args.seed), *SYNTH_SIZE]
        assert cli(["synth", "--out", str(synth), *synth_args]) == 0, "megc-vqa synth failed"
        assert cli(["prep", "--data-root", str(synth), "--out", str(prep), "--no-progress"]) == 0, (
            "prep failed"
        )
    records = load_records(prep / "qa.jsonl")
    results: dict[str, dict] = {}
    for name, blank in (("pixels", "false"), ("blanked", "true")):
        recipe = parse_config(
            ["--config", args.recipe, "--train_file", str(prep / "qa.jsonl"),
             "--output_dir", str(args.work / name), "--blank_pixels", blank, "--report_to", "none",
             "--final_eval", "false", "--seed", str(args.seed), *extra]
        )  # fmt: skip
        start = time.perf_counter()
        metrics = train(recipe).metrics
        held = heldout_records(records, load_training_meta(args.work / name).val_subjects)
        scores = evaluate_heldout(args.work / name, held, {"off": EngineOptions(consistency=False)})["off"]
        results[name] = {
            **{t: scores[k] for t, k in TYPE_SCORES.items()},
            "n_clips": scores["n_clips"],
            "train_s": metrics["train_runtime"],
            "total_s": time.perf_counter() - start,
        }
    pixels, blanked = results["pixels"], results["blanked"]
    failing = []
    print(f"{'question':<10}{'score':<14}{'pixels':>8}{'blanked':>9}{'margin':>8}")
    for qtype, key in TYPE_SCORES.items():
        p, b = pixels[qtype], blanked[qtype]
        if p is None or b is None:
            print(f"{qtype:<10}{key:<14}{'-':>8}{'-':>9}{'-':>8}  (no held-out rows)")
            continue
        margin = p - b
        ok = margin >= args.min_margin
        failing += [] if ok else [qtype]
        print(f"{qtype:<10}{key:<14}{p:>8.3f}{b:>9.3f}{margin:>8.3f}  {'ok' if ok else 'BELOW MARGIN'}")
    print(f"train s: pixels {pixels['train_s']:.1f}, blanked {blanked['train_s']:.1f}; "
          f"held-out clips {pixels['n_clips']}")  # fmt: skip
    results["failing"] = failing  # type: ignore[assignment]
    (args.work / "learning_bar.json").write_text(json.dumps(results, indent=2))
    if failing:
        print(f"below the {args.min_margin} margin over blanked pixels: {', '.join(failing)}")
        return 1
    print(f"every question type beats its blanked control by >= {args.min_margin}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
