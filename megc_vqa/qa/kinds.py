"""The question kinds, defined once: every per-kind fact the project uses lives in ``KINDS``.

A question's text maps to its kind through ``templates.classify_question`` (``kind_of`` returns the
registry entry). Each entry says what an answer of that kind looks like and how it is handled:

- ``form``: the answer's grammar family. ``label``: one of ``labels``; ``au_list``: distinct known AU
  names joined by ``", "`` (one for the singular wording, two or more for the plural one, any number for
  LVQA); ``joint``: the joint template; ``count``: a bare integer; ``free``: free text, no grammar. The
  answering layer builds its automata (``megc_vqa.answering.grammar``) from ``form`` and ``labels``.
- ``max_new_tokens``: the decoding length bound (``None``: the engine's free-answer bound).
- ``fallback``: the fixed answer written when the model gives nothing usable; ``None`` where the fallback
  is built from the clip's other answers (AU list, joint, analysis).
- ``classification`` (``form == "label"``) and ``labels``: the closed label vocabulary (the fine labels
  of the MEGC2025 training file for ``fine``; a run may pass another).
- ``scoring``: the metrics the row enters, each a name in ``megc_vqa.metrics.scoring.SCORINGS`` (the one
  table that holds each scoring's per-row function and its aggregation): ``uf1_uar`` the leaderboard's
  UF1/UAR, ``text`` BLEU and ROUGE (pooled over every kind that names it), ``accuracy`` / ``exact`` the
  share answered exactly, ``au_set`` the AU-list set F1, and the ME-LVQA ones ``count`` (MAE/RMSE),
  ``au_mentions`` (set F1 and Jaccard of the FACS names an answer mentions) and ``event_type`` (UF1/UAR
  of micro/macro).
- ``key``: the kind's name in score keys (``uf1_<key>``, ``<key>_acc``, ``count_<key>_mae``); default
  its name. ``task``: ``vqa`` or ``lvqa``, the scorer whose tables always carry the kind's keys.
- ``run_vocabulary``: which field of the answering layer's ``AnswerVocabulary`` a run may swap in for
  ``labels`` (``coarse``, ``fine``, ``au_names``); ``known``: further answers a scorer accepts as labels
  (every dataset's fine labels); ``labels_published``: False where the organisers never published the
  test's label set (fine), so the validator accepts any bare lower-case word; ``phrase``: the words a free
  sentence puts before the label (``"The coarse expression class is ..."``), for the ``*_parsed`` scores;
  ``spelling``: a label normaliser for those scores (``happy`` -> ``happiness``).
- ``counts``: for a ``count`` kind, which spotted events it counts (``all``, ``micro``, ``macro``).

The 2026 v2 ``analysis`` kind is free-form: trained as written, answered free-form, scored by BLEU/ROUGE.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from megc_vqa.labels import (
    AU_NAMES_IN_ORDER,
    COARSE_CLASSES,
    FINE_DATASETS,
    KNOWN_FINE,
    TRAINING_FINE_LABELS,
    normalise_fine,
)
from megc_vqa.qa import templates as T
from megc_vqa.qa.templates import QuestionType

AnswerForm = Literal["label", "au_list", "joint", "count", "free"]
Scoring = Literal["uf1_uar", "text", "accuracy", "exact", "au_set", "count", "au_mentions", "event_type"]
Task = Literal["vqa", "lvqa"]
RunVocabulary = Literal["coarse", "fine", "au_names"]

# The label sets (TRAINING_FINE_LABELS: the fine labels of the official MEGC2025 training file, SPEC
# section 3; AU_NAMES_IN_ORDER) are defined in megc_vqa.labels; the test fine vocabulary was never published.
MAX_COUNT = 99  # the largest event count a count answer may give
# Every fine label any source dataset codes: a fine answer among them is a label, right or wrong.
ALL_FINE_LABELS: tuple[str, ...] = tuple(sorted(frozenset().union(*(KNOWN_FINE[d] for d in FINE_DATASETS))))


@dataclass(frozen=True)
class QuestionKind:
    """One question kind; see the module docstring for the fields."""

    name: QuestionType
    form: AnswerForm
    max_new_tokens: int | None
    fallback: str | None
    labels: tuple[str, ...] = ()
    scoring: tuple[Scoring, ...] = ("text",)
    key: str = ""
    task: Task = "vqa"
    run_vocabulary: RunVocabulary | None = None
    known: tuple[str, ...] = ()
    labels_published: bool = True
    phrase: str | None = None
    spelling: Callable[[str], str] | None = None
    counts: Literal["all", "micro", "macro"] | None = None

    @property
    def classification(self) -> bool:
        """Whether the answer is one label of a closed set (the ``open`` text metrics skip these rows;
        the answering layer may score the labels instead of generating them)."""
        return self.form == "label"

    @property
    def score_key(self) -> str:
        """The kind's name inside score keys (``uf1_coarse``, ``count_total_mae``)."""
        return self.key or self.name

    @property
    def count_key(self) -> str:
        """The key of the kind's row count in score tables (``n_coarse``, ``n_aus``, ``n_event_type``)."""
        return "n_" + self.name.removeprefix("lvqa_")

    @property
    def vocabulary(self) -> tuple[str, ...]:
        """Every answer a scorer takes as a label of this kind: ``labels`` then ``known``."""
        return tuple(dict.fromkeys((*self.labels, *self.known)))

    def spell(self, label: str) -> str:
        """A label as the ``*_parsed`` scores compare it (lower case, spelling fixed where the kind says)."""
        return self.spelling(label) if self.spelling else str(label).strip().lower()

    @property
    def free(self) -> bool:
        """Free-form answers: no grammar, no normalisation beyond whitespace."""
        return self.form == "free"


