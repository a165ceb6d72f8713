"""AU-string parsing: every example from SPEC section 1-2 and issue 2, plus the messy spellings of real files."""

from __future__ import annotations

import logging
import math

import pytest

from megc_vqa.annotations import AnnotationError, format_aus, parse_aus
from megc_vqa.records import ActionUnit


def fields(units: tuple[ActionUnit, ...]) -> list[tuple]:
    return [(u.number, u.side, u.intensity, u.asymmetric, u.uncertain) for u in units]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4+L10", [(4, None, None, False, False), (10, "L", None, False, False)]),
        ("R12", [(12, "R", None, False, False)]),
        ("1+2", [(1, None, None, False, False), (2, None, None, False, False)]),
        # bracketed intensity alternatives keep the first letter; SAMM's trailing B is intensity
        ("4(B/C)+7B", [(4, None, "B", False, False), (7, None, "B", False, False)]),
        ("24A", [(24, None, "A", False, False)]),
        ("ref(7)+12B", [(7, None, None, False, True), (12, None, "B", False, False)]),
        ("L2 or R2", [(2, "L", None, False, True), (2, "R", None, False, True)]),
        ("A2", [(2, None, None, True, False)]),
        ("A2B", [(2, None, "B", True, False)]),
        ("R14A", [(14, "R", "A", False, False)]),
        # lower case and spaces
        ("l10 + r12b", [(10, "L", None, False, False), (12, "R", "B", False, False)]),
        ("4 + 7", [(4, None, None, False, False), (7, None, None, False, False)]),
        ("L 10", [(10, "L", None, False, False)]),
        # alternatives written with '/', a coder's '?', an 'AU' prefix, unbracketed intensity alternatives
        ("25/26", [(25, None, None, False, True), (26, None, None, False, True)]),
        ("12?", [(12, None, None, False, True)]),
        ("AU4+AU7", [(4, None, None, False, False), (7, None, None, False, False)]),
        ("4B/C", [(4, None, "B", False, False)]),
        ("ref(L2 or R2)", [(2, "L", None, False, True), (2, "R", None, False, True)]),
        (
            "1+2, 4; 5",
            [
                (1, None, None, False, False),
                (2, None, None, False, False),
                (4, None, None, False, False),
                (5, None, None, False, False),
            ],
        ),
    ],
)
def test_parse_examples(text: str, expected: list[tuple]) -> None:
    assert fields(parse_aus(text)) == expected


@pytest.mark.parametrize("blank", ["", "   ", None, math.nan, "?", "-", "/", "n/a", "NaN", "none"])
def test_blank_cells_have_no_aus(blank: object) -> None:
    assert parse_aus(blank) == ()


def test_excel_numbers_are_single_aus() -> None:
    assert fields(parse_aus(12)) == [(12, None, None, False, False)]
    assert fields(parse_aus(12.0)) == [(12, None, None, False, False)]


def test_raw_keeps_the_token_as_written() -> None:
    assert [u.raw for u in parse_aus("4(B/C) + l10")] == ["4(B/C)", "l10"]


def test_names_come_from_the_spec_table() -> None:
    assert [u.name for u in parse_aus("4+L10+38")] == ["brow lowerer", "upper lip raiser", "nostril dilater"]


def test_unknown_au_number_is_kept_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="megc_vqa.annotations.au"):
        units = parse_aus("4+99", where="file.xlsx row 7")
    assert [u.number for u in units] == [4, 99]
    assert units[1].name is None
    assert any("99" in r.getMessage() and "file.xlsx row 7" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("garbage", ["x", "4+foo", "L", "12F", "ref()", "4(Z)", True, 1.5])
def test_garbage_raises_a_clear_error(garbage: object) -> None:
    with pytest.raises(AnnotationError) as info:
        parse_aus(garbage, where="CASME2.xlsx, row 9, column 'Action Units'")
    assert "CASME2.xlsx, row 9" in str(info.value)


@pytest.mark.parametrize("text", ["4+L10", "R12B+A2", "ref(7)+12B", "L2 or R2", "24A+4(B/C)"])
def test_format_round_trips(text: str) -> None:
    units = parse_aus(text)
    assert fields(parse_aus(format_aus(units))) == fields(units)


def test_format_writes_spreadsheet_notation() -> None:
    assert format_aus(parse_aus("l10+24a+A2+ref(7)")) == "L10+24A+A2+ref(7)"
    assert format_aus(()) == ""
