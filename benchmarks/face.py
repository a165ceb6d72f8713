"""Benchmark: the face pipeline's cost per clip, and how often it finds the face, on release-sized frames.

Clips are composed (``megc_vqa.visual.toyclips.face_scene``: the synthetic face pasted off-centre into a
noisy background, with head motion and a small expression), 640x480 (CASME II, SMIC) and 2040x1088 (SAMM),
written as JPEG folders with the annotated apex, so the times hold no apex estimation. Side by side in each
repeat, per frame size, ``megc_vqa.visual.samplers.sample(clip, "oao+flow", size=224)`` without cache:

- none: no face pipeline (today's default);
- crop / align: detection + 68 landmarks on the onset frame, the crop or the aligned face;
- align+register: and every key frame registered to the onset (ECC);
- align+register+magnify: and magnified x3.

The difference to ``none`` is what a clip costs more end to end (the aligned 224x224 images also make the
flow cheaper than a 224x299 full frame); the face steps alone (detection + landmarks + alignment +
registration of 3 key frames, frames already decoded) are timed too. Then ``--detect`` frames of each size with random face size (CASME II 190-340 px, SAMM
300-450 px) and placement are searched: the share where the face is found (goal >= 0.99). Last line:
``ratio=<align+register / none>`` at 640x480.

    python benchmarks/face.py --repeats 5 --detect 100
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
    parser.add_argument("--clips", type=int, default=4, help="clips per frame size")
    parser.add_argument("--repeats", type=int, default=5, help="timing repeats (medians reported)")
    parser.add_argument("--detect", type=int, default=100, help="frames per size for the detection rate")
    return parser.parse_args()


SIZES = {"640x480": (640, 480, 190, 340), "2040x1088": (2040, 1088, 300, 450)}


def placement(rng, width: int, height: int, lo: int, hi: int) -> tuple[int, tuple[float, float]]:
    face_px = int(rng.integers(lo, hi))
    half = face_px * 0.6  # the drawn face is about 80% of its square; its crop must fit the frame
    cx = float(rng.uniform(half, max(half, width - half)))
    cy = float(rng.uniform(half, max(half, height - half)))
    return face_px, (cx, cy)


def main() -> None:
    import numpy as np

    from megc_vqa.face_settings import FaceSettings
    from megc_vqa.records import Clip, FrameSource
    from megc_vqa.visual import face as face_mod
    from megc_vqa.visual.face import FaceSkip
    from megc_vqa.visual.facepipe import Registrar, face_geometry
    from megc_vqa.visual.frames import read_frames
    from megc_vqa.visual.samplers import sample
    from megc_vqa.visual.toyclips import face_scene, write_frames

    args = parse_args()
    print(
        f"detector: {'dlib HOG + 68 landmarks' if face_mod.dlib_available() else 'OpenCV Haar (dlib missing)'}"
    )
    settings = {
        "none": FaceSettings(),
        "crop": FaceSettings(face="crop"),
        "align": FaceSettings(face="align"),
        "align+register": FaceSettings(face="align", register=True),
        "align+register+magnify": FaceSettings(face="align", register=True, magnify=3.0),
    }
    rng = np.random.default_rng(0)
    ratio = None
    with tempfile.TemporaryDirectory() as tmp:
        for name, (width, height, lo, hi) in SIZES.items():
            clips = []
            for k in range(args.clips):
                face_px, centre = placement(rng, width, height, lo, hi)
                frames = face_scene(
                    width, height, face_px=face_px, centre=centre, head_angle=2.0, head_shift=(5, -3), seed=k
                )
                folder = write_frames(Path(tmp) / f"{name}_{k}", frames) and Path(tmp) / f"{name}_{k}"
                clips.append(
                    Clip("bench", "s", f"c{k}", f"c{k}", FrameSource("folder", folder), 200.0, 1, 5, 3)
                )
            times: dict[str, list[float]] = {key: [] for key in settings}
            for _ in range(args.repeats):
                for key, face in settings.items():
                    start = time.perf_counter()
                    for clip in clips:
                        sample(clip, "oao+flow", size=224, face=face)
                    times[key].append((time.perf_counter() - start) / len(clips) * 1000)
            base = statistics.median(times["none"])
            print(f"{name} ({args.clips} clips, 5 frames each, median of {args.repeats}):")
            for key, values in times.items():
                ms = statistics.median(values)
                print(
                    f"  {key:24s} {ms:7.1f} ms/clip   face pipeline +{ms - base:6.1f} ms   ratio {ms / base:.2f}"
                )
            if name == "640x480":
                ratio = statistics.median(times["align+register"]) / base
            # the face steps alone on decoded frames: detection + landmarks + alignment + registration
            steps = []
            for clip in clips:
                frames = read_frames(clip.source, [1, 3, 5])
                start = time.perf_counter()
                geometry = face_geometry(frames[0], settings["align+register"], 224, clip.image_id)
                registrar = Registrar(geometry, frames[0], clip.image_id, True)
                for index, frame in zip((1, 3, 5), frames, strict=True):
                    registrar(frame, index, "onset" if index == 1 else "key frame")
                steps.append((time.perf_counter() - start) * 1000)
            print(
                f"  face steps alone (align+register, 3 key frames): {statistics.median(steps):.1f} ms/clip"
            )
        for name, (width, height, lo, hi) in SIZES.items():
            found = 0
            for k in range(args.detect):
                face_px, (cx, cy) = placement(rng, width, height, lo, hi)
                frame = face_scene(
                    width, height, face_px=face_px, centre=(cx, cy), n_frames=1, seed=1000 + k
                )[0]
                try:
                    x, y, w, h = face_geometry(frame, FaceSettings(face="crop"), 224, f"frame{k}").box
                except FaceSkip as err:
                    print(f"  missed: {err}")
                    continue
                found += abs(x + w / 2 - cx) < face_px * 0.2 and abs(y + h / 2 - cy) < face_px * 0.25
            print(f"{name}: face found in {found}/{args.detect} frames ({found / args.detect:.3f})")
    print(f"ratio={ratio:.2f}")


if __name__ == "__main__":
    main()
