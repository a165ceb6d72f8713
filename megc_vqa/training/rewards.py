"""Rewards for the stages after SFT (GRPO, rejection sampling): the MEGC scorer per question kind, and the
answer grammar.

- ``answer``: what the MEGC scorer gives one row, by the kind's form in the registry
  (:mod:`megc_vqa.qa.kinds`): a label (coarse, fine, left/right, presence) scores 1 when it equals the
  reference after the scorer's ``strip().lower()`` (UF1/UAR and accuracy count exactly these hits); an AU
  list scores the scorer's set F1; the joint answer scores the mean of its parts (AU set F1, fine label,
  coarse label; 0 when it does not follow the template); a count scores 1 when the number is right;
  free text (the 2026 analysis) scores the scorer's ROUGE-1 recall.
- ``format``: 1 when the answer is a complete sentence of its kind's grammar
  (:func:`megc_vqa.answering.grammar.answer_grammar`, the grammar constrained decoding uses), else 0;
  ``None`` (not scored) for free-form kinds.
- ``brevity``: the reference's length over the answer's, in characters (1 when the answer is no longer
  than the reference, shrinking as it rambles). Not a default: it shapes a model far from the grammar,
  and, being graded, it separates any two answers of different lengths, so a group's advantages are
  never all zero (the real-size check relies on it: a random model's answers all score 0 otherwise).

Each reward is a ``trl.GRPOTrainer`` reward function: ``f(prompts, completions, question, answer,
question_type, **kwargs) -> list[float | None]``, named after its reward.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from megc_vqa.answering.grammar import DEFAULT_VOCAB, AnswerVocabulary, answer_grammar, fullmatch
from megc_vqa.metrics.lvqa import parse_count
from megc_vqa.metrics.vqa import au_set, normalise_answer, rouge_mean, set_f1
from megc_vqa.qa.kinds import KINDS, kind_of
from megc_vqa.qa.templates import parse_joint_answer
from megc_vqa.training.config import REWARD_NAMES

RewardFn = Callable[..., list[float | None]]


def completion_text(completion: Any) -> str:
    """The answer text of a completion: a string, or TRL's conversational ``[{"role", "content"}]``."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion:
        content = completion[-1].get("content", "") if isinstance(completion[-1], dict) else completion[-1]
        if isinstance(content, list):  # content parts
            return "".join(p.get("text", "") for p in content if isinstance(p, dict))
        return "" if content is None else str(content)
    return ""


def _kind(question: str, question_type: str | None) -> Any:
    return KINDS.get(question_type) if question_type in KINDS else kind_of(question)  # type: ignore[arg-type]


def _label_hit(reference: str, prediction: str) -> float:
    return float(normalise_answer(prediction) == normalise_answer(reference))


def _joint_score(reference: str, prediction: str) -> float:
    ref, pred = parse_joint_answer(reference), parse_joint_answer(prediction)
    if ref is None:  # a reference outside the template: only the exact answer counts
        return _label_hit(reference, prediction)
    if pred is None:
        return 0.0
    aus = set_f1({a.lower() for a in ref[0]}, {a.lower() for a in pred[0]})
    return (aus + _label_hit(ref[1], pred[1]) + _label_hit(ref[2], pred[2])) / 3


def answer_score(question: str, reference: str, prediction: str, question_type: str | None = None) -> float:
    """The MEGC scorer's value of one answer (see the module doc), in [0, 1]."""
    form = _kind(question, question_type).form
    if form == "label":
        return _label_hit(reference, prediction)
    if form == "au_list":
        return set_f1(au_set(reference), au_set(prediction))
    if form == "joint":
        return _joint_score(reference, prediction)
    if form == "count":
        return float(
            parse_count(prediction) is not None and parse_count(prediction) == parse_count(reference)
        )
    return float(rouge_mean([reference], [prediction]) or 0.0)


def format_score(
    question: str, prediction: str, question_type: str | None = None, vocab: AnswerVocabulary = DEFAULT_VOCAB
) -> float | None:
    """1.0 when ``prediction`` follows the grammar of its question, 0.0 when not, ``None`` for free kinds."""
    kind = _kind(question, question_type)
    grammar = answer_grammar(question, vocab, kind.name)
    return None if grammar is None else float(fullmatch(grammar, prediction.strip()))


def brevity_score(reference: str, prediction: str) -> float:
    """``len(reference) / len(prediction)`` (stripped), capped at 1; an empty answer scores 0."""
    ref, pred = len(reference.strip()), len(prediction.strip())
    return 0.0 if pred == 0 else min(1.0, max(ref, 1) / pred)


def _named(name: str, fn: RewardFn) -> RewardFn:
    fn.__name__ = fn.__qualname__ = name  # TRL logs each reward under its function's name
    return fn


def reward_functions(names: Sequence[str], vocab: AnswerVocabulary = DEFAULT_VOCAB) -> list[RewardFn]:
    """The reward functions ``names`` (each one of :data:`megc_vqa.training.config.REWARD_NAMES`)."""

    def answer(
        completions: Sequence[Any], question: Sequence[str], answer: Sequence[str], question_type: Sequence[Any],
        **_: Any,
    ) -> list[float | None]:  # fmt: skip
        return [
            answer_score(q, ref, completion_text(c), t)
            for c, q, ref, t in zip(completions, question, answer, question_type, strict=True)
        ]

    def format_(
        completions: Sequence[Any], question: Sequence[str], question_type: Sequence[Any], **_: Any
    ) -> list[float | None]:
        return [
            format_score(q, completion_text(c), t, vocab)
            for c, q, t in zip(completions, question, question_type, strict=True)
        ]

    def brevity(completions: Sequence[Any], answer: Sequence[str], **_: Any) -> list[float | None]:
        return [brevity_score(ref, completion_text(c)) for c, ref in zip(completions, answer, strict=True)]

    made = {
        "answer": _named("answer", answer),
        "format": _named("format", format_),
        "brevity": _named("brevity", brevity),
    }
    assert tuple(made) == REWARD_NAMES, "config.REWARD_NAMES lists the rewards made here"
    unknown = [n for n in names if n not in made]
    if unknown:
        raise ValueError(f"unknown reward(s) {unknown}; the rewards are: {', '.join(made)}")
    return [made[n] for n in names]


def mean_reward(
    functions: Sequence[RewardFn], question: str, reference: str, prediction: str, question_type: str | None
) -> float:
    """The mean of ``functions`` on one answer, over those that score it (0.0 when none does)."""
    values = [
        f(completions=[prediction], question=[question], answer=[reference], question_type=[question_type])[0]
        for f in functions
    ]
    scored = [v for v in values if v is not None]
    return sum(scored) / len(scored) if scored else 0.0
