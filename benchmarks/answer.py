"""Answering throughput and memory: the engine against a naive loop that calls ``generate`` once per row.

    python benchmarks/answer.py [--clips 8] [--repeats 3] [--model tiny-qwen2.5-vl] [--constrained]
    python benchmarks/answer.py --memory [--clips 8]      # peak RSS answering N and 10 N clips

Both sides use the same model, the same prompts (``megc_vqa.models.prompting``) and greedy decoding with
the same per-question length bounds, and must give the same answers token for token (asserted). By
default label constraints are off on both sides (every row decodes to its length bound: the figure the
project has always quoted); ``--constrained`` turns them on on both (the naive loop with the engine's
grammar logits processor; the engine answers closed questions by scoring their labels). The naive loop
prepares the visual inputs for every row and generates one row at a time; the engine prepares them once
per clip, runs each clip's images and shared prompt prefix once, and decodes the rows of several clips
together. Consistency is off, so what is compared is decoding. Prints the median seconds and rows/s of
each over ``--repeats`` runs, alternating, and, as the last line, ``ratio=<engine / naive>``.

``--memory`` answers ``--clips`` clips and ten times as many, each in a fresh process, the way ``run_vqa``
does (clips in batches of ``2 x batch_size`` rows, visual inputs prepared per batch), and prints each
process's peak RSS and, as the last line, ``memory_ratio=<peak at 10 N / peak at N>``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
QUESTIONS = REPO / "data/megc/2025/me_vqa_casme3_test_to_answer.jsonl"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-qwen2.5-vl")
    p.add_argument("--adapter", type=Path)
    p.add_argument("--questions", type=Path, default=QUESTIONS)
    p.add_argument("--clips", type=int, default=8, help="clips to answer (5 rows each)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--constrained", action="store_true", help="label-constrained decoding on both sides")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: a shared machine)")
    p.add_argument("--memory", action="store_true", help="peak RSS at N and 10 N clips instead")
    p.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.memory_child is not None:
        print(json.dumps(answer_for_memory(args, args.memory_child)))
        return 0
    if args.memory:
        return memory(args)
    r = measure(args.model, args.adapter, args.questions, args.clips, args.repeats, args.batch_size,
                constrained=args.constrained, threads=args.threads)  # fmt: skip
    print(f"model {args.model}, {r['clips']} clips, {r['rows']} rows, {r['device']}, {args.repeats} repeats, "
          f"{'constrained' if args.constrained else 'free'} decoding")  # fmt: skip
    for name in ("naive", "engine"):
        runs = ", ".join(f"{t:.2f}" for t in r[name + "_runs"])
        print(
            f"{name:>7}: median {r[name + '_s']:.2f} s  ({r[name + '_rows_per_s']:.1f} rows/s; runs {runs})"
        )
    print("same greedy answers: yes")
    if args.constrained:
        print(
            f"closed rows: {r['scored_rows']} scored, {r['argmax_agrees']} whose label argmax is the greedy answer"
        )
    print(f"ratio={r['ratio']:.2f}")
    return 0


def _toy_clips(videos: list[str]) -> Path:
    from megc_vqa.visual.toyclips import write_toy_clip

    tmp = Path(tempfile.mkdtemp(prefix="bench_answer_"))
    for i, video in enumerate(videos):
        write_toy_clip(tmp / video, n_frames=30, apex_pos=12, seed=i)
    return tmp


def measure(
    model_name: str | Path,
    adapter: Path | None = None,
    questions: Path = QUESTIONS,
    clips: int = 8,
    repeats: int = 3,
    batch_size: int = 32,
    require_same: bool = True,
    constrained: bool = False,
    threads: int | None = None,
) -> dict:
    """Rows/s of the naive per-row loop and of the engine; ``require_same``: assert equal answers
    (off for random-weight models in bf16 on a GPU, where batching may flip a near-tie token)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import torch

    from megc_vqa.answering.engine import Engine, EngineOptions
    from megc_vqa.visual.frames import clip_from_folder
    from megc_vqa.visual.samplers import sample

    if threads:
        torch.set_num_threads(threads)
    rows = [json.loads(line) for line in questions.read_text().splitlines()]
    videos = list(dict.fromkeys(r["video"] for r in rows))[:clips]
    rows = [r for r in rows if r["video"] in videos]
    tmp = _toy_clips(videos)

    options = EngineOptions(
        batch_size=batch_size, constrained=constrained, consistency=False, dataset_labels=False
    )
    engine = Engine.load(model_name, adapter, options)

    def visual_of(video: str):
        return sample(clip_from_folder(tmp / video, 30.0, dataset="bench"), "oao+flow", size=224)

    naive = _naive_loop(engine, rows, visual_of, constrained)

    scored: list = []

    def batched() -> list[str]:
        clips = [(visual_of(v), [r["question"] for r in rows if r["video"] == v]) for v in videos]
        answers = [a for per_clip, _ in engine.answer_clips(clips) for a in per_clip]
        scored[:] = [a for a in answers if a.scores]
        return [a.raw for a in answers]

    times: dict[str, list[float]] = {"naive": [], "engine": []}
    results: dict[str, list[str]] = {}
    naive()  # warm-up (first-call allocations, the grammar index)
    batched()
    for _ in range(repeats):
        for name, fn in (("naive", naive), ("engine", batched)):
            t = time.perf_counter()
            results[name] = fn()
            times[name].append(time.perf_counter() - t)
    same = sum(a == b for a, b in zip(results["naive"], results["engine"], strict=True))
    assert not require_same or same == len(rows), [
        (r["video_id"], a, b)
        for r, a, b in zip(rows, results["naive"], results["engine"], strict=True)
        if a != b
    ]
    rate = {k: len(rows) / statistics.median(v) for k, v in times.items()}
    device = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    return {
        "clips": len(videos),
        "rows": len(rows),
        "device": device,
        "naive_s": statistics.median(times["naive"]),
        "engine_s": statistics.median(times["engine"]),
        "naive_runs": times["naive"],
        "engine_runs": times["engine"],
        "naive_rows_per_s": rate["naive"],
        "engine_rows_per_s": rate["engine"],
        "ratio": rate["engine"] / rate["naive"],
        "same_answers": same / len(rows),
        "scored_rows": len(scored),
        "argmax_agrees": sum(max(a.scores, key=a.scores.get) == a.text for a in scored),
    }


