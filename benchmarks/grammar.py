"""Constrained decoding cost: the project's grammar matcher against xgrammar (the library vLLM uses), side by
side in one run, on the same answers and the same tokenizer.

    python benchmarks/grammar.py [--vocab 32000] [--answers 40] [--repeats 5] [--tokenizer DIR]

Each answer is a random valid answer of its question (coarse, fine, plural AU list, plural joint, LVQA AU
list), tokenised; decoding is replayed token by token and each step does what a logits processor does for
one row: advance the matcher by the chosen token, compute the allowed tokens, mask a logits row. Both sides
keep their caches across repeats, as in a run. Without ``--tokenizer`` a byte-level BPE of ``--vocab``
tokens is trained on the Python standard library's source (no downloads; real Qwen vocabularies have
151k tokens). Prints setup times (token index / tokenizer info + grammar compilation), the median
microseconds per decoding step of each side and, as the last line, ``ratio=<xgrammar step / ours>``
(above 1: ours is faster). Needs ``pip install xgrammar``.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _tokenizer(vocab: int, path: Path | None):
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if path is not None:
        return AutoTokenizer.from_pretrained(str(path))
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    cache = Path(tempfile.gettempdir()) / f"megc_vqa_bench_bpe_{vocab}.json"
    if not cache.is_file():
        files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
        text = [f.read_text(encoding="utf-8", errors="ignore") for f in files][:400]
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab,
            special_tokens=["<|endoftext|>", "<|im_end|>"],
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        )
        tok.train_from_iterator(text, trainer)
        tok.save(str(cache))
    return PreTrainedTokenizerFast(
        tokenizer_file=str(cache), eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )


def _random_answer(grammar, rng: random.Random) -> str:
    from megc_vqa.answering.grammar import Matcher

    m, text = Matcher.begin(grammar), ""
    while True:
        choices = sorted(m.next_chars())
        if m.complete and (not choices or rng.random() < 0.1):
            return text
        char = rng.choice(choices)
        m, text = m.advance(char), text + char


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vocab", type=int, default=32000)
    p.add_argument("--tokenizer", type=Path, help="a tokenizer folder instead of the trained BPE")
    p.add_argument("--answers", type=int, default=40, help="answers per question")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    sys.path.insert(0, str(REPO))

    import torch
    import xgrammar as xgr

    from megc_vqa.answering.constrained import TokenIndex
    from megc_vqa.answering.grammar import Matcher, answer_grammar
    from megc_vqa.qa import templates as T
    from megc_vqa.timing import interleaved_times

    tok = _tokenizer(args.vocab, args.tokenizer)
    t = time.perf_counter()
    index = TokenIndex(tok)
    ours_setup = time.perf_counter() - t
    questions = [
        T.COARSE_QUESTION,
        T.FINE_QUESTION,
        T.AU_QUESTION_PLURAL,
        T.JOINT_QUESTION_PLURAL,
        T.LVQA_AUS,
    ]
    grammars = {q: answer_grammar(q) for q in questions}
    t = time.perf_counter()
    info = xgr.TokenizerInfo.from_huggingface(tok, vocab_size=len(tok), stop_token_ids=list(index.stop_ids))
    compiler = xgr.GrammarCompiler(info)
    compiled = {q: compiler.compile_regex(g.regex()) for q, g in grammars.items()}
    xgr_setup = time.perf_counter() - t

    rng = random.Random(0)
    walks = []  # (question, token ids of a valid answer)
    for q in questions:
        for _ in range(args.answers):
            ids = tok(_random_answer(grammars[q], rng), add_special_tokens=False)["input_ids"]
            walks.append((q, ids))
    n_steps = sum(len(ids) + 1 for _, ids in walks)
    scores = torch.zeros(len(tok))
    bitmask = xgr.allocate_token_bitmask(1, len(tok))

    def ours() -> None:
        for q, ids in walks:
            m = Matcher.begin(grammars[q])
            for step in range(len(ids) + 1):
                mask = torch.full_like(scores, float("-inf"))
                mask[index.allowed_tensor(m, "cpu")] = 0  # as GrammarLogitsProcessor does
                row = scores + mask
                if step < len(ids):
                    assert row[ids[step]] == 0
                    m = m.advance(index.strings[ids[step]])
            assert m.complete

    def xgrammar() -> None:
        for q, ids in walks:
            m = xgr.GrammarMatcher(compiled[q])
            for step in range(len(ids) + 1):
                m.fill_next_token_bitmask(bitmask)
                row = scores.clone()
                xgr.apply_token_bitmask_inplace(row, bitmask)
                if step < len(ids):
                    assert row[ids[step]] == 0
                    assert m.accept_token(ids[step])
            assert m.is_terminated() or m.accept_token(index.stop_ids[0])

    times = interleaved_times({"ours": ours, "xgrammar": xgrammar}, args.repeats)
    per_step = {k: statistics.median(v) / n_steps * 1e6 for k, v in times.items()}
    first = {k: v[0] / n_steps * 1e6 for k, v in times.items()}
    print(f"tokenizer: {len(tok)} tokens; {len(walks)} answers, {n_steps} decoding steps per repeat")
    print(
        f"setup: ours {ours_setup:.2f} s (token index), xgrammar {xgr_setup:.2f} s (tokenizer info + 5 grammars)"
    )
    for name in ("ours", "xgrammar"):
        print(
            f"{name:>8}: median {per_step[name]:.1f} us/step (first repeat, cold caches: {first[name]:.1f})"
        )
    print(f"ratio={per_step['xgrammar'] / per_step['ours']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
