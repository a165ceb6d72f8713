"""The transformers backend of the decoding interface (``decoding.Decoder``).

- Batched ``generate`` over left-padded prompts built by ``megc_vqa.models.prompting`` exactly as in
  training; each row stops at its own length bound.
- Grammars (``grammar.py``) become a ``LogitsProcessor`` (``constrained.py``): a row only emits tokens
  that keep its answer inside its grammar, and ends only once the answer is complete.
- Greedy decoding (the default) runs from one shared prefix per clip (``prefix.py``): each clip's images
  go through the vision tower once and the prompt tokens its questions share are run once; closed
  questions are answered by scoring their labels, open ones decode step by step from the clip's cache.
  The answers are those of ``generate`` (tests assert it); ``share_prefix = False`` turns it off.
- Sampling (votes), and clips whose images do not all come before the question, take ``generate``:
  there each clip's images go through the image processor once and through the vision tower once per
  call, however many questions the clip has (the outputs are identical: tests assert it).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from megc_vqa.answering.constrained import GrammarLogitsProcessor, TokenIndex, stop_token_ids
from megc_vqa.answering.decoding import DecodeRequest, Sampling, Texts, prompt_text
from megc_vqa.answering.prefix import PrefixCache, PrefixStats, SharedPrefixDecoding, unsupported_reason
from megc_vqa.models.prompting import PromptOptions, encode_prompts, model_visuals

log = logging.getLogger(__name__)


class HfDecoder:
    """``HfDecoder(model, processor, prompt)``: decodes with a loaded transformers model (+ adapter)."""

    schedules_itself = False

    def __init__(
        self, model: Any, processor: Any, prompt: PromptOptions | None = None, name: str = ""
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.prompt = prompt or PromptOptions()
        self.name = name
        self._index: Any = None
        # Per-clip processed images, kept for one answering call (the visual object is stored with its
        # result so its id cannot be reused while cached).
        self.share_images = True
        self._image_cache: dict[int, tuple[Any, dict[str, Any], list[str]]] = {}
        # One prefix per clip and label scoring (greedy decoding; share_images = False turns it off too,
        # as it shares the clip's images); the cache lives for one answering call.
        self.share_prefix = True
        self.score_labels = True
        self.batch_rows = 32  # rows decoding at once on the shared-prefix path (the engine's batch_size)
        self.prefix_cache = PrefixCache()
        self.prefix_stats = PrefixStats()
        self._prefix_refusal: str | None = None
        self._prefix_checked = False

    @property
    def batches_by_clip(self) -> bool:
        """Whether rows should come in whole clips (the shared-prefix path) rather than length buckets."""
        return self.share_prefix and self.share_images and self.prefix_refusal is None

    @property
    def prefix_refusal(self) -> str | None:
        """Why this model cannot decode from shared prefixes (``None``: it can); checked once."""
        if not self._prefix_checked:
            self._prefix_refusal = unsupported_reason(self.model)
            self._prefix_checked = True
            if self._prefix_refusal:
                log.info("shared-prefix decoding off for this model: %s", self._prefix_refusal)
        return self._prefix_refusal

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad) if pad is not None else int(self.token_index.stop_ids[0])

    def end_call(self) -> None:
        self._image_cache.clear()
        self.prefix_cache.clear()

    @property
    def token_index(self) -> Any:
        if self._index is None:
            self._index = TokenIndex(self.tokenizer)
        return self._index

    def _encode(self, questions: Sequence[str], visuals: Sequence[Any], unique: bool = False) -> Any:
        """Processor inputs for rows; each clip's images go through the image processor once.

        The processor would resize and normalise a clip's images again for every question of the clip.
        Its per-batch image step (``_process_images``) is wrapped so that it runs per clip, is cached
        for the engine call, and its results are concatenated in row order: the output is identical
        (a test asserts it) and the visual work per clip is done once. Video inputs take the plain path.
        ``unique``: the image pixels and grids of each clip appear once, in the order of its first row
        (the shared-prefix path needs them only for its prefill); the tokens are the same.
        """
        prompts = [
            prompt_text(self.processor, q, v, self.prompt) for q, v in zip(questions, visuals, strict=True)
        ]
        original = getattr(self.processor, "_process_images", None)
        images_only = all(model_visuals(v, self.prompt.visual_mode)[1] is None for v in visuals)
        if not (self.share_images and images_only and callable(original)):
            return encode_prompts(self.processor, prompts, visuals, self.prompt, padding_side="left").to(
                self.model.device
            )
        self.processor._process_images = self._cached_images(visuals, original, unique)
        try:
            inputs = encode_prompts(self.processor, prompts, visuals, self.prompt, padding_side="left")
        finally:
            del self.processor._process_images  # back to the class method
        return inputs.to(self.model.device)

    @contextlib.contextmanager
    def _shared_vision(self, questions: Sequence[str], visuals: Sequence[Any]) -> Iterator[None]:
        """Run the vision tower once per clip, not once per question, during one ``generate`` call.

        ``generate`` encodes every row's images through the base model's ``get_image_features``; the
        wrapper encodes each clip's images once and hands every row of the clip the same features, so
        the result equals the plain path (the benchmark asserts equal answers). It steps aside (plain
        path) whenever the call does not look like the rows it was set up for.
        """
        hf = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        inner = getattr(hf, "base_model", hf)
        original = getattr(inner, "get_image_features", None)
        owners = [
            (id(v), k) for v in visuals for k in range(len(model_visuals(v, self.prompt.visual_mode)[0]))
        ]
        if (
            not self.share_images
            or original is None
            or len(set(owners)) == len(owners)
            or "image_grid_thw"
            not in inspect.signature(original).parameters  # grids say which pixels are whose
        ):
            yield
            return

        @functools.wraps(original)
        def shared(pixel_values: Any, image_grid_thw: Any = None, **kwargs: Any) -> Any:
            if image_grid_thw is None or len(image_grid_thw) != len(owners) or not kwargs.get("return_dict"):
                return original(pixel_values, image_grid_thw, **kwargs)
            import torch

            sizes = image_grid_thw.prod(-1).tolist()
            starts = [0, *itertools.accumulate(sizes)]
            first = {}  # owner -> image index of its first occurrence
            for i, owner in enumerate(owners):
                first.setdefault(owner, i)
            unique = sorted(first.values())
            result = original(
                torch.cat([pixel_values[starts[i] : starts[i + 1]] for i in unique]),
                image_grid_thw[unique],
                **kwargs,
            )
            features = dict(zip(unique, result.pooler_output, strict=True))
            result.pooler_output = tuple(features[first[owner]] for owner in owners)
            if getattr(
                result, "deepstack_features", None
            ):  # Qwen3-VL: per layer, per image, like pooler_output
                result.deepstack_features = [
                    tuple(dict(zip(unique, layer, strict=True))[first[owner]] for owner in owners)
                    for layer in result.deepstack_features
                ]
            result.last_hidden_state = None  # per-patch states of the unique images only: not row-aligned
            return result

        inner.get_image_features = shared
        try:
            yield
        finally:
            del inner.get_image_features  # back to the class method

    def _cached_images(self, visuals: Sequence[Any], original: Any, unique: bool = False) -> Any:

        counts = [len(model_visuals(v, self.prompt.visual_mode)[0]) for v in visuals]

        def process(images: Sequence[Any], **kwargs: Any) -> tuple[dict[str, Any], list[str]]:
            if len(images) != sum(counts):
                return original(images, **kwargs)
            parts, replacements, pos, seen = [], [], 0, set()
            for visual, n in zip(visuals, counts, strict=True):
                if n:
                    key = id(visual)
                    if key not in self._image_cache:
                        self._image_cache[key] = (visual, *original(list(images[pos : pos + n]), **kwargs))
                    _, processed, repl = self._image_cache[key]
                    if not (unique and key in seen):
                        parts.append(processed)
                    seen.add(key)
                    replacements += repl
                pos += n
            # Every per-image output is joined in row order (pixels, grids, InternVL's tiles per image).
            merged = {k: _join([p[k] for p in parts]) for k in parts[0]}
            return merged, replacements

        return process

    def decode(self, requests: Sequence[DecodeRequest], sampling: Sampling) -> list[list[str]]:
        """Greedy rows from shared per-clip prefixes where the model allows it, the rest (sampling, and
        clips whose images follow the question) through ``generate``."""
        if not requests:
            return []
        if not sampling.greedy or not self.batches_by_clip:
            return self._generate(requests, sampling)
        import torch

        with torch.inference_mode():
            results, plain = SharedPrefixDecoding(self).run(requests, max(1, self.batch_rows))
        if plain:
            for i, texts in zip(plain, self._generate([requests[i] for i in plain], sampling), strict=True):
                results[i] = texts
        return results

    def _generate(self, requests: Sequence[DecodeRequest], sampling: Sampling) -> list[list[str]]:
        """One ``generate`` call over the rows, left-padded, each row stopping at its own bound."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        questions = [r.question for r in requests]
        visuals = [r.visual for r in requests]
        grammars = [r.grammar for r in requests]
        limits = [r.max_new_tokens for r in requests]
        inputs = self._encode(questions, visuals)
        width = inputs["input_ids"].shape[1]
        n = max(1, sampling.n)
        stop_ids = list(self.token_index.stop_ids) if any(grammars) else stop_token_ids(self.tokenizer)
        processors = LogitsProcessorList()
        if any(g is not None for g in grammars):
            processors.append(GrammarLogitsProcessor(self.token_index, grammars, width, rows_per_request=n))
        kwargs: dict[str, Any] = {"do_sample": False}
        if n > 1:
            torch.manual_seed(sampling.seed)
            kwargs = {
                "do_sample": True,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "num_return_sequences": n,
            }
        with torch.inference_mode(), self._shared_vision(questions, visuals):
            out = self.model.generate(
                **inputs,
                max_new_tokens=max(limits),
                logits_processor=processors,
                stopping_criteria=StoppingCriteriaList(
                    [_RowLimits([x for x in limits for _ in range(n)], width)]
                ),
                eos_token_id=stop_ids,
                pad_token_id=self.tokenizer.pad_token_id
                if self.tokenizer.pad_token_id is not None
                else stop_ids[0],
                **kwargs,
            )
        texts = self.tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)
        return [Texts(t.strip() for t in texts[i * n : (i + 1) * n]) for i in range(len(requests))]


class _RowLimits:
    """Stopping criterion: row r is done after ``limits[r]`` new tokens (batched rows of different kinds)."""

    def __init__(self, limits: Sequence[int], prompt_width: int) -> None:
        self.limits = list(limits)
        self.width = prompt_width

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        produced = input_ids.shape[1] - self.width
        return torch.tensor(
            [produced >= lim for lim in self.limits], dtype=torch.bool, device=input_ids.device
        )


def _join(values: Sequence[Any]) -> Any:
    """Per-image outputs of several calls of an image processor, concatenated (tensors, arrays, lists);
    anything else (a scalar setting) is the first call's."""
    import torch

    first = values[0]
    if isinstance(first, torch.Tensor | np.ndarray):
        return torch.cat([torch.as_tensor(v) for v in values])
    if isinstance(first, list | tuple):
        return [x for v in values for x in v]
    return first
