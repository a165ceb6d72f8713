"""ME-VQA metrics (SPEC section 5): UF1 and UAR for the coarse and fine questions, BLEU and ROUGE.

Definitions, fixed here because no official scorer is public:

- Answers are compared after ``strip().lower()``. The classes of a question are the answers present in
  the ground truth. A prediction that is not one of those classes (an invalid label, a free sentence, a
  missing row) is wrong for its true class: it is never dropped and never adds a class.
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
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

from megc_vqa.metrics import scoring
from megc_vqa.qa.kinds import ALL_FINE_LABELS, CLASSIFICATION_KINDS, KINDS, QuestionKind
from megc_vqa.qa.templates import QuestionType, classify_question

log = logging.getLogger(__name__)

BleuVariant = Literal["sentence", "corpus"]
RougeVariant = Literal["rouge1_recall", "rouge1_f1", "rougeL_f1"]
RowsVariant = Literal["all", "open"]
BLEU_VARIANTS: tuple[str, ...] = ("sentence", "corpus")
ROUGE_VARIANTS: tuple[str, ...] = ("rouge1_recall", "rouge1_f1", "rougeL_f1")
ROWS_VARIANTS: tuple[str, ...] = ("all", "open")

# Rows whose answer is one label out of a closed set (the kinds registry says which); "open" text
# metrics skip them.
CLASSIFICATION_TYPES: frozenset[str] = CLASSIFICATION_KINDS
# Stands in for any prediction that is not a ground-truth class; it is never passed as a label.
INVALID = "<invalid>"
SPLITS: tuple[str, ...] = ("overall", "samm", "casme3")
_DATASET_PREFIXES: tuple[tuple[str, str], ...] = (("samm_test", "samm"), ("casme3_test", "casme3"))
FINE_VOCABULARY: frozenset[str] = frozenset(ALL_FINE_LABELS)


@dataclass(frozen=True)
class VqaVariant:
    """Which BLEU/ROUGE variant and which rows the text metrics cover. The default is variant (a)."""

    bleu: BleuVariant = "sentence"
    rouge: RougeVariant = "rouge1_recall"
    rows: RowsVariant = "all"

    def __post_init__(self) -> None:
        for value, allowed in (
            (self.bleu, BLEU_VARIANTS),
            (self.rouge, ROUGE_VARIANTS),
            (self.rows, ROWS_VARIANTS),
        ):
            if value not in allowed:
                raise ValueError(f"unknown variant {value!r}; choose one of {', '.join(allowed)}")

    def describe(self) -> dict[str, str]:
        bleu = {
            "sentence": "mean NLTK sentence BLEU-4, smoothing method1, lower-cased whitespace tokens",
            "corpus": "sacrebleu corpus BLEU-4, no smoothing, lower-cased, 13a tokens",
        }[self.bleu]
        rouge = {
            "rouge1_recall": "mean rouge-score ROUGE-1 recall, Porter stemmer",
            "rouge1_f1": "mean rouge-score ROUGE-1 F1, Porter stemmer",
            "rougeL_f1": "mean rouge-score ROUGE-L F1, Porter stemmer",
        }[self.rouge]
        rows = {"all": "all QA rows", "open": "open rows only (no coarse/fine/yes-no/left-right)"}[self.rows]
        return {**asdict(self), "bleu_desc": bleu, "rouge_desc": rouge, "rows_desc": rows}


def normalise_answer(answer: object) -> str:
    """``strip().lower()``; ``None`` (a missing prediction) becomes ``""``.

    >>> normalise_answer("  Negative ")
    'negative'
    """
    return "" if answer is None else str(answer).strip().lower()


def _with_invalid(y_true: Sequence[str], y_pred: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    if len(y_true) != len(y_pred):
        raise ValueError(f"{len(y_true)} ground-truth labels but {len(y_pred)} predictions")
    truth = [normalise_answer(t) for t in y_true]
    classes = sorted(set(truth))
    allowed = set(classes)
    pred = [p if p in allowed else INVALID for p in (normalise_answer(p) for p in y_pred)]
    return truth, pred, classes


def class_scores(y_true: Sequence[str], y_pred: Sequence[str]) -> tuple[float | None, float | None]:
    """(UF1, UAR) in one scikit-learn call; ``(None, None)`` with no rows.

    >>> class_scores(["negative", "negative", "positive"], ["negative", "happy", "positive"])
    (0.8333333333333333, 0.75)
    """
    if not y_true:
        return None, None
    from sklearn.metrics import precision_recall_fscore_support

    truth, pred, classes = _with_invalid(y_true, y_pred)
    _, recall, f1, _ = precision_recall_fscore_support(
        truth, pred, labels=classes, average=None, zero_division=0
    )
    return float(sum(f1) / len(classes)), float(sum(recall) / len(classes))


def unweighted_f1(y_true: Sequence[str], y_pred: Sequence[str]) -> float | None:
    """UF1: mean over ground-truth classes of one-vs-rest F1; ``None`` with no rows.

    >>> unweighted_f1(["negative", "negative", "positive"], ["negative", "Negative.", "negative"])
    0.25
    """
    return class_scores(y_true, y_pred)[0]


def unweighted_recall(y_true: Sequence[str], y_pred: Sequence[str]) -> float | None:
    """UAR: mean over ground-truth classes of recall; ``None`` with no rows.

    >>> unweighted_recall(["negative", "negative", "positive"], ["negative", "surprise", "positive"])
    0.75
    """
    return class_scores(y_true, y_pred)[1]


def sentence_bleu_mean(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """Mean NLTK sentence BLEU-4 (smoothing method1, lower-cased whitespace tokens); 0 for an empty answer.

    >>> round(sentence_bleu_mean(["the lips part a little"], ["The lips part a little"]), 6)
    1.0
    >>> sentence_bleu_mean(["negative"], [""])
    0.0
    """
    if not references:
        return None
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    smoothing = SmoothingFunction().method1
    total = 0.0
    for ref, hyp in zip(references, hypotheses, strict=True):
        hyp_tokens = normalise_answer(hyp).split()
        if not hyp_tokens:
            continue  # nltk returns 0 here too, but says so with a warning per row
        total += sentence_bleu(
            [str(ref).lower().split()], hyp_tokens, weights=(0.25,) * 4, smoothing_function=smoothing
        )
    return total / len(references)


def corpus_bleu(references: Sequence[str], hypotheses: Sequence[str]) -> float | None:
    """sacrebleu corpus BLEU-4 without smoothing, lower-cased, scaled to [0, 1]."""
    if not references:
        return None
    import sacrebleu

    hyps = ["" if h is None else str(h) for h in hypotheses]
    score = sacrebleu.corpus_bleu(hyps, [list(map(str, references))], smooth_method="none", lowercase=True)
    return min(1.0, max(0.0, score.score / 100.0))  # sacrebleu can print 100.00000000000004


def rouge_mean(
    references: Sequence[str], hypotheses: Sequence[str], variant: RougeVariant = "rouge1_recall"
) -> float | None:
    """Mean rouge-score ROUGE over rows (stemming on): ROUGE-1 recall by default.

    >>> rouge_mean(["lips part"], ["the lips parted"])
    1.0
    """
    if not references:
        return None
    from rouge_score.rouge_scorer import RougeScorer

    kind, field = {
        "rouge1_recall": ("rouge1", "recall"),
        "rouge1_f1": ("rouge1", "fmeasure"),
        "rougeL_f1": ("rougeL", "fmeasure"),
    }[variant]
    scorer = RougeScorer([kind], use_stemmer=True)
    total = 0.0
    for ref, hyp in zip(references, hypotheses, strict=True):
        total += getattr(scorer.score(str(ref), "" if hyp is None else str(hyp))[kind], field)
    return total / len(references)


def au_set(answer: object) -> frozenset[str]:
    """The AU names of an AU-list answer: ``"Brow lowerer, lid tightener"`` -> {brow lowerer, lid tightener}.

    >>> sorted(au_set(" Brow lowerer, lid tightener."))
    ['brow lowerer', 'lid tightener']
    """
    text = normalise_answer(answer).rstrip(".")
    return frozenset(p.strip() for p in text.split(",") if p.strip())


def set_f1(reference: Iterable[str], prediction: Iterable[str]) -> float:
    """2|A∩B|/(|A|+|B|) of two sets; 1.0 when both are empty.

    >>> set_f1({"a", "b"}, {"b", "c"})
    0.5
    """
    a, b = set(reference), set(prediction)
    return 1.0 if not a and not b else 2 * len(a & b) / (len(a) + len(b))


def au_set_f1(references: Sequence[str], predictions: Sequence[str | None]) -> float | None:
    """Mean per-row set F1 of AU-list answers (see :func:`set_f1`); ``None`` with no rows.

    >>> au_set_f1(["brow lowerer, lid tightener"], ["lid tightener"])
    0.6666666666666666
    """
    if not references:
        return None
    scores = [set_f1(au_set(r), au_set(p)) for r, p in zip(references, predictions, strict=True)]
    return sum(scores) / len(scores)


def accuracy(rows: Sequence[AlignedRow]) -> float | None:
    """Share of rows answered exactly (after ``strip().lower()``); ``None`` with no rows."""
    return sum(r.correct for r in rows) / len(rows) if rows else None


@lru_cache(maxsize=64)
def _label_after(phrase: str) -> re.Pattern[str]:
    return re.compile(phrase + r"\s+(?:is|:)\s*:?\s*([a-z]+)")


def extract_label(
    answer: object, kind: str | QuestionKind, vocabulary: Iterable[str] | None = None
) -> str | None:
    """Pull a label of a label kind out of a free answer, or ``None`` when there is no single one.

    Tried in order: the bare answer; the word after the kind's ``phrase`` ("coarse expression class
    is"); the only vocabulary word in the answer (``vocabulary`` plus the kind's own). Labels are compared
    as the kind spells them (fine: happy -> happiness).

    >>> extract_label("The coarse expression class is Negative.", "coarse")
    'negative'
    >>> extract_label("It looks like happy to me", "fine")
    'happiness'
    >>> extract_label("positive or negative", "coarse") is None
    True
    """
    spec = KINDS[kind] if isinstance(kind, str) else kind  # type: ignore[index]
    norm = spec.spell
    vocab = {norm(v) for v in (*(vocabulary or ()), *spec.vocabulary)}
    text = normalise_answer(answer)
    bare = norm(text.strip(" .!\"'`"))
    if bare in vocab:
        return bare
    m = _label_after(spec.phrase).search(text) if spec.phrase else None
    if m and norm(m.group(1)) in vocab:
        return norm(m.group(1))
    found = {norm(word) for word in re.findall(r"[a-z]+", text)} & vocab
    return found.pop() if len(found) == 1 else None


@dataclass(frozen=True)
class AlignedRow:
    """A ground-truth row with its prediction; ``prediction`` is ``None`` when the row was not answered."""

    video_id: str
    dataset: str
    question: str
    qtype: QuestionType
    reference: str
    prediction: str | None

    @property
    def correct(self) -> bool:
        return self.prediction is not None and normalise_answer(self.prediction) == normalise_answer(
            self.reference
        )


def dataset_of(row: Mapping[str, Any]) -> str:
    """``samm`` / ``casme3`` from a ``dataset`` field or the ``video_id`` prefix, else ``other``.

    >>> dataset_of({"video_id": "casme3_test_CAS-1_1"})
    'casme3'
    """
    if row.get("dataset"):
        return str(row["dataset"]).strip().lower()
    vid = str(row.get("video_id", ""))
    for prefix, name in _DATASET_PREFIXES:
        if vid.startswith(prefix + "_"):
            return name
    return "other"


def _row_id(row: Mapping[str, Any]) -> str | None:
    value = row.get("video_id", row.get("id"))
    return None if value is None else str(value)


def ground_truth_id(gt: Mapping[str, Any], index: int, seen: Container[str] = ()) -> str:
    """The id of ground-truth row ``index``; ``ValueError`` unless it has an id (not in ``seen``), a
    question and a non-empty answer (what :func:`align` scores)."""
    vid = _row_id(gt)
    if (
        vid is None
        or "question" not in gt
        or not isinstance(gt.get("answer"), str)
        or not gt["answer"].strip()
    ):
        raise ValueError(f"ground-truth row {index} ({vid}) needs video_id, question and a non-empty answer")
    if vid in seen:
        raise ValueError(f"ground-truth row {index}: duplicated video_id {vid}")
    return vid


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


def score_rows(rows: Sequence[AlignedRow], variant: VqaVariant = VqaVariant()) -> dict[str, Any]:
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
    rows: Sequence[AlignedRow], variant: VqaVariant = VqaVariant(), problems: Sequence[str] = ()
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
    variant: VqaVariant = VqaVariant(),
) -> dict[str, Any]:
    """Score prediction rows against ground-truth rows: ``{"overall", "samm", "casme3", "variant",
    "problems"}``, each split with ``uf1_coarse, uar_coarse, uf1_fine, uar_fine, bleu, rouge, n_rows``
    (plus the ``*_parsed`` scores and counts). Overall is computed on the pooled rows."""
    rows, problems = align(predictions, ground_truth)
    return score_aligned(rows, variant, problems)
