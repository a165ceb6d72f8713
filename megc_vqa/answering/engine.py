"""The inference engine: a (fine-tuned) video LVLM answering MEGC questions about clips.

The engine is the backend-free answering layer: it turns rows into decoding requests (grammar and
length bound from the question kinds registry, ``megc_vqa.qa.kinds``), hands them to a decoder
(``decoding.Decoder``: ``hf_backend.HfDecoder`` by default, ``vllm_backend.VllmDecoder`` with vLLM) and
does everything after decoding the same way for every backend:

- One model load: base model by registry name, hub id or folder, plus an optional PEFT adapter (or a
  merged model folder). An adapter made for another base model is refused with a clear message.
- Prompts are built by ``megc_vqa.models.prompting`` exactly as in training: the training record
  (``megc_vqa.models.contract``, ``megc_vqa_train.json`` next to the adapter or model) is loaded once and
  exposed as ``engine.contract``; its prompt layout, pixel bounds and label sets drive decoding, and
  ``engine.visual_inputs(clip)`` samples a clip with its visual settings.
- Batched greedy decoding by default; the caller hands each clip's visual inputs once and every
  question of the clip reuses them. With the transformers backend each clip's images and shared prompt
  prefix run once, and closed questions are answered by scoring their labels: each row's answer then
  carries every label's log-probability (``Answer.scores``; ``score_labels`` returns them alone).
- A batch that runs out of memory is halved and retried (with a warning) until it fits; a single row
  that still does not fit gets a flagged fallback. No row is lost.
- Optional label-constrained decoding (``constrained.py``): classification answers are always valid
  labels and the joint answer always follows its template.
- Optional voting: N sampled answers per row, majority of the normalised answers.
- A clip of a known dataset (``answer_clips(..., datasets=)``) is answered among that dataset's own
  fine labels (``AnswerVocabulary.for_dataset``): the MEGC sets code different emotions (SAMM has
  contempt and no repression, CASME II the reverse), and the motion images a model sees carry no hint of
  which set a clip is from. ``dataset_labels=False`` keeps one vocabulary for every clip.
- Optional per-clip consistency (``postprocess.make_consistent``); a fine label that contradicts the
  coarse class is re-asked among the fine labels of that class (a class with a single fine label is
  answered with it, no model call).
- Answers that are empty or invalid after normalisation become documented fallbacks, flagged.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from megc_vqa.answering.decoding import Decoder, DecodeRequest, Sampling
from megc_vqa.answering.grammar import (
    DEFAULT_VOCAB,
    AnswerVocabulary,
    Grammar,
    OneOf,
    answer_grammar,
    kind_grammar,
)
from megc_vqa.answering.hf_backend import HfDecoder
from megc_vqa.answering.postprocess import (
    FINE_TO_COARSE,
    Change,
    fallback_answer,
    make_consistent,
    normalise_answer,
)
from megc_vqa.errors import MegcError
from megc_vqa.models.adapters import AdapterError, adapter_config, check_adapter_files
from megc_vqa.models.contract import ModelContract, read_contract
from megc_vqa.models.prompting import PromptOptions
from megc_vqa.models.registry import ModelLoadError, load_for_inference
from megc_vqa.qa import templates as T
from megc_vqa.qa.kinds import KINDS

log = logging.getLogger(__name__)

# Upper bounds on answer length in tokens, by question kind (the registry's); rows stop at their own bound.
MAX_NEW_TOKENS: dict[str, int] = {
    k.name: k.max_new_tokens for k in KINDS.values() if k.max_new_tokens is not None
}
FREE_MAX_NEW_TOKENS = 256  # analysis and unknown questions


class EngineError(MegcError, RuntimeError):
    """The engine cannot start or go on; the message says what to change."""


def is_out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` says a batch did not fit in (GPU or host) memory."""
    return isinstance(err, MemoryError) or "OutOfMemory" in type(err).__name__ or "out of memory" in str(err)


