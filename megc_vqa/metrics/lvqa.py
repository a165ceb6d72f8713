"""ME-LVQA metrics (MEGC2026 long-video QA), as described by a 2026 team's evaluation code; the official
scorer is unpublished (SPEC section 4). That code, citing the organisers' paper, scores:

- event counts (all / micro / macro events): mean absolute error and root mean squared error of the integer
  (``count_total_*``, ``count_micro_*``, ``count_macro_*``). A bare integer is expected; the first integer
  or number word (zero..twenty) of a free answer is accepted; an answer without a number counts as 0.
- the distinct-AU answer: set F1 ``2|A & B| / (|A| + |B|)`` and Jaccard ``|A & B| / |A | B|`` between the
  predicted and reference AU sets, averaged over questions; two empty sets score 1. Reference answers are
  FACS names in prose (``"brow lowerer, upper lip raiser, dimpler"``): known FACS names are found in the text
  (longest first, so ``lip corner depressor`` is not also ``lip corner``); an answer naming none is split at
  commas, semicolons and "and".
- the expression type of the N-th event: UF1 and UAR over the classes ``micro-expression`` /
  ``macro-expression`` present in the ground truth; an answer naming neither (or both) is wrong.

Spotting (IoU >= 0.5) and STRS are scored as in MEGC2025 by ``megc_vqa.metrics.strs``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from megc_vqa.errors import InputError
from megc_vqa.metrics import scoring
from megc_vqa.metrics.answers import (  # noqa: F401  (re-exported: part of this module's API)
    _FACS_NAMES,
    _FACS_RE,
    _NUMBER_RE,
    _NUMBER_WORDS,
    jaccard,
    normalise_event_type,
    parse_au_set,
    parse_count,
)
from megc_vqa.metrics.vqa import AlignedRow, align, split_rows
from megc_vqa.qa.kinds import COUNT_KINDS, KINDS

METRIC_NOTE = (
    "ME-LVQA scored as described by a 2026 team's evaluation code; the official scorer is unpublished: counts "
    "by MAE and RMSE (total, micro, macro), distinct AUs by set F1 and Jaccard, the N-th event's type by "
    "UF1/UAR over micro/macro"
)
COUNT_TYPES: tuple[str, ...] = COUNT_KINDS
COUNT_KEYS: dict[str, str] = {name: KINDS[name].score_key for name in COUNT_KINDS}
TYPE_CLASSES: tuple[str, ...] = ("micro-expression", "macro-expression")
# The question kinds ME-LVQA scores; a ground truth of none of them is not an ME-LVQA file.
LVQA_TYPES: frozenset[str] = frozenset(k.name for k in KINDS.values() if k.task == "lvqa")


def set_f1(predicted: Iterable[str], truth: Iterable[str]) -> float:
    """F1 of two sets; 1 when both are empty.

    >>> set_f1({"a", "b"}, {"b", "c"})
    0.5
    """
    p, t = set(predicted), set(truth)
    if not p and not t:
        return 1.0
    return 2 * len(p & t) / (len(p) + len(t))


def score_lvqa_rows(rows: Sequence[AlignedRow]) -> dict[str, Any]:
    """LVQA scores of one split, each kind scored as its registry entry says
    (:func:`megc_vqa.metrics.scoring.score_kinds`); a score is ``None`` when the split has no such question.

    >>> from megc_vqa.qa.templates import LVQA_COUNT_ALL
    >>> row = AlignedRow("v_1", "samm", LVQA_COUNT_ALL, "lvqa_count_all", "3", "two events")
    >>> scores = score_lvqa_rows([row])
    >>> scores["count_total_mae"], scores["n_count"], scores["type_uf1"]
    (1.0, 1, None)
    """
    result = scoring.score_kinds(rows, task="lvqa")
    result["n_rows"] = len(rows)
    result["n_missing"] = sum(1 for r in rows if not (r.prediction or "").strip())
    return result


def score_lvqa(
    predictions: Iterable[Mapping[str, Any]], ground_truth: Iterable[Mapping[str, Any]]
) -> dict[str, Any]:
    """``{"overall", "samm", "casme3", "note", "official_scorer_published", "problems"}``; overall on the
    pooled rows (keys ``count_{total,micro,macro}_{mae,rmse}``, ``au_f1``, ``au_jaccard``, ``type_uf1``,
    ``type_uar``, plus counts of rows)."""
    rows, problems = align(predictions, ground_truth)
    return score_lvqa_aligned(rows, problems)


def score_lvqa_aligned(rows: Sequence[AlignedRow], problems: Sequence[str] = ()) -> dict[str, Any]:
    """:func:`score_lvqa` of already aligned rows (``problems``: what aligning them found)."""
    if rows and not any(KINDS[r.qtype].task == "lvqa" for r in rows):  # else every score is null, silently
        kinds = sorted({r.qtype for r in rows} - {"unknown"})
        seen = "questions of no known form"
        if kinds:
            seen = f"ME-VQA questions ({', '.join(kinds[:4])}): score them with `score.py vqa`"
        raise InputError(
            f"none of the {len(rows)} ground-truth rows asks an ME-LVQA question (event counts, the AUs, an "
            f"event's type); they are {seen}"
        )
    out: dict[str, Any] = {name: score_lvqa_rows(subset) for name, subset in split_rows(rows).items()}
    out["official_scorer_published"] = False
    out["note"] = METRIC_NOTE
    out["invalid_answers"] = scoring.invalid_answers(rows)
    out["problems"] = [*problems, *scoring.invalid_lines(out["invalid_answers"])]
    return out
