"""The organisers' question and answer templates (SPEC sections 3 and 4), byte-exact, and a classifier
that tells which kind a question is.

Every other module builds or recognises questions through this file, so a template is written once.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

QuestionType = Literal[
    "coarse",
    "fine",
    "au",
    "side",
    "presence",
    "joint",
    "analysis",
    "lvqa_count_all",
    "lvqa_count_micro",
    "lvqa_count_macro",
    "lvqa_aus",
    "lvqa_event_type",
    "unknown",
]

COARSE_QUESTION = "What is the coarse expression class?"
FINE_QUESTION = "What is the fine-grained expression class?"
AU_QUESTION_SINGULAR = "What is the action unit?"
AU_QUESTION_PLURAL = "What are the action units?"
SIDE_QUESTION = "Is the action unit {name} located on the left or right face?"
PRESENCE_QUESTION = "Is the action unit {name} shown on the face?"
JOINT_QUESTION_SINGULAR = (
    "What is the action unit present, and based on it, what is the fine-grained expression "
    "and the coarse expression class?"
)
JOINT_QUESTION_PLURAL = (
    "What are the action units present, and based on them, what is the fine-grained expression "
    "and the coarse expression class?"
)
JOINT_ANSWER_SINGULAR = (
    "The action unit present is: {aus}. Therefore, the fine-grained expression class is {fine}, "
    "and the coarse expression class is {coarse}."
)
JOINT_ANSWER_PLURAL = (
    "The action units present are: {aus}. Therefore, the fine-grained expression class is {fine}, "
    "and the coarse expression class is {coarse}."
)
# MEGC2026 ME-VQA v2: question 5 is one of these free analysis prompts.
ANALYSIS_QUESTIONS: tuple[str, ...] = (
    "Please analyse the micro-expression shown in this video in detail.",
    "Provide a detailed analysis of the micro-expression observed in this clip.",
    "Provide a comprehensive analysis of the facial micro-expression shown in this clip.",
)
# MEGC2026 ME-LVQA.
LVQA_COUNT_ALL = "How many expression events appear in this video?"
LVQA_COUNT_MICRO = "How many micro-expression events appear in this video?"
LVQA_COUNT_MACRO = "How many macro-expression events appear in this video?"
LVQA_AUS = "What distinct action units appear in this video?"
LVQA_EVENT_TYPE = "What is the expression type of the {n}-th expression event in this video?"

AU_SEPARATOR = ", "
SIDES = ("left", "right")
YES_NO = ("yes", "no")
EXPRESSION_TYPES = ("micro-expression", "macro-expression")

_SIDE_RE = re.compile(r"^Is the action unit (?P<name>.+) located on the left or right face\?$")
_PRESENCE_RE = re.compile(r"^Is the action unit (?P<name>.+) shown on the face\?$")
_EVENT_TYPE_RE = re.compile(
    r"^What is the expression type of the (?P<n>\d+)-th expression event in this video\?$"
)
# issue 13 (official training files): the v2 training rows' free-form analysis prompts are known only
# through the three test-file wordings above; a row that words one differently ("Analyze the
# micro-expression ...") is still the free-form analysis kind, not "unknown".
_ANALYSIS_RE = re.compile(
    r"\banaly(?:s|z)(?:e|is)\b.*\bmicro-expressions?\b|\bmicro-expressions?\b.*\banaly(?:s|z)(?:e|is)\b",
    re.IGNORECASE,
)
_JOINT_ANSWER_RE = re.compile(
    r"^The action units? present (?:is|are): (?P<aus>.*)\. Therefore, the fine-grained expression class is "
    r"(?P<fine>.*), and the coarse expression class is (?P<coarse>.*)\.$"
)

_EXACT: dict[str, QuestionType] = {
    COARSE_QUESTION: "coarse",
    FINE_QUESTION: "fine",
    AU_QUESTION_SINGULAR: "au",
    AU_QUESTION_PLURAL: "au",
    JOINT_QUESTION_SINGULAR: "joint",
    JOINT_QUESTION_PLURAL: "joint",
    LVQA_COUNT_ALL: "lvqa_count_all",
    LVQA_COUNT_MICRO: "lvqa_count_micro",
    LVQA_COUNT_MACRO: "lvqa_count_macro",
    LVQA_AUS: "lvqa_aus",
    **dict.fromkeys(ANALYSIS_QUESTIONS, "analysis"),
}


def classify_question(question: str) -> QuestionType:
    """Which template a question follows; ``"unknown"`` for anything else.

    >>> classify_question("Is the action unit lip corner puller shown on the face?")
    'presence'
    >>> classify_question("What is the expression type of the 2-th expression event in this video?")
    'lvqa_event_type'
    """
    q = question.strip()
    if q in _EXACT:
        return _EXACT[q]
    if _SIDE_RE.match(q):
        return "side"
    if _PRESENCE_RE.match(q):
        return "presence"
    if _EVENT_TYPE_RE.match(q):
        return "lvqa_event_type"
    if _ANALYSIS_RE.search(q):  # issue 13: see _ANALYSIS_RE
        return "analysis"
    return "unknown"


def question_au_name(question: str) -> str | None:
    """The AU name a side or presence question asks about (``"cheek raiser"``), else ``None``."""
    m = _SIDE_RE.match(question.strip()) or _PRESENCE_RE.match(question.strip())
    return m.group("name") if m else None


def event_number(question: str) -> int | None:
    """N of an ME-LVQA ``N-th expression event`` question, else ``None``."""
    m = _EVENT_TYPE_RE.match(question.strip())
    return int(m.group("n")) if m else None


def is_plural(question: str) -> bool:
    """Whether an AU-list or joint question uses the plural wording (two or more AUs)."""
    return question.strip() in (AU_QUESTION_PLURAL, JOINT_QUESTION_PLURAL)


def au_list_answer(names: Sequence[str]) -> str:
    """AU names joined in the training format; callers pass them in the release's coded order."""
    return AU_SEPARATOR.join(names)


def joint_answer(au_names: Sequence[str], fine: str, coarse: str) -> str:
    """The joint answer in its exact template, singular for one AU and plural otherwise.

    >>> joint_answer(["cheek raiser", "lip corner puller"], "happiness", "positive")[:40]
    'The action units present are: cheek rais'
    """
    template = JOINT_ANSWER_SINGULAR if len(au_names) == 1 else JOINT_ANSWER_PLURAL
    return template.format(aus=au_list_answer(au_names), fine=fine, coarse=coarse)


def parse_joint_answer(answer: str) -> tuple[list[str], str, str] | None:
    """Split a joint answer into (AU names, fine, coarse); ``None`` if it does not follow the template."""
    m = _JOINT_ANSWER_RE.match(answer.strip())
    if not m:
        return None
    aus = [a for a in m.group("aus").split(AU_SEPARATOR) if a]
    return aus, m.group("fine"), m.group("coarse")
