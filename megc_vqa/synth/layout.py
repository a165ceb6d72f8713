"""Names and paths of the synthetic datasets, mirroring each real dataset's conventions (SPEC section 1).

Subject, clip and video *names* are the generator's choice; folder and frame paths and the annotation
writers (which inject the SPEC traps) come from :mod:`megc_vqa.annotations`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from megc_vqa.annotations import DATASETS, casme2_long, casme3
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
CASME2_LONG_CODES = tuple(casme2_long.STIMULI)  # stimulus codes (0101, ...) known to the folder naming


def numbered(table: tuple[int, ...], index: int) -> int:
    """The ``index``-th subject number of a real-looking list, continuing past its end (+100, +200, ...)."""
    return table[index % len(table)] + 100 * (index // len(table))


def subject_names(dataset: str, index: int) -> tuple[str, str]:
    """(subject as the records and MEGC files write it, subject as its folder/file names write it)."""
    k = index + 1
    if dataset == "casme2":
        return f"sub{k:02d}", f"sub{k:02d}"
    if dataset == "samm":
        number = numbered(SAMM_SUBJECTS, index)
        return str(number), f"{number:03d}"
    if dataset == "smic":
        return f"s{k:02d}", f"s{k:02d}"
    if dataset == "casme3":
        return f"spNO.{k}", f"spNO.{k}"
    if dataset == "casme2_long":
        number = numbered(CASME2_LONG_SUBJECTS, index)
        return f"s{number}", str(number)
    if dataset == "samm_lv":
        number = numbered(SAMM_SUBJECTS, index)
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
        return casme3_video(index)
    raise ValueError(f"{dataset} has no short clips")


def casme3_video(index: int) -> str:
    """CAS(ME)^3 puts two clips in each video folder (``a``, ``a``, ``b``, ...): duplicate file names."""
    return "abcdefghijklmnopqrstuvwxyz"[(index // 2) % 26]


def video_name(dataset: str, folder_key: str, index: int) -> str:
    """A long video's id as the STR CSV's ``video`` column writes it (``15_0101``, ``006_1``)."""
    if dataset == "casme2_long":
        return casme2_long.video_id(int(folder_key), CASME2_LONG_CODES[index % len(CASME2_LONG_CODES)])
    return f"{folder_key}_{index + 1}"


def image_id(dataset: str, subject: str, clip_id: str, onset: int, repeated: bool = False) -> str:
    """The MEGC ``image_id``; a CAS(ME)^3 file name repeated within a subject adds the onset."""
    if dataset == "casme2":
        return f"{subject}_{clip_id}"
    if dataset == "casme3":
        return casme3.image_id(subject, clip_id, onset if repeated else None)
    return clip_id


# ------------------------------------------------------------------- paths and sheets: megc_vqa.annotations


def clip_dir(dataset: str, root: Path, subject: str, clip_id: str) -> Path:
    """Folder holding a clip's (or long video's, ``clip_id`` = video id) frames under a dataset root."""
    return DATASETS[dataset].clip_dir(root, subject, clip_id)


def frame_path(dataset: str, folder: Path, clip_id: str, index: int) -> Path:
    """Path of absolute frame ``index`` of a clip (SAMM) or video (SAMM-LV) in its folder."""
    return folder / DATASETS[dataset].frame_name(index, clip_id)


def write_annotations(dataset: str, records: Sequence[Clip] | Sequence[LongVideo], root: Path) -> Path:
    """The dataset's annotation spreadsheet in the release format, with the SPEC traps its writer injects."""
    return DATASETS[dataset].write(records, root)


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
