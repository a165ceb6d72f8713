"""SAMM (200 fps): ``SAMM_Micro_FACS_Codes_v2.xlsx`` <-> :class:`~megc_vqa.records.Clip`.

Real format: preamble rows (title, description, coding notes) above the header; the header row is found
by its column names: ``Subject`` (int ``6``; folder ``006``), ``Filename`` (``006_1_2``), ``Inducement Code``,
``Onset Frame``, ``Apex Frame``, ``Offset Frame`` (older releases: ``Onset``, ``Apex``, ``Offset``),
``Duration``, ``Micro``, ``Action Units`` (``R12B``: trailing ``B`` is intensity), ``Estimated Emotion``
(capitalised: Anger, Contempt, Disgust, Fear, Happiness, Sadness, Surprise, Other), ``Objective Classes``,
``Notes``. Sheet ``MICRO_ONLY`` in some releases; every sheet is searched for the header.
Frames: ``<root>/006/006_1_2/006_05562.jpg`` (or one or two folders further down).

Records: ``subject="6"`` (unpadded, as in the MEGC training file), ``clip_id = image_id = "006_1_2"``,
fine = lower-case emotion (``Other`` -> ``others``, reported as ``not in composite: others``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from megc_vqa.annotations import common
from megc_vqa.annotations.au import format_aus
from megc_vqa.annotations.common import Column
from megc_vqa.records import Clip, LoadResult

DATASET = "samm"
FPS = 200.0
FILE_NAME = "SAMM_Micro_FACS_Codes_v2.xlsx"
SHEET = "MICRO_ONLY"
ANNOTATION_PATTERNS: tuple[str, ...] = ("SAMM_Micro_FACS_Codes*.xlsx",)

COLUMNS = (
    Column("Subject"),
    Column("Filename"),
    Column("Inducement Code", required=False),
    Column("Onset Frame", ("Onset", "OnsetFrame")),
    Column("Apex Frame", ("Apex", "ApexFrame")),
    Column("Offset Frame", ("Offset", "OffsetFrame")),
    Column("Duration", required=False),
    Column("Micro", ("Type",), required=False),
    Column("Action Units", ("AU", "AUs")),
    Column("Estimated Emotion", ("Emotion",)),
    Column("Objective Classes", ("Objective Class",), required=False),
    Column("Notes", required=False),
)
HEADER = tuple(c.name for c in COLUMNS)
SPAN = common.SpanColumns("Onset Frame", "Offset Frame", apex="Apex Frame")
# What `write` puts above the header: 13 rows, so the header sits in Excel row 14 as in the v2 release.
PREAMBLE: tuple[tuple[str, ...], ...] = (
    ("SAMM - Spontaneous Actions and Micro-Movements",),
    ("Micro-Movement FACS Codes, version 2",),
    (),
    ("Frame numbers are absolute frame indices of the image files.",),
    ("Action Units: L = left, R = right, A-E = intensity (trace to maximum).",),
    ("Estimated Emotion is the coders' estimate from the AUs and the inducement.",),
    (),
    ("Objective Classes: see Davison et al. (2018).",),
    (),
    ("Inducement Code: stimulus shown to the participant.",),
    (),
    ("Please cite the SAMM paper when using this dataset.",),
    (),
)
# Objective classes are informational here (the loader does not read them); written for format fidelity.
OBJECTIVE_CLASS = {"happiness": 1, "surprise": 2, "anger": 3, "contempt": 4, "disgust": 5, "fear": 6}


def subject_folder(subject: str) -> str:
    """``"6"`` -> ``"006"``."""
    return f"{common.subject_number(subject):03d}"


def clip_dir(root: Path, subject: str, clip_id: str) -> Path:
    """``root/006/006_1_2``; ``subject`` as in records (``"6"``)."""
    return Path(root) / subject_folder(subject) / clip_id


def frame_name(index: int, clip_id: str = "") -> str:
    """``006_05562.jpg``: the subject part of ``clip_id`` (``006_1_2`` -> ``006``) and a 5-digit index."""
    if not clip_id:
        raise ValueError("SAMM frame names need the clip id (e.g. '006_1_2')")
    return f"{clip_id.split('_')[0]}_{index:05d}.jpg"


def load(root: Path, *, check_frames: bool = True) -> LoadResult:
    """Load a SAMM root (folder holding the FACS-codes xlsx, or the xlsx itself)."""
    sheet = common.ReleaseSheet.open(
        root, DATASET, FPS, ANNOTATION_PATTERNS, COLUMNS, SHEET, SPAN, check_frames=check_frames
    )

    def handle(row: common.DataRow) -> Clip:
        number = common.subject_number(row.required_text("Subject"))
        clip_id = row.required_text("Filename")
        span = sheet.span(row)
        emotions = common.clip_emotions(DATASET, row.required_text("Estimated Emotion"))
        aus = common.parse_row_aus(row, "Action Units")
        folder = sheet.folder(span, f"{number:03d}", clip_id)
        kind = "macro" if "macro" in row.text("Micro").lower() else "micro"
        return sheet.clip(
            row, span, folder, str(number), clip_id, clip_id, aus=aus, emotions=emotions, expression_type=kind
        )

    clips, skips = sheet.records(handle)
    return LoadResult(clips=clips, skips=skips)


def _samm_word(fine: str | None) -> str:
    if not fine:
        return ""
    return "Other" if fine == "others" else fine.capitalize()


def write(records: Sequence[Clip], root: Path) -> Path:
    """Write ``root/SAMM_Micro_FACS_Codes_v2.xlsx`` in the release format, rows in ``records`` order.

    Layout: sheet ``MICRO_ONLY``; Excel rows 1-13 are the preamble (:data:`PREAMBLE`), row 14 the header,
    record ``i`` (0-based) in row ``i + 15``. Traps injected, all of them format traps that load back to the
    same record:
      * the preamble rows above the header;
      * ``Subject`` written as the unpadded integer (``6``) while the folder is ``006``;
      * emotions capitalised (``Happiness``; ``others`` written ``Other``, which loads as the skip
        ``not in composite: others``);
      * intensities written as trailing letters (``12B``).
    """
    workbook = common.new_workbook()
    sheet = workbook.create_sheet(SHEET)
    for line in PREAMBLE:
        sheet.append(list(line) or [None])
    sheet.append(list(HEADER))
    for clip in records:
        number = common.subject_number(clip.subject)
        sheet.append(
            [
                number,
                clip.clip_id,
                _inducement_code(clip.clip_id),
                clip.onset,
                clip.apex if clip.apex is not None else "/",
                clip.offset,
                clip.offset - clip.onset + 1,
                "Macro" if clip.expression_type == "macro" else "Micro",
                format_aus(clip.aus) or None,
                _samm_word(clip.fine_emotion),
                OBJECTIVE_CLASS.get(clip.fine_emotion or "", 7),
                None,
            ]
        )
    return common.save_workbook(workbook, Path(root) / FILE_NAME)


def _inducement_code(clip_id: str) -> int | None:
    parts = clip_id.split("_")
    return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
