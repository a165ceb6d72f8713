"""One answer against its reference: normalising, parsing and the per-row comparisons every scorer uses.

The primitives of the ME-VQA metrics (:mod:`.vqa`: labels, BLEU/ROUGE, AU sets, aligned rows) and of the
ME-LVQA metrics (:mod:`.lvqa`: counts, FACS names, event types). Their definitions are documented in those
modules, which re-export them; :mod:`.scoring` (the table of what each question kind is scored by) builds on
this module alone, so the scorers and the table do not import each other.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any, Literal

from megc_vqa.labels import AU_NAMES
from megc_vqa.qa.kinds import ALL_FINE_LABELS, CLASSIFICATION_KINDS, KINDS, QuestionKind
from megc_vqa.qa.templates import QuestionType

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


# Known FACS names, longest first: "lip corner depressor" must not also match a shorter name inside it.
_FACS_NAMES = sorted({n.lower() for n in AU_NAMES.values()}, key=len, reverse=True)
_FACS_RE = re.compile(r"\b(?:" + "|".join(re.escape(n) for n in _FACS_NAMES) + r")\b")
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
    """AU names of an answer: the known FACS names it mentions, else its comma/"and"-separated parts.

    >>> sorted(parse_au_set("Lip corner puller, cheek raiser and lips part."))
    ['cheek raiser', 'lip corner puller', 'lips part']
    >>> sorted(parse_au_set("The video shows the brow lowerer (AU4) and then a dimpler."))
    ['brow lowerer', 'dimpler']
    """
    text = re.sub(r"\s+", " ", normalise_answer(answer).replace("-", " "))
    known = frozenset(_FACS_RE.findall(text))
    if known:
        return known
    parts = re.split(r",|;|\band\b", text.rstrip("."))
    return frozenset(p.strip(" .") for p in parts if p.strip(" ."))


def jaccard(predicted: Iterable[str], truth: Iterable[str]) -> float:
    """|A & B| / |A | B|; 1 when both are empty.

    >>> jaccard({"a", "b"}, {"b", "c"})
    0.3333333333333333
    """
    p, t = set(predicted), set(truth)
    return 1.0 if not p | t else len(p & t) / len(p | t)


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
