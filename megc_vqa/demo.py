"""The end-to-end demo behind ``make demo``: synthetic data to leaderboard files and scores, offline, on CPU.

    python -m megc_vqa.demo --out runs/demo

1. ``megc-vqa synth``: synthetic CASME II, SAMM, SMIC and CAS(ME)^3 folders in the real layouts;
2. ``megc-vqa synth-test``: synthetic frames (and answers) for the organisers' real MEGC2025 question
   files shipped in ``data/megc/2025/``;
3. ``megc-vqa prep``: MEGC QA records from the synthetic datasets;
4. ``recipes/finetune.py`` with ``recipes/tiny/demo.yaml``: the offline tiny Qwen2.5-VL trained on them
   (a LoRA recipe leaves an adapter, a full fine-tune a model folder; both are answered with);
5. ``eval/run_vqa.py``'s flow: prediction files, ``submission.zip``, validation, scores.

Leaves ``OUT/scores.json`` (the scorer's JSON) and prints the score table and where the leaderboard files
are. Each run starts from scratch in the step folders it owns under OUT.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUESTIONS_DIR = REPO / "data" / "megc" / "2025"
RECIPE = REPO / "recipes" / "tiny" / "demo.yaml"
# Short-clip datasets: ME-VQA is about clips; the long-video datasets serve spotting.
SYNTH_DATASETS = "casme2,samm,smic,casme3"
# More subjects than the synth default: the tiny model generalises to unseen faces from many of them.
SYNTH_SIZE = ("--subjects", "32", "--clips-per-subject", "6")
STEPS = ("synth", "prep", "model", "test", "pred")

log = logging.getLogger("megc_vqa.demo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m megc_vqa.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument(
        "--recipe", type=Path, default=RECIPE, help="fine-tuning recipe (default recipes/tiny/demo.yaml)"
    )
    p.add_argument("--questions", type=Path, nargs="+", help="question files (default data/megc/2025/*)")
    p.add_argument("--seed", type=int, default=0)
    return p


def _step(name: str, timings: dict[str, float]):
    class Step:
        def __enter__(self) -> None:
            self.t = time.perf_counter()
            print(f"\n== {name}", flush=True)

        def __exit__(self, *exc: object) -> None:
            timings[name] = round(time.perf_counter() - self.t, 1)
            if exc[0] is None:
                print(f"   {name}: {timings[name]} s", flush=True)

    return Step()


def _check(rc: int, what: str) -> None:
    if rc:
        raise SystemExit(f"demo: {what} failed (exit code {rc}); see the messages above")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    from megc_vqa.cli import main as cli

    out: Path = args.out
    questions = args.questions or sorted(QUESTIONS_DIR.glob("*_to_answer.jsonl"))
    if not questions:
        raise SystemExit(f"demo: no question files in {QUESTIONS_DIR}")
    for step in STEPS:  # start clean: a stale answer log or adapter would mix two runs
        shutil.rmtree(out / step, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    with _step("synthetic datasets (megc-vqa synth)", timings):
        _check(
            cli(
                [
                    "synth",
                    "--out",
                    str(out / "synth"),
                    "--datasets",
                    SYNTH_DATASETS,
                    "--seed",
                    str(args.seed),
                    *SYNTH_SIZE,
                ]
            ),
            "synth",
        )
    with _step("synthetic test frames for the MEGC2025 question files (megc-vqa synth-test)", timings):
        _check(
            cli(
                [
                    "synth-test",
                    "--questions",
                    *map(str, questions),
                    "--out",
                    str(out / "test"),
                    "--seed",
                    str(args.seed),
                ]
            ),
            "synth-test",
        )
    with _step("QA records (megc-vqa prep)", timings):
        _check(
            cli(["prep", "--data-root", str(out / "synth"), "--out", str(out / "prep"), "--no-progress"]),
            "prep",
        )
    with _step(
        f"tiny model fine-tune ({args.recipe.relative_to(REPO) if args.recipe.is_relative_to(REPO) else args.recipe})",
        timings,
    ):
        from megc_vqa.training.finetune import main as finetune

        _check(
            finetune(["--config", str(args.recipe), "--train_file", str(out / "prep" / "qa.jsonl"),
                      "--output_dir", str(out / "model"), "--seed", str(args.seed)]),
            "fine-tuning",
        )  # fmt: skip
    with _step("answering the question files (eval/run_vqa.py)", timings):
        from megc_vqa.answering.run_vqa import format_summary, run_vqa
        from megc_vqa.models.contract import read_contract

        # A LoRA recipe leaves an adapter for its base model, a full fine-tune a complete model folder.
        trained = out / "model"
        if (trained / "adapter_config.json").is_file():
            model, adapter = read_contract(trained).model_name_or_path or "tiny-qwen2.5-vl", trained
        else:
            model, adapter = trained, None
        gt = [out / "test" / "gt" / q.name for q in questions]
        result = run_vqa(questions, out / "test", model, out / "pred", adapter=adapter, gt_files=gt)
    shutil.copyfile(out / "pred" / "scores.json", out / "scores.json")
    total = round(time.perf_counter() - started, 1)
    print("\n" + format_summary(result))
    overall = (result.scores or {}).get("overall", {})
    print(f"\ncoarse UF1 (overall, synthetic test clips): {overall.get('uf1_coarse')}")
    print(f"scores: {out / 'scores.json'}   timings (s): {json.dumps(timings)}   total {total} s")
    return 1 if result.summary["validator_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
