"""FACS action-unit strings from the dataset spreadsheets -> :class:`~megc_vqa.records.ActionUnit`.

Grammar accepted (case-insensitive, spaces ignored)::

    text   := item (SEP item)*          SEP: '+', ',', ';', '&'
    item   := token (ALT token)*        ALT: the word 'or', or '/' before another AU (``25/26``);
                                        every alternative is kept with ``uncertain=True``
    token  := 'ref(' text ')'          -> the inner AUs, ``uncertain=True``
            | [AU] prefix? number intensity? '?'?
    prefix := 'L' | 'R'                 unilateral side
            | 'A'                       asymmetric (``A2``)
            | 'B' | 'U'                 bilateral / unilateral with no side: ``side=None``
    intensity := letter A-E             (``24A``; in SAMM a trailing ``B`` is intensity B, never "bilateral")
               | '(' letters ')'        alternatives such as ``4(B/C)`` keep the first letter
               | letters joined by '/'  (``4B/C``), likewise
    '?' after a token                   -> ``uncertain=True``

Whole-cell blanks (empty, NaN, ``-``, ``/``, ``?``, ``n/a``, ``none``) give ``()``. An AU number outside
the SPEC table is kept by number and logged as a warning. A token that fits none of the above raises
:class:`AnnotationError` naming ``where`` (file, sheet, row, column); the loaders turn that into a reported
row skip (reason ``"bad AU string"``) rather than dropping the AU silently.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable

from megc_vqa.annotations.errors import AnnotationError
from megc_vqa.labels import AU_NAMES
from megc_vqa.records import ActionUnit

logger = logging.getLogger(__name__)

_BLANKS = frozenset({"", "-", "/", "?", "NAN", "NONE", "N/A", "NA", "NULL"})
_ITEM_SEPARATORS = re.compile(r"[+,;&]")
# 'or' between alternatives, or a '/' that is followed by another AU (not by an intensity letter).
_ALTERNATIVES = re.compile(r"\s+OR\s+|/(?=\s*(?:AU)?[LRABU]?\d)", re.IGNORECASE)
_TOKEN = re.compile(
    r"""^(?:AU)?
        (?P<prefix>[LRABU])?
        (?P<number>\d{1,3})
        (?:(?P<intensity>[A-E](?:/[A-E])*)|\((?P<bracketed>[A-E](?:/[A-E])*)\))?
        (?P<question>\?)?$""",
    re.VERBOSE,
)
_REF = re.compile(r"^ref\s*\((?P<inner>.*)\)$", re.IGNORECASE)


def parse_aus(text: object, *, where: str = "") -> tuple[ActionUnit, ...]:
    """Parse an annotation's AU cell into action units, in the order written.

    ``where`` is prefixed to error messages and warnings (e.g. ``"CASME2-coding.xlsx row 5"``).

    >>> [(a.number, a.side) for a in parse_aus("4+L10")]
    [(4, None), (10, 'L')]
    >>> [(a.number, a.intensity) for a in parse_aus("4(B/C)+7B")]
    [(4, 'B'), (7, 'B')]
    >>> [(a.number, a.side, a.uncertain) for a in parse_aus("L2 or R2")]
    [(2, 'L', True), (2, 'R', True)]
    """
    if text is None:
        return ()
    if isinstance(text, bool):
        raise AnnotationError(f"{_prefix(where)}AU cell holds a boolean ({text!r}), not an AU string")
    if isinstance(text, float):
        if math.isnan(text):
            return ()
        if not text.is_integer():
            raise AnnotationError(f"{_prefix(where)}cannot parse AU value {text!r}: not a whole AU number")
        text = int(text)
    raw_text = str(text).strip()
    if raw_text.upper() in _BLANKS:
        return ()
    return tuple(_parse_text(raw_text, where=where, uncertain=False))


def _parse_text(text: str, *, where: str, uncertain: bool) -> list[ActionUnit]:
    units: list[ActionUnit] = []
    for item in _split_items(text):
        if not item.strip():
            continue  # "4++7" or a trailing '+': nothing to lose
        if _REF.match(item.strip()):  # 'ref(L2 or R2)': the alternatives are inside the brackets
            units.extend(_parse_token(item.strip(), where=where, uncertain=True, text=text))
            continue
        alternatives = [part.strip() for part in _ALTERNATIVES.split(item) if part.strip()]
        is_alternative = len(alternatives) > 1
        for raw in alternatives:
            units.extend(_parse_token(raw, where=where, uncertain=uncertain or is_alternative, text=text))
    return units


def _split_items(text: str) -> list[str]:
    """Split on item separators that are not inside brackets (``ref(7+12)`` stays one item)."""
    items, depth, current = [], 0, []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(depth - 1, 0)
        if depth == 0 and _ITEM_SEPARATORS.fullmatch(char):
            items.append("".join(current))
            current = []
        else:
            current.append(char)
    items.append("".join(current))
    return items


def _parse_token(raw: str, *, where: str, uncertain: bool, text: str) -> list[ActionUnit]:
    compact = re.sub(r"\s+", "", raw.upper())
    ref = _REF.match(raw.strip())
    if ref:
        inner = _parse_text(ref.group("inner"), where=where, uncertain=True)
        if not inner:
            raise AnnotationError(f"{_prefix(where)}empty reference {raw!r} in AU string {text!r}")
        return [_with_raw(unit, raw) for unit in inner]
    match = _TOKEN.match(compact)
    if not match:
        raise AnnotationError(f"{_prefix(where)}cannot parse AU token {raw!r} in AU string {text!r}")
    number = int(match.group("number"))
    if number not in AU_NAMES:
        logger.warning(
            "%sAU %d (from %r) is not in the SPEC AU table; kept by number", _prefix(where), number, text
        )
    prefix = match.group("prefix")
    letters = match.group("intensity") or match.group("bracketed")
    return [
        ActionUnit(
            number=number,
            side=prefix if prefix in ("L", "R") else None,
            intensity=letters[0] if letters else None,
            asymmetric=prefix == "A",
            uncertain=uncertain or match.group("question") is not None,
            raw=raw,
        )
    ]


def _with_raw(unit: ActionUnit, raw: str) -> ActionUnit:
    return ActionUnit(unit.number, unit.side, unit.intensity, unit.asymmetric, unit.uncertain, raw)


def _prefix(where: str) -> str:
    return f"{where}: " if where else ""


def format_au(unit: ActionUnit) -> str:
    """Write one AU back in the spreadsheet notation: ``L10``, ``A2``, ``12B``, uncertain ones as ``ref(7)``."""
    core = f"{unit.side or ('A' if unit.asymmetric else '')}{unit.number}{unit.intensity or ''}"
    return f"ref({core})" if unit.uncertain else core


def format_aus(units: Iterable[ActionUnit]) -> str:
    """Inverse of :func:`parse_aus` up to ``raw``: ``"4+L10"``; ``""`` for no AUs."""
    return "+".join(format_au(unit) for unit in units)
