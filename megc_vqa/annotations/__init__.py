"""Dataset annotation files (CASME II, SAMM, SMIC, CAS(ME)^3, CAS(ME)^2, SAMM-LV) <-> records.

One module per format (``DATASETS[key]``), each with the same API::

    ANNOTATION_PATTERNS: tuple[str, ...]   glob patterns of the annotation file; finding one marks a root
    DATASET, FPS, FILE_NAME                dataset key of the records, frame rate, file name `write` uses
    load(root, *, check_frames=True)       -> LoadResult; root = the dataset folder or the xlsx itself
    write(records, root) -> Path           the spreadsheet in the release format, traps in documented rows
    clip_dir(root, subject, clip_id)       frame folder of a clip (of a video: clip_id = video_id)
    frame_name(index, clip_id="")          file name of frame `index` inside that folder

    key          records          clip_dir / frame_name                          subject, image/video id
    casme2       Clip, 200 fps    sub01/EP02_01f / img46.jpg                     sub01, sub01_EP02_01f
    samm         Clip, 200 fps    006/006_1_2 / 006_05562.jpg                    "6", 006_1_2
    smic         Clip, 100 fps    s01/s01_ne_01 / image000123.jpg                s01, s01_ne_01
    casme3       Clip, 30 fps     spNO.1/a/color / 123.jpg                       spNO.1, spNO.1_a (see casme3)
    casme2_long  LongVideo, 30    rawpic/s15/15_0101disgustingteeth / img1.jpg   s15, 15_0101
    samm_lv      LongVideo, 200   006_1 / 006_1_0001.jpg                         006, 006_1

Package-level helpers: ``detect_datasets(data_root)``, ``load_all(data_root)``, ``summarise_skips(skips)``,
``parse_aus(text)``/``format_aus(aus)`` and ``AnnotationError``.

``frame_name`` needs ``clip_id`` for SAMM (the clip id, ``006_1_2``) and SAMM-LV (the video id, ``006_1``);
the others ignore it. Synthetic datasets: place frames with ``clip_dir``/``frame_name``, then ``write``.

A loader never crashes on a row and never drops one silently: every row it does not turn into a record
becomes a :class:`~megc_vqa.records.Skip` with a stable reason (see :mod:`megc_vqa.annotations.common`).
A file it cannot read at all raises :class:`AnnotationError` naming file, sheet, row and column.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

from megc_vqa.annotations import casme2, casme2_long, casme3, samm, samm_lv, smic
from megc_vqa.annotations.au import format_aus, parse_aus
from megc_vqa.annotations.common import AnnotationError, subfolders
from megc_vqa.records import LoadResult, Skip

DATASETS: dict[str, ModuleType] = {
    "casme2": casme2,
    "samm": samm,
    "smic": smic,
    "casme3": casme3,
    "casme2_long": casme2_long,
    "samm_lv": samm_lv,
}

__all__ = [
    "DATASETS",
    "AnnotationError",
    "detect_datasets",
    "format_aus",
    "load_all",
    "parse_aus",
    "summarise_skips",
]


def detect_datasets(data_root: Path, max_depth: int = 3) -> list[tuple[str, Path]]:
    """Every ``(dataset key, dataset root)`` under ``data_root``, found by its annotation file.

    Looks in ``data_root`` and folders up to ``max_depth`` levels below it (hidden folders skipped). The
    search does not descend into a folder already recognised as a dataset root, which keeps it away from
    the thousands of frame files below. Symlink loops are skipped with a warning (:func:`subfolders`), and a
    folder reached twice (a second name through a link) is searched once. Sorted by path, then key.
    """
    data_root = Path(data_root)
    if not data_root.is_dir():
        raise AnnotationError("data root is not a folder", file=data_root)
    found: list[tuple[str, Path]] = []
    level = [data_root]
    seen = {os.path.realpath(data_root): data_root}  # symlink loops and second names: searched once
    for depth in range(max_depth + 1):
        next_level: list[Path] = []
        for folder in level:
            keys = [
                key for key, module in DATASETS.items() if _has_annotation(folder, module.ANNOTATION_PATTERNS)
            ]
            found.extend((key, folder) for key in keys)
            if not keys and depth < max_depth:
                next_level.extend(subfolders(folder, seen))
        level = next_level
    return sorted(found, key=lambda item: (str(item[1]), item[0]))


def _has_annotation(folder: Path, patterns: Iterable[str]) -> bool:
    return any(p.is_file() for pattern in patterns for p in folder.glob(pattern))


def load_all(data_root: Path, *, check_frames: bool = True) -> LoadResult:
    """Load every dataset :func:`detect_datasets` finds under ``data_root`` into one result.

    An unreadable annotation file raises :class:`AnnotationError` (its message names the file); rows are
    reported as skips, never dropped.
    """
    result = LoadResult()
    for key, root in detect_datasets(data_root):
        result.extend(DATASETS[key].load(root, check_frames=check_frames))
    return result


def summarise_skips(skips: Iterable[Skip], max_rows: int = 5) -> list[str]:
    """One line per (dataset, reason) with its count and the first few rows, e.g.

    ``casme2: 3 rows skipped: not in composite: others (CASME2-coding-20140508.xlsx rows 5, 9, 12)``.
    Sorted by dataset, then by count (largest first), then reason.
    """
    skips = list(skips)
    counts = Counter((s.dataset, s.reason) for s in skips)
    lines = []
    for (dataset, reason), count in sorted(counts.items(), key=lambda kv: (kv[0][0], -kv[1], kv[0][1])):
        members = [s for s in skips if s.dataset == dataset and s.reason == reason]
        files = sorted({Path(s.file).name for s in members})
        rows = ", ".join(str(s.row) for s in members[:max_rows]) + (", ..." if count > max_rows else "")
        noun = "row" if count == 1 else "rows"
        lines.append(f"{dataset}: {count} {noun} skipped: {reason} ({', '.join(files)} {noun} {rows})")
    return lines