def _kinds(*kinds: QuestionKind) -> dict[QuestionType, QuestionKind]:
    return {k.name: k for k in kinds}


KINDS: dict[QuestionType, QuestionKind] = _kinds(
    # the largest composite class in every source dataset
    QuestionKind(
        "coarse", "label", 12, "negative", COARSE_CLASSES, ("uf1_uar", "text"), run_vocabulary="coarse",
        phrase=r"coarse(?:[- ]grained)? expression(?: class)?",
    ),
    # the most frequent negative fine label of CASME II and SAMM
    QuestionKind(
        "fine", "label", 12, "disgust", TRAINING_FINE_LABELS, ("uf1_uar", "text"), run_vocabulary="fine",
        known=ALL_FINE_LABELS, labels_published=False, phrase=r"fine[- ]grained expression(?: class)?",
        spelling=normalise_fine,
    ),
    QuestionKind("au", "au_list", 64, None, AU_NAMES_IN_ORDER, ("au_set", "text"), run_vocabulary="au_names"),
    QuestionKind("side", "label", 8, "left", T.SIDES, ("accuracy", "text")),
    QuestionKind("presence", "label", 8, "yes", T.YES_NO, ("accuracy", "text")),
    QuestionKind("joint", "joint", 160, None, AU_NAMES_IN_ORDER, ("exact", "text"), run_vocabulary="au_names"),
    QuestionKind("analysis", "free", None, None),
    QuestionKind("lvqa_count_all", "count", 8, "1", scoring=("count",), key="total", task="lvqa", counts="all"),
    QuestionKind(
        "lvqa_count_micro", "count", 8, "1", scoring=("count",), key="micro", task="lvqa", counts="micro"
    ),
    QuestionKind(
        "lvqa_count_macro", "count", 8, "0", scoring=("count",), key="macro", task="lvqa", counts="macro"
    ),
    # brow lowerer (AU4): the most frequent AU of the ME datasets (the micro prior of spotting.lvqa)
    QuestionKind(
        "lvqa_aus", "au_list", 96, "brow lowerer", AU_NAMES_IN_ORDER, ("au_mentions",), key="au", task="lvqa",
        run_vocabulary="au_names",
    ),
    # macro events outnumber micro ones in every long-video dataset
    QuestionKind(
        "lvqa_event_type", "label", 12, "macro-expression", T.EXPRESSION_TYPES, ("event_type",), key="type",
        task="lvqa",
    ),
    QuestionKind("unknown", "free", None, None),
)  # fmt: skip
# AU4 (+AU7): the commonest AUs of negative clips; AU-list and joint fallbacks start from these.
FALLBACK_AUS: tuple[str, ...] = ("brow lowerer", "lid tightener")
FREE_FALLBACK = "no answer"

CLASSIFICATION_KINDS: frozenset[str] = frozenset(k.name for k in KINDS.values() if k.classification)
COUNT_KINDS: tuple[str, ...] = tuple(k.name for k in KINDS.values() if k.form == "count")


def kind_of(question: str) -> QuestionKind:
    """The registry entry of a question's text (``unknown`` for wording no template matches)."""
    return KINDS[T.classify_question(question)]


def au_item_bounds(kind: QuestionType, plural: bool) -> tuple[int, int | None]:
    """``(min, max)`` AU names an AU-list answer of ``kind`` holds (``None``: no upper bound)."""
    if kind == "lvqa_aus":
        return 1, None
    return (2, None) if plural else (1, 1)
