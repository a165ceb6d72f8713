"""``megc-vqa synth``: write synthetic micro-expression datasets in the real layouts."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

log = logging.getLogger(__name__)
DATASETS = "casme2,samm,smic,casme3,casme2_long,samm_lv"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="output folder (one sub-folder per dataset)")
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed; the same seed writes the same frames"
    )
    parser.add_argument("--subjects", type=int, default=4, help="subjects per short-clip dataset (default 4)")
    parser.add_argument("--clips-per-subject", type=int, default=4, help="clips per subject (default 4)")
    parser.add_argument("--datasets", default=DATASETS, help=f"comma-separated subset of {DATASETS}")
    parser.add_argument(
        "--size", type=int, default=128, help="frame width and height in pixels (default 128)"
    )
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: min(2, CPUs))")


def run(args: argparse.Namespace) -> int:
    if args.out.exists() and not args.out.is_dir():
        log.error("--out %s exists and is not a folder", args.out)
        return 2
    try:
        return _run(args)
    except OSError as err:
        log.error("cannot write under %s: %s", args.out, err)
        return 1


def _run(args: argparse.Namespace) -> int:
    from megc_vqa.synth.datasets import ALL_DATASETS, write_datasets

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = [d for d in datasets if d not in ALL_DATASETS]
    if unknown or not datasets:
        log.error("unknown dataset(s) %s; choose from %s", unknown or "(none given)", DATASETS)
        return 2
    if args.subjects < 1 or args.clips_per_subject < 1 or not 32 <= args.size <= 1024:
        log.error("--subjects and --clips-per-subject must be >= 1 and --size within 32..1024")
        return 2
    stale = [d for d in datasets if (args.out / d).is_dir() and any((args.out / d).iterdir())]
    if stale:
        log.warning("%s already hold files; frames of an earlier run may remain (use an empty --out)", stale)
    start = time.perf_counter()
    written = write_datasets(
        args.out, args.seed, args.subjects, args.clips_per_subject, datasets, args.size, args.workers
    )
    for name, records in written.items():
        print(
            f"{name:12s} {len(records):4d} {'videos' if name.endswith(('_long', '_lv')) else 'clips'}  {args.out / name}"
        )
    print(f"done in {time.perf_counter() - start:.1f} s")
    return 0
