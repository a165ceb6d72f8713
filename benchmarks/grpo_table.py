"""What the stages after SFT buy on the tiny model: SFT alone, SFT continued, SFT then GRPO, SFT then RFT.

Per seed, ``--preset demo``: the demo's synthetic datasets (``megc-vqa synth`` + ``prep``, the demo's size
unless ``--subjects``/``--clips`` say otherwise) and the demo recipe (``recipes/tiny/demo.yaml``);
``--preset realistic``: the release-like clips of the realism ablation (``megc-vqa synth --realism release``,
its size: :func:`megc_vqa.ablation.short_clips`) and the realistic recipe (``recipes/tiny/realistic.yaml``).
The recipe (held-out subjects by ``val_fraction``) is trained ``--sft-steps``, then from that model, side by
side:

- ``sft+grpo``: ``stage: grpo`` (``recipes/tiny/grpo.yaml`` with the SFT recipe's prompt, visual and
  question keys, full model as the SFT recipe trains it) for ``--grpo-steps``;
- ``sft+sft``: ``stage: sft`` continued from the SFT model for the same extra wall time as GRPO took
  (GRPO's training seconds divided by SFT's seconds per step);
- ``sft+rft``: ``stage: rft`` (``--rft-samples`` answers per training question, the rewarded ones kept),
  fine-tuned for as many steps as the continued SFT.

Every model answers the held-out subjects through the answering engine (:mod:`megc_vqa.eval_heldout`,
consistency pass off) and the table gives coarse and fine UF1/UAR and AU-list set F1, per seed and the
median over seeds, with each arm's extra training seconds (RFT's sampling comes on top: ``wall_s`` in
the JSON); ``reward_curves.png`` overlays GRPO's mean reward
per step for every seed.

    python benchmarks/grpo_table.py --work runs/grpo-table --seeds 0 1 2
    python benchmarks/grpo_table.py --work runs/grpo-real --preset realistic --seeds 0 1 2 --sft-steps 3000
    python benchmarks/grpo_table.py --work runs/grpo-small --seeds 0 --subjects 12 --clips 4 \\
        --sft-steps 600 --grpo-steps 20          # a small run that shows it works

Resumable: a rerun into the same ``--work`` reuses each seed's data, every finished arm's model and
held-out scores, and a finished seed's ``seedN/result.json`` (delete a folder to redo it). The table is
written after every seed: ``WORK/grpo_table.json``, ``WORK/grpo_table.md`` and ``WORK/reward_curves.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ARMS = ("sft", "sft+sft", "sft+grpo", "sft+rft")
SCORES = ("uf1_coarse", "uar_coarse", "uf1_fine", "uar_fine", "au_f1")
REPO = Path(__file__).resolve().parents[1]
RECIPES = {"demo": REPO / "recipes/tiny/demo.yaml", "realistic": REPO / "recipes/tiny/realistic.yaml"}
# The SFT recipe's keys a later stage takes over: its prompt and visual settings (which the stage checks
# against the SFT run's training record), the questions it was trained on, and the visual cache.
INPUT_KEYS = (
    "visual_spec", "visual_mode", "face", "register", "magnify", "image_size", "max_pixels", "describe_visuals",
    "question_types", "question_mix", "val_fraction", "split_seed", "max_new_tokens", "visual_memory_cache",
)  # fmt: skip
COMMON = ["--report_to", "none", "--final_eval", "false", "--disable_tqdm", "true", "--save_strategy", "no"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/grpo-table"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--preset", choices=sorted(RECIPES), default="demo", help="data and SFT recipe")
    parser.add_argument("--subjects", type=int, default=None, help="per dataset (demo; default: the demo's)")
    parser.add_argument(
        "--clips", type=int, default=None, help="clips per subject (demo; default: the demo's)"
    )
    parser.add_argument("--sft-steps", type=int, default=4000)
    parser.add_argument("--grpo-steps", type=int, default=200)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--rft-samples", type=int, default=4)
    parser.add_argument(
        "--extra-steps",
        type=int,
        default=None,
        help="steps of continued SFT and RFT (default: GRPO's seconds over SFT's seconds per step; set it when "
        "the machine's load changed between the SFT run and GRPO, which skews that conversion)",
    )
    parser.add_argument("--after-lr", type=float, default=1e-4, help="learning rate of the stages after SFT")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (as the demo)")
    return parser


def stage_inputs(recipe: Path) -> list[str]:
    """``--key value`` for the SFT recipe's ``INPUT_KEYS``: a later stage sees what SFT learnt on."""
    from megc_vqa.training.config import load_yaml

    keys = load_yaml(recipe)
    out: list[str] = []
    for key in INPUT_KEYS:
        if key in keys:
            value = keys[key]
            values = value if isinstance(value, list) else [value]
            out += [f"--{key}", *(str(v).lower() if isinstance(v, bool) else str(v) for v in values)]
    return out


