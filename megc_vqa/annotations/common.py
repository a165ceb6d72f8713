"""Shared machinery of the annotation loaders and writers: workbook access, header detection, cell parsing,
row-level skips, safe paths and frame-folder checks.

openpyxl is imported inside the functions that need it so that importing a dataset module stays cheap.
Workbooks are opened with ``data_only=True``: a formula cell yields the value Excel cached when it last
saved the file (SAMM Long Videos has such cells).
"""

from __future__ import annotations

import logging
import math
import os
import re
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from megc_vqa.frame_names import frame_number, is_image
from megc_vqa.labels import KNOWN_FINE, coarse_of, normalise_fine
from megc_vqa.records import Skip

if TYPE_CHECKING:
    from openpyxl.workbook.workbook import Workbook
    from openpyxl.worksheet.worksheet import Worksheet

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


class AnnotationError(ValueError):
    """An annotation file that cannot be read at all. The message names file, sheet, row and column."""

    def __init__(
        self,
        message: str,
        *,
        file: str | os.PathLike[str] | None = None,
        sheet: str | None = None,
        row: int | None = None,
        column: str | None = None,
    ) -> None:
        self.file = None if file is None else str(file)
        self.sheet = sheet
        self.row = row
        self.column = column
        self.detail = message
        where = []
        if self.file is not None:
            where.append(self.file)
        if sheet is not None:
            where.append(f"sheet {sheet!r}")
        if row is not None:
            where.append(f"row {row}")
        if column is not None:
            where.append(f"column {column!r}")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


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


def open_workbook(path: Path) -> Workbook:
    """Open an xlsx with cached formula values; anything unreadable becomes an :class:`AnnotationError`."""
    import openpyxl

    try:
        return openpyxl.load_workbook(path, data_only=True)
    # openpyxl reports an unreadable file as BadZipFile, KeyError, InvalidFileException, OSError...: all the same here
    except Exception as exc:
        message = f"not a readable .xlsx workbook ({type(exc).__name__}: {exc})"
        raise AnnotationError(message, file=path) from exc


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
    rows: list[tuple[Any, ...]]  # every row of the sheet, index 0 = Excel row 1

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

    def where(self, column: str | None = None) -> str:
        parts = [self.table.file.name, f"sheet {self.table.sheet!r}", f"row {self.number}"]
        if column:
            parts.append(f"column {column!r}")
        return ", ".join(parts)

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
    workbook = open_workbook(path)
    names = [n for n in preferred_sheets if n in workbook.sheetnames]
    names += [n for n in workbook.sheetnames if n not in names]
    required = [c for c in columns if c.required]
    best: tuple[int, str, int, list[str], list[str]] | None = None  # (found, sheet, row, missing, headers)
    for sheet_name in names:
        rows = sheet_rows(workbook[sheet_name])
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
    workbook: Workbook | None = None,
) -> Table:
    """A sheet without a header row (CAS(ME)^2): columns are positional and named by ``names``."""
    workbook = workbook if workbook is not None else open_workbook(path)
    if sheet_name is not None and sheet_name in workbook.sheetnames:
        sheet = workbook[sheet_name]
    elif sheet_index < len(workbook.sheetnames):
        sheet = workbook[workbook.sheetnames[sheet_index]]
    else:
        raise AnnotationError(
            f"workbook has {len(workbook.sheetnames)} sheet(s); expected sheet {sheet_index + 1}"
            + (f" ({sheet_name!r})" if sheet_name else ""),
            file=path,
            sheet=sheet_name,
        )
    rows = sheet_rows(sheet)
    width = max((_filled_width(r) for r in rows), default=0)
    if width < len(names):
        raise AnnotationError(
            f"sheet has {width} column(s) but the format has {len(names)}; missing column {names[width]!r}",
            file=path,
            sheet=sheet.title,
            row=1,
            column=names[width],
        )
    return Table(path, sheet.title, 0, {name: i for i, name in enumerate(names)}, rows)


def sheet_rows(sheet: Worksheet) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in sheet.iter_rows(min_row=1, values_only=True)]


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
    from megc_vqa.annotations.au import parse_aus

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
            for _ in range(self.max_depth):
                level = [d for parent in level for d in _subdirs(parent)]
                bases.extend(level)
            self._bases = bases
        return self._bases


def _subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(Path(e.path) for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
    except OSError:
        return []


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
