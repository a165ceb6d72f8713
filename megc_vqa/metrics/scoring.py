"""The one table of scorings: what each name in a kind's ``scoring`` (``megc_vqa.qa.kinds``) computes.

Every entry holds a per-row function and an aggregation:

- the per-row function takes an aligned row and its kind and returns a :class:`RowScore`: the row's value
  for the aggregation and, when the answer is empty, unparseable or off the kind's vocabulary, why (the
  row still counts, as a wrong answer);
- the aggregation takes, for every kind that names the scoring, the kind, its rows and their values, and
  returns score keys built from the kind's ``score_key`` (``uf1_coarse``, ``presence_acc``,
  ``count_total_mae``). Kinds without rows get ``None`` scores and zero counts, so a table always has
  the same keys.

:func:`score_kinds` loops over the kinds present (and those of the task, for stable keys); it is what
``megc_vqa.metrics.vqa.score_rows`` and ``megc_vqa.metrics.lvqa.score_lvqa_rows`` run. A new kind with an
existing scoring needs an entry in ``kinds.KINDS`` and its question in ``templates``, nothing here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from megc_vqa.metrics.answers import (
    INVALID,
    AlignedRow,
    VqaVariant,
    au_set,
    class_scores,
    corpus_bleu,
    extract_label,
    jaccard,
    normalise_answer,
    normalise_event_type,
    parse_au_set,
    parse_count,
    rouge_mean,
    sentence_bleu_mean,
    set_f1,
)
from megc_vqa.qa import kinds as K
from megc_vqa.qa.kinds import QuestionKind
from megc_vqa.qa.templates import parse_joint_answer

# How many row ids a score table names per kind with invalid answers.
INVALID_IDS_SHOWN = 5


@dataclass(frozen=True)
class RowScore:
    """One row's value for an aggregation; ``problem`` says why the answer is not valid (else ``None``)."""

    value: Any
    problem: str | None = None


@dataclass(frozen=True)
class KindRows:
    """The rows of one kind and their per-row values, as an aggregation receives them."""

    kind: QuestionKind
    rows: Sequence[AlignedRow]
    values: Sequence[Any]


RowFunction = Callable[[AlignedRow, QuestionKind], RowScore]
Aggregation = Callable[[Sequence[KindRows], VqaVariant], dict[str, Any]]


@dataclass(frozen=True)
class Scoring:
    """A per-row function and the aggregation of its values (see the module docstring)."""

    row: RowFunction
    aggregate: Aggregation
    describe: str


def answer_problem(kind: QuestionKind, answer: str | None) -> str | None:
    """Why ``answer`` is not a valid answer of ``kind`` as the scorers read it (after ``strip().lower()``),
    or ``None``: ``empty``, ``off-vocabulary`` (a label kind's answer outside ``kind.vocabulary``),
    ``unknown AU name``, ``off the joint template``, ``not a number``. Free answers only can be empty.

    >>> answer_problem(K.KINDS["coarse"], " Negative "), answer_problem(K.KINDS["coarse"], "Negative.")
    (None, 'off-vocabulary')
    """
    text = normalise_answer(answer)
    if not text:
        return "empty"
    if kind.form == "label":
        return None if text in {normalise_answer(v) for v in kind.vocabulary} else "off-vocabulary"
    if kind.form == "au_list":
        known = {normalise_answer(v) for v in kind.labels}
        return None if au_set(text) <= known else "unknown AU name"
    if kind.form == "joint":
        return None if parse_joint_answer(str(answer).strip()) else "off the joint template"
    if kind.form == "count":
        return None if parse_count(text) is not None else "not a number"
    return None


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


# ---- per-row functions ----
def _pair(row: AlignedRow, kind: QuestionKind) -> RowScore:
    return RowScore((row.reference, row.prediction or ""), answer_problem(kind, row.prediction))


def _correct(row: AlignedRow, kind: QuestionKind) -> RowScore:
    return RowScore(float(row.correct), answer_problem(kind, row.prediction))


def _au_set_f1(row: AlignedRow, kind: QuestionKind) -> RowScore:
    return RowScore(
        set_f1(au_set(row.reference), au_set(row.prediction)), answer_problem(kind, row.prediction)
    )


def _count(row: AlignedRow, kind: QuestionKind) -> RowScore:
    truth = parse_count(row.reference)
    if truth is None:
        raise ValueError(f"ground-truth count answer of {row.video_id} is not a number")
    predicted = parse_count(row.prediction)
    problem = "empty" if not normalise_answer(row.prediction) else None
    return RowScore((predicted, truth), problem or (None if predicted is not None else "not a number"))