def scored_labels(kind: str, grammar: Grammar | None) -> tuple[str, ...]:
    """The labels a row's answer is scored among: a classification kind's (closed label set, the registry's
    ``classification``) under its grammar; ``()`` for every other row."""
    spec = KINDS.get(kind)  # type: ignore[call-overload]
    if spec is None or not spec.classification or not isinstance(grammar, OneOf):
        return ()
    return grammar.labels


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
    dataset_labels: answer a clip whose dataset is given among that dataset's own fine labels.
    free_max_new_tokens: length bound of free answers (2026 analysis prompt, unknown questions).
    prompt: prompt layout; ``None`` takes the one recorded by training, else the default.
    sort_aus: write AU lists in ascending AU number; by default they keep the model's order, so the
        text metrics see what it wrote.
    """

    batch_size: int = 32
    constrained: bool = True
    consistency: bool = True
    votes: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0
    vocab: AnswerVocabulary = DEFAULT_VOCAB
    dataset_labels: bool = True
    free_max_new_tokens: int = FREE_MAX_NEW_TOKENS
    prompt: PromptOptions | None = None
    sort_aus: bool = False

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
    scores: dict[str, float] | None = None  # label -> log-probability, where the labels were scored


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


def trained_contract(
    model: str | Path, adapter: str | Path | None, contract: ModelContract | None = None
) -> ModelContract:
    """The training record a model answers with: ``contract`` when given, else the one next to the adapter
    or model (the defaults, said once, when there is none). Every backend loads through this, so each
    answers with the settings its model was trained on."""
    return contract or read_contract(*contract_folders(model, adapter))


def check_adapter(adapter: Path) -> dict[str, Any]:
    """The adapter's PEFT config, after checking it is one; the base-model check happens at load."""
    if not (adapter / "adapter_config.json").is_file():
        raise EngineError(f"{adapter}: no adapter_config.json; --adapter must be a PEFT adapter folder")
    return adapter_config(adapter)


