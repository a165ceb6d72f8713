"""Shared machinery of the annotation loaders and writers: workbook access, header detection, cell parsing,
row-level skips, safe paths and frame-folder checks.

openpyxl is imported inside the functions that need it so that importing a dataset module stays cheap.
Workbooks are opened with ``data_only=True``: a formula cell yields the value Excel cached when it last
saved the file (SAMM Long Videos has such cells).

Reading is bounded (:class:`SheetLimits`, the one place of the spreadsheet limits): an .xlsx is a zip, so
a 5 KB file can declare a cell at the sheet's last row and column (XFD1048576) or inflate to gigabytes of
whitespace. Before openpyxl sees a file its members are counted and inflated once against the size limit;
sheets are then streamed (openpyxl's read-only parser) keeping only the cells that hold a value, so empty
area, however far it is declared, costs nothing, and a value beyond the row or column limit is refused
naming the cell and the option that raises the limit. Merged ranges (``<mergeCells>``, read in the same
pass) give every cell of the range the value of its top-left cell, as the sheet shows it.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import re
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from megc_vqa.annotations.au import parse_aus
from megc_vqa.annotations.errors import AnnotationError, location
from megc_vqa.errors import check_number, cut
from megc_vqa.frame_names import frame_number, is_image
from megc_vqa.labels import KNOWN_FINE, coarse_of, normalise_fine
from megc_vqa.records import ActionUnit, Clip, Event, ExpressionType, FrameSource, LongVideo, Skip

if TYPE_CHECKING:
    from openpyxl.workbook.workbook import Workbook

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Skip reasons: stable strings, so that summaries group them and tests can assert them.
NOT_DATA_ROW = "not a data row"
MISSING_VALUE = "missing value"
BAD_FRAME_NUMBER = "bad frame number"
ONSET_AFTER_OFFSET = "onset after offset"
APEX_OUTSIDE = "apex outside onset..offset"
UNKNOWN_EMOTION = "unknown emotion"
NOT_IN_COMPOSITE = "not in composite"  # reported as "not in composite: <fine label>"
UNKNOWN_TYPE = "unknown expression type"
BAD_AU_STRING = "bad AU string"
BAD_SUBJECT = "bad subject"
MISSING_FOLDER = "missing frame folder"
NO_FRAMES_IN_RANGE = "no frames in onset..offset"
PATH_ESCAPES_ROOT = "path escapes dataset root"
UNKNOWN_NAME = "name not in naming sheet"

HEADER_SCAN_ROWS = 40


class RowSkip(Exception):
    """Raised inside a row handler: the row becomes a :class:`Skip` with this reason and detail."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


# --------------------------------------------------------------------------------------------- files


def find_annotation_file(root: Path, patterns: Sequence[str]) -> Path:
    """The annotation file in ``root`` matching ``patterns``; with several, the last by name (highest version)."""
    matches = sorted({p for pattern in patterns for p in root.glob(pattern) if p.is_file()})
    if not matches:
        raise AnnotationError(f"no annotation file matching {', '.join(patterns)}", file=root)
    if len(matches) > 1:
        logger.info(
            "%s: several annotation files %s; using %s", root, [m.name for m in matches], matches[-1].name
        )
    return matches[-1]


def resolve_root(root: Path, patterns: Sequence[str]) -> tuple[Path, Path]:
    """Accept a dataset folder or the annotation file itself; return ``(dataset_root, annotation_file)``."""
    root = Path(root)
    if root.is_file():
        return root.parent, root
    if not root.is_dir():
        raise AnnotationError("dataset root does not exist", file=root)
    return root, find_annotation_file(root, patterns)


# --------------------------------------------------------------------------------------------- limits


@dataclass(frozen=True)
class SheetLimits:
    """How much work one annotation workbook may cause. The real releases are far inside every bound
    (the largest, CAS(ME)^3's label sheet, has a few thousand rows, under 30 columns and inflates to a few
    MB); each bound that a legitimate sheet could pass has a command-line option (:data:`SHEET_OPTIONS`)."""

    max_rows: int = 100_000  # last row holding a value
    max_columns: int = 1_000  # last column holding a value
    # cells held in memory: each row up to its last value, summed over the rows (merged ranges filled)
    max_cells: int = 5_000_000
    max_mb: float = 100.0  # the workbook's members inflated, all together, in MB (10^6 bytes)
    # Zip members: an .xlsx has a dozen or so plus one per sheet; more is no annotation workbook (no option).
    max_members: int = 10_000


# SheetLimits field -> the option that raises it (named in every limit error).
SHEET_OPTIONS: dict[str, str] = {
    "max_rows": "--max-sheet-rows",
    "max_columns": "--max-sheet-columns",
    "max_cells": "--max-sheet-cells",
    "max_mb": "--max-sheet-mb",
}
_limits = SheetLimits()


