"""One vision pass and one prompt prefix per clip: the transformers backend's greedy decoding path.

Every question of a clip shares the clip's images and everything the chat template writes before the
question text (system prompt, user header, the image blocks, the frame description, the question's first
words). The rows of a decode call are tokenised as usual (``prompting.encode_prompts``, so each row's
tokens are exactly what ``generate`` and training see); then, per clip:

1. the longest token prefix its rows share (``shared_length``) is run once, in one batched forward for
   all the call's clips: the vision tower sees each clip's images once, and the prefix's key/value cache
   (``Prefix``) is kept, per clip, for the answering call (``PrefixCache``);
2. each row continues from its clip's cache (copied per row and batched across clips: ``Rows``), with
   the 3-D rotary positions the model would give the same tokens in one sequence (text after the last
   image continues from the largest position of the prefix);
3. closed questions (one label of a closed set) are *scored*: one forward over ``suffix + label`` for
   every allowed label gives each label's log-probability (its tokens' log-probabilities summed, plus
   the end of the answer); the answer is still the constrained greedy one, read off the same logits
   (``greedy_walk``), so answers do not change; a greedy path that leaves every label's own
   tokenisation (``dis`` + ``gust`` instead of ``disgust``) is decoded step by step instead;
4. open questions (AU lists, joint answers, free text) decode greedily step by step from the cache,
   grammar-constrained as before; a row leaves the batch as soon as it ends.

A clip whose rows do not share every image token in the prefix (a template that writes the question
before the images) cannot continue from a cache that holds its images: its rows take the plain
``generate`` path (which still encodes each clip's images once per call) and are counted in
``PrefixStats.plain_rows``. A cached prefix is reused only for the same visual inputs object, the same
model and adapter state, and a row whose tokens start with the cached ones (``PrefixCache.lookup``
asserts it); anything else is prefilled again.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from megc_vqa.answering.constrained import stop_token_ids
from megc_vqa.answering.grammar import Matcher, OneOf

if TYPE_CHECKING:
    import torch

    from megc_vqa.answering.constrained import TokenIndex

log = logging.getLogger(__name__)

MAX_CACHED_CLIPS = 16  # prefixes kept beyond the current decode call (LRU), for clips split across calls

# Generation-config settings that add logits processors to greedy ``generate``; only the repetition
# penalty is reproduced here, so a model whose config sets any other takes the plain path.
_UNSUPPORTED_GENERATION = (
    "sequence_bias", "guidance_scale", "encoder_repetition_penalty", "no_repeat_ngram_size",
    "encoder_no_repeat_ngram_size", "bad_words_ids", "min_length", "min_new_tokens", "forced_bos_token_id",
    "forced_eos_token_id", "exponential_decay_length_penalty", "suppress_tokens", "begin_suppress_tokens",
    "watermarking_config", "renormalize_logits", "remove_invalid_values",
)  # fmt: skip


@dataclass
class PrefixStats:
    """What the shared-prefix path did since the decoder was made (tests and benchmarks read it; assign a
    new one to start counting again)."""

    prefills: int = 0  # clips whose prefix was run
    reused: int = 0  # clips whose cached prefix served a later decode call
    prefix_tokens: int = 0
    suffix_tokens: int = 0
    scored_rows: int = 0  # closed rows answered by label scoring
    walked_off: int = 0  # scored rows whose greedy path left the labels' tokenisations
    generated_rows: int = 0  # rows decoded step by step from a prefix
    plain_rows: int = 0  # rows that took the plain generate path


@dataclass
class Rows:
    """Rows continuing from cached prefixes: their key/value cache (a transformers ``DynamicCache`` with
    ``B`` rows over ``T`` positions, extended in place), the attention mask over those positions, and each
    row's next rotary position."""

    cache: Any
    mask: torch.Tensor
    pos: torch.Tensor

    def take(self, index: torch.Tensor) -> Rows:
        """These rows only, in this order (the cache is cut in place)."""
        self.cache.batch_select_indices(index)
        return Rows(self.cache, self.mask.index_select(0, index), self.pos.index_select(0, index))