def _au_mentions(row: AlignedRow, kind: QuestionKind) -> RowScore:
    predicted, truth = parse_au_set(row.prediction), parse_au_set(row.reference)
    return RowScore((set_f1(predicted, truth), jaccard(predicted, truth)), None if predicted else "empty")


def _event_type(row: AlignedRow, kind: QuestionKind) -> RowScore:
    truth = normalise_event_type(row.reference)
    if truth is None:
        raise ValueError(f"ground-truth event-type answer of {row.video_id} is neither micro nor macro")
    predicted = normalise_event_type(row.prediction)
    problem = "empty" if not normalise_answer(row.prediction) else "neither micro nor macro"
    return RowScore((truth, predicted or INVALID), None if predicted else problem)


# ---- aggregations ----
def _uf1_uar(groups: Sequence[KindRows], variant: VqaVariant) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for g in groups:
        k = g.kind.score_key
        truth = [t for t, _ in g.values]
        raw = [p for _, p in g.values]
        out[f"uf1_{k}"], out[f"uar_{k}"] = class_scores(truth, raw)
        # The parsed scores also forgive spelling variants (happy/happiness) on both sides.
        parsed_truth = [g.kind.spell(t) for t in truth]
        labels = sorted(set(parsed_truth))  # once: passing every row's truth made this quadratic in rows
        parsed = [extract_label(p, g.kind, labels) or INVALID for p in raw]
        out[f"uf1_{k}_parsed"], out[f"uar_{k}_parsed"] = class_scores(parsed_truth, parsed)
        out[g.kind.count_key] = len(g.rows)
    return out


def _share(suffix: str) -> Aggregation:
    def aggregate(groups: Sequence[KindRows], variant: VqaVariant) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for g in groups:
            out[f"{g.kind.score_key}_{suffix}"] = _mean(g.values)
            out[g.kind.count_key] = len(g.rows)
        return out

    return aggregate


def _text(groups: Sequence[KindRows], variant: VqaVariant) -> dict[str, Any]:
    pairs = [v for g in groups if variant.rows == "all" or not g.kind.classification for v in g.values]
    refs, hyps = [r for r, _ in pairs], [h for _, h in pairs]
    bleu = sentence_bleu_mean(refs, hyps) if variant.bleu == "sentence" else corpus_bleu(refs, hyps)
    return {"bleu": bleu, "rouge": rouge_mean(refs, hyps, variant.rouge), "n_text_rows": len(pairs)}


def _counts(groups: Sequence[KindRows], variant: VqaVariant) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for g in groups:
        errors = [(p or 0) - t for p, t in g.values]  # an answer without a number counts as 0
        rmse = _mean([e * e for e in errors])
        out[f"count_{g.kind.score_key}_mae"] = _mean([abs(e) for e in errors])
        out[f"count_{g.kind.score_key}_rmse"] = None if rmse is None else math.sqrt(rmse)
    values = [v for g in groups for v in g.values]
    out["count_accuracy"] = _mean([float(p == t) for p, t in values])
    out["n_count"] = len(values)
    out["n_count_invalid"] = sum(p is None for p, _ in values)
    return out


def _mentions(groups: Sequence[KindRows], variant: VqaVariant) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for g in groups:
        out[f"{g.kind.score_key}_f1"] = _mean([f1 for f1, _ in g.values])
        out[f"{g.kind.score_key}_jaccard"] = _mean([j for _, j in g.values])
        out[g.kind.count_key] = len(g.rows)
    return out


def _types(groups: Sequence[KindRows], variant: VqaVariant) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for g in groups:
        k = g.kind.score_key
        truth, pred = [t for t, _ in g.values], [p for _, p in g.values]
        out[f"{k}_uf1"], out[f"{k}_uar"] = class_scores(truth, pred)
        out[f"{k}_accuracy"] = _mean([float(p == t) for t, p in g.values])
        out[g.kind.count_key] = len(g.rows)
    return out