def sheet_limits() -> SheetLimits:
    """The limits every workbook read uses now (:func:`using_sheet_limits` changes them)."""
    return _limits


@contextlib.contextmanager
def using_sheet_limits(limits: SheetLimits) -> Iterator[SheetLimits]:
    """Read workbooks under ``limits`` inside the block (a command sets them from its options once)."""
    global _limits
    previous, _limits = _limits, limits
    try:
        yield limits
    finally:
        _limits = previous


def add_sheet_limit_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of :data:`SHEET_OPTIONS`, in their own group, defaults from :class:`SheetLimits`."""
    defaults = SheetLimits()
    group = parser.add_argument_group("annotation spreadsheet limits (raise one when a real sheet needs it)")
    helps = {
        "max_rows": "last row with a value that a sheet may have",
        "max_columns": "last column with a value that a sheet may have",
        "max_cells": "cells a sheet may occupy in memory (each row up to its last value)",
        "max_mb": "MB a workbook may inflate to (an .xlsx is a zip)",
    }
    for name, option in SHEET_OPTIONS.items():
        default = getattr(defaults, name)
        group.add_argument(
            option,
            type=type(default),
            default=None,
            metavar="N",
            help=f"{helps[name]} (default {default:,})".replace(".0)", ")"),
        )


def sheet_limits_from_args(args: argparse.Namespace) -> SheetLimits:
    """:class:`SheetLimits` from the options of :func:`add_sheet_limit_arguments` (unset: the default)."""
    values = {}
    for name, option in SHEET_OPTIONS.items():
        value = getattr(args, option[2:].replace("-", "_"), None)
        if value is not None:
            check_number(option, value, above=0)
            values[name] = value
    return SheetLimits(**values)


def _limit_error(
    path: Path, what: str, name: str, limits: SheetLimits, advice: str = "", **where: Any
) -> AnnotationError:
    """``<what> (<advice>, or raise the limit of N with --option N ...)``: names the limit and its option."""
    limit = getattr(limits, name)
    limit_text = f"{limit:g} MB" if name == "max_mb" else f"{limit:,}"
    option = SHEET_OPTIONS.get(name)
    if option:
        fix = f"raise the limit of {limit_text} with {option} N if the sheet really needs it"
    else:
        fix = f"limit {limit:,}, far above any annotation workbook"
    return AnnotationError(f"{what} ({advice + ', or ' if advice else ''}{fix})", file=path, **where)


# --------------------------------------------------------------------------------------------- workbooks


def _unreadable(path: Path, exc: BaseException) -> AnnotationError:
    return AnnotationError(
        f"not a readable .xlsx workbook ({type(exc).__name__}: {exc}); open it in Excel or LibreOffice and "
        "save it as .xlsx",
        file=path,
    )


def check_archive(path: Path, limits: SheetLimits | None = None) -> None:
    """Refuse an .xlsx whose zip holds too many members or inflates past ``limits.max_mb``.

    The declared sizes are checked first (cheap), then every member is inflated once, in chunks, counting
    the bytes actually produced and stopping at the limit, so a member lying about its size is caught too.
    """
    limits = limits or sheet_limits()
    budget = int(limits.max_mb * 1_000_000)
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            if len(members) > limits.max_members:
                raise _limit_error(
                    path, f"the .xlsx zip holds {len(members):,} members", "max_members", limits
                )
            declared = sum(m.file_size for m in members)
            if declared > budget:
                largest = max(members, key=lambda m: m.file_size)
                raise _limit_error(
                    path,
                    f"the .xlsx inflates to {declared / 1e6:,.0f} MB (member {largest.filename!r}: "
                    f"{largest.file_size / 1e6:,.0f} MB)",
                    "max_mb",
                    limits,
                )
            total = 0
            for member in members:
                with archive.open(member) as stream:
                    while chunk := stream.read(1 << 20):
                        total += len(chunk)
                        if total > budget:
                            raise _limit_error(
                                path,
                                f"the .xlsx inflates to more than {limits.max_mb:g} MB (member "
                                f"{member.filename!r} inflates past its declared size?)",
                                "max_mb",
                                limits,
                            )
    except AnnotationError:
        raise
    # a damaged or foreign zip: BadZipFile, a CRC error, zlib.error, encryption (RuntimeError), an unknown
    # compression (NotImplementedError), a member cut short (EOFError), or the file vanished (OSError)
    except (
        zipfile.BadZipFile,
        zlib.error,
        OSError,
        EOFError,
        RuntimeError,
        NotImplementedError,
        ValueError,
    ) as exc:
        raise _unreadable(path, exc) from None


class Spreadsheet:
    """An .xlsx opened for bounded reading: sheet names and each sheet's rows (see the module doc).

    Use as a context manager (the read-only workbook keeps its zip open until :meth:`close`)."""

    def __init__(self, path: Path, workbook: Workbook, limits: SheetLimits) -> None:
        self.path = path
        self._workbook = workbook
        self.limits = limits
        self._rows: dict[str, list[tuple[Any, ...]]] = {}

    @property
    def sheetnames(self) -> list[str]:
        return list(self._workbook.sheetnames)

    def __enter__(self) -> Spreadsheet:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._workbook.close()

    def rows(self, sheet: str) -> list[tuple[Any, ...]]:
        """Rows 1.. up to the last one holding a value (index 0 = Excel row 1), each up to its last value;
        merged ranges filled with their top-left value. Raises :class:`AnnotationError` past a limit."""
        if sheet not in self._rows:
            self._rows[sheet] = self._read(sheet)
        return self._rows[sheet]

    def _read(self, sheet: str) -> list[tuple[Any, ...]]:
        from openpyxl.utils.cell import range_boundaries

        # openpyxl's own streaming parser, the one its read-only worksheets use: it yields only the cells
        # present in the XML (so declared dimensions and empty area cost nothing) and collects the
        # <mergeCells> ranges, which read-only worksheets do not expose, in the same pass.
        from openpyxl.worksheet._reader import WorkSheetParser

        path, limits, workbook = self.path, self.limits, self._workbook
        worksheet = workbook[sheet]
        source_path = getattr(worksheet, "_worksheet_path", None)
        if source_path is None:  # a chart sheet: no cells
            return []
        cells: dict[int, dict[int, Any]] = {}  # row -> column -> value, only the cells holding one
        try:
            with workbook._archive.open(source_path) as source:
                parser = WorkSheetParser(
                    source,
                    worksheet._shared_strings,
                    data_only=True,
                    epoch=workbook.epoch,
                    date_formats=workbook._date_formats,
                    timedelta_formats=workbook._timedelta_formats,
                )
                filled = 0
                for _, row_cells in parser.parse():
                    for cell in row_cells:
                        value = cell["value"]
                        if _is_blank(value):
                            continue  # empty or styled-only cells do not extend the used range
                        row, column = cell["row"], cell["column"]
                        if row > limits.max_rows or column > limits.max_columns:
                            raise self._stray_cell(sheet, row, column, value)
                        filled += 1
                        if filled > limits.max_cells:
                            raise _limit_error(
                                path, f"the sheet holds more than {limits.max_cells:,} values", "max_cells",
                                limits, sheet=sheet,
                            )  # fmt: skip
                        cells.setdefault(row, {})[column] = value
                merges = parser.merged_cells.mergeCell if parser.merged_cells is not None else []
                ranges = [(str(m.ref), range_boundaries(str(m.ref))) for m in merges]
        except AnnotationError:
            raise
        # openpyxl reports a damaged sheet as ValueError, KeyError, TypeError, a parse error...: all the same
        except Exception as exc:
            raise AnnotationError(
                f"sheet XML not readable ({type(exc).__name__}: {str(exc)[:200]}); the file is "
                "damaged: open it in Excel or LibreOffice and save it again",
                file=path,
                sheet=sheet,
            ) from None
        if not cells:
            return []
        last_row = max(cells)
        last_column = max(max(row) for row in cells.values())
        for ref, (min_col, min_row, max_col, max_row) in ranges:
            top = cells.get(min_row, {}).get(min_col)
            if top is None:
                continue
            # a range reaching past the last value (a whole column merged) is filled only up to it
            rows_span = range(min_row, min(max_row, last_row) + 1)
            columns_span = range(min_col, min(max_col, last_column) + 1)
            filled += len(rows_span) * len(columns_span) - 1
            if filled > limits.max_cells:
                raise _limit_error(
                    path, f"merged range {ref} makes the sheet hold more than {limits.max_cells:,} values",
                    "max_cells", limits, sheet=sheet,
                )  # fmt: skip
            for row in rows_span:
                values = cells.setdefault(row, {})
                for column in columns_span:
                    values[column] = top
        area = sum(max(row) for row in cells.values()) + last_row
        if area > limits.max_cells:
            raise _limit_error(
                path, f"the sheet's rows, each up to its last value, occupy {area:,} cells", "max_cells",
                limits, sheet=sheet,
            )  # fmt: skip
        rows: list[tuple[Any, ...]] = []
        for number in range(1, last_row + 1):
            values = cells.get(number)
            if not values:
                rows.append(())
                continue
            row_values: list[Any] = [None] * max(values)
            for column, value in values.items():
                row_values[column - 1] = value
            rows.append(tuple(row_values))
        return rows

    def _stray_cell(self, sheet: str, row: int, column: int, value: object) -> AnnotationError:
        from openpyxl.utils.cell import get_column_letter

        name, limit = ("max_rows", "row") if row > self.limits.max_rows else ("max_columns", "column")
        what = f"cell {get_column_letter(column)}{row} holds {cut(value, 40)}, beyond {limit} "
        what += f"{getattr(self.limits, name):,}"
        return _limit_error(self.path, what, name, self.limits, "delete the stray cell", sheet=sheet, row=row)


def open_workbook(path: Path, limits: SheetLimits | None = None) -> Spreadsheet:
    """Open an xlsx (cached formula values) for bounded reading; anything unreadable or past a limit
    becomes an :class:`AnnotationError` naming the file."""
    import openpyxl

    limits = limits or sheet_limits()
    check_archive(path, limits)
    try:
        workbook = openpyxl.load_workbook(path, read_only=True, data_only=True)
    # openpyxl reports an unreadable file as BadZipFile, KeyError, InvalidFileException, OSError...: all the same here
    except Exception as exc:
        raise _unreadable(path, exc) from None
    return Spreadsheet(Path(path), workbook, limits)


# --------------------------------------------------------------------------------------------- tables


def normalise_header(value: object) -> str:
    return " ".join(str(value).split()).lower() if value is not None else ""


@dataclass(frozen=True)
class Column:
    """A column the loader reads: canonical name (used in messages), accepted header spellings, required?"""

    name: str
    aliases: tuple[str, ...] = ()
    required: bool = True

    def matches(self, header: str) -> bool:
        return header in {normalise_header(n) for n in (self.name, *self.aliases)}


@dataclass
class Table:
    """A located table: the sheet, its header row (1-based, 0 for headerless sheets) and column positions."""

    file: Path
    sheet: str
    header_row: int
    columns: dict[str, int]  # canonical name -> 0-based position
    rows: list[tuple[Any, ...]]  # rows up to the last with a value, index 0 = Excel row 1 (Spreadsheet.rows)

    def data_rows(self) -> Iterator[tuple[int, DataRow]]:
        """(Excel row number, row) for every non-blank row below the header."""
        for index in range(self.header_row, len(self.rows)):
            values = self.rows[index]
            if all(_is_blank(v) for v in values):
                continue
            yield index + 1, DataRow(self, index + 1, values)


@dataclass
class DataRow:
    table: Table
    number: int
    values: tuple[Any, ...]

    def get(self, column: str) -> Any:
        position = self.table.columns.get(column)
        if position is None or position >= len(self.values):
            return None
        value = self.values[position]
        return value.strip() if isinstance(value, str) else value

    def text(self, column: str) -> str:
        """Cell as trimmed text; whole floats lose their ``.0``; blank -> ``""``."""
        return cell_text(self.get(column))

    def required_text(self, column: str) -> str:
        value = self.text(column)
        if not value:
            raise RowSkip(MISSING_VALUE, column)
        return value

    def frame(self, column: str) -> int:
        value = to_frame(self.get(column), column, required=True)
        assert value is not None  # required=True never returns None
        return value

    def optional_frame(self, column: str) -> int | None:
        return to_frame(self.get(column), column, required=False)

    def error(self, message: str, column: str | None = None) -> AnnotationError:
        """An :class:`AnnotationError` at this row (and ``column``): for a row the whole file depends on,
        such as a naming-sheet entry, where a skip would not do."""
        return AnnotationError(
            message, file=self.table.file, sheet=self.table.sheet, row=self.number, column=column
        )

    def where(self, column: str | None = None) -> str:
        """``file name, sheet 'S', row N[, column 'C']`` (:func:`~megc_vqa.annotations.errors.location`)."""
        return location(self.table.file.name, self.table.sheet, self.number, column or None)

    def looks_like_note(self, frame_columns: Sequence[str]) -> bool:
        """Preamble/footer text: no frame numbers and at most two filled cells (``Note: ...``)."""
        filled = [v for v in self.values if not _is_blank(v)]
        return all(_is_blank(self.get(c)) for c in frame_columns) and len(filled) <= 2

    def note_text(self) -> str:
        return " | ".join(cell_text(v) for v in self.values if not _is_blank(v))[:120]


def locate_table(
    path: Path,
    columns: Sequence[Column],
    *,
    preferred_sheets: Sequence[str] = (),
) -> Table:
    """Find the sheet and header row holding ``columns`` (names matched case- and space-insensitively).

    Sheets are tried in ``preferred_sheets`` order, then workbook order; the header is searched in the first
    ``HEADER_SCAN_ROWS`` rows, so preamble rows of any length are skipped. A header missing a required column
    raises :class:`AnnotationError` naming the file, the sheet, the header row and the missing column.
    """
    with open_workbook(path) as workbook:
        return _locate_table(path, workbook, columns, preferred_sheets)


def _locate_table(
    path: Path, workbook: Spreadsheet, columns: Sequence[Column], preferred_sheets: Sequence[str]
) -> Table:
    names = [n for n in preferred_sheets if n in workbook.sheetnames]
    names += [n for n in workbook.sheetnames if n not in names]
    required = [c for c in columns if c.required]
    best: tuple[int, str, int, list[str], list[str]] | None = None  # (found, sheet, row, missing, headers)
    for sheet_name in names:
        rows = workbook.rows(sheet_name)
        for index, values in enumerate(rows[:HEADER_SCAN_ROWS]):
            headers = [normalise_header(v) for v in values]
            positions = _match_columns(columns, headers)
            missing = [c.name for c in required if c.name not in positions]
            if not missing:
                return Table(path, sheet_name, index + 1, positions, rows)
            found = len(required) - len(missing)
            if found >= 2 and (best is None or found > best[0]):
                best = (
                    found,
                    sheet_name,
                    index + 1,
                    missing,
                    [cell_text(v) for v in values if not _is_blank(v)],
                )
    if best is not None:
        _, sheet_name, row, missing, headers = best
        raise AnnotationError(
            f"missing required column {missing[0]!r} (header row has: {', '.join(headers)})",
            file=path,
            sheet=sheet_name,
            row=row,
            column=missing[0],
        )
    raise AnnotationError(
        f"no header row with columns {', '.join(c.name for c in required)} in rows 1-{HEADER_SCAN_ROWS}",
        file=path,
        sheet=names[0] if names else None,
        row=1,
        column=required[0].name if required else None,
    )


def headerless_table(
    path: Path,
    sheet_index: int,
    names: Sequence[str],
    *,
    sheet_name: str | None = None,
    workbook: Spreadsheet | None = None,
) -> Table:
    """A sheet without a header row (CAS(ME)^2): columns are positional and named by ``names``."""
    if workbook is None:
        with open_workbook(path) as opened:
            return headerless_table(path, sheet_index, names, sheet_name=sheet_name, workbook=opened)
    if sheet_name is not None and sheet_name in workbook.sheetnames:
        title = sheet_name
    elif sheet_index < len(workbook.sheetnames):
        title = workbook.sheetnames[sheet_index]
    else:
        raise AnnotationError(
            f"workbook has {len(workbook.sheetnames)} sheet(s); expected sheet {sheet_index + 1}"
            + (f" ({sheet_name!r})" if sheet_name else ""),
            file=path,
            sheet=sheet_name,
        )
    rows = workbook.rows(title)
    width = max((_filled_width(r) for r in rows), default=0)
    if width < len(names):
        raise AnnotationError(
            f"sheet has {width} column(s) but the format has {len(names)}; missing column {names[width]!r}",
            file=path,
            sheet=title,
            row=1,
            column=names[width],
        )
    return Table(path, title, 0, {name: i for i, name in enumerate(names)}, rows)


def _filled_width(values: Sequence[Any]) -> int:
    width = 0
    for i, v in enumerate(values):
        if not _is_blank(v):
            width = i + 1
    return width


def _match_columns(columns: Sequence[Column], headers: Sequence[str]) -> dict[str, int]:
    positions: dict[str, int] = {}
    for column in columns:
        for i, header in enumerate(headers):
            if header and column.matches(header):
                positions[column.name] = i
                break
    return positions


# --------------------------------------------------------------------------------------------- cells


def _is_blank(value: object) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and math.isnan(value):
        return True
    return isinstance(value, str) and not value.strip()


def cell_text(value: object) -> str:
    if _is_blank(value):
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


_UNKNOWN_FRAME_MARKS = frozenset({"/", "-", "?", "n/a", "na", "none"})


def to_frame(value: object, column: str, *, required: bool = True) -> int | None:
    """A frame-number cell as an int.

    Blank cells and unknown-marks (``/``, ``-``, ``?``) give ``None`` (or ``RowSkip(MISSING_VALUE)`` when
    ``required``). Fractional numbers (SAMM-LV ``1234.5``) are rounded to the nearest frame, halves up.
    Anything else (text, negative numbers, booleans) raises ``RowSkip(BAD_FRAME_NUMBER)``.
    """
    if _is_blank(value) or (isinstance(value, str) and value.strip().lower() in _UNKNOWN_FRAME_MARKS):
        if required:
            raise RowSkip(MISSING_VALUE, column)
        return None
    if isinstance(value, bool):
        raise RowSkip(BAD_FRAME_NUMBER, f"{column}={value!r}")
    number: float
    if isinstance(value, (int, float)):
        number = float(value)
    else:
        try:
            number = float(str(value).strip())
        except ValueError:
            raise RowSkip(BAD_FRAME_NUMBER, f"{column}={value!r}") from None
    if math.isnan(number) or math.isinf(number) or number < 0:
        raise RowSkip(BAD_FRAME_NUMBER, f"{column}={value!r}")
    return math.floor(number + 0.5)


def check_interval(onset: int, apex: int | None, offset: int) -> None:
    if onset > offset:
        raise RowSkip(ONSET_AFTER_OFFSET, f"onset {onset} > offset {offset}")
    if apex is not None and not onset <= apex <= offset:
        raise RowSkip(APEX_OUTSIDE, f"apex {apex} not in {onset}..{offset}")


def clip_emotions(dataset: str, word: str) -> tuple[str, str]:
    """(fine, coarse) for a short-clip dataset; unknown words and labels outside the composite are skips."""
    fine = normalise_fine(word)
    if not fine:
        raise RowSkip(MISSING_VALUE, "emotion")
    if fine not in KNOWN_FINE[dataset]:
        raise RowSkip(UNKNOWN_EMOTION, word)
    coarse = coarse_of(dataset, fine)
    if coarse is None:
        raise RowSkip(f"{NOT_IN_COMPOSITE}: {fine}", word)
    return fine, coarse


def parse_row_aus(row: DataRow, column: str) -> tuple:
    """AUs of a row; an unparseable AU string skips the row (never silently loses an AU)."""
    try:
        return parse_aus(row.get(column), where=row.where(column))
    except AnnotationError as exc:
        raise RowSkip(BAD_AU_STRING, str(exc)) from None


def subject_number(value: object) -> int:
    """The integer in a subject cell: ``6``, ``"6"``, ``"006"``, ``"sub06"``, ``"s6"`` -> 6."""
    text = cell_text(value)
    match = re.fullmatch(r"(?i)(?:sub|s)?0*(\d+)", text)
    if not match:
        raise RowSkip(BAD_SUBJECT, repr(text))
    return int(match.group(1))


# --------------------------------------------------------------------------------------------- paths


def safe_join(root: Path, *parts: str) -> Path:
    """``root/part/...``, refusing parts that would leave ``root`` (``..``, absolute paths, drive letters).

    The check is lexical, so a dataset folder that is itself a symlink to another disk still works.
    """
    for part in parts:
        if not part or os.path.isabs(part) or re.match(r"^[A-Za-z]:", part) or part.startswith(("\\", "/")):
            raise RowSkip(PATH_ESCAPES_ROOT, repr(part))
    base = os.path.abspath(root)  # absolute, so that a root of "." compares correctly
    joined = os.path.normpath(os.path.join(base, *parts))
    if os.path.commonpath([base, joined]) != base or any(".." in Path(p).parts for p in parts):
        raise RowSkip(PATH_ESCAPES_ROOT, "/".join(parts))
    return Path(root, *parts)


class FrameLocator:
    """Finds a clip's frame folder under a dataset root.

    Frames sit either directly in the root (the synthetic layout, ``root/sub01/EP02_01f``) or one or two
    folder levels below it, as in the real releases (``CASME2_RAW_selected/sub01/EP02_01f``,
    ``part_A/data/spNO.1/a/color``). The first base folder that holds a clip is tried first afterwards.
    """

    def __init__(self, root: Path, max_depth: int = 2) -> None:
        self.root = root
        self.max_depth = max_depth
        self._bases: list[Path] | None = None
        self._good: Path | None = None

    def locate(self, relative: Path) -> Path | None:
        candidates = [self._good] if self._good is not None else []
        if (self.root / relative).is_dir():
            return self.root / relative
        for base in [*candidates, *self._candidate_bases()]:
            if (base / relative).is_dir():
                self._good = base
                return base / relative
        return None

    def _candidate_bases(self) -> list[Path]:
        if self._bases is None:
            bases: list[Path] = []
            level = [self.root]
            seen = {os.path.realpath(self.root): self.root}
            for _ in range(self.max_depth):
                level = [d for parent in level for d in subfolders(parent, seen)]
                bases.extend(level)
            self._bases = bases
        return self._bases


def subfolders(folder: Path, seen: dict[str, Path] | None = None) -> list[Path]:
    """The non-hidden sub-folders of ``folder``, sorted, following links (a dataset folder may be a link to
    another disk). Symlink loops are skipped with a warning naming the path: a link to itself (the system
    refuses to follow it) and, with ``seen`` (real path -> the path it was first met as, shared by one
    walk), a folder met before under another name (``self -> .``, ``up -> ..``), which would otherwise
    be searched again and again and its datasets found several times."""
    try:
        entries = sorted(os.scandir(folder), key=lambda e: e.name)
    except OSError as exc:
        logger.warning("%s: cannot list this folder (%s); skipped", folder, exc.strerror or exc)
        return []
    found: list[Path] = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            if not entry.is_dir():
                continue
            real = os.path.realpath(entry.path, strict=True) if seen is not None else ""
        except OSError as exc:  # ELOOP: a link that leads back to itself
            logger.warning("%s: skipped (%s: a symlink loop)", entry.path, exc.strerror or exc)
            continue
        if seen is not None:
            if real in seen:
                logger.warning(
                    "%s: skipped, a symlink loop or a second name of %s (already searched)",
                    entry.path,
                    seen[real],
                )
                continue
            seen[real] = Path(entry.path)
        found.append(Path(entry.path))
    return found


class FrameIndex:
    """Frame numbers per folder (:func:`megc_vqa.frame_names.frame_number`), listed once per folder."""

    def __init__(self) -> None:
        self._numbers: dict[Path, list[int]] = {}

    def numbers(self, folder: Path) -> list[int]:
        if folder not in self._numbers:
            found = []
            try:
                for entry in os.scandir(folder):
                    number = frame_number(entry.name)
                    if number is not None and is_image(entry.name):
                        found.append(number)
            except OSError:
                pass
            self._numbers[folder] = sorted(found)
        return self._numbers[folder]

    def check_range(self, folder: Path, onset: int, offset: int) -> None:
        import bisect

        numbers = self.numbers(folder)
        i = bisect.bisect_left(numbers, onset)
        if i == len(numbers) or numbers[i] > offset:
            span = f"{numbers[0]}..{numbers[-1]}" if numbers else "none"
            raise RowSkip(
                NO_FRAMES_IN_RANGE, f"{folder}: no frame in {onset}..{offset} (frames on disk: {span})"
            )


def clip_folder(locator: FrameLocator, root: Path, *parts: str) -> Path:
    """Locate a clip/video folder from its path parts below the dataset root, or skip the row."""
    relative = safe_join(root, *parts).relative_to(root)
    folder = locator.locate(relative)
    if folder is None:
        raise RowSkip(MISSING_FOLDER, str(root / relative))
    return folder


# --------------------------------------------------------------------------------------------- row loop


def collect(
    table: Table,
    dataset: str,
    handle: Callable[[DataRow], T],
    *,
    frame_columns: Sequence[str],
) -> tuple[list[tuple[DataRow, T]], list[Skip]]:
    """Run ``handle`` on every data row; each :class:`RowSkip` becomes a :class:`Skip`, nothing is dropped.

    Rows with no frame numbers and at most two filled cells (titles, ``Note: ...`` footers) are reported as
    ``not a data row`` rather than as missing values.
    """
    done: list[tuple[DataRow, T]] = []
    skips: list[Skip] = []
    for number, row in table.data_rows():
        try:
            if row.looks_like_note(frame_columns):
                raise RowSkip(NOT_DATA_ROW, row.note_text())
            done.append((row, handle(row)))
        except RowSkip as skip:
            skips.append(Skip(dataset, str(table.file), number, skip.reason, skip.detail, table.sheet))
    return done, skips


def log_skips(dataset: str, skips: Iterable[Skip]) -> None:
    for skip in skips:
        logger.debug("%s: %s row %d skipped: %s %s", dataset, skip.file, skip.row, skip.reason, skip.detail)


# --------------------------------------------------------------------------------------------- row building


@dataclass(frozen=True)
class SpanColumns:
    """The columns holding a row's onset, offset and apex (``apex=None``: the format codes no apex)."""

    onset: str
    offset: str
    apex: str | None = None


