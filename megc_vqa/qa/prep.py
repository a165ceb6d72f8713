"""``megc-vqa prep``: dataset folders -> MEGC ME-VQA training records.

Finds every dataset under ``--data-root`` by its annotation file, loads the clips, generates the SPEC
section 3 questions and writes to ``--out``:

- ``qa.jsonl``: one record per line in the official training schema (official keys first, then the
  question type, frame source (relative to ``qa.jsonl``'s folder) and onset/apex/offset);
- ``dataset/``: the same records as a ``datasets`` dataset (``datasets.load_from_disk``);
- ``skips.jsonl``: every annotation row not turned into a clip and every question left out, with reason.

It prints per dataset the clips, the questions per type and the skips per reason. Exit codes: 0 done,
1 nothing to write, 2 bad input (unreadable annotation file, no dataset found).

``--training-file F`` takes the organisers' rows instead of generating them, and ``--compare-with F``
compares the generated rows with such a file (both in :mod:`megc_vqa.qa.official`).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from megc_vqa import annotations
from megc_vqa.annotations.common import add_sheet_limit_arguments, sheet_limits_from_args, using_sheet_limits
from megc_vqa.annotations.long_videos import str_ground_truth_names, write_str_ground_truth
from megc_vqa.errors import UsageError
from megc_vqa.face_settings import FACE_DETECTORS, FaceSettings
from megc_vqa.qa import frame_check, official
from megc_vqa.qa.generate import generate_qa
from megc_vqa.qa.io import save_as_dataset, write_jsonl_atomic, write_qa_jsonl
from megc_vqa.qa.official import PrepError
from megc_vqa.qa.outputs import (  # noqa: F401  (re-exported: prep's outputs)
    OFFICIAL_OUTPUT_NAMES,
    OUTPUT_NAMES,
    WRITER,
    claim_prep_outputs,
    earlier_prep_output,
)

if TYPE_CHECKING:
    from megc_vqa.qa.records import QARecord
    from megc_vqa.records import Skip

log = logging.getLogger(__name__)

# QARecord.question_type values; "analysis": the free-form rows of the organisers' v2 file (prep --training-file)
QUESTION_COLUMNS = ("coarse", "fine", "au", "side", "presence", "joint", "analysis")


@dataclass
class PrepResult:
    """What one ``prepare`` call produced and wrote."""

    records: list[QARecord]
    load_skips: list[Skip]
    qa_skips: list[Skip]
    long_videos: int = 0
    paths: dict[str, Path] = field(default_factory=dict)
    frame_skips: list[Skip] = field(default_factory=list)  # unreadable frames, missing key frames
    long_video_records: list = field(
        default_factory=list
    )  # for annotations.long_videos.write_str_ground_truth

    def datasets(self) -> list[str]:
        names = [r.dataset for r in self.records] + [s.dataset for s in (*self.load_skips, *self.qa_skips)]
        return list(dict.fromkeys(names))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--data-root", required=True, type=Path, metavar="DIR", help="folder holding the datasets"
    )
    parser.add_argument("--out", required=True, type=Path, metavar="OUT", help="output folder")
    parser.add_argument("--seed", type=int, default=0, help="seed of the presence questions (default 0)")
    parser.add_argument(
        "--datasets",
        nargs="+",
        metavar="NAME",
        help="only these datasets (casme2, samm, smic, casme3); default: every dataset found",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--face",
        choices=("crop", "align"),
        help="also check each clip's onset frame with the face pipeline you will train with: a clip without "
        "one usable face (none, two, cut by the border, crop outside the frame) is a frame skip, named",
    )
    parser.add_argument("--face-margin", type=float, default=0.15, help="with --face: the margin (0.15)")
    parser.add_argument(
        "--face-detector", choices=FACE_DETECTORS, default="auto", help="with --face: auto, dlib or haar"
    )
    add_official_arguments(parser)
    add_sheet_limit_arguments(parser)


def add_official_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of the organisers' training files (``megc_vqa.qa.official``)."""
    group = parser.add_argument_group("the organisers' training file")
    group.add_argument(
        "--training-file",
        type=Path,
        metavar="F",
        help="train on the organisers' rows instead of generating them: me_vqa_samm_casme2_smic.jsonl (2025) "
        "or ..._v2.jsonl (2026); each row gets its clip's frames from --data-root, questions and answers "
        "untouched; unmatched rows go to OUT/unmatched.jsonl",
    )
    group.add_argument(
        "--max-unmatched-share",
        type=float,
        default=0.0,
        metavar="S",
        help="with --training-file: fail (exit 1, no qa.jsonl) when more than this fraction of the rows has "
        "no clip under --data-root (default 0: every row must be found)",
    )
    group.add_argument(
        "--add-generated",
        action="store_true",
        help="with --training-file: also generate questions for clips the file does not name (e.g. CAS(ME)^3)",
    )
    group.add_argument(
        "--compare-with",
        type=Path,
        metavar="F",
        help="after generating, print where the generated rows and this organiser file differ, clip by "
        "clip; exit 1 when they differ",
    )


