"""CASME II (200 fps): ``CASME2-coding-20140508.xlsx`` <-> :class:`~megc_vqa.records.Clip`.

Real format: one sheet (``Sheet1``), header in row 1: ``Subject`` (int, 1 -> folder ``sub01``), ``Filename``
(``EP02_01f``), ``OnsetFrame``, ``ApexFrame``, ``OffsetFrame``, ``Action Units`` (``4+L10``),
``Estimated Emotion`` (happiness, surprise, disgust, repression, fear, sadness, others).
Frames: ``<root>/sub01/EP02_01f/img46.jpg`` (the loader also finds them one or two folders down, e.g.
``CASME2_RAW_selected/``; cropped ``reg_img46.jpg`` names are read the same way).

Records: ``subject="sub01"``, ``clip_id="EP02_01f"``, ``image_id="sub01_EP02_01f"``, fine = the emotion
word, coarse per SPEC section 2; fear, sadness and others are reported as ``not in composite: <word>``.
An apex written ``/`` (as for sub04/EP12_01f in the release) loads as ``apex=None``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from megc_vqa.annotations import common
from megc_vqa.annotations.au import format_aus
from megc_vqa.annotations.common import Column
from megc_vqa.records import Clip, LoadResult

DATASET = "casme2"
FPS = 200.0
FILE_NAME = "CASME2-coding-20140508.xlsx"
SHEET = "Sheet1"
ANNOTATION_PATTERNS: tuple[str, ...] = ("CASME2-coding-*.xlsx", "CASME2_coding*.xlsx")

COLUMNS = (
    Column("Subject"),
    Column("Filename"),
    Column("OnsetFrame", ("Onset Frame", "Onset")),
    Column("ApexFrame", ("Apex Frame", "Apex")),
    Column("OffsetFrame", ("Offset Frame", "Offset")),
    Column("Action Units", ("AU", "AUs")),
    Column("Estimated Emotion", ("Emotion",)),
)
HEADER = tuple(c.name for c in COLUMNS)
SPAN = common.SpanColumns("OnsetFrame", "OffsetFrame", apex="ApexFrame")


def subject_folder(subject_number: int) -> str:
    return f"sub{subject_number:02d}"


def clip_dir(root: Path, subject: str, clip_id: str) -> Path:
    """``root/sub01/EP02_01f``; ``subject`` as in records (``sub01``)."""
    return Path(root) / subject / clip_id


def frame_name(index: int, clip_id: str = "") -> str:
    """``img46.jpg`` (no zero padding; ``clip_id`` unused, accepted for a uniform signature)."""
    return f"img{index}.jpg"


def load(root: Path, *, check_frames: bool = True) -> LoadResult:
    """Load a CASME II root (folder holding the coding xlsx, or the xlsx itself)."""
    sheet = common.ReleaseSheet.open(
        root, DATASET, FPS, ANNOTATION_PATTERNS, COLUMNS, SHEET, SPAN, check_frames=check_frames
    )

    def handle(row: common.DataRow) -> Clip:
        subject = subject_folder(common.subject_number(row.required_text("Subject")))
        clip_id = row.required_text("Filename")
        span = sheet.span(row)  # an apex written '/' (as in the release) is unknown: None
        emotions = common.clip_emotions(DATASET, row.required_text("Estimated Emotion"))
        aus = common.parse_row_aus(row, "Action Units")
        folder = sheet.folder(span, subject, clip_id)
        return sheet.clip(
            row, span, folder, subject, clip_id, f"{subject}_{clip_id}", aus=aus, emotions=emotions
        )

    clips, skips = sheet.records(handle)
    return LoadResult(clips=clips, skips=skips)


def write(records: Sequence[Clip], root: Path) -> Path:
    """Write ``root/CASME2-coding-20140508.xlsx`` in the release format, rows in ``records`` order.

    Layout: sheet ``Sheet1``, header in Excel row 1, record ``i`` (0-based) in row ``i + 2``; ``Subject``
    written as the integer (``sub01`` -> 1), emotions as the fine word (``others`` stays ``others``).
    Traps injected:
      * row 2 (the first record): apex written ``/`` -> loads with ``apex=None``.
    Records outside the composite (fear, sadness, others) are written as given and load as skips
    ``not in composite: <word>``.
    """
    workbook = common.new_workbook()
    sheet = workbook.create_sheet(SHEET)
    sheet.append(list(HEADER))
    for i, clip in enumerate(records):
        apex: object = "/" if i == 0 else clip.apex
        sheet.append(
            [
                common.subject_number(clip.subject),
                clip.clip_id,
                clip.onset,
                apex if apex is not None else "/",
                clip.offset,
                format_aus(clip.aus) or None,
                clip.fine_emotion or "",
            ]
        )
    return common.save_workbook(workbook, Path(root) / FILE_NAME)