class Engine:
    """``Engine.load(model, adapter)`` then ``answer(...)`` / ``answer_clips(...)``.

    ``Engine(model, processor, options)`` answers with a loaded transformers model;
    ``Engine(options=..., decoder=d)`` with any ``decoding.Decoder``.
    """

    def __init__(
        self,
        model: Any = None,
        processor: Any = None,
        options: EngineOptions = EngineOptions(),
        name: str = "",
        *,
        decoder: Decoder | None = None,
        contract: ModelContract | None = None,
    ) -> None:
        # What the model was trained on; without a record, the defaults with the options' prompt.
        self.contract = contract or ModelContract(prompt=options.prompt or PromptOptions())
        options = with_contract(options, self.contract)
        if decoder is None:
            if model is None or processor is None:
                raise TypeError("Engine needs a model and its processor, or a decoder")

            decoder = HfDecoder(model, processor, options.prompt, name)
        self.decoder = decoder
        self.options = options
        self.name = name or decoder.name

    # The transformers backend's parts, for callers that use them directly (benchmarks, tests).
    @property
    def model(self) -> Any:
        return getattr(self.decoder, "model", None)

    @property
    def processor(self) -> Any:
        return getattr(self.decoder, "processor", None)

    @property
    def tokenizer(self) -> Any:
        return getattr(self.decoder, "tokenizer", None)

    @property
    def prompt(self) -> PromptOptions:
        return self.decoder.prompt

    @property
    def share_images(self) -> bool:
        """Whether the transformers backend shares each clip's processed images and vision features."""
        return bool(getattr(self.decoder, "share_images", False))

    @share_images.setter
    def share_images(self, value: bool) -> None:
        self.decoder.share_images = value  # type: ignore[attr-defined]

    def _encode(self, questions: Sequence[str], visuals: Sequence[Any]) -> Any:
        """The transformers backend's model inputs for rows (kept for callers of the old engine)."""
        return self.decoder._encode(questions, visuals)  # type: ignore[attr-defined]

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

        if adapter is None and (Path(str(model)) / "adapter_config.json").is_file():
            adapter = Path(str(model))
            model = check_adapter(adapter).get("base_model_name_or_path") or str(model)
        adapter_path = Path(adapter) if adapter else None
        checked = None
        if adapter_path is not None:
            check_adapter(adapter_path)
            try:  # NaN weights, a config that contradicts the record: said before the base model loads
                checked = check_adapter_files(adapter_path)
            except AdapterError as err:
                raise EngineError(str(err)) from None
        try:
            # PEFT only warns when the adapter's weights find no home in this model, and loads NaN weights
            # silently: the one loading path applies the one adapter check (megc_vqa.models.adapters).
            base, processor = load_for_inference(model, dtype=dtype, adapter=adapter_path, checked=checked)
        except (ModelLoadError, AdapterError) as err:
            raise EngineError(str(err)) from None
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        base.to(device)
        contract = trained_contract(model, adapter_path, contract)
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

    def max_new_tokens(self, kind: str) -> int:
        """The length bound of a row of ``kind`` (the registry's, or the free-answer bound)."""
        bound = KINDS[kind].max_new_tokens  # type: ignore[index]
        return self.options.free_max_new_tokens if bound is None else bound

    def generate(
        self,
        questions: Sequence[str],
        visuals: Sequence[Any],
        grammars: Sequence[Grammar | None] | None = None,
        sample_seed: int | None = None,
        kinds: Sequence[str] | None = None,
    ) -> list[list[str]]:
        """Raw decoded answers, one list per question (``votes`` samples, or one greedy answer).

        ``grammars`` default to the questions' own (when ``constrained``); ``kinds`` save classifying
        the questions again."""
        o = self.options
        kinds = list(kinds) if kinds is not None else [T.classify_question(q) for q in questions]
        if grammars is None:
            grammars = self._grammars(questions, kinds, [o.vocab] * len(questions))
        requests = [
            DecodeRequest(q, v, g, self.max_new_tokens(k), scored_labels(k, g))
            for q, v, g, k in zip(questions, visuals, grammars, kinds, strict=True)
        ]
        if hasattr(self.decoder, "batch_rows"):
            self.decoder.batch_rows = max(1, o.batch_size)
        sampling = Sampling(
            n=max(1, o.votes),
            temperature=o.temperature,
            top_p=o.top_p,
            seed=o.seed if sample_seed is None else sample_seed,
        )
        return self.decoder.decode(requests, sampling)

    def answer(
        self,
        questions: Sequence[str],
        visuals: Sequence[Any],
        sample_seed: int | None = None,
        kinds: Sequence[str] | None = None,
        vocabs: Sequence[AnswerVocabulary] | None = None,
    ) -> list[Answer]:
        """Answers for rows (question + visual inputs), in order.

        Rows are grouped by expected answer length (labels, AU lists, joint and free answers) and each
        group is cut into ``options.batch_size`` batches, so a one-word answer never waits for a
        sentence in the same batch (a backend that schedules rows itself gets them all at once). A
        batch that raises (for example out of memory) is retried row by row; a row that still fails,
        or whose answer is empty or invalid, becomes a fallback. ``kinds``: the rows' kinds, when known;
        ``vocabs``: each row's label sets (default ``options.vocab``).
        """
        kinds = list(kinds) if kinds is not None else [T.classify_question(q) for q in questions]
        vocabs = list(vocabs) if vocabs is not None else [self.options.vocab] * len(questions)
        out: list[Answer | None] = [None] * len(questions)
        try:
            for rows in self._batches(kinds, visuals):
                qs, vs, ks, vocs = ([seq[i] for i in rows] for seq in (questions, visuals, kinds, vocabs))
                for i, a in zip(rows, self._answer_batch(qs, vs, ks, vocs, sample_seed), strict=True):
                    out[i] = a
        finally:
            self.decoder.end_call()
        return [a for a in out if a is not None]

    def _answer_batch(
        self,
        qs: Sequence[str],
        vs: Sequence[Any],
        ks: Sequence[str],
        vocs: Sequence[AnswerVocabulary],
        sample_seed: int | None,
    ) -> list[Answer]:
        """One batch's answers; out of memory, the batch is halved and each half retried (a single row
        that does not fit becomes a fallback); any other failure retries the rows one by one."""
        try:
            raws = self.generate(qs, vs, self._grammars(qs, ks, vocs), sample_seed, ks)
            return [self._decide(q, k, s, v) for q, k, s, v in zip(qs, ks, raws, vocs, strict=True)]
        except (KeyboardInterrupt, EngineError):
            raise
        except Exception as err:
            reason = f"{type(err).__name__}: {str(err)[:200]}"
            if is_out_of_memory(err):
                self._free_memory()
                if len(qs) == 1:
                    log.warning("one row does not fit in memory (%s); it gets a fallback answer", reason)
                    return [Answer("", fallback=True, reason=reason)]
                half = (len(qs) + 1) // 2
                log.warning(
                    "a batch of %d rows ran out of memory (%s); retrying it as %d + %d rows (a smaller "
                    "--batch-size avoids the retries)", len(qs), reason, half, len(qs) - half,
                )  # fmt: skip
                return [
                    *self._answer_batch(qs[:half], vs[:half], ks[:half], vocs[:half], sample_seed),
                    *self._answer_batch(qs[half:], vs[half:], ks[half:], vocs[half:], sample_seed),
                ]
            log.warning("batch failed (%s); retrying its rows one by one", reason)
            return [
                self._answer_one(q, v, k, sample_seed, voc)
                for q, v, k, voc in zip(qs, vs, ks, vocs, strict=True)
            ]

    def _free_memory(self) -> None:
        """Drop what the decoder cached for this call and give freed GPU memory back before a retry."""
        import gc

        self.decoder.end_call()
        gc.collect()
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:
            pass

    def _batches(self, kinds: Sequence[str], visuals: Sequence[Any] | None = None) -> list[list[int]]:
        """Row indices per decode call, deterministic so reruns batch identically. A decoder that
        shares each clip's prefix (greedy) gets every row at once and decodes ``batch_size`` of them at a
        time, taking clips in as rows finish; otherwise rows of one length bucket, at most
        ``batch_size``, file order kept inside a bucket."""
        if self.decoder.schedules_itself:
            return [list(range(len(kinds)))] if kinds else []
        if (
            visuals is not None
            and self.options.votes <= 1
            and getattr(self.decoder, "batches_by_clip", False)
        ):
            return (
                [list(range(len(kinds)))] if kinds else []
            )  # it takes whole clips in, batch_size rows at once
        limit = [self.max_new_tokens(k) for k in kinds]
        bucket = [0 if n <= 16 else 1 if n <= 96 else 2 for n in limit]
        bs = max(1, self.options.batch_size)
        batches: list[list[int]] = []
        for b in sorted(set(bucket)):
            rows = [i for i in range(len(kinds)) if bucket[i] == b]
            batches += [rows[k : k + bs] for k in range(0, len(rows), bs)]
        return batches

    def _grammars(
        self, questions: Sequence[str], kinds: Sequence[str], vocabs: Sequence[AnswerVocabulary]
    ) -> list[Grammar | None]:
        if not self.options.constrained:
            return [None] * len(questions)
        return [answer_grammar(q, v, k) for q, k, v in zip(questions, kinds, vocabs, strict=True)]

    def _answer_one(
        self, question: str, visual: Any, kind: str, sample_seed: int | None, vocab: AnswerVocabulary
    ) -> Answer:
        try:
            grammars = self._grammars([question], [kind], [vocab])
            raws = self.generate([question], [visual], grammars, sample_seed, [kind])
            return self._decide(question, kind, raws[0], vocab)
        except (KeyboardInterrupt, EngineError):
            raise
        except Exception as err:
            return Answer("", fallback=True, reason=f"{type(err).__name__}: {str(err)[:200]}")

    def _decide(self, question: str, kind: str, samples: list[str], vocab: AnswerVocabulary) -> Answer:
        o = self.options
        normalised = [normalise_answer(question, s, vocab, kind=kind, sort_aus=o.sort_aus) for s in samples]
        valid = [a for a, ok in normalised if ok]
        raw = samples[0] if samples else ""
        scores = getattr(samples, "scores", None)
        if not valid:
            why = "empty answer" if not raw else f"not a valid answer: {raw[:80]!r}"
            return Answer(
                "", raw=raw, fallback=True, reason=why, samples=[a for a, _ in normalised], scores=scores
            )
        text = Counter(valid).most_common(1)[0][0]  # Counter keeps first-seen order among ties
        samples_out = [a for a, _ in normalised] if len(samples) > 1 else []
        return Answer(text, raw=raw, samples=samples_out, scores=scores)

    def score_labels(
        self,
        questions: Sequence[str],
        visuals: Sequence[Any],
        kinds: Sequence[str] | None = None,
        vocabs: Sequence[AnswerVocabulary] | None = None,
    ) -> list[dict[str, float]]:
        """Each row's label -> log-probability over its closed label set (coarse, fine, presence, side, ...;
        the labels' tokens plus the end of the answer, summed). Refused, with the kind named, for a row
        whose kind has an open answer (AU lists, joint, analysis, counts), and by a backend that cannot
        score (vLLM)."""
        kinds = list(kinds) if kinds is not None else [T.classify_question(q) for q in questions]
        vocabs = list(vocabs) if vocabs is not None else [self.options.vocab] * len(questions)
        for q, k in zip(questions, kinds, strict=True):
            spec = KINDS.get(k)  # type: ignore[call-overload]
            if spec is None or not spec.classification:
                form = spec.form if spec is not None else "unknown"
                raise EngineError(
                    f"label scoring needs a closed label set, but kind {k!r} ({q[:60]!r}) has {form} answers; "
                    "score only classification kinds (coarse, fine, presence, side, lvqa_event_type)"
                )
        if not getattr(self.decoder, "score_labels", False) or not getattr(
            self.decoder, "batches_by_clip", False
        ):
            raise EngineError(
                f"the {self.decoder.name or 'current'} backend cannot score labels; use the default one"
            )
        grammars: list[Grammar | None] = [
            kind_grammar(k, False, v) for k, v in zip(kinds, vocabs, strict=True)
        ]
        try:
            texts = self.generate(questions, visuals, grammars, None, kinds)
        finally:
            self.decoder.end_call()
        return [dict(getattr(t, "scores", None) or {}) for t in texts]

    # -- clips --------------------------------------------------------------------------------------

    def clip_vocab(self, dataset: str | None) -> AnswerVocabulary:
        """The label sets a clip of ``dataset`` is answered with (see ``dataset_labels``)."""
        return self.options.vocab.for_dataset(dataset) if self.options.dataset_labels else self.options.vocab

    def answer_clips(
        self,
        clips: Sequence[tuple[Any, Sequence[str]]],
        sample_seed: int | None = None,
        kinds: Sequence[Sequence[str]] | None = None,
        datasets: Sequence[str | None] | None = None,
    ) -> list[tuple[list[Answer], list[Change]]]:
        """Answer several clips' questions in shared batches: ``clips`` is ``[(visual, questions)]``.

        Each clip's visual inputs are prepared once by the caller and reused by all its questions; each
        question is classified once (``kinds``, per clip, when the caller's rows already carry them).
        ``datasets``: each clip's dataset (``casme2``, ``samm``, ``casme3``; ``None`` when unknown), whose
        own fine labels its answers are drawn from. Returns per clip its answers (fallbacks filled in)
        and the consistency changes.
        """
        consistency = [self.options.consistency]
        return self.answer_clips_variants(clips, consistency, sample_seed, kinds, datasets)[0]

    def answer_clips_variants(
        self,
        clips: Sequence[tuple[Any, Sequence[str]]],
        consistency: Sequence[bool],
        sample_seed: int | None = None,
        kinds: Sequence[Sequence[str]] | None = None,
        datasets: Sequence[str | None] | None = None,
    ) -> list[list[tuple[list[Answer], list[Change]]]]:
        """:meth:`answer_clips` once per ``consistency`` setting, decoding only once: what the model
        writes does not depend on the consistency pass, which only rewrites it (and re-asks contradicted
        fine labels, also once). One result list per setting, as ``answer_clips`` returns it."""
        if kinds is None:
            kinds = [[T.classify_question(q) for q in qs] for _, qs in clips]
        kinds = [list(ks) for ks in kinds]
        vocabs = [self.clip_vocab(d) for d in (datasets if datasets is not None else [None] * len(clips))]
        if len(vocabs) != len(clips):
            raise ValueError(f"{len(clips)} clips but {len(vocabs)} datasets")
        questions = [q for _, qs in clips for q in qs]
        visuals = [v for v, qs in clips for _ in qs]
        row_vocabs = [v for v, (_, qs) in zip(vocabs, clips, strict=True) for _ in qs]
        flat = self.answer(questions, visuals, sample_seed, [k for ks in kinds for k in ks], row_vocabs)
        per_clip: list[list[Answer]] = []
        pos = 0
        for _, qs in clips:
            per_clip.append(flat[pos : pos + len(qs)])
            pos += len(qs)
        refined = self._refine_fine(clips, kinds, per_clip, vocabs, sample_seed) if any(consistency) else {}
        variants = []
        for consistent in consistency:
            results = []
            for c, ((_, qs), ks, decoded) in enumerate(zip(clips, kinds, per_clip, strict=True)):
                answers = [replace(a) for a in decoded]  # each setting fills in its own copies
                texts = [a.text for a in answers]
                changes: list[Change] = []
                if consistent:
                    texts, changes = make_consistent(
                        qs, texts, lambda coarse, c=c: refined.get(c), vocabs[c], kinds=ks
                    )
                context = _clip_context(ks, texts)
                for a, t, q, k in zip(answers, texts, qs, ks, strict=True):
                    a.text = t or fallback_answer(q, context, kind=k)
                    if not t and not a.fallback:
                        a.fallback, a.reason = True, "empty answer"
                results.append((answers, changes))
            variants.append(results)
        return variants

    def _refine_fine(
        self,
        clips: Sequence[tuple[Any, Sequence[str]]],
        kinds: Sequence[Sequence[str]],
        per_clip: list[list[Answer]],
        vocabs: Sequence[AnswerVocabulary],
        sample_seed: int | None,
    ) -> dict[int, str]:
        """Re-ask, in one batch, the fine question of clips whose fine label contradicts their coarse
        class, among the fine labels of that class; returns clip position -> chosen label. A class with
        a single fine label needs no question: that label is the answer."""
        asks: list[tuple[int, str, Any, Grammar]] = []
        chosen: dict[int, str] = {}
        for c, ((visual, qs), ks, answers, vocab) in enumerate(
            zip(clips, kinds, per_clip, vocabs, strict=True)
        ):
            if "coarse" not in ks or "fine" not in ks:
                continue
            coarse, fine = answers[ks.index("coarse")].text, answers[ks.index("fine")].text
            options = [f for f in vocab.fine if FINE_TO_COARSE.get(f) == coarse]
            if not (
                coarse in vocab.coarse and fine in vocab.fine and FINE_TO_COARSE.get(fine, coarse) != coarse
            ):
                continue
            if len(options) == 1:
                chosen[c] = options[0]
            elif options:
                asks.append((c, qs[ks.index("fine")], visual, OneOf(options)))
        if not asks:
            return chosen
        try:
            raws = self.generate(
                [a[1] for a in asks],
                [a[2] for a in asks],
                [a[3] for a in asks],
                sample_seed,
                ["fine"] * len(asks),
            )
        except Exception as err:  # consistency then falls back to the first label of the class
            log.warning("re-asking fine labels failed (%s); using the first label of the coarse class", err)
            return chosen
        finally:
            self.decoder.end_call()
        chosen.update(
            {
                c: Counter(samples).most_common(1)[0][0]
                for (c, *_), samples in zip(asks, raws, strict=True)
                if samples
            }
        )
        return chosen


def _clip_context(kinds: Sequence[str], answers: Sequence[str]) -> dict[str, str]:
    """kind -> answer of a clip, for fallbacks that reuse the clip's other answers."""
    return {k: a for k, a in zip(kinds, answers, strict=True) if a}
