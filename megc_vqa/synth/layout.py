"""Names and paths of the synthetic datasets, mirroring each real dataset's conventions (SPEC section 1).

Subject, clip and video *names* are the generator's choice. Folder and frame paths and the annotation
writer belong to :mod:`megc_vqa.annotations` once it lands on main; until then the small shim below
(``clip_dir``, ``frame_path``, ``write_annotations``) writes the same layouts without the SPEC traps.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from megc_vqa.records import Clip, LongVideo

SAMM_SUBJECTS = (
    6,
    7,
    9,
    10,
    11,
    12,
    13,
    14,
    15,
    16,
    17,
    18,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    26,
    28,
    30,
    31,
    32,
    33,
)
CASME2_LONG_SUBJECTS = (
    15,
    16,
    19,
    20,
    21,
    22,
    23,
    24,
    25,
    26,
    27,
    29,
    30,
    31,
    32,
    33,
    34,
    35,
    36,
    37,
    38,
    40,
)
# CAS(ME)^2 video code -> the descriptive name appended to its folder (``15_0101disgustingteeth``).
CASME2_LONG_VIDEOS = (
    ("0101", "disgustingteeth"),
    ("0102", "eatingworms"),
    ("0401", "girlcrashing"),
    ("0402", "beatingpregnantwoman"),
    ("0502", "pickupthephone"),
    ("0503", "unnyfarting"),
    ("0505", "funnyinnovations"),
    ("0507", "climbingthewall"),
    ("0508", "funnydunkey"),
)


def subject_names(dataset: str, index: int) -> tuple[str, str]:
    """(subject as the records and MEGC files write it, subject as its folder/file names write it)."""
    k = index + 1
    if dataset == "casme2":
        return f"sub{k:02d}", f"sub{k:02d}"
    if dataset == "samm":
        number = SAMM_SUBJECTS[index % len(SAMM_SUBJECTS)] + 100 * (index // len(SAMM_SUBJECTS))
        return str(number), f"{number:03d}"
    if dataset == "smic":
        return f"s{k:02d}", f"s{k:02d}"
    if dataset == "casme3":
        return f"spNO.{k}", f"spNO.{k}"
    if dataset == "casme2_long":
        number = CASME2_LONG_SUBJECTS[index % len(CASME2_LONG_SUBJECTS)] + 100 * (
            index // len(CASME2_LONG_SUBJECTS)
        )
        return str(number), str(number)
    if dataset == "samm_lv":
        number = SAMM_SUBJECTS[index % len(SAMM_SUBJECTS)] + 100 * (index // len(SAMM_SUBJECTS))
        return f"{number:03d}", f"{number:03d}"
    raise ValueError(f"unknown dataset {dataset!r}")


def clip_name(
    dataset: str, folder_key: str, index: int, word: str, counts: dict[str, int], rng: np.random.Generator
) -> str:
    """The annotation's file-name column for the ``index``-th clip of a subject."""
    if dataset == "casme2":
        return f"EP{index + 1:02d}_{int(rng.integers(1, 10)):02d}{'f' if rng.random() < 0.3 else ''}"
    if dataset == "samm":
        return f"{folder_key}_{int(rng.integers(1, 8))}_{index + 1}"
    if dataset == "smic":
        counts[word] = counts.get(word, 0) + 1
        return f"{folder_key}_{word}_{counts[word]:02d}"
    if dataset == "casme3":
        return "abcdefghijklmnopqrstuvwxyz"[(index // 2) % 26]  # two clips per video: duplicate file names
    raise ValueError(f"{dataset} has no short clips")


def video_name(dataset: str, folder_key: str, index: int) -> str:
    """A long video's id as the STR CSV's ``video`` column writes it (``15_0101``, ``006_1``)."""
    if dataset == "casme2_long":
        return f"{folder_key}_{CASME2_LONG_VIDEOS[index % len(CASME2_LONG_VIDEOS)][0]}"
    return f"{folder_key}_{index + 1}"


def image_id(dataset: str, subject: str, clip_id: str, onset: int) -> str:
    """The MEGC ``image_id``; CAS(ME)^3 file names repeat within a subject, so its id adds the onset."""
    if dataset == "casme2":
        return f"{subject}_{clip_id}"
    if dataset == "casme3":
        return f"{subject}_{clip_id}_{onset}"
    return clip_id


# ---------------------------------------------------------------------------------- shim: paths and sheets


def clip_dir(dataset: str, root: Path, subject: str, clip_id: str) -> Path:
    """Folder holding a clip's (or long video's) frames under a dataset root."""
    if dataset == "samm":
        return root / f"{int(subject):03d}" / clip_id
    if dataset == "casme3":
        return root / subject / clip_id / "color"
    if dataset == "casme2_long":
        names = dict(CASME2_LONG_VIDEOS)
        return root / "rawpic" / f"s{subject}" / f"{clip_id}{names[clip_id.split('_')[1]]}"
    if dataset == "samm_lv":
        return root / clip_id
    return root / subject / clip_id


def frame_path(dataset: str, folder: Path, key: str, index: int) -> Path:
    """Path of absolute frame ``index``; ``key`` is the subject folder key (SAMM) or the video id (SAMM-LV)."""
    name = {
        "casme2": f"img{index}.jpg",
        "samm": f"{key}_{index:05d}.jpg",
        "smic": f"image{index:06d}.jpg",
        "casme3": f"{index}.jpg",
        "casme2_long": f"img{index}.jpg",
        "samm_lv": f"{key}_{index:04d}.jpg",
    }[dataset]
    return folder / name


_RAW_WORDS = {
    "samm": {"others": "Other"},
    "samm_lv": {"others": "Other"},
    "casme3": {"happiness": "happy", "sadness": "sad"},
}


def _word(dataset: str, fine: str | None) -> str:
    fine = fine or ""
    raw = _RAW_WORDS.get(dataset, {}).get(fine, fine)
    return raw.capitalize() if dataset in ("samm", "samm_lv") else raw


def _aus(aus) -> str:
    return "+".join(a.raw for a in aus)


def _sheet_rows(dataset: str, records: Sequence[Clip] | Sequence[LongVideo]) -> tuple[str, list[list], int]:
    """(file name, rows including header, preamble rows) in the dataset's spreadsheet format."""
    if dataset == "casme2":
        head = [
            "Subject",
            "Filename",
            "OnsetFrame",
            "ApexFrame",
            "OffsetFrame",
            "Action Units",
            "Estimated Emotion",
        ]
        rows = [
            [int(c.subject[3:]), c.clip_id, c.onset, c.apex, c.offset, _aus(c.aus), c.fine_emotion]
            for c in records
        ]
        return "CASME2-coding-20140508.xlsx", [head, *rows], 0
    if dataset == "samm":
        head = ["Subject", "Filename", "Inducement Code", "Onset Frame", "Apex Frame", "Offset Frame", "Duration",
                "Micro", "Action Units", "Estimated Emotion", "Objective Classes", "Notes"]  # fmt: skip
        rows = [
            [int(c.subject), c.clip_id, int(c.clip_id.split("_")[1]), c.onset, c.apex, c.offset, c.n_frames,
             "Micro", _aus(c.aus), _word(dataset, c.fine_emotion), "", ""]
            for c in records
        ]  # fmt: skip
        return "SAMM_Micro_FACS_Codes_v2.xlsx", [head, *rows], 0
    if dataset == "smic":
        head = ["Subject", "Filename", "OnsetF", "OffsetF", "Emotion", "FirstF"]
        rows = [
            [c.subject, c.clip_id, c.onset, c.offset, c.clip_id.split("_")[1], c.onset - margin(c)]
            for c in records
        ]
        return "SMIC-HS-E_annotation.xlsx", [head, *rows], 0
    if dataset == "casme3":
        head = ["Subject", "Filename", "Onset", "Apex", "Offset", "AU", "Objective class", "emotion"]
        rows = [
            [c.subject, c.clip_id, c.onset, c.apex, c.offset, _aus(c.aus), "", _word(dataset, c.fine_emotion)]
            for c in records
        ]
        return "cas(me)3_part_A_ME_label_JpgIndex_v2.xlsx", [head, *rows], 0
    if dataset == "casme2_long":
        rows = [
            [int(v.subject), v.source.path.name, e.onset, e.apex, e.offset, _aus(e.aus), e.coarse_emotion,
             f"{e.expression_type}-expression", e.fine_emotion]
            for v in records for e in v.events
        ]  # fmt: skip
        return "CAS(ME)^2code_final.xlsx", rows, 0
    if dataset == "samm_lv":
        head = ["Subject", "Filename", "Inducement Code", "Onset", "Apex", "Offset", "Duration", "Type",
                "Action Units", "Notes"]  # fmt: skip
        rows = [
            [int(v.subject), f"{v.video_id}_{k + 1}", 1, e.onset, e.apex, e.offset, e.offset - e.onset + 1,
             "Macro" if e.expression_type == "macro" else "Micro - 1/2", _aus(e.aus), ""]
            for v in records for k, e in enumerate(v.events)
        ]  # fmt: skip
        return "SAMM_LongVideos_V3_Release.xlsx", [head, *rows], 9
    raise ValueError(f"unknown dataset {dataset!r}")


def margin(clip: Clip) -> int:
    from megc_vqa.synth.datasets import margin_frames

    return margin_frames(clip.fps)


def write_annotations(dataset: str, records: Sequence[Clip] | Sequence[LongVideo], root: Path) -> Path:
    """Write the dataset's annotation spreadsheet under ``root`` (shim: real format, no traps)."""
    from openpyxl import Workbook

    name, rows, preamble = _sheet_rows(dataset, records)
    wb = Workbook()
    ws = wb.active
    ws.title = "FACS_Movement_Only" if dataset == "samm_lv" else "Sheet1"
    for k in range(preamble):
        ws.append([f"SAMM Long Videos (synthetic) - preamble line {k + 1}"] if k == 0 else [])
    for row in rows:
        ws.append(row)
    root.mkdir(parents=True, exist_ok=True)
    path = root / name
    wb.save(path)
    return path


_FIXED_STAMP = (1980, 1, 1, 0, 0, 0)


def make_reproducible(path: Path) -> None:
    """Rewrite an .xlsx so the same content gives the same bytes: fixed zip entry times and document dates
    (spreadsheet writers stamp the current time, which would break byte-identical output per seed)."""
    import re
    import zipfile

    with zipfile.ZipFile(path) as src:
        entries = [(info, src.read(info)) for info in src.infolist()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as dst:
        for info, data in entries:
            if info.filename == "docProps/core.xml":
                data = re.sub(
                    rb"(<dcterms:(?:created|modified)[^>]*>)[^<]*", rb"\g<1>2000-01-01T00:00:00Z", data
                )
            fixed = zipfile.ZipInfo(info.filename, date_time=_FIXED_STAMP)
            fixed.compress_type = zipfile.ZIP_DEFLATED
            fixed.external_attr = info.external_attr
            dst.writestr(fixed, data)
