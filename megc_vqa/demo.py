"""The end-to-end demo behind ``make demo``: synthetic data to leaderboard files and scores, offline, on CPU.

    python -m megc_vqa.demo --out runs/demo [--seed N]

1. ``megc-vqa synth``: synthetic CASME II, SAMM, SMIC and CAS(ME)^3 folders in the real layouts;
2. ``megc-vqa synth-test``: synthetic frames (and answers) for the organisers' real MEGC2025 question
   files shipped in ``data/megc/2025/``;
3. ``megc-vqa prep``: MEGC QA records from the synthetic datasets;
4. ``recipes/finetune.py`` with ``recipes/tiny/demo.yaml``: the offline tiny Qwen2.5-VL trained on every
   question type of the training file (coarse, fine, AU list, left/right, presence, joint), with a quarter
   of the subjects of each dataset held out (a LoRA recipe leaves an adapter, a full fine-tune a model
   folder; both are answered with);
5. the held-out evaluation (:mod:`megc_vqa.eval_heldout`): the held-out subjects' clips answered by the
   inference engine and scored by the project's scorer;
6. ``eval/run_vqa.py``'s flow on the organisers' clips: prediction files, ``submission.zip``,
   validation, scores.

Steps 5 and 6 run with the consistency pass on (the default, what the leaderboard files hold) and off.
``OUT/scores.json`` is the scorer's JSON of the organisers' clips (``overall``, ``samm``, ``casme3``,
consistency on) plus ``heldout`` (the held-out figures, consistency on) and ``consistency_off`` (both
again without the pass).

The run is fingerprinted (seed, recipe, question files, synthetic set size) in ``OUT/demo_run.json``, which
also lists the steps already done: rerun after an interruption, the demo resumes at the first unfinished
step (its folder is wiped first); a folder holding another run (another seed, say) is refused unless
``--restart`` is given, so two runs' files are never mixed.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from megc_vqa.answering.run_vqa import format_summary, run_vqa
from megc_vqa.cli import main as cli
from megc_vqa.errors import UsageError, run_command
from megc_vqa.eval_heldout import evaluate_heldout, heldout_records
from megc_vqa.fileio import atomic_write_text, claim_outputs, is_regular_file, settings_differences

REPO = Path(__file__).resolve().parents[1]
QUESTIONS_DIR = REPO / "data" / "megc" / "2025"
RECIPE = REPO / "recipes" / "tiny" / "demo.yaml"
# Short-clip datasets: ME-VQA is about clips; the long-video datasets serve spotting.
SYNTH_DATASETS = "casme2,samm,smic,casme3"
# More subjects than the synth default: the tiny model generalises to unseen faces from many of them, and
# the rare classes (fear, sadness, contempt: ~4% of a dataset's clips each, as in the real ones) need every
# clip. 32 subjects gave 16 fear clips in all and organisers'-clips coarse UF1 0.87-1.0 over seeds (fear
# and sadness answered surprise); 48 give 23 and 0.91-1.0. A quarter of them (per dataset, the recipe's
# val_fraction) are held out: about 260 clips.
SYNTH_SIZE = ("--subjects", "48", "--clips-per-subject", "6")
STEPS = ("synth", "test", "prep", "model", "heldout", "pred", "pred-no-consistency")
RUN_FILE = "demo_run.json"
# Bump when the demo's steps change what they write: an old folder is then a different run.
DEMO_VERSION = 2

log = logging.getLogger("megc_vqa.demo")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m megc_vqa.demo", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/demo"), help="output folder (default runs/demo)")
    p.add_argument(
        "--recipe", type=Path, default=RECIPE, help="fine-tuning recipe (default recipes/tiny/demo.yaml)"
    )
    p.add_argument(
        "--model",
        help="tiny model to train instead of the recipe's (tiny-internvl, tiny-glm4v, tiny-qwen3-vl-moe, ...: "
        "any family's; `make demo MODEL=...`)",
    )
    p.add_argument("--questions", type=Path, nargs="+", help="question files (default data/megc/2025/*)")
    p.add_argument("--seed", type=int, default=0, help="seed of the synthetic data and of training")
    p.add_argument(
        "--restart",
        action="store_true",
        help="wipe what another run (other seed, recipe or question files) left in --out and start over",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (default 1: the tiny model's matrices are too small to split, and spinning "
        "threads cost more CPU than they save)",
    )
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


def _digest_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def run_fingerprint(args: argparse.Namespace, questions: list[Path]) -> dict[str, Any]:
    """What makes two demo runs the same run: their files may then be resumed, never mixed otherwise."""
    from megc_vqa.training.config import load_yaml

    return {
        "demo_version": DEMO_VERSION,
        "seed": args.seed,
        "recipe": str(args.recipe),
        # The recipe's settings, not its bytes: editing a comment does not make another run.
        "recipe_sha256": _digest_text(json.dumps(load_yaml(args.recipe), sort_keys=True, default=str)),
        "questions": {str(q): _digest(q) for q in questions},
        "synth": [SYNTH_DATASETS, *SYNTH_SIZE],
        **({"model": args.model} if getattr(args, "model", None) else {}),
    }


class RunState:
    """``OUT/demo_run.json``: the run's fingerprint and the steps it finished, written after each step."""

    def __init__(self, out: Path, fingerprint: dict[str, Any], restart: bool) -> None:
        self.path = out / RUN_FILE
        self.fingerprint = fingerprint
        self.done: list[str] = []
        if self.path.is_file():
            try:
                recorded = json.loads(self.path.read_text())
            except ValueError:
                recorded = {}
            if recorded.get("fingerprint") == fingerprint:
                self.done = [s for s in recorded.get("done", []) if s in STEPS]
            elif not restart:
                old, new = recorded.get("fingerprint", {}), fingerprint
                diff = sorted({line.split(":")[0] for line in settings_differences(old, new)})
                raise UsageError(
                    f"{out} holds another demo run ({self.path} differs in: {', '.join(diff) or 'format'}; "
                    f"recorded seed {old.get('seed')}, this seed {new.get('seed')}). Pass --restart to wipe "
                    "it and start over, or choose another --out."
                )
        elif any((out / step).exists() for step in STEPS) and not restart:
            raise UsageError(
                f"{out} holds demo step folders but no {RUN_FILE} (an older or foreign run). Pass "
                "--restart to wipe them and start over, or choose another --out."
            )
        # --restart wipes only what a demo wrote (its marker, or its run file from before markers): step
        # folders of the user's or of another tool are refused, never deleted.
        claim_outputs(
            out,
            "megc-vqa demo",
            [*STEPS, "scores.json", RUN_FILE],
            legacy=lambda _: is_regular_file(self.path),
        )
        # Only a prefix of finished steps counts: a later step may depend on every earlier one.
        prefix = []
        for step in STEPS:
            if step not in self.done:
                break
            prefix.append(step)
        self.done = prefix
        for step in STEPS[len(prefix) :]:  # unfinished steps start from an empty folder
            if (out / step).is_symlink():
                (out / step).unlink()  # the link only, never what it points to
            shutil.rmtree(out / step, ignore_errors=True)
        if not prefix:
            (out / "scores.json").unlink(missing_ok=True)
        out.mkdir(parents=True, exist_ok=True)
        self._write()
        if prefix:
            print(f"demo: resuming {out} after step(s) {', '.join(prefix)} (same seed, recipe, questions)")

    def _write(self) -> None:
        atomic_write_text(
            self.path, json.dumps({"fingerprint": self.fingerprint, "done": self.done}, indent=2)
        )

    def todo(self, step: str) -> bool:
        return step not in self.done

    def finish(self, step: str) -> None:
        self.done.append(step)
        self._write()


