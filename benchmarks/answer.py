"""Answering throughput: the engine against a naive loop that calls ``generate`` once per row.

    python benchmarks/answer.py [--clips 8] [--repeats 3] [--model tiny-qwen2.5-vl]

Both sides use the same model, the same prompts (``megc_vqa.models.prompting``) and greedy decoding with
the same per-question length bounds; label constraints and consistency are off so that the answers
must match token for token (asserted). The naive loop prepares the visual inputs for every row and
generates one row at a time; the engine prepares them once per clip and batches rows across clips.
Prints the median rows/s of each and, as the last line, ``ratio=<engine / naive>``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="tiny-qwen2.5-vl")
    p.add_argument("--adapter", type=Path)
    p.add_argument(
        "--questions", type=Path, default=REPO / "data/megc/2025/me_vqa_casme3_test_to_answer.jsonl"
    )
    p.add_argument("--clips", type=int, default=8, help="clips of the question file to answer (5 rows each)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    args = p.parse_args(argv)
    r = measure(args.model, args.adapter, args.questions, args.clips, args.repeats, args.batch_size)
    print(f"model {args.model}, {r['clips']} clips, {r['rows']} rows, {r['device']}, {args.repeats} repeats")
    for name in ("naive", "engine"):
        print(f"{name:>7}: median {r[name + '_s']:.2f} s  ({r[name + '_rows_per_s']:.1f} rows/s)")
    print("same greedy answers: yes")
    print(f"ratio={r['ratio']:.2f}")
    return 0


def measure(
    model_name: str | Path,
    adapter: Path | None = None,
    questions: Path = REPO / "data/megc/2025/me_vqa_casme3_test_to_answer.jsonl",
    clips: int = 8,
    repeats: int = 3,
    batch_size: int = 32,
    require_same: bool = True,
) -> dict:
    """Rows/s of the naive per-row loop and of the engine; ``require_same``: assert equal answers
    (off for random-weight models in bf16 on a GPU, where batching may flip a near-tie token)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(REPO))

    import torch

    from megc_vqa.answering.constrained import stop_token_ids
    from megc_vqa.answering.engine import Engine, EngineOptions
    from megc_vqa.models.prompting import build_messages, encode_prompts, render_prompt
    from megc_vqa.qa.templates import classify_question
    from megc_vqa.visual.frames import clip_from_folder
    from megc_vqa.visual.samplers import sample
    from megc_vqa.visual.toyclips import write_toy_clip

    rows = [json.loads(line) for line in questions.read_text().splitlines()]
    videos = list(dict.fromkeys(r["video"] for r in rows))[:clips]
    rows = [r for r in rows if r["video"] in videos]
    tmp = Path(tempfile.mkdtemp(prefix="bench_answer_"))
    for i, video in enumerate(videos):
        write_toy_clip(tmp / video, n_frames=30, apex_pos=12, seed=i)

    options = EngineOptions(batch_size=batch_size, constrained=False, consistency=False)
    engine = Engine.load(model_name, adapter, options)
    model, processor, prompt = engine.model, engine.processor, engine.prompt
    tok = engine.tokenizer
    stop = stop_token_ids(tok)

    def visual_of(video: str):
        return sample(clip_from_folder(tmp / video, 30.0, dataset="bench"), "oao+flow", size=224)

    def naive() -> list[str]:
        answers = []
        for r in rows:
            visual = visual_of(r["video"])  # once per row
            text = render_prompt(processor, build_messages(r["question"], visual, None, prompt))
            inputs = encode_prompts(processor, [text], [visual], prompt).to(model.device)
            limit = engine.max_new_tokens(classify_question(r["question"]))
            with torch.inference_mode():
                out = model.generate(**inputs, max_new_tokens=limit, do_sample=False, eos_token_id=stop,
                                     pad_token_id=tok.pad_token_id)  # fmt: skip
            answers.append(
                tok.decode(out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip()
            )
        return answers

    def batched() -> list[str]:
        clips = [(visual_of(v), [r["question"] for r in rows if r["video"] == v]) for v in videos]
        return [a.raw for answers, _ in engine.answer_clips(clips) for a in answers]

    times: dict[str, list[float]] = {"naive": [], "engine": []}
    results: dict[str, list[str]] = {}
    naive()  # warm-up (first-call allocations)
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
        "naive_rows_per_s": rate["naive"],
        "engine_rows_per_s": rate["engine"],
        "ratio": rate["engine"] / rate["naive"],
        "same_answers": same / len(rows),
    }


if __name__ == "__main__":
    raise SystemExit(main())