# The names ``prep`` writes in --out (besides the STR files of long videos); it owns nothing else there.
def prepare(
    data_root: Path,
    out: Path,
    seed: int = 0,
    datasets: Sequence[str] | None = None,
    progress: bool | None = None,
    face: FaceSettings | None = None,
) -> PrepResult:
    """Load, generate and write (see the module doc). Raises ``PrepError`` for bad input.

    ``progress``: ``None`` shows the bar only on a terminal. ``face``: also check every clip's onset frame
    with the face pipeline (``megc_vqa.qa.frame_check.check_clip_faces``).
    """
    from tqdm import tqdm

    if not Path(data_root).is_dir():
        raise PrepError(f"--data-root {data_root}: no such folder")
    data_root = Path(data_root).absolute()  # clip sources absolute, whatever the working folder
    if Path(out).exists() and not Path(out).is_dir():
        raise PrepError(f"--out {out}: is a file, not a folder; name a folder for qa.jsonl and dataset/")
    inputs = [("the data root", data_root)]
    claim_prep_outputs(out, OUTPUT_NAMES, inputs, record=False)  # before the slow part: refuse early
    try:
        found = list(annotations.detect_datasets(data_root))
        if not found:
            raise PrepError(
                f"no dataset found under {data_root}: no known annotation file (e.g. CASME2-coding-*.xlsx, "
                "SAMM_Micro_FACS_Codes*.xlsx, SMIC-HS-E_annotation.xlsx) in it or its sub-folders"
            )
        loaded = annotations.load_all(data_root)
    except annotations.AnnotationError as err:
        raise PrepError(str(err)) from None

    clips, load_skips, long_videos = loaded.clips, loaded.skips, loaded.long_videos
    if datasets:
        wanted = set(datasets)
        present = {c.dataset for c in clips} | {s.dataset for s in load_skips}
        if not wanted & present:
            raise PrepError(
                f"--datasets {' '.join(datasets)}: none of them under {data_root} "
                f"(found: {', '.join(sorted(present)) or 'none'})"
            )
        for name in sorted(wanted - present):
            log.warning("--datasets %s: not found under %s", name, data_root)
        clips = [c for c in clips if c.dataset in wanted]
        load_skips = [s for s in load_skips if s.dataset in wanted]
        long_videos = [v for v in long_videos if v.dataset in wanted]

    clips, frame_skips = frame_check.check_clip_frames(
        clips
    )  # every frame a record will use opens, before any record
    if face is not None and face.pipeline:
        clips, face_skips = frame_check.check_clip_faces(clips, face)
        frame_skips += face_skips
    qa_skips: list[Skip] = []
    bar = tqdm(clips, desc="QA", unit="clip", disable=(not progress) if progress is not None else None)
    records = generate_qa(bar, seed=seed, skips=qa_skips)

    out = Path(out)

    claim_prep_outputs(out, [*OUTPUT_NAMES, *str_ground_truth_names(long_videos)], inputs)
    result = PrepResult(records, load_skips, qa_skips, long_videos=len(long_videos), frame_skips=frame_skips)
    result.long_video_records = list(long_videos)
    # Frame paths relative to qa.jsonl: the file works from any working folder (``--data-root`` may be
    # relative) and moves together with its data.
    result.paths["qa"] = write_qa_jsonl(records, out / "qa.jsonl", relative_sources=True)
    result.paths["skips"] = write_jsonl_atomic(
        [{"stage": "load", **dataclasses.asdict(s)} for s in load_skips]
        + [{"stage": "frames", **dataclasses.asdict(s)} for s in frame_skips]
        + [{"stage": "qa", **dataclasses.asdict(s)} for s in qa_skips],
        out / "skips.jsonl",
    )
    result.paths["dataset"] = save_as_dataset(records, out / "dataset", writer=WRITER)
    return result