SCORINGS: dict[str, Scoring] = {
    "uf1_uar": Scoring(_pair, _uf1_uar, "UF1/UAR over the ground-truth classes (+ labels parsed from sentences)"),
    "text": Scoring(_pair, _text, "BLEU and ROUGE pooled over the rows of every kind that names it"),
    "accuracy": Scoring(_correct, _share("acc"), "share of rows answered exactly"),
    "exact": Scoring(_correct, _share("exact"), "share of rows answered exactly"),
    "au_set": Scoring(_au_set_f1, _share("f1"), "mean set F1 of the comma-separated AU names"),
    "count": Scoring(_count, _counts, "MAE/RMSE of the first number of the answer"),
    "au_mentions": Scoring(_au_mentions, _mentions, "set F1 and Jaccard of the FACS names mentioned"),
    "event_type": Scoring(_event_type, _types, "UF1/UAR/accuracy of micro vs macro"),
}  # fmt: skip


def _row_values(
    kind: QuestionKind, rows: Sequence[AlignedRow]
) -> tuple[dict[str, list[Any]], list[str | None]]:
    """Every scoring's per-row values for rows of one kind, and each row's problem (the first scoring that
    found one names it)."""
    values: dict[str, list[Any]] = {}
    problems: list[str | None] = [None] * len(rows)
    for name in kind.scoring:
        scored = [SCORINGS[name].row(r, kind) for r in rows]
        values[name] = [s.value for s in scored]
        problems = [old or s.problem for old, s in zip(problems, scored, strict=True)]
    return values, problems


def _by_kind(rows: Sequence[AlignedRow]) -> dict[str, list[AlignedRow]]:
    by_kind: dict[str, list[AlignedRow]] = {}
    for r in rows:
        by_kind.setdefault(r.qtype, []).append(r)
    return by_kind


def score_kinds(
    rows: Sequence[AlignedRow], variant: VqaVariant | None = None, task: K.Task = "vqa"
) -> dict[str, Any]:
    """The scores of one split: every scoring of the kinds present, plus the keys (``None`` scores, zero
    counts) of the task's other kinds; ``n_invalid`` and ``n_invalid_<kind>`` count the empty,
    unparseable and off-vocabulary answers (scored wrong). Raises ``ValueError`` for a ground truth a
    scoring cannot read (a count that is no number)."""
    variant = variant or VqaVariant()
    by_kind = _by_kind(rows)
    kinds = [k for k in K.KINDS.values() if k.task == task or k.name in by_kind]
    values: dict[tuple[str, str], list[Any]] = {}
    result: dict[str, Any] = {}
    n_invalid = 0
    for kind in kinds:
        kind_values, problems = _row_values(kind, by_kind.get(kind.name, []))
        values.update({(kind.name, name): v for name, v in kind_values.items()})
        result[f"n_invalid_{kind.count_key.removeprefix('n_')}"] = sum(p is not None for p in problems)
        n_invalid += sum(p is not None for p in problems)
    for name, scoring in SCORINGS.items():
        groups = [
            KindRows(k, by_kind.get(k.name, []), values[(k.name, name)]) for k in kinds if name in k.scoring
        ]
        if groups:
            result.update(scoring.aggregate(groups, variant))
    result["n_invalid"] = n_invalid
    return result


def invalid_answers(rows: Sequence[AlignedRow]) -> dict[str, dict[str, Any]]:
    """Per kind with any: ``{"n_invalid", "first_ids", "reasons"}`` of its empty, unparseable or
    off-vocabulary answers (the first ids in row order)."""
    out: dict[str, dict[str, Any]] = {}
    for name, subset in _by_kind(rows).items():
        _, problems = _row_values(K.KINDS[name], subset)  # type: ignore[index]
        bad = [(r.video_id, p) for r, p in zip(subset, problems, strict=True) if p]
        if bad:
            reasons: dict[str, int] = {}
            for _, p in bad:
                reasons[p] = reasons.get(p, 0) + 1
            ids = [v for v, _ in bad[:INVALID_IDS_SHOWN]]
            out[name] = {"n_invalid": len(bad), "first_ids": ids, "reasons": reasons}
    return out


def invalid_lines(invalid: dict[str, dict[str, Any]]) -> list[str]:
    """One line per kind of :func:`invalid_answers`, for the problems list and the console."""
    lines = []
    for kind, summary in invalid.items():
        reasons = ", ".join(f"{n} {why}" for why, n in summary["reasons"].items())
        more = " ..." if summary["n_invalid"] > len(summary["first_ids"]) else ""
        lines.append(
            f"{kind}: {summary['n_invalid']} invalid answer(s) ({reasons}) scored as wrong: "
            f"{', '.join(summary['first_ids'])}{more}"
        )
    return lines