@dataclass
class Prefix:
    """One clip's shared prefix: its tokens, its key/value cache (unpadded) and next position, and what
    it was computed for (the visual inputs object and the model/adapter state)."""

    owner: Any
    ids: tuple[int, ...]
    model_key: tuple[Any, ...]
    keys: list[torch.Tensor]
    values: list[torch.Tensor]
    next_pos: int


class PrefixCache:
    """Prefixes of the current answering call, by clip; cleared by the decoder's ``end_call``."""

    def __init__(self, keep: int = MAX_CACHED_CLIPS) -> None:
        self.keep = keep
        self._entries: OrderedDict[int, Prefix] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries.clear()

    def put(self, prefix: Prefix, pinned: int) -> None:
        """Store ``prefix``; older entries beyond ``keep`` + ``pinned`` (the current call's) are dropped."""
        self._entries[id(prefix.owner)] = prefix
        self._entries.move_to_end(id(prefix.owner))
        while len(self._entries) > self.keep + pinned:
            self._entries.popitem(last=False)

    def lookup(
        self, owner: Any, rows_ids: Sequence[Sequence[int]], model_key: tuple[Any, ...]
    ) -> Prefix | None:
        """The cached prefix of ``owner`` when it may serve these rows, else ``None`` (never a stale one):
        same visual inputs object, same model/adapter state, every row starting with its tokens and
        keeping at least one token of its own."""
        entry = self._entries.get(id(owner))
        if entry is None or entry.owner is not owner or entry.model_key != model_key:
            return None
        n = len(entry.ids)
        if not all(len(ids) > n and tuple(ids[:n]) == entry.ids for ids in rows_ids):
            return None
        self._entries.move_to_end(id(owner))
        return entry


def shared_length(rows_ids: Sequence[Sequence[int]]) -> int:
    """Tokens every row starts with, leaving each row at least one token of its own (the last prompt
    token's logits start the answer)."""
    shortest = min(len(ids) for ids in rows_ids)
    n = 0
    first = rows_ids[0]
    while n < shortest - 1 and all(ids[n] == first[n] for ids in rows_ids):
        n += 1
    return n


def unsupported_reason(model: Any) -> str | None:
    """Why ``model`` cannot decode from shared prefixes (``None`` when it can)."""
    import torch.nn as nn

    if rope_owner(model) is None:
        return "the model has no get_rope_index (not a Qwen-VL family model)"
    config = getattr(model, "generation_config", None)
    if config is not None:
        from transformers import GenerationConfig

        default = GenerationConfig()
        changed = [
            k for k in _UNSUPPORTED_GENERATION if getattr(config, k, None) != getattr(default, k, None)
        ]
        if changed:
            return f"its generation config sets {', '.join(changed)}"
    text = getattr(getattr(model, "config", None), "get_text_config", lambda: None)()
    kinds = set(getattr(text, "layer_types", None) or ["full_attention"])
    if kinds != {"full_attention"}:
        return f"its layers use {sorted(kinds)} attention (only full attention is cached here)"
    return None if isinstance(model, nn.Module) else "not a torch module"


