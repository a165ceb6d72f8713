"""ME-VQA metrics (SPEC section 5): UF1 and UAR for the coarse and fine questions, BLEU and ROUGE.

Definitions, fixed here because no official scorer is public:

- Answers are compared after ``strip().lower()``. The classes of a question are the answers present in
  the ground truth. A prediction that is not one of those classes (an invalid label, a free sentence, a
  missing row) is wrong for its true class: it is never dropped and never adds a class.

  >>> normalise_answer("  Negative "), extract_label("The coarse expression class is Negative.", "coarse")
  ('negative', 'negative')

- UF1 = unweighted mean over classes of per-class one-vs-rest F1; UAR = unweighted mean of per-class
  recall (scikit-learn, ``labels=`` the ground-truth classes).
- Default text metrics (variant (a) of SPEC section 5): BLEU = mean over rows of NLTK ``sentence_bleu``
  (BLEU-4, smoothing method1, lower-cased whitespace tokens, 0 for an empty answer); ROUGE = mean over rows
  of rouge-score ROUGE-1 recall with stemming. Alternatives: corpus BLEU-4 without smoothing (sacrebleu),
  ROUGE-1 F1, ROUGE-L F1, and scoring text metrics on the open (non-classification) rows only.
- Splits: ``overall`` pools all rows; ``samm`` / ``casme3`` come from a ``dataset`` field or the
  ``video_id`` prefix ``samm_test`` / ``casme3_test``.
- Per-kind scores of the other training questions: ``au_f1`` = mean over AU-list rows of the set F1
  2|A∩B|/(|A|+|B|) of the AU names (split at ``", "``, lower-cased; an empty or missing answer scores 0);
  ``presence_acc`` / ``side_acc`` = accuracy of the yes/no and left/right rows; ``joint_exact`` = share
  of joint rows answered exactly (after ``strip().lower()``).
- The ``*_parsed`` scores first pull a label out of a free answer (``"The coarse expression class is
  Negative."`` -> ``negative``), for models that do not answer with bare labels.
- Which rows enter which score comes from the kinds registry (``megc_vqa.qa.kinds``: each kind's
  ``scoring``) through the one table ``megc_vqa.metrics.scoring.SCORINGS``; every split also says how many
  answers were empty, unparseable or off-vocabulary (``n_invalid``, and per kind ``invalid[kind]`` with
  the first row ids): they are scored as wrong, never dropped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from megc_vqa.metrics import scoring
from megc_vqa.metrics.answers import (  # noqa: F401  (re-exported: part of this module's API)
    _DATASET_PREFIXES,
    BLEU_VARIANTS,
    CLASSIFICATION_TYPES,
    FINE_VOCABULARY,
    INVALID,
    ROUGE_VARIANTS,
    ROWS_VARIANTS,
    SPLITS,
    AlignedRow,
    BleuVariant,
    RougeVariant,
    RowsVariant,
    VqaVariant,
    _label_after,
    _row_id,
    _with_invalid,
    accuracy,
    au_set,
    au_set_f1,
    class_scores,
    corpus_bleu,
    dataset_of,
    extract_label,
    ground_truth_id,
    normalise_answer,
    rouge_mean,
    sentence_bleu_mean,
    set_f1,
    unweighted_f1,
    unweighted_recall,
)
from megc_vqa.qa.templates import classify_question

log = logging.getLogger(__name__)

DEFAULT_VARIANT = VqaVariant()  # variant (a) of SPEC section 5


def align(
    predictions: Iterable[Mapping[str, Any]],
    ground_truth: Iterable[Mapping[str, Any]],
    *,
    missing: Literal["wrong", "skip"] = "wrong",
) -> tuple[list[AlignedRow], list[str]]:
    """Pair ground-truth rows with predictions by ``video_id`` (``id`` accepted for training files).

    Returns the rows in ground-truth order and the problems found: missing predictions (kept and scored
    wrong, or with ``missing="skip"`` left out: the predictions answer a subset, scored on that subset),
    duplicated ids (first kept), predictions with no ground truth (ignored). A ``null`` answer is an empty
    one. Raises ``ValueError`` for a ground-truth row without id, question or answer.
    """
    problems: list[str] = []
    by_id: dict[str, Mapping[str, Any]] = {}
    for index, row in enumerate(predictions, start=1):
        vid = _row_id(row)
        if vid is None:
            problems.append(f"prediction row {index} has no video_id: ignored")
        elif vid in by_id:
            problems.append(f"duplicated prediction {vid} (row {index}): the first one is scored")
        else:
            by_id[vid] = row
    rows: list[AlignedRow] = []
    seen: set[str] = set()
    skipped: list[str] = []
    for index, gt in enumerate(ground_truth, start=1):
        vid = ground_truth_id(gt, index, seen)
        seen.add(vid)
        pred = by_id.get(vid)
        answer = None
        if pred is None and missing == "skip":
            skipped.append(vid)
            continue
        if pred is None:
            problems.append(f"missing prediction for {vid}: scored as wrong")
        else:
            raw = pred.get("answer")
            answer = raw if isinstance(raw, str) else ("" if raw is None else str(raw))  # null: empty
            if not answer.strip():
                problems.append(f"empty answer for {vid}: scored as wrong")
        rows.append(
            AlignedRow(
                vid,
                dataset_of(gt),
                str(gt["question"]),
                classify_question(str(gt["question"])),
                str(gt["answer"]),
                answer,
            )
        )
    if skipped:
        problems.append(
            f"predictions for a subset: {len(skipped)} of {len(seen)} ground-truth questions have no "
            f"prediction and are not scored ({', '.join(skipped[:5])}{' ...' if len(skipped) > 5 else ''}); "
            f"scored on the {len(rows)} answered"
        )
    extra = [vid for vid in by_id if vid not in seen]
    if extra:
        problems.append(
            f"{len(extra)} prediction(s) with no ground truth ignored: {', '.join(extra[:10])}"
            + (" ..." if len(extra) > 10 else "")
        )
    for p in problems:
        log.warning(p)
    return rows, problems


def score_rows(rows: Sequence[AlignedRow], variant: VqaVariant = DEFAULT_VARIANT) -> dict[str, Any]:
    """All VQA scores of one split, each kind scored as its registry entry says
    (:func:`megc_vqa.metrics.scoring.score_kinds`). Class scores are ``None`` when the split has no such
    question."""
    result = scoring.score_kinds(rows, variant, task="vqa")
    result["n_rows"] = len(rows)
    result["n_missing"] = sum(1 for r in rows if r.prediction is None or not r.prediction.strip())
    result["exact_match"] = accuracy(rows)
    return result


def split_rows(rows: Sequence[AlignedRow]) -> dict[str, list[AlignedRow]]:
    """``overall``, ``samm``, ``casme3`` (always present) and any other dataset found."""
    splits: dict[str, list[AlignedRow]] = {name: [] for name in SPLITS}
    splits["overall"] = list(rows)
    for r in rows:
        splits.setdefault(r.dataset, []).append(r)
    return splits


def score_aligned(
    rows: Sequence[AlignedRow], variant: VqaVariant = DEFAULT_VARIANT, problems: Sequence[str] = ()
) -> dict[str, Any]:
    """Scores of already aligned rows, per split, with the variant description and the problems."""
    out: dict[str, Any] = {name: score_rows(subset, variant) for name, subset in split_rows(rows).items()}
    out["variant"] = variant.describe()
    out["invalid_answers"] = scoring.invalid_answers(rows)
    out["problems"] = [*problems, *scoring.invalid_lines(out["invalid_answers"])]
    return out


def score_vqa(
    predictions: Iterable[Mapping[str, Any]],
    ground_truth: Iterable[Mapping[str, Any]],
    variant: VqaVariant = DEFAULT_VARIANT,
) -> dict[str, Any]:
    """Score prediction rows against ground-truth rows: ``{"overall", "samm", "casme3", "variant",
    "problems"}``, each split with ``uf1_coarse, uar_coarse, uf1_fine, uar_fine, bleu, rouge, n_rows``
    (plus the ``*_parsed`` scores and counts). Overall is computed on the pooled rows."""
    rows, problems = align(predictions, ground_truth)
    return score_aligned(rows, variant, problems)
