"""``megc-vqa synth-test``: a MEGC-style synthetic test set for organiser question files."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from megc_vqa.annotations.long_videos import check_fps
from megc_vqa.errors import UsageError, check_number
from megc_vqa.fileio import claim_outputs, is_regular_file
from megc_vqa.limits import SYNTH_COUNT, WORKERS, check_count
from megc_vqa.synth.command import write_into
from megc_vqa.synth.realism import REALISMS, SYNTHETIC, check_realism, refuse_size_with_release

log = logging.getLogger(__name__)
WRITER = "megc-vqa synth-test"


def _earlier_test_set(path: Path) -> bool:
    """Whether ``path`` lies in a synth-test output from before output markers (its gt/ index files)."""
    gt = path.parent / "gt"
    return any(is_regular_file(gt / name) for name in ("clips.jsonl", "long_videos.jsonl"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--questions", type=Path, nargs="*", default=[], metavar="F",
                        help="organiser question files (*_to_answer.jsonl); frames go to OUT/frames/<video>/")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="output folder (frames/, long/, gt/)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--long-videos", type=int, default=0, metavar="N",
                        help="also write N long videos under OUT/long/ with OUT/gt/str_gt.csv")  # fmt: skip
    parser.add_argument("--fps", type=float, default=None,
                        help="frame rate of the --long-videos (default: 30 and 200 alternating by subject)")  # fmt: skip
    parser.add_argument(
        "--size",
        type=int,
        default=None,
        help="clip frame size in pixels (default 128; synthetic preset only)",
    )
    parser.add_argument(
        "--long-size", type=int, default=None,
        help="long-video frame size in pixels (default 96; synthetic preset only)",
    )  # fmt: skip
    parser.add_argument(
        "--realism", default=SYNTHETIC, metavar="PRESET",
        help=f"{' or '.join(REALISMS)} (default {SYNTHETIC}): 'release' draws SAMM clips at 2040x1088 grey, "
        "CAS(ME)^3 at 1280x720, CASME II at 640x480, long videos as SAMM-LV (above 60 fps) or CAS(ME)^3",
    )  # fmt: skip
    parser.add_argument("--long-events", type=int, default=None, metavar="N",
                        help="expressions per --long-videos video (default: 3-7 drawn)")  # fmt: skip
    parser.add_argument("--workers", type=int, default=None, help="render processes (default: min(2, CPUs))")


def run(args: argparse.Namespace) -> int:
    return write_into(args.out, lambda: _run(args))


def _run(args: argparse.Namespace) -> int:
    from megc_vqa.synth.test_set import QuestionFileError, write_long_gt, write_long_videos, write_test_set

    check_count("--long-videos", args.long_videos, SYNTH_COUNT, minimum=0)
    check_count("--workers", args.workers, WORKERS)
    check_number("--size", args.size, minimum=32, maximum=1024)
    check_number("--long-size", args.long_size, minimum=32, maximum=1024)
    check_fps("--fps", args.fps)
    check_realism("--realism", args.realism)
    refuse_size_with_release(args.realism, size=args.size, long_size=args.long_size)
    check_count("--long-events", args.long_events, SYNTH_COUNT)
    if not args.questions and args.long_videos == 0:
        raise UsageError("nothing to write: give --questions F... and/or --long-videos N (N at least 1)")
    # Only into its own folders: the frames of a real test set at OUT/frames are never cleared.
    claim_outputs(args.out, WRITER, ("frames", "long", "gt"), legacy=_earlier_test_set)
    start = time.perf_counter()
    videos = []
    if args.long_videos > 0:
        videos = write_long_videos(
            args.out, args.long_videos, args.seed, args.fps, args.long_size or 96, args.workers,
            realism=args.realism, events=args.long_events,
        )  # fmt: skip
        events = sum(len(v.events) for v in videos)
        print(f"{len(videos)} long videos ({events} events) under {args.out / 'long'}")
    if args.questions:
        try:
            test = write_test_set(
                args.questions, args.out, args.seed, args.size or 128, args.long_size or 96, args.workers,
                realism=args.realism,
            )  # fmt: skip
        except QuestionFileError as err:
            log.error("%s", err)
            return 2
        if test.long_videos and videos:  # one str_gt.csv / long_videos.jsonl for both kinds of long video
            write_long_gt(args.out / "gt", [*videos, *test.long_videos])
        print(
            f"{len(test.clips)} clips under {args.out / 'frames'}, {len(test.long_videos)} ME-LVQA long videos"
        )
        for path in test.gt_files:
            print(f"ground truth: {path}")
    print(f"ground truth folder {args.out / 'gt'}; done in {time.perf_counter() - start:.1f} s")
    return 0