def rope_owner(model: Any) -> Any:
    """The inner module that computes the model's 3-D rotary positions (``get_rope_index``)."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    for candidate in (getattr(hf, "model", None), hf, getattr(hf, "base_model", None)):
        if candidate is not None and callable(getattr(candidate, "get_rope_index", None)):
            return candidate
    return None


def cache_argument(model: Any) -> str:
    """The forward keyword that takes a key/value cache (``cache`` in newer transformers)."""
    hf = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(hf.forward).parameters else "past_key_values"


def model_key(model: Any) -> tuple[Any, ...]:
    """What a cached prefix depends on besides its tokens: the model object and its adapter state
    (active adapters, and whether adapters are disabled)."""
    try:  # PeftModel: a property; a plain transformers model: a method that raises without adapters
        active = getattr(model, "active_adapters", None)
        active = active() if callable(active) else active
    except ValueError:
        active = None
    disabled = tuple(
        bool(getattr(m, "disable_adapters", False)) for m in _tuner_layers(model)
    )  # PEFT's disable_adapter() flips these
    return (id(model), tuple(active or ()), any(disabled))


def _tuner_layers(model: Any) -> list[Any]:
    layers = model.__dict__.get("_megc_tuner_layers")
    if layers is None:
        layers = [m for m in model.modules() if hasattr(m, "disable_adapters") and hasattr(m, "base_layer")]
        model.__dict__["_megc_tuner_layers"] = layers
    return layers


def forward_block(
    model: Any, kv_arg: str, rows: Rows, ids: torch.Tensor, block_mask: torch.Tensor, keep: int
) -> tuple[torch.Tensor, Rows]:
    """Run a left-padded block of tokens after ``rows``' caches; returns the logits of the last ``keep``
    positions and the rows extended by the block. Real tokens get consecutive positions from each row's
    next position (all three rotary axes alike: text), padding is masked out."""
    import torch

    offsets = (block_mask.cumsum(-1) - 1).clamp(min=0)
    positions = (rows.pos[:, None] + offsets)[None].expand(3, -1, -1)
    mask = torch.cat([rows.mask, block_mask], dim=1)
    out = model(
        input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=keep,
        **{kv_arg: rows.cache},
    )  # fmt: skip
    return out.logits, Rows(rows.cache, mask, rows.pos + block_mask.sum(-1))


def left_pad(seqs: Sequence[Sequence[int]], pad: int, device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    """``(ids, mask)`` of token sequences left-padded to the longest."""
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
            mask[i, width - len(s) :] = 1
    return ids.to(device), mask.to(device)


def stack_prefixes(prefixes: Sequence[Prefix], device: Any) -> Rows:
    """One row per entry of ``prefixes`` (a clip repeated for each of its questions), left-padded."""
    import torch
    from transformers import DynamicCache

    width = max(len(p.ids) for p in prefixes)
    layers = []
    for layer in range(len(prefixes[0].keys)):
        pair = []
        for source in ("keys", "values"):
            parts = []
            for p in prefixes:
                t = getattr(p, source)[layer]
                pad = width - t.shape[-2]
                parts.append(torch.nn.functional.pad(t, (0, 0, pad, 0)) if pad else t)
            pair.append(torch.cat(parts, dim=0))
        layers.append(tuple(pair))
    mask = torch.zeros((len(prefixes), width), dtype=torch.long, device=device)
    for i, p in enumerate(prefixes):
        mask[i, width - len(p.ids) :] = 1
    pos = torch.tensor([p.next_pos for p in prefixes], dtype=torch.long, device=device)
    return Rows(DynamicCache(ddp_cache_data=layers), mask, pos)


@dataclass
class Walk:
    """Constrained greedy decoding read off scored paths: ``tokens`` written; ``finished`` when it chose a
    stop token. Otherwise its last token left every scored path: ``path`` is the path it followed up to
    there, ``matched`` how many of that path's tokens it wrote before the departing one."""

    tokens: list[int]
    finished: bool
    path: int = 0
    matched: int = 0


def greedy_walk(
    index: TokenIndex,
    grammar: OneOf,
    paths: Sequence[Sequence[int]],
    logits: Sequence[torch.Tensor],
    penalise: Any = None,
) -> Walk:
    """The tokens constrained greedy decoding writes, read off the scored paths' logits.

    ``paths[k]`` are label k's tokens, ``logits[k][j]`` the model's logits after its first ``j`` tokens
    (``j = 0``: after the prompt). Each step masks the logits to what the grammar allows and takes the
    argmax, exactly as the logits processor does in ``generate``; the walk ends at a stop token, or when
    the chosen token is the next token of no path followed so far (there are no logits for that branch:
    decoding goes on step by step from there)."""
    import torch

    matcher = Matcher.begin(grammar)
    written: list[int] = []
    live = list(range(len(paths)))
    while True:
        k = live[0]
        scores = logits[k][len(written)]
        if penalise is not None:
            scores = penalise(written, scores)
        allowed = index.allowed(matcher) if matcher.alive else []
        ids = index.tensor(allowed or index.stop_ids, scores.device)
        masked = torch.full_like(scores, float("-inf"))
        masked[ids] = scores[ids]
        token = int(masked.argmax())
        if token in index.stop_ids:
            return Walk(written, True)
        written.append(token)
        following = [j for j in live if len(paths[j]) >= len(written) and paths[j][len(written) - 1] == token]
        if not following:
            return Walk(written, False, k, len(written) - 1)
        live = following
        matcher = matcher.advance(index.strings[token])


