"""SMIC-HS(-E) (100 fps): ``SMIC-HS-E_annotation.xlsx`` <-> :class:`~megc_vqa.records.Clip`.

Real format: header ``Subject, Filename, OnsetF, OffsetF, Emotion, FirstF`` and free-text footer rows after
the data. ``Emotion`` is the coarse class (``negative``/``positive``/``surprise`` or ``ne``/``po``/``sur``);
SMIC has no fine label and no apex. ``FirstF`` (first frame of the recording) is read by nobody downstream:
onsets and offsets are absolute frame numbers of the image files.
Frames: ``<root>/s01/s01_ne_01/image000123.jpg`` (six-digit index; the loader reads any trailing number).

Records: ``subject="s01"``, ``clip_id`` = the ``Filename`` cell, ``image_id="s01_ne_01"`` (the filename,
prefixed with the subject when the cell lacks it), ``apex=None``, ``fine_emotion=None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from megc_vqa.annotations import common
from megc_vqa.annotations.common import Column, RowSkip
from megc_vqa.labels import COARSE_MAPS
from megc_vqa.records import Clip, LoadResult

DATASET = "smic"
FPS = 100.0
FILE_NAME = "SMIC-HS-E_annotation.xlsx"
SHEET = "Sheet1"
ANNOTATION_PATTERNS: tuple[str, ...] = ("SMIC-HS-E_annotation*.xlsx", "SMIC*_annotation*.xlsx")

COLUMNS = (
    Column("Subject"),
    Column("Filename"),
    Column("OnsetF", ("Onset", "OnsetFrame")),
    Column("OffsetF", ("Offset", "OffsetFrame")),
    Column("Emotion"),
    Column("FirstF", required=False),
)
HEADER = tuple(c.name for c in COLUMNS)
SPAN = common.SpanColumns("OnsetF", "OffsetF")  # SMIC codes no apex
# Written after one blank row below the data (Excel rows n+3 and n+4 for n records).
FOOTER: tuple[str, ...] = (
    "Note: OnsetF and OffsetF are absolute frame numbers; FirstF is the first frame of the recording.",
    "Emotion: negative / positive / surprise.",
)


def subject_name(number: int) -> str:
    return f"s{number:02d}"


def clip_dir(root: Path, subject: str, clip_id: str) -> Path:
    """``root/s01/s01_ne_01``; ``subject`` as in records (``s01``)."""
    return Path(root) / subject / _folder_name(subject, clip_id)


def frame_name(index: int, clip_id: str = "") -> str:
    """``image000123.jpg`` (six-digit index; ``clip_id`` unused)."""
    return f"image{index:06d}.jpg"


def _folder_name(subject: str, clip_id: str) -> str:
    return clip_id if clip_id.startswith(f"{subject}_") else f"{subject}_{clip_id}"


def load(root: Path, *, check_frames: bool = True) -> LoadResult:
    """Load a SMIC-HS(-E) root (folder holding the annotation xlsx, or the xlsx itself)."""
    sheet = common.ReleaseSheet.open(
        root, DATASET, FPS, ANNOTATION_PATTERNS, COLUMNS, SHEET, SPAN, check_frames=check_frames
    )

    def handle(row: common.DataRow) -> Clip:
        subject = subject_name(common.subject_number(row.required_text("Subject")))
        clip_id = row.required_text("Filename")
        span = sheet.span(row)
        word = row.required_text("Emotion")
        coarse = COARSE_MAPS[DATASET].get(word.lower())
        if coarse is None:
            raise RowSkip(common.UNKNOWN_EMOTION, word)
        image_id = _folder_name(subject, clip_id)
        folder = sheet.folder(span, subject, image_id)
        return sheet.clip(row, span, folder, subject, clip_id, image_id, emotions=(None, coarse))

    clips, skips = sheet.records(handle)
    return LoadResult(clips=clips, skips=skips)


def write(records: Sequence[Clip], root: Path) -> Path:
    """Write ``root/SMIC-HS-E_annotation.xlsx`` in the release format, rows in ``records`` order.

    Layout: sheet ``Sheet1``, header in Excel row 1, record ``i`` (0-based) in row ``i + 2``; ``Subject``
    as the integer (``s01`` -> 1); ``Emotion`` = the record's coarse class; ``FirstF`` = the onset (records
    carry no recording start). Traps injected:
      * the footer: with ``n`` records, row ``n + 2`` is blank and rows ``n + 3`` and ``n + 4`` hold the
        :data:`FOOTER` text; each loads as a skip ``not a data row``.
    """
    workbook = common.new_workbook()
    sheet = workbook.create_sheet(SHEET)
    sheet.append(list(HEADER))
    for clip in records:
        sheet.append(
            [
                common.subject_number(clip.subject),
                clip.clip_id,
                clip.onset,
                clip.offset,
                clip.coarse_emotion or "",
                clip.onset,
            ]
        )
    sheet.append([None])
    for line in FOOTER:
        sheet.append([line])
    return common.save_workbook(workbook, Path(root) / FILE_NAME)
