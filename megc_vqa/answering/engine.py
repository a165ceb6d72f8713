"""The inference engine: a (fine-tuned) video LVLM answering MEGC questions about clips.

- One model load: base model by registry name, hub id or folder, plus an optional PEFT adapter (or a
  merged model folder). An adapter made for another base model is refused with a clear message.
- Prompts are built by ``megc_vqa.models.prompting`` exactly as in training: the training record
  (``megc_vqa.models.contract``, ``megc_vqa_train.json`` next to the adapter or model) is loaded once and
  exposed as ``engine.contract``; its prompt layout, pixel bounds and label sets drive decoding, and
  ``engine.visual_inputs(clip)`` samples a clip with its visual settings.
- Batched greedy decoding by default; the caller hands each clip's visual inputs once and every
  question of the clip reuses them.
- Optional label-constrained decoding (``constrained.py``): classification answers are always valid
  labels and the joint answer always follows its template.
- Optional voting: N sampled answers per row, majority of the normalised answers.
- Optional per-clip consistency (``postprocess.make_consistent``); a fine label that contradicts the
  coarse class is re-asked among the fine labels of that class.
- Answers that are empty or invalid after normalisation become documented fallbacks, flagged.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import warnings
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from megc_vqa.answering.grammar import DEFAULT_VOCAB, AnswerVocabulary, Grammar, OneOf, answer_grammar
from megc_vqa.answering.postprocess import (
    FINE_TO_COARSE,
    Change,
    fallback_answer,
    make_consistent,
    normalise_answer,
)
from megc_vqa.fileio import read_json_object
from megc_vqa.models.contract import ModelContract, read_contract
from megc_vqa.models.prompting import (
    PromptOptions,
    build_messages,
    encode_prompts,
    model_visuals,
    render_prompt,
)
from megc_vqa.qa import templates as T

log = logging.getLogger(__name__)

# Upper bounds on answer length in tokens, by question kind; rows stop at their own bound.
MAX_NEW_TOKENS: dict[str, int] = {
    "coarse": 12,
    "fine": 12,
    "side": 8,
    "presence": 8,
    "au": 64,
    "joint": 160,
    "lvqa_event_type": 12,
    "lvqa_aus": 96,
    "lvqa_count_all": 8,
    "lvqa_count_micro": 8,
    "lvqa_count_macro": 8,
}
FREE_MAX_NEW_TOKENS = 256  # analysis and unknown questions


class EngineError(RuntimeError):
    """The engine cannot start or go on; the message says what to change."""


@dataclass(frozen=True)
class EngineOptions:
    """How the engine decodes. Defaults: greedy, label-constrained, consistent, one sample.

    batch_size: rows per ``generate`` call (rows of one length bucket: labels, AU lists, sentences).
    constrained: restrict classification answers to valid labels and the joint answer to its template.
    consistency: make each clip's answers agree (see ``postprocess.make_consistent``).
    votes: answers sampled per row (``1`` = greedy); the normalised majority wins, ties go to the
        answer sampled first.
    temperature, top_p: sampling settings when ``votes > 1``.
    seed: seeds sampling, per batch, so reruns and resumed runs draw the same samples.
    vocab: label sets for constrained decoding and normalisation.
    free_max_new_tokens: length bound of free answers (2026 analysis prompt, unknown questions).
    prompt: prompt layout; ``None`` takes the one recorded by training, else the default.
    """

    batch_size: int = 32
    constrained: bool = True
    consistency: bool = True
    votes: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    vocab: AnswerVocabulary = DEFAULT_VOCAB
    free_max_new_tokens: int = FREE_MAX_NEW_TOKENS
    prompt: PromptOptions | None = None

    def fingerprint(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("batch_size")  # batching does not change greedy answers' meaning; it may change floats
        return json.loads(json.dumps(d, default=str))


@dataclass
class Answer:
    """One row's answer: ``text`` goes into the prediction file.

    raw: what the model wrote (first sample when voting).
    fallback: ``text`` is a fallback, not the model's (``reason`` says why).
    samples: every normalised sample when voting.
    """

    text: str
    raw: str = ""
    fallback: bool = False
    reason: str = ""
    samples: list[str] = field(default_factory=list)


def contract_folders(model: str | Path, adapter: str | Path | None) -> tuple[Path | None, Path | None]:
    """Where a model's training record may be: the adapter folder, then the model folder."""
    return (Path(adapter) if adapter else None, Path(str(model)) if Path(str(model)).is_dir() else None)


