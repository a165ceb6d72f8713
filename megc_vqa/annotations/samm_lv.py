"""SAMM Long Videos (200 fps): ``SAMM_LongVideos_V*_Release.xlsx`` <-> :class:`~megc_vqa.records.LongVideo`.

Real format: sheet ``FACS_Movement_Only``, 9 preamble rows, header in row 10: ``Subject, Filename,
Inducement Code, Onset, Apex, Offset, Duration, Type, Action Units, Notes``. ``Filename`` is
``<video>_<event>`` (``006_1_3``: video ``006_1``, event 3); ``Type`` is ``Macro`` or ``Micro - 1/2``;
some onsets are fractional and some cells are formulas (read through their cached values).
No emotion column: events load with ``fine_emotion = coarse_emotion = None``.
Frames: ``<root>/006_1/006_1_0001.jpg`` (four-digit index), or one or two folders further down.

Records: one :class:`LongVideo` per video with at least one loaded event, ``subject="006"`` (zero-padded,
as in the video id; the sheet's ``Subject`` is ``6``), ``video_id="006_1"``; events sorted by onset.
Fractional frame numbers are rounded to the nearest frame (halves up).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from megc_vqa.annotations import common
from megc_vqa.annotations.au import format_aus
from megc_vqa.annotations.common import Column, RowSkip
from megc_vqa.records import Event, ExpressionType, LoadResult, LongVideo

DATASET = "samm_lv"
FPS = 200.0
FILE_NAME = "SAMM_LongVideos_V3_Release.xlsx"
SHEET = "FACS_Movement_Only"
ANNOTATION_PATTERNS: tuple[str, ...] = ("SAMM_LongVideos_V*_Release*.xlsx", "SAMM_LongVideos*.xlsx")

COLUMNS = (
    Column("Subject"),
    Column("Filename"),
    Column("Inducement Code", required=False),
    Column("Onset", ("Onset Frame",)),
    Column("Apex", ("Apex Frame",)),
    Column("Offset", ("Offset Frame",)),
    Column("Duration", required=False),
    Column("Type"),
    Column("Action Units", ("AU", "AUs")),
    Column("Notes", required=False),
)
HEADER = tuple(c.name for c in COLUMNS)
SPAN = common.SpanColumns("Onset", "Offset", apex="Apex")
PREAMBLE: tuple[tuple[str, ...], ...] = (
    ("SAMM Long Videos - FACS coded movements",),
    (),
    ("Onset, Apex and Offset are frame numbers of the image files.",),
    ("Type: Macro, or Micro - 1/2 (duration up to half a second).",),
    ("Action Units: L = left, R = right, A-E = intensity.",),
    (),
    ("Duration = Offset - Onset + 1.",),
    (),
    ("Please cite the SAMM Long Videos paper when using this dataset.",),
)


def video_of(filename: str) -> str:
    """``006_1_3`` -> ``006_1``."""
    parts = filename.split("_")
    if len(parts) < 3:
        raise RowSkip(common.MISSING_VALUE, f"Filename {filename!r} is not <subject>_<video>_<event>")
    return "_".join(parts[:2])


def clip_dir(root: Path, subject: str, video_id: str) -> Path:
    """``root/006_1`` (``subject`` unused: SAMM-LV has no subject level)."""
    return Path(root) / video_id


def frame_name(index: int, clip_id: str = "") -> str:
    """``006_1_0001.jpg``: ``clip_id`` is the video id (``006_1``)."""
    if not clip_id:
        raise ValueError("SAMM-LV frame names need the video id (e.g. '006_1')")
    return f"{clip_id}_{index:04d}.jpg"


def expression_type(text: str) -> ExpressionType:
    lowered = text.strip().lower()
    if lowered.startswith("micro"):
        return "micro"
    if lowered.startswith("macro"):
        return "macro"
    raise RowSkip(common.UNKNOWN_TYPE, repr(text))


def load(root: Path, *, check_frames: bool = True) -> LoadResult:
    """Load a SAMM Long Videos root (folder holding the release xlsx, or the xlsx itself)."""
    sheet = common.ReleaseSheet.open(
        root, DATASET, FPS, ANNOTATION_PATTERNS, COLUMNS, SHEET, SPAN, check_frames=check_frames
    )

    def handle(row: common.DataRow) -> tuple[str, str, Path, Event]:
        common.subject_number(row.required_text("Subject"))  # validates the cell; the id comes from Filename
        video = video_of(row.required_text("Filename"))
        span = sheet.span(row)
        kind = expression_type(row.required_text("Type"))
        aus = common.parse_row_aus(row, "Action Units")
        folder = sheet.folder(span, video)
        event = Event(span.onset, span.offset, span.apex, aus, None, None, kind, row.number)
        return video.split("_")[0], video, folder, event

    events, skips = sheet.records(handle)
    return LoadResult(long_videos=common.long_videos(DATASET, FPS, events), skips=skips)


def write(records: Sequence[LongVideo], root: Path) -> Path:
    """Write ``root/SAMM_LongVideos_V3_Release.xlsx`` in the release format.

    Layout: sheet ``FACS_Movement_Only``; rows 1-9 preamble (:data:`PREAMBLE`), row 10 the header; one row
    per event, videos in ``records`` order and events by onset, so the ``k``-th event overall is in Excel
    row ``10 + k``; ``Filename`` = ``<video_id>_<event number in its video>``; ``Subject`` the unpadded
    integer (``006`` -> 6); ``Type`` = ``Macro`` / ``Micro - 1/2``. Traps injected:
      * the preamble rows;
      * ``Duration`` is a formula ``=F{r}-D{r}+1`` in every row, with its cached value;
      * row 11 (first event): ``Offset`` is a formula ``=D11+<length - 1>`` with the cached offset;
      * row 12 (second event, if any): ``Onset`` written as ``onset + 0.25`` (fractional; rounds back).
    Emotions are not part of this format and are not written.
    """
    workbook = common.new_workbook()
    sheet = workbook.create_sheet(SHEET)
    for line in PREAMBLE:
        sheet.append(list(line) or [None])
    sheet.append(list(HEADER))
    cached: dict[str, float] = {}
    excel_row = len(PREAMBLE) + 1
    for video in records:
        for k, event in enumerate(sorted(video.events, key=lambda e: (e.onset, e.offset)), start=1):
            excel_row += 1
            first, second = excel_row == len(PREAMBLE) + 2, excel_row == len(PREAMBLE) + 3
            onset: float = event.onset + 0.25 if second else event.onset
            offset: object = event.offset
            if first:
                offset = f"=D{excel_row}+{event.offset - event.onset}"
                cached[f"F{excel_row}"] = event.offset
            sheet.append(
                [
                    common.subject_number(video.video_id.split("_")[0]),
                    f"{video.video_id}_{k}",
                    _inducement_code(video.video_id),
                    onset,
                    event.apex if event.apex is not None else "/",
                    offset,
                    f"=F{excel_row}-D{excel_row}+1",
                    "Macro" if event.expression_type == "macro" else "Micro - 1/2",
                    format_aus(event.aus) or None,
                    None,
                ]
            )
            cached[f"G{excel_row}"] = event.offset - onset + 1
    return common.save_workbook(workbook, Path(root) / FILE_NAME, {SHEET: cached})


def _inducement_code(video_id: str) -> int | None:
    parts = video_id.split("_")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
