"""End-to-end spotting speed against decoding the same frames alone.

    python benchmarks/spot.py [--fps 200] [--seconds 10] [--frame-size 640x480] [--spotter CKPT] [--repeats 3]

Writes a synthetic long video (JPEG frame folder) once, then alternates, ``--repeats`` times:
  decode:     reading exactly the frames the spotter reads (the sampling grid), with the same reader
              (grey, decode-time reduction, crop and resize, same thread pool) and nothing else;
  end-to-end: ``score_video`` (decode + channels + batched 3D CNN) + ``extract_intervals``.
Rates are in frames of video per second of wall time (a 200 fps video plays 200 frames/s, so a rate above
the fps is faster than real time). Prints medians; the last line is ``ratio=<end-to-end rate / decode rate>``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def write_video(folder: Path, n: int, width: int, height: int) -> None:
    import cv2
    import numpy as np

    rng = np.random.default_rng(0)
    base = np.full((height, width), 90, np.uint8)
    cv2.ellipse(base, (width // 2, height // 2), (height // 3, int(height / 2.3)), 0, 0, 360, 170, -1)
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(n):
        frame = np.clip(base + rng.normal(0, 4, base.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"img{k + 1}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 90])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fps", type=float, default=200.0)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--frame-size", default="640x480", help="WxH of the synthetic frames")
    p.add_argument("--spotter", type=Path, help="checkpoint (default: an untrained default-size spotter)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--workers", type=int, default=2, help="decoding threads (both sides)")
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    import torch

    from megc_vqa.records import FrameSource
    from megc_vqa.spotting.data import VideoFrames, iter_crop_chunks, sample_grid
    from megc_vqa.spotting.infer import PeakParams, extract_intervals, score_video
    from megc_vqa.spotting.model import Spotter, SpotterConfig, load_checkpoint
    from megc_vqa.timing import interleaved_times

    torch.set_num_threads(args.threads)
    model = load_checkpoint(args.spotter)[0] if args.spotter else Spotter(SpotterConfig()).eval()
    model.to(args.device)
    width, height = (int(v) for v in args.frame_size.lower().split("x"))
    n = int(args.fps * args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "s1_v1"
        write_video(folder, n, width, height)
        source = FrameSource("folder", folder)
        stride = model.config.stride_for(args.fps)

        def decode_only() -> None:
            frames = VideoFrames.open(source)
            chosen, _ = frames.resolve(sample_grid(frames.first, frames.last, stride))
            for _ in iter_crop_chunks(frames, chosen, model.config.size, workers=args.workers):
                pass

        def end_to_end() -> None:
            curve = score_video(model, source, args.fps, workers=args.workers, device=args.device)
            extract_intervals(curve, PeakParams())

        decode_only()  # warm the page cache and the model
        end_to_end()
        times = interleaved_times({"decode": decode_only, "end_to_end": end_to_end}, args.repeats)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: n / v for k, v in med.items()}
    print(
        f"video: {n} frames, {args.fps:g} fps, {width}x{height} JPEG; stride {stride} -> {len(range(0, n, stride))} decoded"
    )
    print(f"spotter: size {model.config.size}, T {model.config.n_frames}, inputs {','.join(model.config.inputs)}; "
          f"torch threads {args.threads}, decode workers {args.workers}, device {args.device}")  # fmt: skip
    for k in ("decode", "end_to_end"):
        print(f"{k:>10}: median {med[k]:.3f} s  {rate[k]:.0f} frames/s  {rate[k] / args.fps:.1f}x real time")
    print(f"ratio={rate['end_to_end'] / rate['decode']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
