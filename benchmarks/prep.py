"""Benchmark: visual preparation of N clips (OAO frames + onset->apex flow) against the decoding floor.

Writes N synthetic clips (numbered JPEG folders, 60-100 frames at 200 fps, 128-256 px, no apex given,
like the MEGC test clips) and times, side by side in each repeat:

- floor: the decoding the task cannot avoid: ``cv2.imread`` of the 3 OAO frames in colour, plus
  ``cv2.imread`` of every frame in onset..offset in the reduced-size grey mode the apex estimator reads
  them in (the apex is unknown, so every frame must be looked at);
- pipeline: ``megc_vqa.visual.samplers.sample(clip, "oao+flow", size=224)`` without cache (listing the folder,
  apex estimation, decoding, resizing, Farneback flow, drawing);
- cache hit: the same call answered from the ``.npz`` cache.

It reports medians over repeats and the peak traced memory (tracemalloc) of preparing N and 4N clips
into a cache folder, which should be flat. Last line: ``ratio=<pipeline / floor>`` (goal <= 3).

    python benchmarks/prep.py --clips 20 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clips", type=int, default=20, help="N, clips timed (memory also measured at 4N)")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (medians reported)")
    parser.add_argument("--spec", default="oao+flow", help="sampler spec")
    parser.add_argument("--size", type=int, default=224, help="shorter side of the model inputs")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args()


def make_clips(root: Path, count: int, n: int, seed: int) -> list:
    """``count`` clips whose lengths and sizes repeat every ``n`` clips, so N and 4N see the same mix."""
    import numpy as np

    from megc_vqa.visual.frames import clip_from_folder
    from megc_vqa.visual.toyclips import write_toy_clip

    shapes = np.random.default_rng(seed).integers([60, 128], [101, 257], size=(n, 2))
    rng = np.random.default_rng(seed + 1)
    clips = []
    for k in range(count):
        n_frames, height = (int(v) for v in shapes[k % n])
        folder = root / f"sub{k % 10:02d}" / f"EP{k:03d}"
        write_toy_clip(
            folder,
            n_frames,
            int(rng.integers(10, n_frames - 10)),
            first=int(rng.integers(1, 5000)),
            size=(height, int(height * 1.2)),
            shift=int(rng.integers(3, 10)),
            seed=k,
        )
        clips.append(clip_from_folder(folder, fps=200.0, dataset="bench"))
    return clips


def floor_plan(clips: list, spec: str, size: int) -> list[tuple[list[Path], list[Path], int]]:
    """Per clip: the colour frames the sampler shows, the frames apex estimation must read, and its decode mode."""
    from megc_vqa.visual.apex import auto_reduce
    from megc_vqa.visual.frames import _REDUCED_GREY, FrameReader
    from megc_vqa.visual.samplers import sample

    plan = []
    for clip in clips:
        shown = sample(clip, spec, size=size).frame_indices
        with FrameReader(clip.source) as reader:
            files = reader._files
            scanned = [files[int(i)] for i in reader.indices if clip.onset <= i <= clip.offset]
            plan.append(([files[i] for i in shown], scanned, _REDUCED_GREY[auto_reduce(reader, clip.onset)]))
    return plan


def run_floor(plan: list[tuple[list[Path], list[Path], int]]) -> None:
    import cv2

    for shown, scanned, grey_mode in plan:
        for path in shown:
            cv2.imread(str(path), cv2.IMREAD_COLOR)
        for path in scanned:
            cv2.imread(str(path), grey_mode)


def peak_memory_mib(clips: list, spec: str, size: int, cache_dir: Path) -> float:
    import tracemalloc

    from megc_vqa.visual.samplers import sample

    tracemalloc.start()
    tracemalloc.reset_peak()
    for clip in clips:
        sample(clip, spec, size=size, cache_dir=cache_dir)  # prepared to disk, nothing kept in memory
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2**20


def main() -> int:
    args = parse_args()
    import cv2

    from megc_vqa.visual.samplers import sample

    cv2.setNumThreads(1)  # one core for both sides; the machine is shared
    n = args.clips
    with tempfile.TemporaryDirectory(prefix="megc_bench_") as tmp:
        tmp_path = Path(tmp)
        started = time.perf_counter()
        clips = make_clips(tmp_path / "frames", 4 * n, n, args.seed)
        timed = clips[:n]
        total_frames = sum(c.n_frames for c in timed)
        print(
            f"wrote {len(clips)} clips in {time.perf_counter() - started:.1f}s; timing {n} clips "
            f"({total_frames} frames, {min(c.n_frames for c in timed)}-{max(c.n_frames for c in timed)} per clip), "
            f"spec={args.spec} size={args.size} repeats={args.repeats}"
        )
        plan = floor_plan(timed, args.spec, args.size)
        cache = tmp_path / "cache"
        for clip in timed:
            sample(clip, args.spec, size=args.size, cache_dir=cache)

        floor_s, pipeline_s, cached_s = [], [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            run_floor(plan)
            floor_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for clip in timed:
                sample(clip, args.spec, size=args.size)
            pipeline_s.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            for clip in timed:
                sample(clip, args.spec, size=args.size, cache_dir=cache)
            cached_s.append(time.perf_counter() - t0)

        floor, pipeline, cached = (statistics.median(x) for x in (floor_s, pipeline_s, cached_s))
        for name, value in (
            ("floor (imread OAO colour + reduced grey scan)", floor),
            ("pipeline sample()", pipeline),
            ("cache hit", cached),
        ):
            print(f"{name:48s} median {value * 1000:8.1f} ms  ({value / n * 1000:6.2f} ms/clip)")

        peak_memory_mib(
            clips[:n], args.spec, args.size, tmp_path / "warm_up"
        )  # lazy imports, first allocations
        mem_n = peak_memory_mib(clips[:n], args.spec, args.size, tmp_path / "mem_n")
        mem_4n = peak_memory_mib(clips, args.spec, args.size, tmp_path / "mem_4n")
        print(
            f"peak traced memory: N={n}: {mem_n:.2f} MiB, 4N={4 * n}: {mem_4n:.2f} MiB (4N/N {mem_4n / mem_n:.2f})"
        )
        print(f"cache hit / pipeline: {cached / pipeline:.3f}")
        print(f"ratio={pipeline / floor:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