def _naive_loop(engine, rows: list[dict], visual_of, constrained: bool):
    """One ``generate`` per row, each preparing its own visual inputs (with the engine's grammar logits
    processor when ``constrained``)."""
    import torch
    from transformers import LogitsProcessorList

    from megc_vqa.answering.constrained import GrammarLogitsProcessor, stop_token_ids
    from megc_vqa.answering.grammar import answer_grammar
    from megc_vqa.models.prompting import build_messages, encode_prompts, render_prompt
    from megc_vqa.qa.templates import classify_question

    model, processor, prompt, tok = engine.model, engine.processor, engine.prompt, engine.tokenizer
    stop = stop_token_ids(tok)

    def naive() -> list[str]:
        answers = []
        for r in rows:
            visual = visual_of(r["video"])  # once per row
            text = render_prompt(processor, build_messages(r["question"], visual, None, prompt))
            inputs = encode_prompts(processor, [text], [visual], prompt).to(model.device)
            kind = classify_question(r["question"])
            processors = LogitsProcessorList()
            if constrained:
                grammar = answer_grammar(r["question"], engine.options.vocab, kind)
                index = engine.decoder.token_index
                processors.append(GrammarLogitsProcessor(index, [grammar], inputs["input_ids"].shape[1]))
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=engine.max_new_tokens(kind), do_sample=False,
                                     eos_token_id=stop, pad_token_id=tok.pad_token_id, logits_processor=processors)  # fmt: skip
            answers.append(
                tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
            )
        return answers

    return naive


def answer_for_memory(args: argparse.Namespace, clips: int) -> dict:
    """Answer ``clips`` clips (the question file's clips, repeated under new names) as ``run_vqa`` does;
    returns the process's peak RSS."""
    import torch

    from megc_vqa.answering.engine import Engine, EngineOptions
    from megc_vqa.visual.frames import clip_from_folder
    from megc_vqa.visual.samplers import sample

    torch.set_num_threads(args.threads)
    base = [json.loads(line) for line in args.questions.read_text().splitlines()]
    first = base[0]["video"]
    template = [r["question"] for r in base if r["video"] == first]
    videos = [f"clip{i:04d}" for i in range(clips)]
    tmp = _toy_clips(videos)
    engine = Engine.load(
        args.model, args.adapter, EngineOptions(batch_size=args.batch_size, constrained=args.constrained)
    )
    per_batch = max(1, 2 * args.batch_size // len(template))
    start = time.perf_counter()
    rows = 0
    for k in range(0, len(videos), per_batch):
        batch = [(sample(clip_from_folder(tmp / v, 30.0, dataset="bench"), "oao+flow", size=224), template)
                 for v in videos[k : k + per_batch]]  # fmt: skip
        rows += sum(len(a) for a, _ in engine.answer_clips(batch))
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "clips": clips,
        "rows": rows,
        "seconds": time.perf_counter() - start,
        "peak_rss_mib": peak_kib / 1024,
    }


def memory(args: argparse.Namespace) -> int:
    out = []
    for n in (args.clips, 10 * args.clips):
        cmd = [sys.executable, __file__, "--memory-child", str(n), "--model", args.model, "--clips", str(n),
               "--batch-size", str(args.batch_size), "--threads", str(args.threads),
               *(["--constrained"] if args.constrained else []), *(["--adapter", str(args.adapter)] if args.adapter else [])]  # fmt: skip
        proc = subprocess.run(
            cmd, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}
        )
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        out.append(r)
        print(
            f"{r['clips']:>5} clips, {r['rows']:>5} rows: peak RSS {r['peak_rss_mib']:.0f} MiB ({r['seconds']:.1f} s)"
        )
    print(f"memory_ratio={out[1]['peak_rss_mib'] / out[0]['peak_rss_mib']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