def with_contract(options: EngineOptions, contract: ModelContract) -> EngineOptions:
    """``options`` with the record's prompt layout and label sets where the options leave them default;
    an explicit prompt that differs from the record wins, with a warning."""
    if options.prompt is None:
        options = replace(options, prompt=contract.prompt)
    elif options.prompt != contract.prompt and contract.source:
        log.warning(
            "prompt options %s override the record %s (%s)", options.prompt, contract.source, contract.prompt
        )
    labels = AnswerVocabulary(contract.labels.coarse, contract.labels.fine, contract.labels.au_names)
    if options.vocab == DEFAULT_VOCAB and labels != DEFAULT_VOCAB:
        options = replace(options, vocab=labels)
    return options


def check_adapter(adapter: Path) -> dict[str, Any]:
    """The adapter's PEFT config, after checking it is one; the base-model check happens at load."""
    cfg_path = adapter / "adapter_config.json"
    if not cfg_path.is_file():
        raise EngineError(f"{adapter}: no adapter_config.json; --adapter must be a PEFT adapter folder")
    return read_json_object(cfg_path, "adapter config")


def _base_mismatch(adapter: Path, base_recorded: str | None, model: str, err: Exception) -> EngineError:
    return EngineError(
        f"adapter {adapter} does not fit model {model!r}: it was trained on {base_recorded!r} "
        f"({type(err).__name__}: {str(err).splitlines()[0][:300]}). Pass --model {base_recorded} "
        "(or the folder it was trained from), or an adapter trained on this model."
    )