def prepare(work: Path, seed: int, args: argparse.Namespace) -> Path:
    from megc_vqa.cli import main as cli

    if args.preset == "realistic":
        from megc_vqa.ablation import short_clips

        return short_clips(args.work, seed)  # WORK/seedN/{synth,prep}, the ablation's size
    from megc_vqa.demo import SYNTH_DATASETS, SYNTH_SIZE

    synth, prep = work / "synth", work / "prep"
    if not (prep / "qa.jsonl").is_file():
        size = list(SYNTH_SIZE)
        if args.subjects:
            size[1] = str(args.subjects)
        if args.clips:
            size[3] = str(args.clips)
        assert (
            cli(["synth", "--out", str(synth), "--datasets", SYNTH_DATASETS, "--seed", str(seed), *size]) == 0
        )
        assert cli(["prep", "--data-root", str(synth), "--out", str(prep), "--no-progress"]) == 0
    return prep / "qa.jsonl"


def run(argv: list[str], out: Path) -> tuple[dict[str, Any], float]:
    """Train one arm into ``out`` (read back when its ``train_metrics.json`` is there); ``(metrics, training
    seconds)``."""
    from megc_vqa.training.config import parse_config
    from megc_vqa.training.finetune import TRAIN_METRICS, run_stage

    done = out / TRAIN_METRICS
    if done.is_file():
        metrics = json.loads(done.read_text())
        return metrics, float(metrics["train_runtime"])
    recipe = parse_config([*argv, "--output_dir", str(out)])
    recipe.overwrite_output_dir = True  # an unfinished earlier try of this arm is replaced
    start = time.perf_counter()
    metrics = run_stage(recipe).metrics
    return metrics, float(metrics.get("train_runtime") or time.perf_counter() - start)


def heldout_scores(model_dir: Path, qa: Path, cache: Path) -> dict[str, Any]:
    """The arm's held-out scores, kept in ``model_dir/heldout_scores.json`` for a rerun."""
    done = model_dir / "heldout_scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    scores = _heldout_scores(model_dir, qa, cache)
    done.write_text(json.dumps(scores, indent=2))
    return scores


def _heldout_scores(model_dir: Path, qa: Path, cache: Path) -> dict[str, Any]:
    from megc_vqa.answering.engine import EngineOptions
    from megc_vqa.eval_heldout import evaluate_heldout, heldout_records
    from megc_vqa.training.data import load_records
    from megc_vqa.training.finetune import load_training_meta

    held = heldout_records(load_records(qa), load_training_meta(model_dir).val_subjects)
    scores = evaluate_heldout(model_dir, held, {"off": EngineOptions(consistency=False)}, None, cache)["off"]
    return {k: scores.get(k) for k in (*SCORES, "n_clips")}


