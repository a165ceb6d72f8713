"""The GPU suite: every GPU figure the project claims, in one call (< 10 min on one H100-class GPU).

    python benchmarks/gpu_suite.py --out runs/bench/gpu_suite.json
    python benchmarks/gpu_suite.py --scale tiny --device cpu --out O.json   # CPU smoke test (tested)

On the real Qwen2.5-VL-3B architecture (random weights from the published configuration,
``megc_vqa.models.published``; nothing is downloaded):

1. LoRA bf16 and QLoRA (NF4) training: step time, samples/s, tokens/s, peak GPU memory, MFU
   (``benchmarks/train_gpu.py``, at the 3B recipe's visual load: 4 images of 224 px, batch 4).
2. QLoRA on Qwen2.5-VL-7B: peak GPU memory of one step.
3. Answering throughput: the engine (``megc_vqa.answering.engine``: one vision pass and one prompt prefix
   per clip, closed questions' labels scored) against one ``generate`` per row (``benchmarks/answer.py``)
   on the random 3B checkpoint, with free decoding (``answer``) and label-constrained decoding on both
   sides (``answer-constrained``), and vLLM's when it is installed.

It prints one table with the goal of each figure (MFU >= 40% for LoRA-3B on an H100-class GPU, QLoRA-7B
within 16 GiB, engine >= 8x per-row generate) and writes one JSON. ``--scale tiny`` runs the same code
on a 2-layer model on the CPU, where the figures mean nothing but every path is exercised.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for folder in (REPO, REPO / "benchmarks"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

GOALS = {
    "lora-bf16": ("mfu", ">=", 0.40),
    "7b-qlora-nf4": ("peak_mem_gib", "<=", 16.0),
    "answer": ("ratio", ">=", 8.0),
    "answer-constrained": ("ratio", ">=", 8.0),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", choices=["3b", "tiny"], default="3b")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (default 10; tiny 1)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3; tiny 1)")
    p.add_argument(
        "--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM 989)"
    )
    p.add_argument("--answer-clips", type=int, default=None, help="clips answered (default 8; tiny 2)")
    p.add_argument("--skip-7b", action="store_true", help="leave out QLoRA-7B (needs ~20 GB disk)")
    p.add_argument("--workdir", type=Path, default=None, help="random checkpoints (default: a temp folder)")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    return p.parse_args(argv)


def meets(name: str, row: dict) -> str:
    if name not in GOALS or row.get("error"):
        return ""
    key, op, value = GOALS[name]
    ok = row[key] >= value if op == ">=" else row[key] <= value
    return f"{'yes' if ok else 'NO'} ({key} {op} {value:g})"


def training_rows(args: argparse.Namespace, workdir: Path) -> list[dict]:
    import torch
    from train_gpu import parse_args as train_args
    from train_gpu import run_variant

    targs = train_args(
        ["--device", args.device, "--steps", str(args.steps), "--warmup", str(args.warmup),
         "--peak-tflops", str(args.peak_tflops)]
        + (["--batch-size", "1", "--images", "1", "--image-px", "56"] if args.scale == "tiny" else [])
    )  # fmt: skip
    variants = [("lora-bf16", args.scale, None, True), ("qlora-nf4", args.scale, 4, True)]
    if not args.skip_7b:
        variants.append(("7b-qlora-nf4", "7b" if args.scale == "3b" else "tiny", 4, False))
    rows = []
    for name, scale, bits, timed in variants:
        try:
            row = run_variant(name, targs, workdir / name, scale, bits, timed=timed)
        except Exception as err:  # one failing variant must not hide the others' figures
            row = {"variant": name, "error": f"{type(err).__name__}: {str(err)[:300]}"}
        rows.append(row)
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


def answering_rows(args: argparse.Namespace, workdir: Path) -> list[dict]:
    from answer import measure

    from megc_vqa.answering.vllm_backend import vllm_available
    from megc_vqa.models.published import ensure_random

    model = (
        ensure_random("Qwen/Qwen2.5-VL-3B-Instruct", cache_dir=workdir / "models")
        if args.scale == "3b"
        else "tiny-qwen2.5-vl"
    )
    rows = []
    for variant, constrained in (("answer", False), ("answer-constrained", True)):
        try:
            r = measure(
                model,
                clips=args.answer_clips,
                repeats=1 if args.scale == "tiny" else 3,
                require_same=False,
                constrained=constrained,
            )
            rows.append({"variant": variant, **r})
        except Exception as err:
            rows.append({"variant": variant, "error": f"{type(err).__name__}: {str(err)[:300]}"})
    if vllm_available():
        rows.append(vllm_row(model, args))
    else:
        rows.append({"variant": "answer-vllm", "error": "vllm is not installed"})
    return rows


def vllm_row(model, args: argparse.Namespace) -> dict:
    """Rows/s of the vLLM backend on the same clips as :func:`answer.measure`."""
    try:
        from megc_vqa.answering.engine import EngineOptions
        from megc_vqa.answering.vllm_backend import VllmEngine
        from megc_vqa.visual.frames import clip_from_folder
        from megc_vqa.visual.samplers import sample
        from megc_vqa.visual.toyclips import write_toy_clip

        questions = REPO / "data/megc/2025/me_vqa_casme3_test_to_answer.jsonl"
        rows = [json.loads(line) for line in questions.read_text().splitlines()]
        videos = list(dict.fromkeys(r["video"] for r in rows))[: args.answer_clips]
        tmp = Path(tempfile.mkdtemp(prefix="gpu_suite_vllm_"))
        clips = []
        for i, video in enumerate(videos):
            write_toy_clip(tmp / video, n_frames=30, apex_pos=12, seed=i)
            visual = sample(clip_from_folder(tmp / video, 30.0, dataset="bench"), "oao+flow", size=224)
            clips.append((visual, [r["question"] for r in rows if r["video"] == video]))
        engine = VllmEngine(model, None, EngineOptions(constrained=False, consistency=False))
        engine.answer_clips(clips)  # warm-up
        start = time.perf_counter()
        engine.answer_clips(clips)
        seconds = time.perf_counter() - start
        n = sum(len(q) for _, q in clips)
        return {"variant": "answer-vllm", "rows": n, "engine_s": seconds, "engine_rows_per_s": n / seconds}
    except Exception as err:
        return {"variant": "answer-vllm", "error": f"{type(err).__name__}: {str(err)[:300]}"}


def format_table(rows: list[dict]) -> str:
    lines = [
        f"{'variant':<14}{'step s':>8}{'samples/s':>10}{'tokens/s':>10}{'peak GiB':>9}{'MFU':>7}"
        f"{'rows/s':>9}{'vs generate':>12}  goal met"
    ]
    for r in rows:
        if r.get("error"):
            lines.append(f"{r['variant']:<14}  not measured: {r['error']}")
            continue

        def num(key: str, fmt: str, width: int, r: dict = r) -> str:
            return (
                f"{r[key]:>{width}{fmt}}" if isinstance(r.get(key), int | float) else " " * (width - 1) + "-"
            )

        lines.append(
            f"{r['variant']:<14}{num('step_s', '.3f', 8)}{num('samples_per_s', '.2f', 10)}"
            f"{num('tokens_per_s', '.0f', 10)}{num('peak_mem_gib', '.1f', 9)}{num('mfu', '.1%', 7)}"
            f"{num('engine_rows_per_s', '.1f', 9)}{num('ratio', '.2f', 12)}  {meets(r['variant'], r)}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    args = parse_args(argv)
    tiny = args.scale == "tiny"
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.steps = args.steps or (1 if tiny else 10)
    args.warmup = args.warmup if args.warmup is not None else (0 if tiny else 3)
    args.answer_clips = args.answer_clips or (1 if tiny else 8)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: run on a GPU machine, or --scale tiny --device cpu", file=sys.stderr)
        return 2
    if args.scale == "3b" and not args.device.startswith("cuda"):
        print("--scale 3b needs a GPU (the CPU real-size check is `make test-realsize`)", file=sys.stderr)
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="megc-gpu-suite-"))
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    started = time.perf_counter()
    rows = training_rows(args, workdir)
    print(f"training figures after {time.perf_counter() - started:.0f} s", flush=True)
    rows += answering_rows(args, workdir)
    total = time.perf_counter() - started
    print(f"GPU suite: {device}; Qwen2.5-VL-{args.scale} random init; {total:.0f} s")
    print(format_table(rows))
    if args.out:
        from megc_vqa.fileio import atomic_write_text

        result = {
            "date": time.strftime("%Y-%m-%d"),
            "device": device,
            "scale": args.scale,
            "seconds": total,
            "torch": torch.__version__,
            "results": rows,
            "goals": {k: f"{key} {op} {v}" for k, (key, op, v) in GOALS.items()},
        }
        atomic_write_text(args.out, json.dumps(result, indent=2, default=str))
    measured = [r for r in rows if not r.get("error") and r["variant"] != "answer-vllm"]
    return 0 if len(measured) == len([r for r in rows if r["variant"] != "answer-vllm"]) else 1


if __name__ == "__main__":
    raise SystemExit(main())
