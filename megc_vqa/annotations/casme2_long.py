"""CAS(ME)^2 long videos (30 fps): ``CAS(ME)^2code_final.xlsx`` <-> :class:`~megc_vqa.records.LongVideo`.

Real format, three sheets:
  * ``CASFEcode_final`` (sheet 1), **no header**, 9 columns: subject index (1..22), clip name
    (``disgust1_3`` = stimulus name + event number), onset, apex, offset, AUs, coarse emotion
    (negative/positive/surprise/others), type (``macro-expression``/``micro-expression``), fine emotion.
    An offset of ``0`` means "not coded": the loader uses the apex as the offset.
  * ``naming rule1``: subject index -> subject number (rows ``casme_015 | 15 | 1``: label, number, index).
  * ``naming rule2``: stimulus code -> stimulus name (rows ``101 | disgust1``; the code is zero-padded to 4).
Frames: ``<root>/rawpic/s15/15_0101disgustingteeth/img1.jpg``; the folder is found by its ``15_0101``
prefix, so the stimulus description after the code may be anything.

Records: one :class:`LongVideo` per (subject, stimulus) with at least one loaded event,
``subject="s15"``, ``video_id="15_0101"``; events sorted by onset, ``coarse_emotion`` in
negative/positive/surprise/others (STR classes: ``others`` is kept, not skipped), ``fine_emotion`` the
lower-cased last column.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from megc_vqa.annotations import common
from megc_vqa.annotations.au import format_aus
from megc_vqa.annotations.common import RowSkip
from megc_vqa.labels import STR_CLASSES, normalise_fine
from megc_vqa.records import Event, ExpressionType, LoadResult, LongVideo

DATASET = "casme2_long"
FPS = 30.0
FILE_NAME = "CAS(ME)^2code_final.xlsx"
CODE_SHEET = "CASFEcode_final"
SUBJECT_SHEET = "naming rule1"
STIMULUS_SHEET = "naming rule2"
ANNOTATION_PATTERNS: tuple[str, ...] = ("CAS(ME)^2code_final*.xlsx", "CAS(ME)2code_final*.xlsx")
FRAMES_FOLDER = "rawpic"

CODE_COLUMNS = ("subject index", "clip", "onset", "apex", "offset", "AU", "emotion", "type", "fine emotion")
TYPES: dict[str, ExpressionType] = {"macro-expression": "macro", "micro-expression": "micro"}
# Stimulus code -> (name in the code sheet, folder description). Used by `write` and `clip_dir` for the
# synthetic layout; the loader reads the names from the workbook and the folders from disk.
STIMULI: dict[str, tuple[str, str]] = {
    "0101": ("disgust1", "disgustingteeth"),
    "0102": ("disgust2", "eatingworms"),
    "0401": ("anger1", "girlcrashing"),
    "0402": ("anger2", "beatingpregnantwoman"),
    "0502": ("happy1", "cup"),
    "0503": ("happy2", "funnyfarting"),
    "0505": ("happy3", "funnyinnovations"),
    "0507": ("happy4", "climbingthewall"),
    "0508": ("happy5", "funnydunkey"),
}


def video_id(subject_number: int, code: str) -> str:
    return f"{subject_number}_{code}"


def clip_dir(root: Path, subject: str, video_id: str) -> Path:
    """``root/rawpic/s15/15_0101disgustingteeth`` for ``subject="s15"``, ``video_id="15_0101"``."""
    code = video_id.split("_", 1)[1] if "_" in video_id else ""
    description = STIMULI.get(code, ("", ""))[1]
    return Path(root) / FRAMES_FOLDER / subject / f"{video_id}{description}"


def frame_name(index: int, clip_id: str = "") -> str:
    """``img1.jpg`` (``clip_id`` unused)."""
    return f"img{index}.jpg"


def _naming_maps(path: Path, workbook: common.Spreadsheet) -> tuple[dict[int, int], dict[str, str]]:
    """(subject index -> subject number, stimulus name -> 4-digit code) from the two naming sheets."""
    subject_columns = ("label", "subject number", "subject index")
    subjects_table = common.headerless_table(
        path, 1, subject_columns, sheet_name=SUBJECT_SHEET, workbook=workbook
    )
    stimuli_table = common.headerless_table(
        path, 2, ("code", "name"), sheet_name=STIMULUS_SHEET, workbook=workbook
    )
    subjects: dict[int, int] = {}
    for _, row in subjects_table.data_rows():
        try:
            subjects[common.subject_number(row.get("subject index"))] = common.subject_number(
                row.get("subject number")
            )
        except RowSkip as exc:
            raise row.error(f"unreadable subject mapping ({exc})", column="B") from None
    stimuli: dict[str, str] = {}
    for _, row in stimuli_table.data_rows():
        code = row.text("code")
        if not code.isdigit():
            raise row.error(f"stimulus code {code!r} is not a number", column="A")
        stimuli[row.text("name").lower()] = f"{int(code):04d}"
    return subjects, stimuli


def load(root: Path, *, check_frames: bool = True) -> LoadResult:
    """Load a CAS(ME)^2 root (folder holding ``CAS(ME)^2code_final.xlsx``, or the xlsx itself)."""
    root, path = common.resolve_root(Path(root), ANNOTATION_PATTERNS)
    with common.open_workbook(path) as workbook:
        table = common.headerless_table(path, 0, CODE_COLUMNS, sheet_name=CODE_SHEET, workbook=workbook)
        subjects, stimuli = _naming_maps(path, workbook)
    locator, frames = common.FrameLocator(root / FRAMES_FOLDER, max_depth=1), common.FrameIndex()
    folders: dict[tuple[int, str], Path] = {}

    def find_folder(subject_number: int, code: str) -> Path:
        key = (subject_number, code)
        if key not in folders:
            subject_dir = common.clip_folder(locator, root / FRAMES_FOLDER, f"s{subject_number}")
            prefix = video_id(subject_number, code)
            matches = sorted(p for p in subject_dir.glob(f"{prefix}*") if p.is_dir())
            # "15_0101x" must not match "15_01010..." style codes: the character after the prefix is no digit.
            matches = [p for p in matches if not re.match(r"\d", p.name[len(prefix) :])]
            if not matches:
                raise RowSkip(common.MISSING_FOLDER, str(subject_dir / f"{prefix}*"))
            folders[key] = matches[0]
        return folders[key]

    def handle(row: common.DataRow) -> tuple[str, str, Path, Event]:
        index = common.subject_number(row.required_text("subject index"))
        if index not in subjects:
            raise RowSkip(common.UNKNOWN_NAME, f"subject index {index} not in {SUBJECT_SHEET!r}")
        clip = row.required_text("clip")
        stimulus = clip.rsplit("_", 1)[0].lower()
        if stimulus not in stimuli:
            raise RowSkip(common.UNKNOWN_NAME, f"clip {clip!r}: {stimulus!r} not in {STIMULUS_SHEET!r}")
        onset = row.frame("onset")
        apex = row.optional_frame("apex")
        offset = row.frame("offset")
        if offset == 0:  # "offset not coded": the release's convention is to end the event at its apex
            if apex is None or apex == 0:
                raise RowSkip(common.MISSING_VALUE, "offset is 0 and no apex to use instead")
            offset = apex
        if apex == 0:
            apex = None
        common.check_interval(onset, apex, offset)
        coarse = normalise_fine(row.required_text("emotion"))
        if coarse not in STR_CLASSES:
            raise RowSkip(common.UNKNOWN_EMOTION, row.text("emotion"))
        kind = TYPES.get(row.required_text("type").lower())
        if kind is None:
            raise RowSkip(common.UNKNOWN_TYPE, row.text("type"))
        aus = common.parse_row_aus(row, "AU")
        number = subjects[index]
        folder = find_folder(number, stimuli[stimulus])
        if check_frames:
            frames.check_range(folder, onset, offset)
        fine = normalise_fine(row.text("fine emotion")) or None
        event = Event(onset, offset, apex, aus, fine, coarse, kind, row.number)
        return f"s{number}", video_id(number, stimuli[stimulus]), folder, event

    done, skips = common.collect(table, DATASET, handle, frame_columns=("onset", "offset"))
    common.log_skips(DATASET, skips)
    events = [value for _, value in done]
    return LoadResult(long_videos=common.long_videos(DATASET, FPS, events), skips=skips)


def write(records: Sequence[LongVideo], root: Path) -> Path:
    """Write ``root/CAS(ME)^2code_final.xlsx`` in the release format.

    ``records``: long videos with ``subject="s<number>"`` and ``video_id="<number>_<4-digit code>"``.
    Subject indices are 1.. in order of first appearance; stimulus names come from :data:`STIMULI`
    (``stim<code>`` for codes not listed). Sheet ``CASFEcode_final`` (no header) holds one row per event,
    videos in ``records`` order, events by onset, so the ``k``-th event overall sits in Excel row ``k``;
    the clip name is ``<stimulus name>_<event number in its video>``; the fine column gets the event's
    fine emotion (or its coarse class). Traps injected:
      * the headerless first sheet and the two naming sheets;
      * the first event (sheet order) that has an apex is written with offset ``0``: it loads with
        ``offset = apex`` (make that event's offset equal its apex to round-trip it exactly);
      * the stimulus code in ``naming rule2`` is written as a number (``101``), losing its leading zero.
    """
    workbook = common.new_workbook()
    codes = workbook.create_sheet(CODE_SHEET)
    subject_rows = workbook.create_sheet(SUBJECT_SHEET)
    stimulus_rows = workbook.create_sheet(STIMULUS_SHEET)
    subject_index: dict[int, int] = {}
    stimulus_names: dict[str, str] = {}
    zero_offset_written = False
    for video in records:
        number = common.subject_number(video.subject)
        code = video.video_id.split("_", 1)[1]
        if number not in subject_index:
            subject_index[number] = len(subject_index) + 1
            subject_rows.append([f"casme_{number:03d}", number, subject_index[number]])
        if code not in stimulus_names:
            stimulus_names[code] = STIMULI.get(code, (f"stim{code}", ""))[0]
            stimulus_rows.append([int(code), stimulus_names[code]])
        for k, event in enumerate(sorted(video.events, key=lambda e: (e.onset, e.offset)), start=1):
            offset = event.offset
            if not zero_offset_written and event.apex is not None:
                offset, zero_offset_written = 0, True
            codes.append(
                [
                    subject_index[number],
                    f"{stimulus_names[code]}_{k}",
                    event.onset,
                    event.apex if event.apex is not None else 0,
                    offset,
                    format_aus(event.aus) or None,
                    event.coarse_emotion or "others",
                    f"{event.expression_type}-expression",
                    event.fine_emotion or event.coarse_emotion or "others",
                ]
            )
    return common.save_workbook(workbook, Path(root) / FILE_NAME)
