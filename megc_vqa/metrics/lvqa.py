"""ME-LVQA metrics (MEGC2026 long-video QA). PROVISIONAL: the organisers published neither answer formats
nor metrics (SPEC section 4); these are the project's choices and every result says so.

- Count questions (all / micro / macro events): exact-match accuracy and mean absolute error of the
  integer. A bare integer is expected; the first integer or number word (zero..twenty) of a free answer
  is accepted. An answer without a number is wrong and counts as 0 events for the error.
- Distinct-AU question: set F1 between predicted and true AU names (comma- or "and"-separated, lower
  case); two empty sets score 1.
- Event-type questions: accuracy after mapping "micro"/"macro" wordings onto ``micro-expression`` /
  ``macro-expression``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from megc_vqa.metrics.vqa import AlignedRow, align, normalise_answer, split_rows
from megc_vqa.qa.kinds import COUNT_KINDS

PROVISIONAL_NOTE = (
    "provisional: ME-LVQA answer formats and metrics were not published; counts scored by exact match and "
    "MAE, AU lists by set F1, event types by accuracy"
)
COUNT_TYPES: tuple[str, ...] = COUNT_KINDS
_NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
            "twenty",
        ]
    )
}
_NUMBER_RE = re.compile(r"-?\d+|\b(?:" + "|".join(_NUMBER_WORDS) + r")\b")


def parse_count(answer: object) -> int | None:
    """The event count in an answer, or ``None``.

    >>> parse_count("3"), parse_count("There are two events."), parse_count("many")
    (3, 2, None)
    """
    m = _NUMBER_RE.search(normalise_answer(answer))
    if not m:
        return None
    token = m.group(0)
    return _NUMBER_WORDS[token] if token in _NUMBER_WORDS else int(token)


def parse_au_set(answer: object) -> frozenset[str]:
    """AU names of a list answer.

    >>> sorted(parse_au_set("Lip corner puller, cheek raiser and lips part."))
    ['cheek raiser', 'lip corner puller', 'lips part']
    """
    text = normalise_answer(answer).rstrip(".")
    parts = re.split(r",|;|\band\b", text)
    return frozenset(p.strip(" .") for p in parts if p.strip(" ."))


def set_f1(predicted: Iterable[str], truth: Iterable[str]) -> float:
    """F1 of two sets; 1 when both are empty.

    >>> set_f1({"a", "b"}, {"b", "c"})
    0.5
    """
    p, t = set(predicted), set(truth)
    if not p and not t:
        return 1.0
    return 2 * len(p & t) / (len(p) + len(t))


def normalise_event_type(answer: object) -> str | None:
    """``micro-expression`` / ``macro-expression`` from a wording such as ``Micro expression.``.

    >>> normalise_event_type("Macro."), normalise_event_type("both") is None
    ('macro-expression', True)
    """
    text = normalise_answer(answer)
    micro, macro = "micro" in text, "macro" in text
    if micro == macro:
        return None
    return "micro-expression" if micro else "macro-expression"


def score_lvqa_rows(rows: Sequence[AlignedRow]) -> dict[str, Any]:
    """LVQA scores of one split; a score is ``None`` when the split has no such question."""
    counts = [r for r in rows if r.qtype in COUNT_TYPES]
    true_counts = [parse_count(r.reference) for r in counts]
    if any(c is None for c in true_counts):
        bad = next(r.video_id for r, c in zip(counts, true_counts, strict=True) if c is None)
        raise ValueError(f"ground-truth count answer of {bad} is not a number")
    pred_counts = [parse_count(r.prediction) for r in counts]
    aus = [r for r in rows if r.qtype == "lvqa_aus"]
    events = [r for r in rows if r.qtype == "lvqa_event_type"]

    def mean(values: Sequence[float]) -> float | None:
        return sum(values) / len(values) if values else None

    result: dict[str, Any] = {
        "count_accuracy": mean([float(p == t) for p, t in zip(pred_counts, true_counts, strict=True)]),
        "count_mae": mean([abs((p or 0) - t) for p, t in zip(pred_counts, true_counts, strict=True)]),
        "n_count": len(counts),
        "n_count_invalid": sum(p is None for p in pred_counts),
        "au_set_f1": mean([set_f1(parse_au_set(r.prediction), parse_au_set(r.reference)) for r in aus]),
        "au_exact": mean([float(parse_au_set(r.prediction) == parse_au_set(r.reference)) for r in aus]),
        "n_aus": len(aus),
        "event_type_accuracy": mean(
            [float(normalise_event_type(r.prediction) == normalise_event_type(r.reference)) for r in events]
        ),
        "n_event_type": len(events),
        "n_rows": len(rows),
        "n_missing": sum(1 for r in rows if not (r.prediction or "").strip()),
    }
    for kind in COUNT_TYPES:
        subset = [(p, t) for r, p, t in zip(counts, pred_counts, true_counts, strict=True) if r.qtype == kind]
        result[f"{kind.removeprefix('lvqa_')}_accuracy"] = mean([float(p == t) for p, t in subset])
    return result


def score_lvqa(
    predictions: Iterable[Mapping[str, Any]], ground_truth: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """``{"overall", "samm", "casme3", "provisional", "note", "problems"}``; overall on the pooled rows."""
    rows, problems = align(predictions, ground_truth)
    out: dict[str, Any] = {name: score_lvqa_rows(subset) for name, subset in split_rows(rows).items()}
    out["provisional"] = True
    out["note"] = PROVISIONAL_NOTE
    out["problems"] = problems
    return out
