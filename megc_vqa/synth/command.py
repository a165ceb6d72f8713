"""``megc-vqa synth``: write synthetic micro-expression datasets in the real layouts."""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

from megc_vqa import annotations
from megc_vqa.errors import UsageError, check_number
from megc_vqa.fileio import RunRecord, claim_outputs, refuse_non_folder, settings_differences
from megc_vqa.limits import SYNTH_COUNT, WORKERS, check_count
from megc_vqa.qa.official import TRAINING_DATASETS, TRAINING_FILES, official_rows, write_training_file
from megc_vqa.records import LoadResult
from megc_vqa.synth.realism import REALISMS, SYNTHETIC, check_realism, refuse_size_with_release

log = logging.getLogger(__name__)
WRITER = "megc-vqa synth"
DATASETS = "casme2,samm,smic,casme3,casme2_long,samm_lv"
# What drew the frames in OUT's dataset folders: a rerun with other settings would leave frames of both runs
# mixed in one clip folder (other sizes, other counts), which prep would read without a word.
RUN_RECORD = "synth_run.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per dataset)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed writes the same frames"
    )
    parser.add_argument("--subjects", type=int, default=4, help="subjects per short-clip dataset (default 4)")
    parser.add_argument("--clips-per-subject", type=int, default=4, help="clips per subject (default 4)")
    parser.add_argument("--datasets", default=DATASETS, help=f"comma-separated subset of {DATASETS}")
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="frame width and height in pixels (default 128; synthetic preset only)",
    )
    parser.add_argument(
        "--realism",
        default=SYNTHETIC,
        metavar="PRESET",
        help=f"{' or '.join(REALISMS)} (default {SYNTHETIC}): 'release' draws each dataset in its release's frame "
        "size, face placement, micro-expression amplitude (a pixel or two), head drift, blinks, flicker, noise and "
        "JPEG quality (docs/realism.md)",
    )
    parser.add_argument(
        "--long-events",
        type=int,
        default=None,
        metavar="N",
        help="expressions per long video (default: 3-7 drawn); fewer make shorter, faster videos",
    )
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: min(2, CPUs))")
    parser.add_argument(
        "--training-file",
        choices=("2025", "2026"),
        metavar="YEAR",
        help="also write the organisers' training file for the synthetic CASME II/SAMM/SMIC releases: "
        "2025 = OUT/me_vqa_samm_casme2_smic.jsonl, 2026 = OUT/me_vqa_samm_casme2_smic_v2.jsonl (with "
        "free-form analysis rows); read back with `megc-vqa prep --training-file`",
    )


def write_into(out: Path, write: Callable[[], int]) -> int:
    """A synth command's ``write`` into the folder ``out`` (refused first when it is a file); an OSError
    while writing is one logged line naming ``out`` and exit status 1. ``megc-vqa synth-test`` too."""
    refuse_non_folder(out)
    try:
        return write()
    except OSError as err:
        log.error("cannot write under %s: %s", out, err)
        return 1


def run(args: argparse.Namespace) -> int:
    return write_into(args.out, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from megc_vqa.synth.datasets import ALL_DATASETS, write_datasets

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in ALL_DATASETS]
    if unknown or not datasets:
        raise UsageError(
            f"--datasets {args.datasets!r}: unknown dataset(s) {unknown or '(none given)'}; choose from {DATASETS}"
        )
    # each option named with its own value (printed as "error: ..." by the command's error boundary)
    check_count("--subjects", args.subjects, SYNTH_COUNT)
    check_count("--clips-per-subject", args.clips_per_subject, SYNTH_COUNT)
    check_count("--subjects x --clips-per-subject", args.subjects * args.clips_per_subject, SYNTH_COUNT)
    check_count("--workers", args.workers, WORKERS)
    check_number("--size", args.size, minimum=32, maximum=1024)
    check_realism("--realism", args.realism)
    refuse_size_with_release(args.realism, size=args.size)
    check_count("--long-events", args.long_events, SYNTH_COUNT)
    # Only into its own dataset folders: a real release at OUT/casme2 is never overwritten.
    names = [*datasets, *([TRAINING_FILES[args.training_file]] if args.training_file else [])]
    claim_outputs(args.out, WRITER, [*names, RUN_RECORD])
    _refuse_other_settings(args, datasets)
    # Datasets an earlier run (other --datasets) left here: prep over --out would read them with these.
    earlier = [d for d in ALL_DATASETS if d not in datasets and (args.out / d).is_dir()]
    if earlier:
        log.warning(
            "%s holds dataset folder(s) %s that this run does not write (an earlier run with other --datasets): "
            "`megc-vqa prep --data-root %s` would read them too; use an empty --out for this run's data only",
            args.out,
            ", ".join(earlier),
            args.out,
        )
    start = time.perf_counter()
    written = write_datasets(
        args.out, args.seed, args.subjects, args.clips_per_subject, datasets, args.size or 128, args.workers,
        realism=args.realism, long_events=args.long_events,
    )  # fmt: skip
    for name, records in written.items():
        print(
            f"{name:12s} {len(records):4d} {'videos' if name.endswith(('_long', '_lv')) else 'clips'}  {args.out / name}"
        )
    if args.training_file:
        print(f"training file {_write_training_file(args.out, args.training_file, datasets)}")
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0


def _settings(args: argparse.Namespace) -> dict[str, object]:
    """What decides the frames of a dataset folder (not --datasets, --workers or --training-file)."""
    return {
        "seed": args.seed,
        "subjects": args.subjects,
        "clips_per_subject": args.clips_per_subject,
        "size": args.size or 128,
        "realism": args.realism,
        "long_events": args.long_events,
    }


def _refuse_other_settings(args: argparse.Namespace, datasets: list[str]) -> None:
    """Rewriting a dataset folder with the settings that made it gives the same frames; with other
    settings, the earlier run's frames would stay beside the new ones, so it is refused, naming both.
    The record keeps each dataset folder's settings (runs with other --datasets add theirs)."""
    record = RunRecord(args.out / RUN_RECORD)
    earlier = record.settings or {}
    now = json.loads(json.dumps(_settings(args)))
    problems = []
    for dataset in datasets:
        folder = args.out / dataset
        if not (folder.is_dir() and any(folder.iterdir())):
            continue
        if not isinstance(earlier.get(dataset), dict):
            problems.append(f"{dataset}: no record of the settings that wrote it")
        elif differences := settings_differences(earlier[dataset], now):
            problems.append(f"{dataset}: {'; '.join(differences)}")
    if problems:
        stale = [p.split(":", 1)[0] for p in problems]
        raise UsageError(
            f"--out {args.out}: dataset folder(s) hold frames of an earlier synth run with other settings "
            f"({' | '.join(problems)}); a rerun would mix both runs' frames in one clip folder. Give an empty "
            f"--out, or delete {', '.join(str(args.out / d) for d in stale)} first"
        )
    record.start({**earlier, **{dataset: now for dataset in datasets}})


def _write_training_file(out: Path, version: str, datasets: list[str]) -> Path:
    """The organiser-format file of the releases just written, read back through the real loaders."""
    loaded = LoadResult()
    for name in (d for d in TRAINING_DATASETS if d in datasets):
        loaded.extend(annotations.DATASETS[name].load(out / name))
    return write_training_file(official_rows(loaded.clips, version), out / TRAINING_FILES[version])