@dataclass
class _Row:
    """One request on the shared-prefix path: its clip's prefix and its own tokens after it."""

    index: int
    prefix: Prefix
    ids: list[int]  # the whole prompt, as the processor tokenises it

    @property
    def suffix(self) -> list[int]:
        return self.ids[len(self.prefix.ids) :]


class SharedPrefixDecoding:
    """Greedy decoding of one decode call's rows from per-clip shared prefixes (see the module docstring).

    ``decoder`` is the ``hf_backend.HfDecoder`` it serves: its model, tokenizer, token index, encoder and
    prefix cache."""

    def __init__(self, decoder: Any) -> None:
        self.decoder = decoder
        self.model = decoder.model
        self.device = decoder.model.device
        self.kv_arg = cache_argument(self.model)
        self.key = model_key(self.model)
        self.stats: PrefixStats = decoder.prefix_stats
        penalty = getattr(getattr(self.model, "generation_config", None), "repetition_penalty", None)
        self.penalty = float(penalty) if penalty not in (None, 1.0) else None

    # -- rows and prefixes ----------------------------------------------------------------------------

    def prepare(self, requests: Sequence[Any]) -> tuple[list[_Row], list[int]]:
        """Each request's row on a shared prefix (prefilling what the cache lacks), and the indices of
        requests that must take the plain path (a clip whose images are not all in its shared prefix)."""
        from megc_vqa.models.prompting import model_visuals

        enc = self.decoder._encode([r.question for r in requests], [r.visual for r in requests], unique=True)
        mask = enc["attention_mask"].bool()
        ids = [enc["input_ids"][i][mask[i]].tolist() for i in range(len(requests))]
        types = enc.get("mm_token_type_ids")
        vision = [
            max((j for j, t in enumerate(types[i][mask[i]].tolist()) if t), default=-1) if types is not None
            else -1
            for i in range(len(requests))
        ]  # fmt: skip
        clips: dict[int, list[int]] = {}
        for i, r in enumerate(requests):
            clips.setdefault(id(r.visual), []).append(i)
        rows: list[_Row] = []
        plain: list[int] = []
        missing: list[tuple[int, tuple[int, ...]]] = []  # (first row, prefix ids) of clips to prefill
        found: dict[int, Prefix] = {}
        for members in clips.values():
            owner = requests[members[0]].visual
            if owner is None:  # text only: no images to share, and no 3-D positions to build on
                plain += members
                continue
            entry = self.decoder.prefix_cache.lookup(owner, [ids[i] for i in members], self.key)
            n = len(entry.ids) if entry else shared_length([ids[i] for i in members])
            if any(vision[i] >= n for i in members) or (entry is None and n == 0):
                plain += members  # an image (or nothing) after the shared tokens: no cache can hold it
                continue
            if entry is None:
                missing.append((members[0], tuple(ids[members[0]][:n])))
            else:
                found[members[0]] = entry
                self.stats.reused += 1
        counts = [(len(model_visuals(r.visual, self.decoder.prompt.visual_mode)[0]),
                   int(model_visuals(r.visual, self.decoder.prompt.visual_mode)[1] is not None))
                  for r in requests]  # fmt: skip
        if missing:
            for (first, _), prefix in zip(missing, self.prefill(enc, missing, counts, requests), strict=True):
                found[first] = prefix
                self.decoder.prefix_cache.put(prefix, pinned=len(clips))
        for members in clips.values():
            if members[0] in found:
                rows += [_Row(i, found[members[0]], ids[i]) for i in members]
        return sorted(rows, key=lambda r: r.index), plain

    def prefill(
        self,
        enc: Any,
        clips: Sequence[tuple[int, tuple[int, ...]]],
        counts: Sequence[tuple[int, int]],
        requests: Sequence[Any],
    ) -> list[Prefix]:
        """Run the clips' prefixes in one batched forward (the vision tower sees each clip once)."""
        from transformers import DynamicCache

        firsts = [first for first, _ in clips]
        inputs = _clip_pixels(enc, firsts, counts, [id(r.visual) for r in requests])
        ids, mask = left_pad([p for _, p in clips], self.decoder.pad_id, self.device)
        types = None
        if "mm_token_type_ids" in enc:
            row_types = [
                enc["mm_token_type_ids"][f][enc["attention_mask"][f].bool()].tolist() for f in firsts
            ]
            types, _ = left_pad(
                [t[: len(p)] for t, (_, p) in zip(row_types, clips, strict=True)], 0, self.device
            )
            inputs["mm_token_type_ids"] = types
        owner = rope_owner(self.model)
        accepted = inspect.signature(owner.get_rope_index).parameters
        rope_kwargs = {k: v for k, v in inputs.items() if k in accepted and k != "mm_token_type_ids"}
        positions, _ = owner.get_rope_index(ids, mm_token_type_ids=types, attention_mask=mask, **rope_kwargs)
        cache = DynamicCache()
        self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, logits_to_keep=1,
            **inputs, **{self.kv_arg: cache},
        )  # fmt: skip
        width = ids.shape[1]
        out = []
        for c, (first, prefix) in enumerate(clips):
            n = len(prefix)
            real = positions[:, c, width - n :]
            out.append(
                Prefix(
                    owner=requests[first].visual,
                    ids=prefix,
                    model_key=self.key,
                    keys=[layer.keys[c : c + 1, :, width - n :].clone() for layer in cache.layers],
                    values=[layer.values[c : c + 1, :, width - n :].clone() for layer in cache.layers],
                    next_pos=int(real.max()) + 1,
                )
            )
            self.stats.prefills += 1
            self.stats.prefix_tokens += n
        return out

    # -- decoding -------------------------------------------------------------------------------------

    def run(self, requests: Sequence[Any], capacity: int) -> tuple[list[Any], list[int]]:
        """Texts for the requests on the shared-prefix path (``None`` for the others) and the indices of
        the requests left to the plain path.

        Requests are taken in groups of whole clips (at most ``capacity`` rows). Each group is prefilled
        and its rows' own tokens run in one forward (for each closed row, its tokens followed by each
        label's: every label's log-probability comes out of it, and its greedy answer is read off the
        same logits); the rows still writing join the step-by-step loop, which holds at most
        ``capacity`` rows and takes the next group in as soon as it has room for it."""
        results: list[Any] = [None] * len(requests)
        plain: list[int] = []
        loop = _Loop(self)
        for group in clip_groups([r.visual for r in requests], capacity):
            while loop.rows and len(loop.rows) + len(group) > capacity:
                loop.step(results)
            for local in self.admit([requests[i] for i in group], group, results, loop, capacity):
                plain.append(group[local])
        while loop.rows:
            loop.step(results)
        self.stats.plain_rows += len(plain)
        return results, sorted(plain)

    def admit(
        self, requests: Sequence[Any], where: Sequence[int], results: list[Any], loop: _Loop, capacity: int
    ) -> list[int]:
        """Prefill a group's clips, run its rows' own tokens (and the closed rows' labels), fill in the
        answers that are complete and hand the rest to ``loop``; returns the rows left to the plain path
        (positions in ``requests``). The rows' own tokens run in forwards of at most ``capacity``
        sequences (a closed row takes one per label, all in the same forward), which bounds their memory."""
        rows, plain = self.prepare(requests)
        self.decoder._image_cache.clear()  # the pixels served the prefill; the prefix cache keeps the rest
        scoring = self.decoder.score_labels
        chunk: list[_Row] = []
        width = 0
        for row in rows:
            n = max(1, len(requests[row.index].labels) if scoring else 1)
            if chunk and width + n > capacity:
                self.first_block(chunk, requests, where, results, loop)
                chunk, width = [], 0
            chunk.append(row)
            width += n
        if chunk:
            self.first_block(chunk, requests, where, results, loop)
        self.stats.suffix_tokens += sum(len(r.suffix) for r in rows)
        return plain

    def first_block(
        self,
        rows: Sequence[_Row],
        requests: Sequence[Any],
        where: Sequence[int],
        results: list[Any],
        loop: _Loop,
    ) -> None:
        """One forward over the rows' own tokens (each closed row once per label, its label's tokens last);
        closed rows whose greedy walk ends get their answer, the others join ``loop``."""
        import torch

        from megc_vqa.answering.decoding import Texts

        scoring = self.decoder.score_labels
        closed = [r for r in rows if scoring and requests[r.index].labels]
        opened = [r for r in rows if not (scoring and requests[r.index].labels)]
        seqs = [r.suffix for r in opened]
        owners: list[tuple[_Row, list[int]]] = []  # (closed row, label tokens) of each further sequence
        for row in closed:
            for label in requests[row.index].labels:
                owners.append((row, self.label_ids(label)))
                seqs.append(row.suffix + owners[-1][1])
        keep = max([1] + [len(path) + 1 for _, path in owners])
        state = stack_prefixes([r.prefix for r in opened] + [row.prefix for row, _ in owners], self.device)
        ids, mask = left_pad(seqs, self.decoder.pad_id, self.device)
        logits, state = forward_block(self.model, self.kv_arg, state, ids, mask, keep)
        logits = logits.float()
        entries = [_Entry(where[r.index], requests[r.index], r.ids) for r in opened]
        chosen = list(range(len(opened)))
        extra = [0] * len(opened)  # label tokens after a walk's departure, masked out below
        for row, first, walk, logprobs in self.score(closed, requests, owners, logits, len(opened)):
            if walk.finished:
                results[where[row.index]] = Texts([self.text(walk.tokens)], logprobs)
                continue
            entries.append(_Entry(where[row.index], requests[row.index], row.ids, walk.tokens, logprobs))
            chosen.append(first + walk.path)
            extra.append(len(owners[first + walk.path - len(opened)][1]) - walk.matched)
        self.stats.scored_rows += len(closed)
        self.stats.walked_off += len(entries) - len(opened)
        self.stats.generated_rows += len(entries)
        if not entries:
            return
        state = state.take(torch.tensor(chosen, device=self.device))
        for b, n in enumerate(extra):
            if n:
                state.mask[b, state.mask.shape[1] - n :] = 0
                state.pos[b] -= n
        loop.join(entries, state, logits[chosen, -1])

    def text(self, tokens: Sequence[int]) -> str:
        return self.decoder.tokenizer.decode(list(tokens), skip_special_tokens=True).strip()

    def label_ids(self, label: str) -> list[int]:
        cache = self.decoder.__dict__.setdefault("_label_ids", {})
        if label not in cache:
            cache[label] = self.decoder.tokenizer(label, add_special_tokens=False)["input_ids"]
        return cache[label]

    def penaliser(self, prompt: Sequence[int]) -> Any:
        """The model's repetition penalty over the prompt and the answer so far, as ``generate`` applies
        it (``None`` when the model's generation config has none)."""
        if self.penalty is None:
            return None
        import torch
        from transformers import RepetitionPenaltyLogitsProcessor

        processor = RepetitionPenaltyLogitsProcessor(self.penalty)

        def penalise(written: Sequence[int], scores: torch.Tensor) -> torch.Tensor:
            seen = torch.tensor([[*prompt, *written]], dtype=torch.long, device=scores.device)
            return processor(seen, scores[None].clone())[0]

        return penalise

    def score(
        self,
        rows: Sequence[_Row],
        requests: Sequence[Any],
        owners: Sequence[tuple[_Row, list[int]]],
        logits: torch.Tensor,
        offset: int,
    ) -> list[tuple[_Row, int, Walk, dict[str, float]]]:
        """Per closed row: its first sequence, the greedy walk over its labels' logits, and each label's
        log-probability (label tokens and the end of the answer; ``logits[offset + i]`` are sequence i's
        last positions, a label's own tokens last)."""
        import torch

        index = self.decoder.token_index
        stops = list(index.stop_ids)
        keep = logits.shape[1]
        logp = torch.log_softmax(logits, dim=-1)
        out = []
        i = offset
        for row in rows:
            request = requests[row.index]
            if not (
                isinstance(request.grammar, OneOf) and request.grammar.strings == frozenset(request.labels)
            ):
                raise ValueError(f"row {row.index}: scored labels {request.labels} differ from its grammar")
            first, paths, steps, logprobs = i, [], [], {}
            for label in request.labels:
                path = owners[i - offset][1]
                start = keep - len(path) - 1
                end = torch.logsumexp(logp[i, keep - 1, stops], dim=0)
                logprobs[label] = float(sum(logp[i, start + j, t] for j, t in enumerate(path)) + end)
                paths.append(path)
                steps.append(logits[i, start:keep])
                i += 1
            walk = greedy_walk(index, request.grammar, paths, steps, self.penaliser(row.ids))
            out.append((row, first, walk, logprobs))
        return out


