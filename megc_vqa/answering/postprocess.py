"""What happens to a model's text before it becomes a leaderboard answer.

- ``normalise_answer``: free text to the answer format (``"Negative."`` -> ``negative``; AU names
  picked out of a sentence, in the order the model wrote them unless ``sort_aus`` asks for AU-number
  order; a joint answer rebuilt in its exact template).
- ``fallback_answer``: the answer written when the model gives nothing usable, so no row is ever empty.
- ``make_consistent``: per clip, the AU list, the presence answer and the joint answer tell the same
  story, and the coarse class agrees with the fine one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from megc_vqa.answering.grammar import (
    DEFAULT_VOCAB,
    AnswerVocabulary,
    answer_grammar,
    fullmatch,
    vocab_labels,
)
from megc_vqa.labels import AU_NUMBERS, COARSE_MAPS
from megc_vqa.qa import templates as T
from megc_vqa.qa.kinds import FALLBACK_AUS, FREE_FALLBACK, KINDS, au_item_bounds

# Fine label -> coarse class over every dataset of SPEC section 2 (the maps never disagree).
FINE_TO_COARSE: dict[str, str] = {
    fine: coarse for name in ("casme2", "samm", "casme3") for fine, coarse in COARSE_MAPS[name].items()
}

# Written when a row gets nothing usable from the model (the registry's fixed fallbacks). Fixed and
# documented rather than clever: the run summary lists every row that got one.
FALLBACKS: dict[str, str] = {k.name: k.fallback for k in KINDS.values() if k.fallback is not None}


def _strip(text: str) -> str:
    return text.strip().strip("\"'`").strip().rstrip(".!").strip().lower()


def _au_names_in(text: str, vocab: AnswerVocabulary, sort: bool = False) -> list[str]:
    """Known AU names mentioned in ``text``, once each: in the order written, or (``sort``) in ascending
    AU number."""
    low = text.lower()
    found: dict[str, int] = {}
    for n in vocab.au_names:
        m = re.search(rf"(?<![a-z]){re.escape(n)}(?![a-z])", low)
        if m:
            found[n] = m.start()
    if sort:
        return sorted(found, key=lambda n: AU_NUMBERS.get(n, 999))
    return sorted(found, key=found.__getitem__)


def _one_label(text: str, labels: Sequence[str]) -> str | None:
    """The single label named in ``text`` (whole word), or None when none or several are."""
    low = _strip(text)
    if low in labels:
        return low
    hits = {lab for lab in labels if re.search(rf"(?<![a-z-]){re.escape(lab)}(?![a-z-])", low)}
    return hits.pop() if len(hits) == 1 else None


def joint_text(plural: bool, au_names: Sequence[str], fine: str, coarse: str) -> str:
    """The joint answer with the question's own wording (plural question -> plural template)."""
    template = T.JOINT_ANSWER_PLURAL if plural else T.JOINT_ANSWER_SINGULAR
    return template.format(aus=T.au_list_answer(au_names), fine=fine, coarse=coarse)


def normalise_answer(
    question: str,
    text: str,
    vocab: AnswerVocabulary = DEFAULT_VOCAB,
    *,
    kind: str | None = None,
    sort_aus: bool = False,
) -> tuple[str, bool]:
    """``(answer, valid)``: the answer in its format when it can be recovered, else the stripped text.

    ``valid`` is True when the answer is one of the question's allowed answers (always True for free
    questions with a non-empty answer). AU lists keep the model's order (BLEU/ROUGE then score what it
    wrote) unless ``sort_aus`` puts them in ascending AU number. ``kind``: the question's kind when the
    caller already classified it.
    """
    text = " ".join(text.split())
    kind = kind or T.classify_question(question)
    spec = KINDS[kind]  # type: ignore[index]
    grammar = answer_grammar(question, vocab, kind)
    if grammar is None:
        return text, bool(text)
    plural = T.is_plural(question)
    if fullmatch(grammar, text) and not (sort_aus and spec.form in ("au_list", "joint")):
        return text, True
    fixed: str | None = None
    if spec.form == "label":
        fixed = _one_label(text, vocab_labels(kind, vocab))
    elif spec.form == "au_list":
        _, most = au_item_bounds(spec.name, plural)
        names = _au_names_in(text, vocab, sort_aus)[:most]
        fixed = T.au_list_answer(names) if names else None
    elif spec.form == "joint":
        parsed = T.parse_joint_answer(text)
        if parsed:
            aus, fine, coarse = parsed
            names = _au_names_in(", ".join(aus), vocab, sort_aus)
            fine_l, coarse_l = _one_label(fine, vocab.fine), _one_label(coarse, vocab.coarse)
            if names and fine_l and coarse_l:
                fixed = joint_text(plural, names if plural else names[:1], fine_l, coarse_l)
    elif spec.form == "count":
        m = re.search(r"\d+", text)
        fixed = m.group(0).lstrip("0") or "0" if m else None
    if fixed is not None and fullmatch(grammar, fixed):
        return fixed, True
    return _strip(text) if spec.form != "joint" else text, False