@dataclass(frozen=True)
class Span:
    """A row's checked frame numbers: ``onset <= offset``, ``apex`` inside them or ``None`` (unknown)."""

    onset: int
    offset: int
    apex: int | None = None


@dataclass
class ReleaseSheet:
    """One load of a release sheet with a header row: the dataset root, the table, the frame folders below
    the root, the row loop and the record a row becomes. What every loader does the same way lives here;
    a loader's row handler reads only what its format spells its own way (subject and ids, emotion words,
    extra columns)."""

    dataset: str
    fps: float
    root: Path
    table: Table
    span_columns: SpanColumns
    locator: FrameLocator
    check_frames: bool = True
    frames: FrameIndex = field(default_factory=FrameIndex)

    @classmethod
    def open(
        cls,
        root: Path,
        dataset: str,
        fps: float,
        patterns: Sequence[str],
        columns: Sequence[Column],
        sheet: str,
        span_columns: SpanColumns,
        *,
        check_frames: bool = True,
    ) -> ReleaseSheet:
        """Find the annotation file under ``root`` (or take ``root`` as the file) and its header table,
        preferring the sheet named ``sheet``; frame folders are looked for below the file's folder."""
        root, path = resolve_root(Path(root), patterns)
        table = locate_table(path, columns, preferred_sheets=(sheet,))
        return cls(dataset, fps, root, table, span_columns, FrameLocator(root), check_frames)

    def span(self, row: DataRow) -> Span:
        """The row's onset, offset and apex, checked (:func:`check_interval`); an unknown apex is ``None``."""
        columns = self.span_columns
        onset = row.frame(columns.onset)
        offset = row.frame(columns.offset)
        apex = row.optional_frame(columns.apex) if columns.apex else None
        check_interval(onset, apex, offset)
        return Span(onset, offset, apex)

    def folder(self, span: Span, *parts: str) -> Path:
        """The frame folder at ``parts`` below the root; with ``check_frames``, the row is skipped unless a
        frame of ``span`` is on disk."""
        folder = clip_folder(self.locator, self.root, *parts)
        if self.check_frames:
            self.frames.check_range(folder, span.onset, span.offset)
        return folder

    def clip(
        self,
        row: DataRow,
        span: Span,
        folder: Path,
        subject: str,
        clip_id: str,
        image_id: str,
        *,
        aus: tuple[ActionUnit, ...] = (),
        emotions: tuple[str | None, str | None] = (None, None),
        expression_type: ExpressionType = "micro",
    ) -> Clip:
        """The :class:`Clip` of a short-clip row, frames in ``folder``; ``emotions`` is (fine, coarse)."""
        fine, coarse = emotions
        return Clip(
            dataset=self.dataset,
            subject=subject,
            clip_id=clip_id,
            image_id=image_id,
            source=FrameSource("folder", folder),
            fps=self.fps,
            onset=span.onset,
            offset=span.offset,
            apex=span.apex,
            aus=aus,
            fine_emotion=fine,
            coarse_emotion=coarse,
            expression_type=expression_type,
            row=row.number,
        )

    def records(self, handle: Callable[[DataRow], T]) -> tuple[list[T], list[Skip]]:
        """``handle`` run on every data row (:func:`collect`): its results in sheet order, and the skips."""
        frame_columns = (self.span_columns.onset, self.span_columns.offset)
        done, skips = collect(self.table, self.dataset, handle, frame_columns=frame_columns)
        log_skips(self.dataset, skips)
        return [value for _, value in done], skips