def _brief(scores: dict[str, Any]) -> dict[str, Any]:
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in scores.items() if k != "datasets"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(max(1, args.threads))
    # The training DataLoader's worker hands each batch's tensors to this process. Passing them by file
    # descriptor (the default) costs ~2 ms of the tiny model's ~70 ms step, one socket round trip per
    # tensor; by shared-memory file name it does not. The demo owns its process, so it may set this; the
    # library leaves it alone.
    torch.multiprocessing.set_sharing_strategy("file_system")
    out: Path = args.out
    questions = args.questions or sorted(QUESTIONS_DIR.glob("*_to_answer.jsonl"))
    if not questions:
        raise SystemExit(f"demo: no question files in {QUESTIONS_DIR}")
    for q in questions:
        if not q.is_file():
            raise UsageError(f"--questions: {q} is not a file")
    if not args.recipe.is_file():
        raise UsageError(f"--recipe: {args.recipe} is not a file")
    state = RunState(out, run_fingerprint(args, questions), args.restart)
    timings: dict[str, float] = {}
    started = time.perf_counter()

    def cli_step(step: str, title: str, argv: list[str]) -> None:
        if state.todo(step):
            with _step(title, timings):
                _check(cli(argv), argv[0])
            state.finish(step)

    synth_argv = ["--datasets", SYNTH_DATASETS, "--seed", str(args.seed), *SYNTH_SIZE]
    cli_step(
        "synth", "synthetic datasets (megc-vqa synth)", ["synth", "--out", str(out / "synth"), *synth_argv]
    )
    cli_step(
        "test",
        "synthetic test frames for the MEGC2025 question files (megc-vqa synth-test)",
        [
            "synth-test",
            "--questions",
            *map(str, questions),
            "--out",
            str(out / "test"),
            "--seed",
            str(args.seed),
        ],
    )
    cli_step(
        "prep",
        "QA records (megc-vqa prep)",
        ["prep", "--data-root", str(out / "synth"), "--out", str(out / "prep"), "--no-progress"],
    )
    if state.todo("model"):
        recipe_name = args.recipe.relative_to(REPO) if args.recipe.is_relative_to(REPO) else args.recipe
        with _step(f"tiny model fine-tune ({recipe_name})", timings):
            from megc_vqa.training.finetune import main as finetune

            # The held-out evaluation below answers the validation subjects through the engine.
            _check(
                finetune(["--config", str(args.recipe), "--train_file", str(out / "prep" / "qa.jsonl"),
                          "--output_dir", str(out / "model"), "--seed", str(args.seed),
                          "--final_eval", "false",
                          *(["--model_name_or_path", args.model] if args.model else [])]),
                "fine-tuning",
            )  # fmt: skip
        state.finish("model")

    from megc_vqa.answering.engine import EngineOptions
    from megc_vqa.models.contract import read_contract

    # A LoRA recipe leaves an adapter for its base model, a full fine-tune a complete model folder.
    trained = out / "model"
    if (trained / "adapter_config.json").is_file():
        model, adapter = read_contract(trained).model_name_or_path or "tiny-qwen2.5-vl", trained
    else:
        model, adapter = trained, None
    option_sets = {
        "on": EngineOptions(seed=args.seed),
        "off": EngineOptions(seed=args.seed, consistency=False),
    }

    if state.todo("heldout"):
        with _step("held-out subjects: answered by the engine, scored (megc_vqa.eval_heldout)", timings):
            from megc_vqa.training.data import load_records

            subjects = list(read_contract(trained).val_subjects)
            records = heldout_records(load_records(out / "prep" / "qa.jsonl"), subjects)
            if not records:
                raise UsageError(
                    f"{args.recipe}: training held out no subjects; the demo needs val_fraction > 0"
                )
            heldout = evaluate_heldout(trained, records, option_sets, predictions_dir=out / "heldout")
            atomic_write_text(out / "heldout" / "scores.json", json.dumps(heldout, indent=2) + "\n")
        state.finish("heldout")
    heldout = json.loads((out / "heldout" / "scores.json").read_text())

    gt = [out / "test" / "gt" / q.name for q in questions]
    results = {}
    for key, folder in (("off", "pred-no-consistency"), ("on", "pred")):
        # Always run (cheap): a finished step resumes from its answer log and rewrites the same files.
        with _step(f"answering the question files, consistency {key} (eval/run_vqa.py)", timings):
            results[key] = run_vqa(
                questions, out / "test", model, out / folder, adapter=adapter, gt_files=gt,
                options=option_sets[key], progress=False,
            )  # fmt: skip
        if state.todo(folder):
            state.finish(folder)
    result = results["on"]
    scores = json.loads((out / "pred" / "scores.json").read_text())
    scores["heldout"] = heldout["on"]
    scores["consistency_off"] = {
        "overall": json.loads((out / "pred-no-consistency" / "scores.json").read_text())["overall"],
        "heldout": heldout["off"],
    }
    scores["run"] = {
        "seed": args.seed,
        "fingerprint": _digest_text(json.dumps(state.fingerprint, sort_keys=True)),
    }
    atomic_write_text(out / "scores.json", json.dumps(scores, indent=2, default=str) + "\n")
    total = round(time.perf_counter() - started, 1)
    print("\n" + format_summary(result))
    overall, off = scores["overall"], scores["consistency_off"]["overall"]
    print(
        f"\norganisers' clips ({overall['n_rows']} rows, synthetic frames): coarse UF1 "
        f"{overall['uf1_coarse']:.4f} (consistency off {off['uf1_coarse']:.4f}), fine UF1 "
        f"{overall['uf1_fine']:.4f} (off {off['uf1_fine']:.4f})"
    )
    print(f"held-out subjects, consistency on:  {json.dumps(_brief(heldout['on']))}")
    print(f"held-out subjects, consistency off: {json.dumps(_brief(heldout['off']))}")
    print(f"scores: {out / 'scores.json'}   timings (s): {json.dumps(timings)}   total {total} s")
    return 1 if result.summary["validator_errors"] else 0


def cli_main(argv: list[str] | None = None) -> int:
    return run_command(main, argv)


if __name__ == "__main__":
    sys.exit(cli_main())
