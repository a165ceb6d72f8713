"""ME-LVQA (MEGC2026, SPEC section 4): the six questions per long video, answered from spotted events.

- counts (all / micro / macro): the number of spotted intervals (of that type), a bare integer;
- distinct AUs: each event's key frames (onset, apex, offset) go to a VQA callable with the plural AU
  question; AU names found in the answers are pooled and written in ascending AU number, ``", "``-joined.
  Documented fallback, used when no callable is given or no answer names a known AU: the AU prior of each
  event type present (``FALLBACK_AUS``: brow lowerer, AU4, the most frequent AU of the ME datasets, for
  micro; lip corner puller, AU12, the most frequent macro-expression AU, for macro), or the micro prior when
  nothing was spotted;
- type of the N-th event (onset order, 1-based): ``micro-expression`` / ``macro-expression``. Documented
  fallback when fewer than N events were spotted: the most frequent spotted type answers, else
  ``macro-expression`` (macro events outnumber micro ones in every long-video dataset); the row is
  *flagged* (``answer_file(flags=[])`` collects them, ``run_lvqa`` lists them in its report).
Question kinds come from ``megc_vqa.qa.templates`` and the registry ``megc_vqa.qa.kinds``; an unknown question is answered with an empty string and
logged, so the validator reports it.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from megc_vqa.fileio import write_jsonl
from megc_vqa.labels import AU_NAMES, AU_NUMBERS
from megc_vqa.qa.io import read_questions
from megc_vqa.qa.kinds import KINDS
from megc_vqa.qa.templates import AU_QUESTION_PLURAL, au_list_answer, classify_question, event_number

log = logging.getLogger(__name__)

FALLBACK_AUS: dict[str, tuple[int, ...]] = {"micro": (4,), "macro": (12,)}
TYPE_ANSWER = {"micro": "micro-expression", "macro": "macro-expression"}
# The registry's event-type fallback (macro: the commoner type in every long-video dataset).
FALLBACK_TYPE = {answer: kind for kind, answer in TYPE_ANSWER.items()}[str(KINDS["lvqa_event_type"].fallback)]
# event -> AU names on it (the VQA model asked the AU question on the event's key frames).
EventAUs = Callable[[object], Sequence[str]]


def parse_au_names(answer: str) -> list[str]:
    """Known AU names mentioned in a free answer, in ascending AU number (``"AU12, cheek raiser"`` ->
    ``["cheek raiser"]``: numbers alone are not trusted, names are)."""
    text = " " + re.sub(r"[^a-z]+", " ", answer.lower()) + " "
    found = {AU_NUMBERS[name] for name in AU_NAMES.values() if f" {name} " in text}
    return [AU_NAMES[n] for n in sorted(found)]


def vqa_event_aus(ask, source, fps: float) -> EventAUs:
    """An ``EventAUs`` from a VQA callable ``ask(source, [onset, apex, offset], question, fps) -> answer``."""

    def event_aus(event) -> list[str]:
        return parse_au_names(ask(source, [event.onset, event.apex, event.offset], AU_QUESTION_PLURAL, fps))

    return event_aus


def distinct_aus(events: Sequence, event_aus: EventAUs | None) -> str:
    numbers: set[int] = set()
    if event_aus is not None:
        for ev in events:
            numbers.update(AU_NUMBERS[name] for name in event_aus(ev) if name in AU_NUMBERS)
    if not numbers:
        types = {ev.type for ev in events} or {"micro"}
        for kind in sorted(types):
            numbers.update(FALLBACK_AUS[kind])
    return au_list_answer([AU_NAMES[n] for n in sorted(numbers)])


def answer_question(question: str, events: Sequence, event_aus: EventAUs | None = None) -> str:
    """The answer to one LVQA question from a video's spotted events (``SpottedInterval``s)."""
    return answer_with_flag(question, events, event_aus)[0]


def answer_with_flag(
    question: str, events: Sequence, event_aus: EventAUs | None = None
) -> tuple[str, str | None]:
    """(answer, flag): the flag says why a documented fallback answered (``None`` when none did)."""
    kind = KINDS[classify_question(question)]
    ordered = sorted(events, key=lambda ev: (ev.onset, ev.offset))
    if kind.task != "lvqa":
        log.warning("not an ME-LVQA question: %r", question)
        return "", "not an ME-LVQA question"
    if kind.form == "count":  # the registry says which events it counts
        return str(sum(kind.counts in ("all", ev.type) for ev in ordered)), None
    if kind.form == "au_list":
        answer = distinct_aus(ordered, event_aus)
        return answer, None if event_aus is not None else "AU prior of the spotted event types (no VQA model)"
    if kind.form == "label":  # the type of the N-th event
        n = event_number(question)
        if n is not None and 1 <= n <= len(ordered):
            return TYPE_ANSWER[ordered[n - 1].type], None
        counts = Counter(ev.type for ev in ordered)
        fallback = counts.most_common(1)[0][0] if counts else FALLBACK_TYPE
        flag = f"event {n} asked, {len(ordered)} spotted: fallback type {fallback}"
        log.info("question asks for event %s of %d spotted: answered %s", n, len(ordered), fallback)
        return TYPE_ANSWER[fallback], flag
    log.warning("not an ME-LVQA question: %r", question)
    return "", "not an ME-LVQA question"


def pred_name(questions_path: str | Path) -> str:
    """``me_lvqa_samm_test_to_answer.jsonl`` -> ``me_lvqa_samm_test_pred.jsonl``."""
    name = Path(questions_path).name
    return name.replace("_to_answer", "_pred") if "_to_answer" in name else Path(name).stem + "_pred.jsonl"


def answer_file(
    questions_path: str | Path,
    events_by_video: dict[str, Sequence],
    out_dir: str | Path,
    event_aus_for: Callable[[str], EventAUs | None] | None = None,
    flags: list[dict] | None = None,
) -> Path:
    """Fill ``answer`` of every row (same rows, order and keys) and write ``out_dir/<pred name>``.
    ``events_by_video`` maps the rows' ``video`` to spotted events; a video without an entry is answered as
    having no events (and logged). ``flags``, when given, receives ``{video_id, video, question, flag}`` for
    every row a documented fallback answered."""
    rows = read_questions(questions_path)
    missing = sorted({r.video for r in rows} - set(events_by_video))
    if missing:
        log.warning(
            "%s: no spotted events for %d video(s) (answered as empty): %s",
            questions_path,
            len(missing),
            missing,
        )
    cache: dict[str, EventAUs | None] = {}
    out_rows = []
    for row in rows:
        video = row.video
        if video not in cache:
            cache[video] = event_aus_for(video) if event_aus_for else None
        answer, flag = answer_with_flag(row.question, events_by_video.get(video, ()), cache[video])
        out_rows.append(row.with_answer(answer).to_json())
        if flag and flags is not None:
            flags.append({"video_id": row.video_id, "video": video, "question": row.question, "flag": flag})

    return write_jsonl(Path(out_dir) / pred_name(questions_path), out_rows)