def fallback_answer(
    question: str, clip_answers: dict[str, str] | None = None, kind: str | None = None
) -> str:
    """A non-empty answer for a row the model could not answer, built from the clip's other answers
    where they help (the AU list, joint and analysis answers reuse the clip's AUs, fine and coarse).

    ``clip_answers``: kind -> answer of the clip's other rows; ``kind``: this row's kind if known."""
    kind = kind or T.classify_question(question)
    ctx = clip_answers or {}
    if kind in FALLBACKS and kind != "au":
        return FALLBACKS[kind]
    known = [n for n in (ctx.get("au") or "").split(T.AU_SEPARATOR) if n in AU_NUMBERS]
    names = known or list(FALLBACK_AUS)
    if T.is_plural(question) and len(names) < 2:  # the plural wording means two or more AUs
        names = sorted({*names, *FALLBACK_AUS}, key=AU_NUMBERS.__getitem__)[:2]
    elif kind in ("au", "joint") and not T.is_plural(question):
        names = names[:1]
    fine, coarse = ctx.get("fine") or FALLBACKS["fine"], ctx.get("coarse") or FALLBACKS["coarse"]
    if kind == "au":
        return T.au_list_answer(names)
    if kind == "joint":
        return joint_text(T.is_plural(question), names, fine, coarse)
    if kind == "analysis":
        return (
            f"The face shows {T.au_list_answer(names)}. These movements suggest {fine}, "
            f"so the micro-expression is {coarse}."
        )
    return FREE_FALLBACK


@dataclass(frozen=True)
class Change:
    """One answer that consistency rewrote, for the run summary."""

    index: int
    before: str
    after: str
    rule: str


def make_consistent(
    questions: Sequence[str],
    answers: Sequence[str],
    choose_fine: Callable[[str], str | None] | None = None,
    vocab: AnswerVocabulary = DEFAULT_VOCAB,
    kinds: Sequence[str] | None = None,
) -> tuple[list[str], list[Change]]:
    """Make one clip's answers agree with each other; returns the new answers and what changed.

    Rules (the AU list and the coarse class are the anchors: they are the better-learned answers):
    1. AU list: the AU question's answer, else the joint answer's AUs.
    2. Presence: ``yes`` exactly when the asked AU is in the AU list.
    3. Fine vs coarse: a fine label whose coarse class differs from the coarse answer is replaced by
       ``choose_fine(coarse)`` (the engine re-asks the model among that class's fine labels), or by the
       first such label of the vocabulary when no chooser is given.
    4. Joint: rebuilt from the AU list, fine and coarse (singular question keeps one AU).

    ``kinds``: the rows' kinds when the caller already classified them.
    """
    out = list(answers)
    kinds = list(kinds) if kinds is not None else [T.classify_question(q) for q in questions]
    changes: list[Change] = []

    def set_answer(i: int, value: str, rule: str) -> None:
        if out[i] != value:
            changes.append(Change(i, out[i], value, rule))
            out[i] = value

    def first(kind: str) -> int | None:
        return next((i for i, k in enumerate(kinds) if k == kind), None)

    i_au, i_fine, i_coarse, i_joint = first("au"), first("fine"), first("coarse"), first("joint")
    parsed_joint = T.parse_joint_answer(out[i_joint]) if i_joint is not None else None

    au_names: list[str] | None = None
    if i_au is not None and fullmatch(answer_grammar(questions[i_au], vocab, "au"), out[i_au]):
        au_names = out[i_au].split(T.AU_SEPARATOR)
    elif parsed_joint:
        au_names = _au_names_in(", ".join(parsed_joint[0]), vocab) or None
    if au_names:
        for i, kind in enumerate(kinds):
            if kind == "presence":
                name = T.question_au_name(questions[i])
                set_answer(i, "yes" if name in au_names else "no", "presence follows the AU list")

    coarse = out[i_coarse] if i_coarse is not None and out[i_coarse] in vocab.coarse else None
    if coarse is None and parsed_joint and parsed_joint[2] in vocab.coarse:
        coarse = parsed_joint[2]
    fine = out[i_fine] if i_fine is not None and out[i_fine] in vocab.fine else None
    if fine is None and parsed_joint and parsed_joint[1] in vocab.fine:
        fine = parsed_joint[1]
    if coarse and fine and FINE_TO_COARSE.get(fine, coarse) != coarse:
        options = [f for f in vocab.fine if FINE_TO_COARSE.get(f) == coarse]
        chosen = choose_fine(coarse) if choose_fine else None
        if chosen not in options:
            chosen = options[0] if options else fine
        fine = chosen
        if i_fine is not None:
            set_answer(i_fine, fine, "fine agrees with coarse")

    if i_joint is not None and au_names and fine and coarse:
        plural = T.is_plural(questions[i_joint])
        set_answer(
            i_joint, joint_text(plural, au_names if plural else au_names[:1], fine, coarse), "joint rebuilt"
        )
    return out, changes
