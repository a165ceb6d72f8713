"""MEGC ME-VQA training questions from clip records (SPEC section 3).

Per clip, in this order (the official order), each question only when the clip supports it:

1. coarse class                     -- always (a clip without a coarse class yields no QA at all)
2. fine-grained class               -- when the fine label is known (never for SMIC)
3. AU list, singular/plural wording -- when the clip has at least one AU with a FACS name
4. left or right                    -- when a named AU is coded ``L``/``R``; ONE question per clip, about
                                       the lowest-numbered such AU whose side is unambiguous (the official
                                       file has at most one per clip: about a quarter of the clips)
5. presence -> ``yes``              -- a present named AU, drawn from the clip's seed
6. presence -> ``no``               -- an AU of the SPEC table absent from the clip, drawn from the seed
7. joint AU + fine + coarse         -- when 2 and 3 were asked

SMIC clips get only question 1, as in the official file. Choices made where the SPEC is silent:

- AU names: in the order the release codes them (the organisers' training file keeps it: ``4+7+2`` is
  ``brow lowerer, lid tightener, outer brow raiser``), one per number at its first coding (``L12+R12``
  is one "lip corner puller"). Choices among the AUs (the left/right AU, the ``yes`` draw) still go by
  AU number, so they do not depend on how the coder ordered the cell.
- AUs whose number is not in the SPEC table have no name: they are left out of every answer, with a
  warning and a note (the loader keeps them by number).
- The ``no`` AU is drawn among the SPEC table's AUs whose number the clip does not code at all (neither
  side, certain or not).
- AUs the coder marked uncertain (``L2 or R2``, ``ref(7)``) are listed, but the ``yes`` question prefers a
  certain AU and the left/right question never uses an uncertain one.
- A clip with no named AU gets no AU questions (3-6) and no joint question: "no" would be a guess.
- Randomness comes only from ``clip_rng(clip, seed)``, a ``random.Random`` seeded with a SHA-256 of the
  seed, dataset and image id; so the output for a clip does not depend on which other clips are present or
  on their order, nor on ``PYTHONHASHSEED``.

Anything left out is reported as a ``Skip`` (reason and detail) when the caller passes a list.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Iterable

from megc_vqa.labels import AU_NAMES
from megc_vqa.qa import templates as t
from megc_vqa.qa.records import QARecord, clip_location
from megc_vqa.records import ActionUnit, Clip, Skip

log = logging.getLogger(__name__)

COARSE_ONLY_DATASETS: frozenset[str] = frozenset({"smic"})
_SIDE_WORDS = dict(zip(("L", "R"), t.SIDES, strict=True))

# Reasons used in the Skip records this module writes.
REASON_NO_COARSE = "no coarse emotion: clip not turned into QA"
REASON_DUPLICATE = "duplicate image_id: later clip not turned into QA"
REASON_NO_AUS = "no named action unit: AU and joint questions left out"
REASON_NO_FINE = "no fine emotion: fine and joint questions left out"
REASON_UNKNOWN_AU = "AU number without a FACS name: left out of the answers"


def clip_rng(clip: Clip, seed: int = 0) -> random.Random:
    """The clip's own random generator: a function of (seed, dataset, image_id) only."""
    digest = hashlib.sha256(f"{seed}\x1f{clip.dataset}\x1f{clip.image_id}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def named_aus(aus: Iterable[ActionUnit]) -> list[tuple[int, str]]:
    """(number, name) of the AUs with a FACS name, in coded order, one per number (its first coding)."""
    numbers = dict.fromkeys(au.number for au in aus if au.number in AU_NAMES)
    return [(number, AU_NAMES[number]) for number in numbers]


def _by_number(named: list[tuple[int, str]]) -> list[tuple[int, str]]:
    return sorted(named)


def _side_au(aus: tuple[ActionUnit, ...]) -> tuple[str, str] | None:
    """(name, "left"|"right") for the lowest-numbered named AU coded on one side only, else ``None``.

    An AU coded both ``L`` and ``R`` (or also bilaterally, or uncertain) has no single answer and is passed over.
    """
    for number, name in _by_number(named_aus(aus)):
        codings = [au for au in aus if au.number == number]
        sides = {au.side for au in codings}
        if len(sides) == 1 and None not in sides and not any(au.uncertain for au in codings):
            return name, _SIDE_WORDS[next(iter(sides))]
    return None


def _note(skips: list[Skip] | None, clip: Clip, reason: str, detail: str = "") -> None:
    if skips is not None:
        skips.append(
            Skip(clip.dataset, str(clip.source.path), clip.row, reason, f"{clip.image_id}: {detail}")
        )


def questions_for_clip(clip: Clip, rng: random.Random, skips: list[Skip] | None = None) -> list[QARecord]:
    """The clip's QA records in the official order (see the module doc); ``[]`` without a coarse class.

    ``rng`` drives the two presence questions; pass ``clip_rng(clip, seed)`` for reproducible output.
    What is left out is appended to ``skips`` when given.
    """
    if clip.coarse_emotion is None:
        log.warning("%s %s: no coarse emotion; not turned into QA", clip.dataset, clip.image_id)
        _note(skips, clip, REASON_NO_COARSE, "the loader should have skipped it")
        return []

    pairs: list[tuple[t.QuestionType, str, str]] = [("coarse", t.COARSE_QUESTION, clip.coarse_emotion)]
    if clip.dataset not in COARSE_ONLY_DATASETS:
        pairs.extend(_fine_and_au_questions(clip, rng, skips))

    return [
        QARecord(
            id=f"{clip.dataset}_{clip.image_id}_{k}",
            dataset=clip.dataset,
            image_id=clip.image_id,
            subject=clip.subject,
            filename=clip.clip_id,
            question=question,
            answer=answer,
            question_type=qtype,
            **clip_location(clip),
        )
        for k, (qtype, question, answer) in enumerate(pairs, start=1)
    ]


def _fine_and_au_questions(
    clip: Clip, rng: random.Random, skips: list[Skip] | None
) -> list[tuple[t.QuestionType, str, str]]:
    pairs: list[tuple[t.QuestionType, str, str]] = []
    fine = clip.fine_emotion
    if fine:
        pairs.append(("fine", t.FINE_QUESTION, fine))
    else:
        _note(skips, clip, REASON_NO_FINE)

    unknown = sorted({au.raw or str(au.number) for au in clip.aus if au.number not in AU_NAMES})
    if unknown:
        log.warning("%s %s: AU(s) %s have no FACS name; left out", clip.dataset, clip.image_id, unknown)
        _note(skips, clip, REASON_UNKNOWN_AU, ", ".join(unknown))

    named = named_aus(clip.aus)
    if not named:
        _note(skips, clip, REASON_NO_AUS, f"AUs as coded: {[au.raw or au.number for au in clip.aus]}")
        return pairs
    names = [name for _, name in named]
    plural = len(names) > 1
    pairs.append(("au", t.AU_QUESTION_PLURAL if plural else t.AU_QUESTION_SINGULAR, t.au_list_answer(names)))

    side = _side_au(clip.aus)
    if side is not None:
        pairs.append(("side", t.SIDE_QUESTION.format(name=side[0]), side[1]))

    certain = {au.number for au in clip.aus if not au.uncertain}
    # Drawn in AU-number order, so the drawn AU is the same whatever order the cell codes them in.
    ordered = _by_number(named)
    yes_pool = [name for number, name in ordered if number in certain] or [name for _, name in ordered]
    coded = {au.number for au in clip.aus}
    no_pool = [name for number, name in sorted(AU_NAMES.items()) if number not in coded]
    pairs.append(("presence", t.PRESENCE_QUESTION.format(name=rng.choice(yes_pool)), t.YES_NO[0]))
    if no_pool:  # only empty if a clip coded every AU of the table
        pairs.append(("presence", t.PRESENCE_QUESTION.format(name=rng.choice(no_pool)), t.YES_NO[1]))

    if fine:
        pairs.append(
            (
                "joint",
                t.JOINT_QUESTION_PLURAL if plural else t.JOINT_QUESTION_SINGULAR,
                t.joint_answer(names, fine, clip.coarse_emotion or ""),
            )
        )
    return pairs


def generate_qa(clips: Iterable[Clip], seed: int = 0, skips: list[Skip] | None = None) -> list[QARecord]:
    """QA records for every clip, clip after clip in the order given.

    A clip's records depend only on the clip and ``seed`` (see ``clip_rng``). A second clip with the same
    (dataset, image_id) would produce colliding ids, so it is not turned into QA and is reported.
    """
    records: list[QARecord] = []
    seen: set[tuple[str, str]] = set()
    for clip in clips:
        key = (clip.dataset, clip.image_id)
        if key in seen:
            log.warning("%s %s: duplicate image_id; later clip not turned into QA", *key)
            _note(skips, clip, REASON_DUPLICATE, f"row {clip.row}")
            continue
        seen.add(key)
        records.extend(questions_for_clip(clip, clip_rng(clip, seed), skips))
    return records
