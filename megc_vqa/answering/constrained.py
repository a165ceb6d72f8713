"""Label-constrained decoding: a transformers ``LogitsProcessor`` that only lets a row emit tokens that keep
its answer inside its grammar (``grammar.py``), and the end-of-answer token only once the answer is complete.

The vocabulary is indexed once as a sorted list of token strings. For a set of grammar states the
allowed tokens are found by walking that list along the characters the grammar accepts next (a bisect
per character), so a step costs a few hundred string comparisons, not one check per vocabulary entry.
Results are cached per state set: the same label prefix is looked up once per run. Token strings are
single-token decodes, which spell the text back for byte-level BPE tokenizers (Qwen2.5-VL, Qwen3-VL);
the index checks this once and warns otherwise.
"""

from __future__ import annotations

import logging
from bisect import bisect_left
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from megc_vqa.answering.grammar import Grammar, Matcher
from megc_vqa.models.registry import FAMILIES

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

_MAX_CHAR = "\U0010ffff"


class TokenIndex:
    """Token strings of a tokenizer, sorted, with the end-of-answer ids.

    Token strings come from decoding each id alone; ids that decode to nothing printable (special
    tokens, partial UTF-8 bytes) never take part in a constrained answer.
    """

    def __init__(self, tokenizer: Any, stop_ids: Sequence[int] | None = None) -> None:
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        size = len(tokenizer)
        strings = tokenizer.batch_decode([[i] for i in range(size)], skip_special_tokens=False)
        pairs = sorted((s, i) for i, s in enumerate(strings) if s and i not in special and "\ufffd" not in s)
        self.keys: list[str] = [s for s, _ in pairs]
        self.ids: list[int] = [i for _, i in pairs]
        self.stop_ids: tuple[int, ...] = tuple(
            stop_ids if stop_ids is not None else stop_token_ids(tokenizer)
        )
        self.strings: list[str] = strings
        self._cache: dict[tuple[Grammar, frozenset], list[int]] = {}
        # id-sequence object -> its tensor (the object is kept with it, so its id cannot be reused)
        self._tensors: dict[tuple[int, str], tuple[Sequence[int], Any]] = {}
        self._check_round_trip(tokenizer)

    def _check_round_trip(self, tokenizer: Any) -> None:
        """Token strings must concatenate back to the text (true of byte-level BPE such as Qwen's); a
        tokenizer that drops spaces when decoding single tokens (SentencePiece) would be mis-indexed."""
        probe = "The action units present are: lip corner puller, cheek raiser."
        ids = tokenizer(probe, add_special_tokens=False)["input_ids"]
        if "".join(self.strings[i] for i in ids) != probe:
            log.warning(
                "this tokenizer's single-token strings do not spell its text back; label-constrained "
                "decoding may refuse valid answers. Use --free-decoding if answers come out cut short."
            )

    def allowed(self, matcher: Matcher) -> list[int]:
        """Token ids that keep ``matcher`` alive, plus the stop ids when its answer is complete."""
        key = (matcher.grammar, matcher.states)  # states of different grammars may look alike
        hit = self._cache.get(key)
        if hit is None:
            hit = []
            self._walk(matcher, "", 0, len(self.keys), hit)
            if matcher.complete:
                hit.extend(self.stop_ids)
            if len(self._cache) < 200_000:
                self._cache[key] = hit
        return hit

    def allowed_tensor(self, matcher: Matcher, device: Any) -> torch.Tensor:
        """``allowed(matcher)`` as a long tensor on ``device``, made once per state set."""
        return self.tensor(self.allowed(matcher), device)

    def tensor(self, ids: Sequence[int], device: Any) -> torch.Tensor:
        import torch

        key = (id(ids), str(device))
        hit = self._tensors.get(key)
        if hit is None or hit[0] is not ids:
            hit = (ids, torch.tensor(list(ids), dtype=torch.long, device=device))
            if len(self._tensors) < 200_000:
                self._tensors[key] = hit
        return hit[1]

    def _walk(self, matcher: Matcher, prefix: str, lo: int, hi: int, out: list[int]) -> None:
        for char in sorted(matcher.next_chars()):
            text = prefix + char
            a = bisect_left(self.keys, text, lo, hi)
            b = bisect_left(self.keys, text + _MAX_CHAR, a, hi)
            if a == b:
                continue
            nxt = matcher.advance(char)
            if not nxt.alive:
                continue
            while a < b and self.keys[a] == text:
                out.append(self.ids[a])
                a += 1
            if a < b:
                self._walk(nxt, text, a, b, out)


def family_stop_tokens() -> tuple[str, ...]:
    """End-of-turn tokens of every family (each family lists its own), then common ones of other chats."""
    names = [t for f in FAMILIES.values() for t in f.stop_tokens] + ["<end_of_turn>", "<|eot_id|>"]
    return tuple(dict.fromkeys(names))


def stop_token_ids(tokenizer: Any) -> list[int]:
    """The ids that end an answer: eos plus the chat end-of-turn token where the tokenizer has one."""
    ids = set()
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    for name in family_stop_tokens():
        tid = tokenizer.convert_tokens_to_ids(name)
        if isinstance(tid, int) and tid >= 0 and tid != getattr(tokenizer, "unk_token_id", None):
            ids.add(tid)
    return sorted(ids)


class GrammarLogitsProcessor:
    """Masks each row's logits to the tokens its grammar allows (rows with grammar ``None`` are free).

    ``grammars`` has one entry per request; with ``num_return_sequences=n`` generate repeats each
    request n times in a row, so row r follows ``grammars[r // n]``. ``prompt_length`` is the padded
    prompt width (the same for every row under left padding).
    """

    def __init__(
        self,
        index: TokenIndex,
        grammars: Sequence[Grammar | None],
        prompt_length: int,
        rows_per_request: int = 1,
    ) -> None:
        self.index = index
        self.grammars = list(grammars)
        self.prompt_length = prompt_length
        self.rows_per_request = rows_per_request
        self._matchers: dict[int, Matcher] = {}
        self._consumed: dict[int, int] = {}
        self._done: set[int] = set()

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        import torch

        generated = input_ids[:, self.prompt_length :].tolist()
        for row, tokens in enumerate(generated):
            grammar = self.grammars[row // self.rows_per_request]
            if grammar is None:
                continue
            matcher = self._matchers.get(row) or Matcher.begin(grammar)
            for tok in tokens[self._consumed.get(row, 0) :]:
                if tok in self.index.stop_ids:
                    self._done.add(row)
                    break
                matcher = matcher.advance(self.index.strings[tok])
            self._matchers[row] = matcher
            self._consumed[row] = len(tokens)
            # A finished row (or a dead end: a character no token spells) may only end, never babble on;
            # generate must list every stop id as eos so that it really stops the row.
            if row in self._done or not matcher.alive or not self.index.allowed(matcher):
                ids = self.index.tensor(self.index.stop_ids, scores.device)
            else:
                ids = self.index.allowed_tensor(matcher, scores.device)
            mask = torch.full_like(scores[row], float("-inf"))
            mask[ids] = 0
            scores[row] = scores[row] + mask
        return scores
