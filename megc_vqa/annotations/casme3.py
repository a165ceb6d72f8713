"""CAS(ME)^3 part A micro-expressions (30 fps): ``cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx`` <-> Clip.

Real format: header ``Subject`` (``spNO.1``), ``Filename`` (the recording: ``a``, ``b``, ...), ``Onset``,
``Apex``, ``Offset`` (JPG indices), ``AU``, ``Objective class``, ``emotion`` (happy, sad, disgust, fear,
anger, surprise, others). One recording holds several micro-expressions, so a ``Filename`` repeats within
a subject. Frames: ``<root>/spNO.1/a/color/123.jpg``, with dropped frames (numbers missing on disk).

Records: ``subject="spNO.1"``, ``clip_id`` = the ``Filename`` cell, fine = normalised emotion
(happy -> happiness, sad -> sadness), ``others`` reported as ``not in composite: others``.

image_id (unique per dataset, deterministic, independent of row order):
``{subject}_{filename}`` (``spNO.1_a``) when the pair (subject, filename) occurs once in the sheet;
when it occurs more than once, every occurrence becomes ``{subject}_{filename}_{onset}``
(``spNO.1_a_1021``), and a later row repeating the same onset as well gets ``_2``, ``_3``... in sheet order.
Duplicates are counted over every data row that names the pair, skipped rows included, so fixing one row
never renames its siblings. :func:`image_id` builds these ids for writers of synthetic records.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from megc_vqa.annotations import common
from megc_vqa.annotations.au import format_aus
from megc_vqa.annotations.common import Column
from megc_vqa.records import Clip, LoadResult

DATASET = "casme3"
FPS = 30.0
FILE_NAME = "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx"
SHEET = "Sheet1"
ANNOTATION_PATTERNS: tuple[str, ...] = ("cas(me)3_part_A_ME_label*.xlsx", "CAS(ME)3_part_A_ME_label*.xlsx")
MODALITY = "color"

COLUMNS = (
    Column("Subject"),
    Column("Filename"),
    Column("Onset", ("Onset Frame", "OnsetFrame")),
    Column("Apex", ("Apex Frame", "ApexFrame")),
    Column("Offset", ("Offset Frame", "OffsetFrame")),
    Column("AU", ("Action Units", "AUs")),
    Column("Objective class", ("Objective classes",), required=False),
    Column("emotion", ("Estimated Emotion",)),
)
HEADER = tuple(c.name for c in COLUMNS)
SPAN = common.SpanColumns("Onset", "Offset", apex="Apex")
# CAS(ME)^3 spells these two the short way; the loader normalises them back.
RELEASE_SPELLING = {"happiness": "happy", "sadness": "sad"}


def image_id(subject: str, filename: str, onset: int | None = None, repeat: int = 1) -> str:
    """``spNO.1_a``; with ``onset`` (a filename repeated in the subject) ``spNO.1_a_1021``; ``repeat`` > 1
    appends ``_<repeat>`` for a second row with the same onset."""
    base = f"{subject}_{filename}" if onset is None else f"{subject}_{filename}_{onset}"
    return base if repeat == 1 else f"{base}_{repeat}"


def clip_dir(root: Path, subject: str, clip_id: str) -> Path:
    """``root/spNO.1/a/color``."""
    return Path(root) / subject / clip_id / MODALITY


def frame_name(index: int, clip_id: str = "") -> str:
    """``123.jpg`` (``clip_id`` unused)."""
    return f"{index}.jpg"


def load(root: Path, *, check_frames: bool = True) -> LoadResult:
    """Load a CAS(ME)^3 part A root (folder holding the ME label xlsx, or the xlsx itself)."""
    sheet = common.ReleaseSheet.open(
        root, DATASET, FPS, ANNOTATION_PATTERNS, COLUMNS, SHEET, SPAN, check_frames=check_frames
    )
    pair_counts = Counter(
        (row.text("Subject"), row.text("Filename"))
        for _, row in sheet.table.data_rows()
        if row.text("Subject") and row.text("Filename")
    )
    seen_ids: Counter[str] = Counter()

    def handle(row: common.DataRow) -> Clip:
        subject = row.required_text("Subject")
        clip_id = row.required_text("Filename")
        span = sheet.span(row)
        emotions = common.clip_emotions(DATASET, row.required_text("emotion"))
        aus = common.parse_row_aus(row, "AU")
        folder = sheet.folder(span, subject, clip_id, MODALITY)
        onset = span.onset if pair_counts[(subject, clip_id)] > 1 else None  # the filename repeats
        base = image_id(subject, clip_id, onset)
        seen_ids[base] += 1
        unique_id = image_id(subject, clip_id, onset, seen_ids[base])
        return sheet.clip(row, span, folder, subject, clip_id, unique_id, aus=aus, emotions=emotions)

    clips, skips = sheet.records(handle)
    return LoadResult(clips=clips, skips=skips)


def write(records: Sequence[Clip], root: Path) -> Path:
    """Write ``root/cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx`` in the release format, rows in ``records`` order.

    Layout: sheet ``Sheet1``, header in Excel row 1, record ``i`` (0-based) in row ``i + 2``; emotions in the
    release spelling (``happy``, ``sad``, ``others``). Traps injected:
      * row 2 (the first record): the AU string written lower case with spaces (``l10 + 12``);
      * duplicate filenames: records sharing (subject, clip_id) are written as separate rows with the same
        ``Filename``, as in the release (give records the :func:`image_id` scheme to round-trip them).
    """
    workbook = common.new_workbook()
    sheet = workbook.create_sheet(SHEET)
    sheet.append(list(HEADER))
    for i, clip in enumerate(records):
        aus = format_aus(clip.aus)
        if i == 0:
            aus = aus.lower().replace("+", " + ")
        fine = clip.fine_emotion or ""
        sheet.append(
            [
                clip.subject,
                clip.clip_id,
                clip.onset,
                clip.apex if clip.apex is not None else "/",
                clip.offset,
                aus or None,
                clip.coarse_emotion or "others",
                RELEASE_SPELLING.get(fine, fine),
            ]
        )
    return common.save_workbook(workbook, Path(root) / FILE_NAME)