def one_seed(seed: int, args: argparse.Namespace) -> dict[str, Any]:
    work = args.work / f"seed{seed}"
    finished = work / "result.json"
    if finished.is_file():
        return json.loads(finished.read_text())
    start, load = time.perf_counter(), os.getloadavg()[0]
    qa = prepare(work, seed, args)
    recipe = RECIPES[args.preset]
    # Every arm and its scoring share the seed's visual inputs on disk (the face pipeline is the slow part).
    cache = work / "visual_cache"
    base = ["--train_file", str(qa), "--seed", str(seed), "--visual_cache_dir", str(cache), *COMMON]
    sft = ["--config", str(recipe), *base]
    sft_dir = work / "sft"
    _, sft_s = run([*sft, "--max_steps", str(args.sft_steps)], sft_dir)
    step_s = sft_s / args.sft_steps
    after = ["--sft_model", str(sft_dir), "--learning_rate", str(args.after_lr), "--lr_scheduler_type", "constant",
             "--warmup_steps", "0"]  # fmt: skip
    grpo_metrics, grpo_s = run(
        ["--config", "recipes/tiny/grpo.yaml", *base, *stage_inputs(recipe), *after,
         "--max_steps", str(args.grpo_steps), "--use_peft", "false", "--freeze_vision_tower", "false",
         "--num_generations", str(args.num_generations), "--per_device_train_batch_size", str(2 * args.num_generations),
         "--max_completion_length", "64"],
        work / "sft+grpo",
    )  # fmt: skip
    extra_steps = args.extra_steps or max(1, round(grpo_s / step_s))
    _, cont_s = run([*sft, *after, "--max_steps", str(extra_steps)], work / "sft+sft")
    rft_start = time.perf_counter()
    rft_metrics, rft_s = run(
        [*sft, *after, "--stage", "rft", "--rft_samples", str(args.rft_samples), "--max_steps", str(extra_steps)],
        work / "sft+rft",
    )  # fmt: skip
    rft_wall = time.perf_counter() - rft_start  # sampling + loading + training (0 when read back)
    extra = {"sft": 0.0, "sft+sft": cont_s, "sft+grpo": grpo_s, "sft+rft": rft_s}
    out: dict[str, Any] = {
        arm: {**heldout_scores(work / ("sft" if arm == "sft" else arm), qa, cache), "extra_s": extra[arm]}
        for arm in ARMS
    }
    out["sft+rft"]["wall_s"] = rft_wall
    out["sft+rft"]["kept"] = f"{rft_metrics.get('rft_kept')}/{rft_metrics.get('rft_samples')}"
    out["sft+sft"]["steps"] = extra_steps
    out["sft_s"] = sft_s
    history = [json.loads(line) for line in (work / "sft+grpo" / "reward_log.jsonl").read_text().splitlines()]
    out["reward_curve"] = [(h["step"], h["reward"]) for h in history if "reward" in h]
    out["grpo_final_metrics"] = {k: v for k, v in grpo_metrics.items() if "reward" in k}
    out["seed_wall_s"] = round(time.perf_counter() - start, 1)  # this call's share when arms were read back
    out["load"] = [load, os.getloadavg()[0]]
    finished.write_text(json.dumps(out, indent=2, default=str))
    return out


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(results: dict[int, dict[str, Any]]) -> str:
    lines = ["| arm | seed | " + " | ".join(SCORES) + " | extra s |", "|---" * (len(SCORES) + 3) + "|"]
    for arm in ARMS:
        for seed, r in results.items():
            lines.append(
                f"| {arm} | {seed} | "
                + " | ".join(_fmt(r[arm][k]) for k in SCORES)
                + f" | {r[arm]['extra_s']:.0f} |"
            )
        if len(results) > 1:
            med = [
                statistics.median(r[arm][k] for r in results.values() if r[arm][k] is not None)
                for k in SCORES
            ]
            extra = statistics.median(r[arm]["extra_s"] for r in results.values())
            lines.append(f"| {arm} | median | " + " | ".join(_fmt(m) for m in med) + f" | {extra:.0f} |")
    return "\n".join(lines) + "\n"


def plot(results: dict[int, dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for seed, r in results.items():
        if r["reward_curve"]:
            steps, rewards = zip(*r["reward_curve"], strict=True)
            (raw,) = ax.plot(steps, rewards, lw=0.6, alpha=0.3)
            # Two questions a step: single steps are noise, the running mean shows a trend if there is one.
            w = min(20, len(rewards))
            ax.plot(steps[w - 1 :], [sum(rewards[i - w + 1 : i + 1]) / w for i in range(w - 1, len(rewards))],
                    color=raw.get_color(), label=f"seed {seed} (mean of {w} steps)")  # fmt: skip
    ax.set_xlabel("GRPO step")
    ax.set_ylabel("mean reward (answer + 0.5 format)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.preset == "realistic" and (args.subjects or args.clips):
        parser.error("--subjects/--clips size the demo preset; --preset realistic uses the ablation's clips")
    try:
        import megc_vqa  # noqa: F401
    except ModuleNotFoundError:
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import torch

    torch.set_num_threads(max(1, args.threads))
    args.work.mkdir(parents=True, exist_ok=True)
    results: dict[int, dict[str, Any]] = {}
    for seed in args.seeds:  # the table so far after every seed: a stopped run keeps its finished seeds
        results[seed] = one_seed(seed, args)
        (args.work / "grpo_table.json").write_text(
            json.dumps({"args": vars(args), "results": results}, indent=2, default=str)
        )
        text = table(results)
        (args.work / "grpo_table.md").write_text(text)
        plot(results, args.work / "reward_curves.png")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
