"""Calibrate the synthetic presets against the releases: generate one set per preset, measure it as a reader would.

    python benchmarks/calibrate_realism.py --out runs/calibrate --seed 0 [--subjects 4 --clips-per-subject 4]

Per dataset and preset (side by side): generation time and disk use; face detection rate on the onset frames
(OpenCV Haar frontal cascade, dlib HOG); face width and centre relative to the frame; onset-to-apex Farneback
flow inside the face box relative to the face width (50th and 99th percentile per clip, median over clips),
the face's motion as a whole (median flow vector) and the expression's own (99th percentile after removing
it); onset/total durations; noise (grey levels) on the static wall; long videos: blinks per minute from the
eye band and the head drift from the first to the last frame. Writes OUT/calibration.json and prints a
markdown table (docs/realism.md holds one, with the published figures beside it).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from megc_vqa.synth import layout
from megc_vqa.synth.calibration import (
    eye_events_per_minute,
    flow_motion,
    haar_faces,
    hog_faces,
    noise_level,
    read_grey,
)
from megc_vqa.synth.datasets import LONG_DATASETS, write_datasets
from megc_vqa.synth.realism import REALISMS


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 5) if values else None


def _box(grey, found_hog, found_haar):
    if found_hog:
        return max(found_hog, key=lambda b: b[2] * b[3])
    if found_haar:
        return max(found_haar, key=lambda b: b[2] * b[3])
    return (
        0,
        0,
        grey.shape[1],
        grey.shape[0],
    )  # no face: the whole frame (the synthetic preset's faces fill it)


def measure_clips(dataset: str, clips) -> dict:
    hits = {"haar": 0, "hog": 0}
    width, cx, cy, p50, p99, head, residual, onset_ms, total_ms, noise = ([] for _ in range(10))
    for clip in clips:
        folder = Path(clip.source.path)
        apex = clip.apex if clip.apex is not None else (clip.onset + clip.offset) // 2
        frame = read_grey(layout.frame_path(dataset, folder, clip.clip_id, clip.onset))
        peak = read_grey(layout.frame_path(dataset, folder, clip.clip_id, apex))
        found_haar, found_hog = haar_faces(frame), hog_faces(frame)
        hits["haar"] += bool(found_haar)
        hits["hog"] += bool(found_hog)
        box = _box(frame, found_hog, found_haar)
        h, w = frame.shape
        width.append(box[2] / w)
        cx.append((box[0] + box[2] / 2) / w)
        cy.append((box[1] + box[3] / 2) / h)
        motion = flow_motion(frame, peak, box)
        p50.append(motion.p50)
        p99.append(motion.p99)
        head.append(motion.head)
        residual.append(motion.residual_p99)
        onset_ms.append(1000 * (apex - clip.onset) / clip.fps)
        total_ms.append(1000 * (clip.offset - clip.onset + 1) / clip.fps)
        before = layout.frame_path(dataset, folder, clip.clip_id, clip.onset - 1)
        if before.is_file():
            noise.append(noise_level(read_grey(before), frame))
    n = len(clips)
    return {
        "clips": n,
        "frame": f"{w}x{h}",
        "haar_rate": round(hits["haar"] / n, 4),
        "hog_rate": round(hits["hog"] / n, 4),
        "face_width_frac": _median(width),
        "face_width_px": _median([v * w for v in width]),
        "centre_x_range": [round(min(cx), 3), round(max(cx), 3)],
        "centre_y_range": [round(min(cy), 3), round(max(cy), 3)],
        "flow_p50_face": _median(p50),
        "flow_p99_face": _median(p99),
        "head_face": _median(head),
        "expression_p99_face": _median(residual),
        "onset_ms": _median(onset_ms),
        "total_ms": _median(total_ms),
        "noise_grey": _median(noise),
    }


def measure_long(dataset: str, videos) -> dict:
    rates, drift = [], []
    for video in videos:
        folder = Path(video.source.path)
        n = max(e.offset for e in video.events) + 5
        paths = [layout.frame_path(dataset, folder, video.video_id, k) for k in range(1, n + 1)]
        paths = [p for p in paths if p.is_file()]
        frames = [read_grey(p) for p in paths]
        found = hog_faces(frames[0]) or haar_faces(frames[0])
        box = _box(frames[0], found, [])
        rates.append(eye_events_per_minute(frames, box, video.fps))
        drift.append(flow_motion(frames[0], frames[-1], box).head)
        del frames
    return {"videos": len(videos), "eye_events_per_min": _median(rates), "drift_face": _median(drift)}


def disk_mb(folder: Path) -> float:
    return round(sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 1e6, 1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True, help="work folder (one sub-folder per preset)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--clips-per-subject", type=int, default=4)
    parser.add_argument("--datasets", default="casme2,samm,smic,casme3,casme2_long,samm_lv")
    parser.add_argument("--presets", default=",".join(REALISMS))
    parser.add_argument("--long-events", type=int, default=3, help="events per long video (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the generated frames")
    args = parser.parse_args(argv)
    datasets = [d for d in args.datasets.split(",") if d]
    report: dict = {"seed": args.seed, "subjects": args.subjects, "clips_per_subject": args.clips_per_subject}
    for preset in [p for p in args.presets.split(",") if p]:
        root = args.out / preset
        if root.exists():
            shutil.rmtree(root)
        start = time.perf_counter()
        written = write_datasets(root, args.seed, args.subjects, args.clips_per_subject, datasets,
                                 realism=preset, long_events=args.long_events)  # fmt: skip
        seconds = time.perf_counter() - start
        rows = {"generate_s": round(seconds, 1), "disk_mb": disk_mb(root)}
        for dataset, records in written.items():
            print(f"measuring {preset} {dataset}", file=sys.stderr)
            measure = measure_long if dataset in LONG_DATASETS else measure_clips
            rows[dataset] = {"disk_mb": disk_mb(root / dataset), **measure(dataset, records)}
        report[preset] = rows
        if not args.keep:
            shutil.rmtree(root)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "calibration.json").write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