def print_summary(result: PrepResult, skip_lines: Sequence[str] = ()) -> None:
    """Per-dataset table (clips, questions per type, skips), then skips per reason: the loaders' own
    summary lines (``skip_lines``) and the questions left out per reason."""
    from rich import box
    from rich.console import Console
    from rich.table import Table

    # A pipe or log file gets the full table rather than rich's 80-column default.
    console = Console(width=None if sys.stdout.isatty() else 120)
    # "skipped" = annotation rows the loaders skipped; "notes" = questions left out of a clip
    # (reasons below the table, the full list in skips.jsonl).
    table = Table(title="MEGC QA records", box=box.SIMPLE_HEAD, pad_edge=False)
    for column in ("dataset", "clips", "QA", *QUESTION_COLUMNS, "skipped", "notes"):
        table.add_column(column, justify="left" if column == "dataset" else "right", no_wrap=True)
    names = result.datasets()
    groups = [(name, {name}) for name in names] + ([("all", set(names))] if len(names) > 1 else [])
    for label, members in groups:
        records = [r for r in result.records if r.dataset in members]
        per_type = Counter(r.question_type for r in records)
        table.add_row(
            label,
            str(len({(r.dataset, r.image_id) for r in records})),
            str(len(records)),
            *(str(per_type.get(q, 0)) for q in QUESTION_COLUMNS),
            str(sum(s.dataset in members for s in result.load_skips)),
            str(sum(s.dataset in members for s in result.qa_skips)),
            end_section=label == names[-1],
        )
    console.print(table)
    reasons = {name: Counter(s.reason for s in result.qa_skips if s.dataset == name) for name in names}
    for line in skip_lines:
        console.print(f"  {line}", markup=False, highlight=False)
    frames = Counter((s.dataset, s.reason) for s in result.frame_skips)
    for (name, reason), count in sorted(frames.items()):
        console.print(f"  {name}: {count} x {reason} (see skips.jsonl)", markup=False, highlight=False)
    for name, counts in reasons.items():
        for reason, count in counts.most_common():
            console.print(f"  {name}: {count} x {reason}", markup=False, highlight=False)
    if result.long_videos:
        console.print(f"  {result.long_videos} long videos found (used by spotting and ME-LVQA, not here)")
    for what, path in result.paths.items():
        console.print(f"{what}: {path}", markup=False, highlight=False)


def _face_check(args: argparse.Namespace) -> FaceSettings | None:
    if getattr(args, "face", None) is None:
        return None
    try:
        return FaceSettings(face=args.face, margin=args.face_margin, detector=args.face_detector)
    except ValueError as err:
        raise UsageError(f"--{str(err).replace('_', '-')}") from None


def run(args: argparse.Namespace) -> int:
    with using_sheet_limits(sheet_limits_from_args(args)):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "training_file", None) is not None:
        if args.compare_with is not None or args.datasets:
            raise UsageError("--training-file takes neither --compare-with nor --datasets")
        try:
            return official.run_training_file(args)
        except PrepError as err:
            print(f"megc-vqa prep: error: {err}", file=sys.stderr)
            return 2
    compare_rows = None
    if getattr(args, "compare_with", None) is not None:  # read first: a wrong file must not cost a whole prep
        compare_rows = official.read_official_rows(args.compare_with)
    try:
        result = prepare(
            args.data_root,
            args.out,
            seed=args.seed,
            datasets=args.datasets,
            progress=False if getattr(args, "no_progress", False) else None,
            face=_face_check(args),
        )
    except PrepError as err:
        print(f"megc-vqa prep: error: {err}", file=sys.stderr)
        return 2
    print_summary(result, annotations.summarise_skips(result.load_skips))

    str_files = write_str_ground_truth(result.long_video_records, args.out)
    for path in str_files.values():
        print(f"ME-STR: {path}")
    if not result.records and not str_files:
        print(f"megc-vqa prep: no clip under {args.data_root} could be turned into QA", file=sys.stderr)
        return 1
    if compare_rows is not None:
        skips = [*result.load_skips, *result.qa_skips]
        return official.run_compare(result.records, skips, args.compare_with, rows=compare_rows)
    return 0