class Engine:
    """``Engine.load(model, adapter)`` then ``answer(...)`` / ``answer_clips(...)``."""

    def __init__(
        self,
        model: Any,
        processor: Any,
        options: EngineOptions = EngineOptions(),
        name: str = "",
        contract: ModelContract | None = None,
    ) -> None:
        self.model = model.eval()
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        # What the model was trained on; without a record, the defaults with the options' prompt.
        self.contract = contract or ModelContract(prompt=options.prompt or PromptOptions())
        options = with_contract(options, self.contract)
        self.options = options
        self.prompt = options.prompt or PromptOptions()
        self.name = name
        self._index: Any = None
        # Per-clip processed images, kept for one answer()/answer_clips() call (the visual object is
        # stored with its result so its id cannot be reused while cached).
        self.share_images = True
        self._image_cache: dict[int, tuple[Any, dict[str, Any], list[str]]] = {}

    @classmethod
    def load(
        cls,
        model: str | Path,
        adapter: str | Path | None = None,
        options: EngineOptions = EngineOptions(),
        dtype: str = "auto",
        device: str | None = None,
        contract: ModelContract | None = None,
    ) -> Engine:
        """Load base model (+ adapter) and the training record (``contract``: an already read and
        possibly overridden one, else :func:`megc_vqa.models.contract.read_contract`).

        ``model`` may also be an adapter folder on its own: its recorded base model is loaded under it.
        """
        import torch

        from megc_vqa.models.registry import ModelLoadError, load_model, load_processor

        if adapter is None and (Path(str(model)) / "adapter_config.json").is_file():
            adapter = Path(str(model))
            model = check_adapter(adapter).get("base_model_name_or_path") or str(model)
        adapter_path = Path(adapter) if adapter else None
        adapter_cfg = check_adapter(adapter_path) if adapter_path else {}
        try:
            base = load_model(model, dtype=dtype)
            has_processor = adapter_path is not None and any(
                (adapter_path / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")
            )
            processor = load_processor(adapter_path if has_processor else model)
        except ModelLoadError as err:
            raise EngineError(str(err)) from None
        if adapter_path is not None:
            from peft import PeftModel

            recorded = adapter_cfg.get("base_model_name_or_path")
            try:
                # PEFT only warns when the adapter's weights find no home in this model: make it an error.
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    base = PeftModel.from_pretrained(base, str(adapter_path))
                missing = [w for w in caught if "missing adapter keys" in str(w.message)]
                if missing:
                    raise ValueError(str(missing[0].message))
            except (RuntimeError, ValueError, KeyError) as err:
                raise _base_mismatch(adapter_path, recorded, str(model), err) from None
            if recorded and Path(str(recorded)).name != Path(str(model)).name:
                log.warning("adapter %s was trained on %s, loaded onto %s", adapter_path, recorded, model)
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        base.to(device)
        if contract is None:
            contract = read_contract(*contract_folders(model, adapter_path))
        name = str(model) + (f" + {adapter}" if adapter else "")
        return cls(base, processor, options, name=name, contract=contract)

    # -- settings -----------------------------------------------------------------------------------

    def visual_inputs(self, clip: Any, cache_dir: str | Path | None = None) -> Any:
        """A clip's visual inputs with the training record's visual settings."""
        return self.contract.sample(clip, cache_dir)

    def settings(self) -> dict[str, Any]:
        """The settings this engine answers with (record, prompt, visual, labels, overrides, decoding)."""
        return {
            **self.contract.summary(),
            "prompt": asdict(self.prompt),
            "model": self.name,
            "decoding": self.options.fingerprint(),
        }

    # -- decoding -----------------------------------------------------------------------------------

    @property
    def token_index(self) -> Any:
        if self._index is None:
            from megc_vqa.answering.constrained import TokenIndex

            self._index = TokenIndex(self.tokenizer)
        return self._index

    def _encode(self, questions: Sequence[str], visuals: Sequence[Any]) -> Any:
        """Processor inputs for rows; each clip's images go through the image processor once.

        The processor would resize and normalise a clip's images again for every question of the clip.
        Its per-batch image step (``_process_images``) is wrapped so that it runs per clip, is cached
        for the engine call, and its results are concatenated in row order: the output is identical
        (a test asserts it) and the visual work per clip is done once. Video inputs take the plain path.
        """
        prompts = [
            render_prompt(self.processor, build_messages(q, v, None, self.prompt))
            for q, v in zip(questions, visuals, strict=True)
        ]
        original = getattr(self.processor, "_process_images", None)
        images_only = all(model_visuals(v, self.prompt.visual_mode)[1] is None for v in visuals)
        if not (self.share_images and images_only and callable(original)):
            return encode_prompts(self.processor, prompts, visuals, self.prompt, padding_side="left").to(
                self.model.device
            )
        self.processor._process_images = self._cached_images(visuals, original)
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
        if not self.share_images or original is None or len(set(owners)) == len(owners):
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
            result.last_hidden_state = None  # per-patch states of the unique images only: not row-aligned
            return result

        inner.get_image_features = shared
        try:
            yield
        finally:
            del inner.get_image_features  # back to the class method

    def _cached_images(self, visuals: Sequence[Any], original: Any) -> Any:
        import torch

        counts = [len(model_visuals(v, self.prompt.visual_mode)[0]) for v in visuals]

        def process(images: Sequence[Any], **kwargs: Any) -> tuple[dict[str, Any], list[str]]:
            if len(images) != sum(counts):
                return original(images, **kwargs)
            parts, replacements, pos = [], [], 0
            for visual, n in zip(visuals, counts, strict=True):
                if n:
                    key = id(visual)
                    if key not in self._image_cache:
                        self._image_cache[key] = (visual, *original(list(images[pos : pos + n]), **kwargs))
                    _, processed, repl = self._image_cache[key]
                    parts.append(processed)
                    replacements += repl
                pos += n
            merged = {
                k: torch.cat([torch.as_tensor(p[k]) for p in parts]) if k in ("pixel_values", "image_grid_thw")
                else parts[0][k]
                for k in parts[0]
            }  # fmt: skip
            return merged, replacements

        return process

    def generate(
        self,
        questions: Sequence[str],
        visuals: Sequence[Any],
        grammars: Sequence[Grammar | None] | None = None,
        sample_seed: int | None = None,
    ) -> list[list[str]]:
        """Raw decoded answers, one list per question (``votes`` samples, or one greedy answer)."""
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        from megc_vqa.answering.constrained import GrammarLogitsProcessor, stop_token_ids

        o = self.options
        if grammars is None:
            grammars = [answer_grammar(q, o.vocab) if o.constrained else None for q in questions]
        inputs = self._encode(questions, visuals)
        width = inputs["input_ids"].shape[1]
        n = max(1, o.votes)
        limits = [MAX_NEW_TOKENS.get(T.classify_question(q), o.free_max_new_tokens) for q in questions]
        stop_ids = list(self.token_index.stop_ids) if any(grammars) else stop_token_ids(self.tokenizer)
        processors = LogitsProcessorList()
        if any(g is not None for g in grammars):
            processors.append(GrammarLogitsProcessor(self.token_index, grammars, width, rows_per_request=n))
        kwargs: dict[str, Any] = {"do_sample": False}
        if n > 1:
            torch.manual_seed(o.seed if sample_seed is None else sample_seed)
            kwargs = {
                "do_sample": True,
                "temperature": o.temperature,
                "top_p": o.top_p,
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
        return [[t.strip() for t in texts[i * n : (i + 1) * n]] for i in range(len(questions))]

    def answer(
        self, questions: Sequence[str], visuals: Sequence[Any], sample_seed: int | None = None
    ) -> list[Answer]:
        """Answers for rows (question + visual inputs), in order.

        Rows are grouped by expected answer length (labels, AU lists, joint and free answers) and each
        group is cut into ``options.batch_size`` batches, so a one-word answer never waits for a
        sentence in the same batch. A batch that raises (for example out of memory) is retried row by
        row; a row that still fails, or whose answer is empty or invalid, becomes a fallback.
        """
        out: list[Answer | None] = [None] * len(questions)
        for rows in self._batches(questions):
            qs, vs = [questions[i] for i in rows], [visuals[i] for i in rows]
            try:
                raws = self.generate(qs, vs, sample_seed=sample_seed)
                answers = [self._decide(q, samples) for q, samples in zip(qs, raws, strict=True)]
            except (KeyboardInterrupt, EngineError):
                raise
            except Exception as err:  # any model failure becomes a per-row retry
                log.warning("batch failed (%s: %s); retrying its rows one by one", type(err).__name__, err)
                answers = [self._answer_one(q, v, sample_seed) for q, v in zip(qs, vs, strict=True)]
            for i, a in zip(rows, answers, strict=True):
                out[i] = a
        self._image_cache.clear()
        return [a for a in out if a is not None]

    def _batches(self, questions: Sequence[str]) -> list[list[int]]:
        """Row indices per generate call: same length bucket, at most ``batch_size`` rows, file order kept
        inside a bucket (deterministic, so reruns batch identically)."""
        limit = [
            MAX_NEW_TOKENS.get(T.classify_question(q), self.options.free_max_new_tokens) for q in questions
        ]
        bucket = [0 if n <= 16 else 1 if n <= 96 else 2 for n in limit]
        bs = max(1, self.options.batch_size)
        batches: list[list[int]] = []
        for b in sorted(set(bucket)):
            rows = [i for i in range(len(questions)) if bucket[i] == b]
            batches += [rows[k : k + bs] for k in range(0, len(rows), bs)]
        return batches

    def _answer_one(self, question: str, visual: Any, sample_seed: int | None) -> Answer:
        try:
            return self._decide(question, self.generate([question], [visual], sample_seed=sample_seed)[0])
        except (KeyboardInterrupt, EngineError):
            raise
        except Exception as err:
            return Answer("", fallback=True, reason=f"{type(err).__name__}: {str(err)[:200]}")

    def _decide(self, question: str, samples: list[str]) -> Answer:
        normalised = [normalise_answer(question, s, self.options.vocab) for s in samples]
        valid = [a for a, ok in normalised if ok]
        raw = samples[0] if samples else ""
        if not valid:
            why = "empty answer" if not raw else f"not a valid answer: {raw[:80]!r}"
            return Answer("", raw=raw, fallback=True, reason=why, samples=[a for a, _ in normalised])
        text = Counter(valid).most_common(1)[0][0]  # Counter keeps first-seen order among ties
        return Answer(text, raw=raw, samples=[a for a, _ in normalised] if len(samples) > 1 else [])

    # -- clips --------------------------------------------------------------------------------------

    def answer_clips(
        self, clips: Sequence[tuple[Any, Sequence[str]]], sample_seed: int | None = None
    ) -> list[tuple[list[Answer], list[Change]]]:
        """Answer several clips' questions in shared batches: ``clips`` is ``[(visual, questions)]``.

        Each clip's visual inputs are prepared once by the caller and reused by all its questions.
        Returns per clip its answers (fallbacks filled in) and the consistency changes.
        """
        questions = [q for _, qs in clips for q in qs]
        visuals = [v for v, qs in clips for _ in qs]
        flat = self.answer(questions, visuals, sample_seed)
        per_clip: list[list[Answer]] = []
        pos = 0
        for _, qs in clips:
            per_clip.append(flat[pos : pos + len(qs)])
            pos += len(qs)
        refined = self._refine_fine(clips, per_clip, sample_seed) if self.options.consistency else {}
        results = []
        for c, ((_, qs), answers) in enumerate(zip(clips, per_clip, strict=True)):
            texts = [a.text for a in answers]
            changes: list[Change] = []
            if self.options.consistency:
                texts, changes = make_consistent(
                    qs, texts, lambda coarse, c=c: refined.get(c), self.options.vocab
                )
            context = _clip_context(qs, texts)
            for a, t, q in zip(answers, texts, qs, strict=True):
                a.text = t or fallback_answer(q, context)
                if not t and not a.fallback:
                    a.fallback, a.reason = True, "empty answer"
            results.append((answers, changes))
        return results

    def _refine_fine(
        self,
        clips: Sequence[tuple[Any, Sequence[str]]],
        per_clip: list[list[Answer]],
        sample_seed: int | None,
    ) -> dict[int, str]:
        """Re-ask, in one batch, the fine question of clips whose fine label contradicts their coarse
        class, among the fine labels of that class; returns clip position -> chosen label."""
        asks: list[tuple[int, str, Any, Grammar]] = []
        vocab = self.options.vocab
        for c, ((visual, qs), answers) in enumerate(zip(clips, per_clip, strict=True)):
            kinds = [T.classify_question(q) for q in qs]
            if "coarse" not in kinds or "fine" not in kinds:
                continue
            coarse, fine = answers[kinds.index("coarse")].text, answers[kinds.index("fine")].text
            options = [f for f in vocab.fine if FINE_TO_COARSE.get(f) == coarse]
            if (
                coarse in vocab.coarse
                and fine in vocab.fine
                and FINE_TO_COARSE.get(fine, coarse) != coarse
                and options
            ):
                asks.append((c, qs[kinds.index("fine")], visual, OneOf(options)))
        if not asks:
            return {}
        try:
            raws = self.generate(
                [a[1] for a in asks], [a[2] for a in asks], [a[3] for a in asks], sample_seed
            )
        except Exception as err:  # consistency then falls back to the first label of the class
            log.warning("re-asking fine labels failed (%s); using the first label of the coarse class", err)
            return {}
        return {
            c: Counter(samples).most_common(1)[0][0]
            for (c, *_), samples in zip(asks, raws, strict=True)
            if samples
        }


def _clip_context(questions: Sequence[str], answers: Sequence[str]) -> dict[str, str]:
    """kind -> answer of a clip, for fallbacks that reuse the clip's other answers."""
    return {T.classify_question(q): a for q, a in zip(questions, answers, strict=True) if a}


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