@dataclass
class _Entry:
    """A row in the step-by-step loop: where its answer goes, its request and prompt tokens, the tokens
    written so far (a walked-off closed row starts with its walk, the last one not yet run) and its label
    scores."""

    slot: int
    request: Any
    prompt: list[int]
    written: list[int] = field(default_factory=list)
    scores: dict[str, float] | None = None
    pending: int | None = None
    matcher: Matcher | None = None
    penalise: Any = None


class _Loop:
    """Greedy step-by-step decoding of the rows that are still writing, across groups of clips: each
    step picks every row's next token (the model's repetition penalty, the grammar's mask, argmax: what
    ``generate``'s processors do) and runs one token per row; a row leaves when it writes a stop token or
    reaches its length bound, and new rows join between steps."""

    def __init__(self, owner: SharedPrefixDecoding) -> None:
        self.owner = owner
        self.rows: list[_Entry] = []
        self.state: Rows | None = None
        self.scores: Any = None
        self.stops = set(stop_token_ids(owner.decoder.tokenizer))

    def join(self, entries: list[_Entry], state: Rows, scores: Any) -> None:
        """Add rows whose next-token logits are ``scores`` (or that have a pending token)."""
        for e in entries:
            grammar = e.request.grammar
            e.matcher = Matcher.begin(grammar) if grammar is not None else None
            for t in e.written:
                e.matcher = e.matcher.advance(self.owner.decoder.token_index.strings[t])  # type: ignore[union-attr]
            e.pending = e.written[-1] if e.written else None
            e.penalise = self.owner.penaliser(e.prompt)
        if self.state is None:
            self.rows, self.state, self.scores = list(entries), state, scores
            return
        import torch

        self.state = merge_rows(self.state, state)
        self.scores = torch.cat([self.scores, scores])
        self.rows += entries

    def step(self, results: list[Any]) -> None:
        """One token for every row; finished rows get their text in ``results``."""
        import torch

        from megc_vqa.answering.decoding import Texts

        keep, feed = [], []
        for b, e in enumerate(self.rows):
            token, e.pending = e.pending, None
            if token is None:
                token = self.choose(self.scores[b], e)
                if token in self.stops:
                    results[e.slot] = Texts([self.owner.text(e.written)], e.scores)
                    continue
                e.written.append(token)
                if e.matcher is not None:
                    e.matcher = e.matcher.advance(self.owner.decoder.token_index.strings[token])
            if len(e.written) < e.request.max_new_tokens:
                keep.append(b)
                feed.append(token)
            else:
                results[e.slot] = Texts([self.owner.text(e.written)], e.scores)
        if not keep:
            self.rows, self.state, self.scores = [], None, None
            return
        state = self.state
        assert state is not None
        if len(keep) < len(self.rows):
            state = state.take(torch.tensor(keep, device=self.owner.device))
        self.rows = [self.rows[b] for b in keep]
        step = torch.tensor([[t] for t in feed], dtype=torch.long, device=self.owner.device)
        logits, self.state = forward_block(
            self.owner.model, self.owner.kv_arg, state, step, torch.ones_like(step), 1
        )
        self.scores = logits[:, -1].float()

    def choose(self, scores: Any, e: _Entry) -> int:
        import torch

        if e.penalise is not None:
            scores = e.penalise(e.written, scores)
        if e.matcher is None:
            return int(scores.argmax())
        index = self.owner.decoder.token_index
        allowed = index.allowed(e.matcher) if e.matcher.alive else []
        ids = index.tensor(allowed or index.stop_ids, scores.device)
        masked = torch.full_like(scores, float("-inf"))
        masked[ids] = scores[ids]
        return int(masked.argmax())


