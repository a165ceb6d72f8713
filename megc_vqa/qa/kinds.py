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
- ``scoring``: the metrics the row enters (``uf1_uar``: the leaderboard's UF1/UAR; ``text``: BLEU and
  ROUGE; ``accuracy``/``count``/``au_set``: the ME-LVQA metrics).

The 2026 v2 ``analysis`` kind is free-form: trained as written, answered free-form, scored by BLEU/ROUGE.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from megc_vqa.labels import AU_NAMES_IN_ORDER, COARSE_CLASSES, TRAINING_FINE_LABELS
from megc_vqa.qa import templates as T
from megc_vqa.qa.templates import QuestionType

AnswerForm = Literal["label", "au_list", "joint", "count", "free"]
Scoring = Literal["uf1_uar", "text", "accuracy", "count", "au_set"]

# The label sets (TRAINING_FINE_LABELS: the fine labels of the official MEGC2025 training file, SPEC
# section 3; AU_NAMES_IN_ORDER) are defined in megc_vqa.labels; the test fine vocabulary was never published.
MAX_COUNT = 99  # the largest event count a count answer may give


@dataclass(frozen=True)
class QuestionKind:
    """One question kind; see the module docstring for the fields."""

    name: QuestionType
    form: AnswerForm
    max_new_tokens: int | None
    fallback: str | None
    labels: tuple[str, ...] = ()
    scoring: tuple[Scoring, ...] = ("text",)

    @property
    def classification(self) -> bool:
        """Whether the answer is one label of a closed set (the ``open`` text metrics skip these rows)."""
        return self.form == "label"

    @property
    def free(self) -> bool:
        """Free-form answers: no grammar, no normalisation beyond whitespace."""
        return self.form == "free"


def _kinds(*kinds: QuestionKind) -> dict[QuestionType, QuestionKind]:
    return {k.name: k for k in kinds}


KINDS: dict[QuestionType, QuestionKind] = _kinds(
    # the largest composite class in every source dataset
    QuestionKind("coarse", "label", 12, "negative", COARSE_CLASSES, ("uf1_uar", "text")),
    # the most frequent negative fine label of CASME II and SAMM
    QuestionKind("fine", "label", 12, "disgust", TRAINING_FINE_LABELS, ("uf1_uar", "text")),
    QuestionKind("au", "au_list", 64, None, AU_NAMES_IN_ORDER),
    QuestionKind("side", "label", 8, "left", T.SIDES),
    QuestionKind("presence", "label", 8, "yes", T.YES_NO),
    QuestionKind("joint", "joint", 160, None, AU_NAMES_IN_ORDER),
    QuestionKind("analysis", "free", None, None),
    QuestionKind("lvqa_count_all", "count", 8, "1", scoring=("count",)),
    QuestionKind("lvqa_count_micro", "count", 8, "1", scoring=("count",)),
    QuestionKind("lvqa_count_macro", "count", 8, "0", scoring=("count",)),
    # brow lowerer (AU4): the most frequent AU of the ME datasets (the micro prior of spotting.lvqa)
    QuestionKind("lvqa_aus", "au_list", 96, "brow lowerer", AU_NAMES_IN_ORDER, ("au_set",)),
    # macro events outnumber micro ones in every long-video dataset
    QuestionKind("lvqa_event_type", "label", 12, "macro-expression", T.EXPRESSION_TYPES, ("accuracy",)),
    QuestionKind("unknown", "free", None, None),
)
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