def long_videos(dataset: str, fps: float, events: Iterable[tuple[str, str, Path, Event]]) -> list[LongVideo]:
    """Group ``(subject, video_id, frame folder, event)`` into one :class:`LongVideo` per video, in order of
    each video's first event, its events sorted by onset (then offset, then sheet row)."""
    grouped: dict[tuple[str, str], tuple[Path, list[Event]]] = {}
    for subject, video_id, folder, event in events:
        grouped.setdefault((subject, video_id), (folder, []))[1].append(event)
    return [
        LongVideo(
            dataset=dataset,
            subject=subject,
            video_id=video_id,
            source=FrameSource("folder", folder),
            fps=fps,
            events=tuple(sorted(video_events, key=lambda e: (e.onset, e.offset, e.row))),
        )
        for (subject, video_id), (folder, video_events) in grouped.items()
    ]


# --------------------------------------------------------------------------------------------- writing


def new_workbook() -> Workbook:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.remove(workbook.active)
    return workbook


def save_workbook(
    workbook: Workbook, path: Path, cached: Mapping[str, Mapping[str, float]] | None = None
) -> Path:
    """Save, then give formula cells the cached values Excel would have stored.

    openpyxl writes formulas with an empty cached value, so a ``data_only`` reader would see ``None``; real
    releases saved by Excel carry the value. ``cached`` maps sheet title -> {cell reference: value}.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    workbook.save(path)
    if cached:
        _inject_cached_values(path, [workbook.sheetnames.index(t) for t in cached], list(cached.values()))
    return path


def _inject_cached_values(path: Path, sheet_indexes: list[int], values: list[Mapping[str, float]]) -> None:
    check_archive(path)  # our own file, just saved; bounded all the same before it is read whole
    with zipfile.ZipFile(path) as archive:
        entries = {info.filename: archive.read(info.filename) for info in archive.infolist()}
    for sheet_index, cells in zip(sheet_indexes, values, strict=True):
        name = f"xl/worksheets/sheet{sheet_index + 1}.xml"
        xml = entries[name].decode("utf-8")
        for reference, value in cells.items():
            pattern = re.compile(rf'(<c r="{reference}"[^>]*><f>[^<]*</f>)<v\s*/?>(?:</v>)?')
            xml, count = pattern.subn(lambda m, v=value: f"{m.group(1)}<v>{_xml_number(v)}</v>", xml)
            if count != 1:
                raise RuntimeError(f"formula cell {reference} not found in {name}")
        entries[name] = xml.encode("utf-8")
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)


def _xml_number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