def merge_rows(a: Rows, b: Rows) -> Rows:
    """Two sets of rows as one batch: the shorter caches left-padded (masked) to the longer."""
    import torch
    from transformers import DynamicCache

    width = max(a.mask.shape[1], b.mask.shape[1])

    def padded(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = width - t.shape[dim]
        if not n:
            return t
        pad = [0, 0] * (t.dim() - 1 - (dim % t.dim())) + [n, 0]
        return torch.nn.functional.pad(t, pad)

    layers = [
        (
            torch.cat([padded(x.keys, -2), padded(y.keys, -2)]),
            torch.cat([padded(x.values, -2), padded(y.values, -2)]),
        )
        for x, y in zip(a.cache.layers, b.cache.layers, strict=True)
    ]
    mask = torch.cat([padded(a.mask, 1), padded(b.mask, 1)])
    return Rows(DynamicCache(ddp_cache_data=layers), mask, torch.cat([a.pos, b.pos]))


def clip_groups(visuals: Sequence[Any], size: int) -> list[list[int]]:
    """Request indices in groups of whole clips (rows of one visual inputs object), at most ``size`` rows
    each (a larger clip is cut); clips in order of their first row."""
    clips: dict[int, list[int]] = {}
    for i, v in enumerate(visuals):
        clips.setdefault(id(v), []).append(i)
    groups: list[list[int]] = []
    current: list[int] = []
    for rows in clips.values():
        if current and len(current) + len(rows) > size:
            groups.append(current)
            current = []
        while len(rows) > size:
            groups.append(rows[:size])
            rows = rows[size:]
        current += rows
    if current:
        groups.append(current)
    return groups


def _clip_pixels(
    enc: Any, firsts: Sequence[int], counts: Sequence[tuple[int, int]], owners: Sequence[int]
) -> dict[str, Any]:
    """The pixel inputs of the clips whose first rows are ``firsts``, out of an encoding of every row
    (``owners``: each row's clip key). Images come once per clip where ``HfDecoder._encode(unique=True)``
    shared them (in the order of the clips' first rows), else once per row, like videos. Each item takes
    ``prod(grid)`` pixel rows."""
    import torch

    unique_first: dict[int, int] = {}
    for row, owner in enumerate(owners):
        unique_first.setdefault(owner, row)
    clip_rows = list(unique_first.values())  # each clip's first row, in order
    out: dict[str, Any] = {}
    for pixels, grid, slot in (
        ("pixel_values", "image_grid_thw", 0),
        ("pixel_values_videos", "video_grid_thw", 1),
    ):
        if grid not in enc:
            continue
        # Images come once per clip where the encoder shared them, else once per row (as videos do).
        per_clip = sum(counts[r][slot] for r in clip_rows)
        units = clip_rows if len(enc[grid]) == per_clip else list(range(len(owners)))
        if len(enc[grid]) != sum(counts[u][slot] for u in units):
            raise ValueError(f"{grid}: {len(enc[grid])} items, neither one per clip nor one per row")
        first_item = {}
        total = 0
        for unit in units:
            first_item[unit] = total
            total += counts[unit][slot]
        sizes = enc[grid].prod(-1).tolist()
        starts = [0]
        for size in sizes:
            starts.append(starts[-1] + size)
        items = [j for f in firsts for j in range(first_item[f], first_item[f] + counts[f][slot])]
        if not items:
            continue
        out[grid] = enc[grid][items]
        out[pixels] = torch.cat([enc[pixels][starts[j] : starts[j + 1]] for j in items])
        if slot == 1 and "second_per_grid_ts" in enc:
            out["second_per_grid_ts"] = enc["second_per_grid_ts"][items]
    return out
