"""The annotation layer's error: a spreadsheet or label file that cannot be read at all.

In its own module so that both the AU parser (:mod:`.au`) and the loaders' shared helpers (:mod:`.common`,
which re-exports it) raise it without importing each other both ways.
"""

from __future__ import annotations

import os

from megc_vqa.errors import MegcError


def location(
    file: str | None = None, sheet: str | None = None, row: int | None = None, column: str | None = None
) -> str:
    """``file, sheet 'S', row N, column 'C'`` (the parts given): a place in a workbook, as every annotation
    message writes it."""
    parts = [] if file is None else [file]
    if sheet is not None:
        parts.append(f"sheet {sheet!r}")
    if row is not None:
        parts.append(f"row {row}")
    if column is not None:
        parts.append(f"column {column!r}")
    return ", ".join(parts)


class AnnotationError(MegcError, ValueError):
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
        where = location(self.file, sheet, row, column)
        super().__init__(f"{where}: {message}" if where else message)
