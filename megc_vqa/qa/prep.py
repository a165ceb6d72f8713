"""``megc-vqa prep``: dataset folders -> MEGC ME-VQA training records.

Finds every dataset under ``--data-root`` by its annotation file, loads the clips, generates the SPEC
section 3 questions and writes to ``--out``:

- ``qa.jsonl``: one record per line in the official training schema (official keys first, then the
  question type, frame source and onset/apex/offset);
- ``dataset/``: the same records as a ``datasets`` dataset (``datasets.load_from_disk``);
- ``skips.jsonl``: every annotation row not turned into a clip and every question left out, with reason.

It prints per dataset the clips, the questions per type and the skips per reason. Exit codes: 0 done,
1 nothing to write, 2 bad input (unreadable annotation file, no dataset found).
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

if TYPE_CHECKING:
    from megc_vqa.qa.records import QARecord
    from megc_vqa.records import Skip

log = logging.getLogger(__name__)

QUESTION_COLUMNS = ("coarse", "fine", "au", "side", "presence", "joint")  # QARecord.question_type values


class PrepError(Exception):
    """Bad input that ``prep`` reports as one line and exit code 2."""


@dataclass
class PrepResult:
    """What one ``prepare`` call produced and wrote."""

    records: list[QARecord]
    load_skips: list[Skip]
    qa_skips: list[Skip]
    long_videos: int = 0
    paths: dict[str, Path] = field(default_factory=dict)
    long_video_records: list = field(default_factory=list)  # for spotting.videos.write_str_ground_truth

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


def prepare(
    data_root: Path,
    out: Path,
    seed: int = 0,
    datasets: Sequence[str] | None = None,
    progress: bool | None = None,
) -> PrepResult:
    """Load, generate and write (see the module doc). Raises ``PrepError`` for bad input.

    ``progress``: ``None`` shows the bar only on a terminal.
    """
    from tqdm import tqdm

    from megc_vqa import annotations
    from megc_vqa.qa.generate import generate_qa
    from megc_vqa.qa.io import save_as_dataset, write_jsonl_atomic, write_qa_jsonl

    data_root = Path(data_root)
    if not data_root.is_dir():
        raise PrepError(f"--data-root {data_root}: no such folder")
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

    qa_skips: list[Skip] = []
    bar = tqdm(clips, desc="QA", unit="clip", disable=(not progress) if progress is not None else None)
    records = generate_qa(bar, seed=seed, skips=qa_skips)

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    result = PrepResult(records, load_skips, qa_skips, long_videos=len(long_videos))
    result.long_video_records = list(long_videos)
    result.paths["qa"] = write_qa_jsonl(records, out / "qa.jsonl")
    result.paths["skips"] = write_jsonl_atomic(
        [{"stage": "load", **dataclasses.asdict(s)} for s in load_skips]
        + [{"stage": "qa", **dataclasses.asdict(s)} for s in qa_skips],
        out / "skips.jsonl",
    )
    result.paths["dataset"] = save_as_dataset(records, out / "dataset")
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
    for name, counts in reasons.items():
        for reason, count in counts.most_common():
            console.print(f"  {name}: {count} x {reason}", markup=False, highlight=False)
    if result.long_videos:
        console.print(f"  {result.long_videos} long videos found (used by spotting and ME-LVQA, not here)")
    for what, path in result.paths.items():
        console.print(f"{what}: {path}", markup=False, highlight=False)


def run(args: argparse.Namespace) -> int:
    from megc_vqa import annotations

    try:
        result = prepare(
            args.data_root,
            args.out,
            seed=args.seed,
            datasets=args.datasets,
            progress=False if getattr(args, "no_progress", False) else None,
        )
    except PrepError as err:
        print(f"megc-vqa prep: error: {err}", file=sys.stderr)
        return 2
    print_summary(result, annotations.summarise_skips(result.load_skips))
    from megc_vqa.spotting.videos import write_str_ground_truth  # long videos: STR ground truth + sidecar

    str_files = write_str_ground_truth(result.long_video_records, args.out)
    for path in str_files.values():
        print(f"ME-STR: {path}")
    if not result.records and not str_files:
        print(f"megc-vqa prep: no clip under {args.data_root} could be turned into QA", file=sys.stderr)
        return 1
    return 0
