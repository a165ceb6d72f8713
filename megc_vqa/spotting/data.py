"""Spotter inputs: sampled face crops streamed from a long video, their input channels, soft labels and
training windows.

Only the frames on the sampling grid (every ``stride`` original frames, stride from the fps) are decoded.
Frames are read as grey levels, reduced at decode time when the image is much larger than the crop (JPEG
DCT scaling: far cheaper than a full decode), centre-cropped to a square and resized.

Face crop: MEGC long videos are recorded with a fixed camera and a seated subject, so one box per video is
enough. With ``SpotterConfig.face_crop`` the box is the face found on the first frame by the Haar cascade of
``megc_vqa.visual.face`` (grown by 15%); otherwise, or when no face (or no detector) is found, the crop is
the centre square of each frame, with a warning (the documented fallback). A video without a visible face
is therefore processed like any other; its scores are simply low.

Dropped frames (gaps in the numbering, as in CAS(ME)^3) are filled with the nearest earlier frame that
exists, so the grid stays regular in time; unreadable images reuse the previous crop. Both are logged.
"""

from __future__ import annotations

import bisect
import logging
import math
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from megc_vqa.records import FrameSource, LongVideo

from .model import OUTPUTS, SpotterConfig

log = logging.getLogger(__name__)

# IMREAD flag per decode-time reduction factor.
_REDUCED = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
Crop = tuple[int, int, int, int]


class NoFramesError(ValueError):
    """A frame folder or video file holds no readable frame."""


def list_frames(folder: str | Path) -> list[tuple[int, Path]]:
    """``(frame index, path)`` of every image in ``folder``, in numeric order (``img100`` after ``img46``),
    through ``megc_vqa.visual.frames``; raises ``NoFramesError`` naming the folder when there is none."""
    from megc_vqa.visual.frames import FrameError
    from megc_vqa.visual.frames import list_frames as list_numbered

    try:
        frames = list_numbered(Path(folder))
    except FrameError as err:
        raise NoFramesError(str(err)) from None
    if not frames:
        raise NoFramesError(f"{folder}: no numbered frame images")
    return frames


def sample_grid(first: int, last: int, stride: int) -> np.ndarray:
    """Absolute frame indices ``first, first + stride, ...`` up to ``last`` (inclusive), always at least one."""
    return np.arange(first, max(first, last) + 1, stride, dtype=np.int64)


@dataclass
class VideoFrames:
    """What a source offers: the frame range and, for folders, which index lives in which file."""

    source: FrameSource
    first: int
    last: int
    paths: dict[int, Path] | None  # folder sources only
    n_available: int

    @classmethod
    def open(cls, source: FrameSource) -> VideoFrames:
        if source.kind == "folder":
            frames = list_frames(source.path)
            return cls(source, frames[0][0], frames[-1][0], dict(frames), len(frames))
        cap = cv2.VideoCapture(str(source.path))
        try:
            if not cap.isOpened():
                raise NoFramesError(f"{source.path}: cannot open the video file")
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        finally:
            cap.release()
        if n <= 0:
            raise NoFramesError(f"{source.path}: the video reports no frames")
        return cls(source, source.first_frame, source.first_frame + n - 1, None, n)

    def resolve(self, grid: np.ndarray) -> tuple[list[int], int]:
        """For each grid index, the frame actually read (nearest existing one at or before it); and how many
        grid positions fell on a dropped frame."""
        if self.paths is None:
            return [int(i) for i in grid], 0
        available = sorted(self.paths)
        chosen, missing = [], 0
        for index in grid:
            index = int(index)
            if index in self.paths:
                chosen.append(index)
                continue
            missing += 1
            pos = bisect.bisect_right(available, index) - 1
            chosen.append(available[max(pos, 0)])
        return chosen, missing


def first_frame_grey(frames: VideoFrames) -> np.ndarray | None:
    """The first frame at full resolution, grey, or None when it cannot be decoded."""
    if frames.paths is not None:
        return cv2.imread(str(frames.paths[frames.first]), cv2.IMREAD_GRAYSCALE)
    cap = cv2.VideoCapture(str(frames.source.path))
    try:
        ok, image = cap.read()
    finally:
        cap.release()
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if ok else None


def face_crop_for(frames: VideoFrames, label: str = "") -> Crop | None:
    """The face box on the first frame, or None (centre square) with a warning saying why."""
    from megc_vqa.visual.face import FaceDetectorUnavailable, face_box

    image = first_frame_grey(frames)
    if image is None:
        log.warning("%s: first frame unreadable, no face crop: centre square used", label)
        return None
    try:
        return face_box(image, label=label)
    except FaceDetectorUnavailable as err:
        log.warning("%s: %s; centre square used", label, err)
        return None


def _reduction_for(shape: tuple[int, int], size: int, crop: Crop | None) -> int:
    side = min(crop[2], crop[3]) if crop else min(shape)
    factor = 1
    while factor < 8 and side / (factor * 2) >= size:
        factor *= 2
    return factor


class CropReader:
    """Decode one frame as a ``size`` x ``size`` uint8 grey crop (centre square, or ``crop`` scaled along)."""

    def __init__(self, size: int, crop: Crop | None = None) -> None:
        self.size = size
        self.crop = crop
        self.factor: int | None = None

    def _calibrate(self, path: Path) -> None:
        full = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
        self.factor = 1 if full is None else _reduction_for(full.shape, self.size, self.crop)

    def from_path(self, path: Path) -> np.ndarray | None:
        if self.factor is None:
            self._calibrate(path)
        image = cv2.imread(str(path), _REDUCED[self.factor])
        return None if image is None else self.from_image(image, self.factor)

    def from_image(self, image: np.ndarray, factor: int = 1) -> np.ndarray:
        if image.ndim == 3:
            image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
        h, w = image.shape
        if self.crop:
            x, y, cw, ch = (round(v / factor) for v in self.crop)
            image = image[max(y, 0) : y + ch, max(x, 0) : x + cw]
            h, w = image.shape
        side = min(h, w)
        top, left = (h - side) // 2, (w - side) // 2
        image = image[top : top + side, left : left + side]
        interp = cv2.INTER_AREA if side > self.size else cv2.INTER_LINEAR
        return cv2.resize(image, (self.size, self.size), interpolation=interp)


def iter_crop_chunks(
    frames: VideoFrames,
    indices: Sequence[int],
    size: int,
    chunk: int = 256,
    crop: Crop | None = None,
    workers: int = 2,
) -> Iterator[np.ndarray]:
    """Yield ``(n <= chunk, size, size)`` uint8 crops of ``indices`` in order; memory holds ~two chunks.

    Folders decode in a small thread pool (OpenCV releases the GIL) one chunk ahead of the consumer, so
    decoding overlaps the model. Unreadable frames repeat the previous crop (logged); if the very first
    frames are unreadable the first readable crop is used for them.
    """
    reader = CropReader(size, crop)
    name = frames.source.path
    if frames.paths is None:
        yield from _iter_video_chunks(frames, indices, reader, chunk)
        return
    paths = [frames.paths[i] for i in indices]
    if paths:
        reader._calibrate(paths[0])
    previous: np.ndarray | None = None
    bad = 0
    with ThreadPoolExecutor(max(1, workers)) as pool:

        def submit(start: int):
            return pool.map(reader.from_path, paths[start : start + chunk])

        pending = submit(0) if paths else None
        for start in range(0, len(paths), chunk):
            crops = list(pending)
            pending = submit(start + chunk) if start + chunk < len(paths) else None
            out = np.empty((len(crops), size, size), np.uint8)
            for k, crop_k in enumerate(crops):
                if crop_k is None:
                    bad += 1
                    crop_k = previous if previous is not None else _first_readable(crops, paths, name)
                out[k] = previous = crop_k
            yield out
    if bad:
        log.warning("%s: %d unreadable frame(s) replaced by the previous frame", name, bad)


def _first_readable(crops: list, paths: list[Path], name: Path) -> np.ndarray:
    for c in crops:
        if c is not None:
            return c
    raise NoFramesError(f"{name}: none of the frames {paths[0].name}.. could be decoded")


def _iter_video_chunks(
    frames: VideoFrames, indices: Sequence[int], reader: CropReader, chunk: int
) -> Iterator[np.ndarray]:
    cap = cv2.VideoCapture(str(frames.source.path))
    wanted = iter(indices)
    target = next(wanted, None)
    position = frames.first
    buffer: list[np.ndarray] = []
    try:
        while target is not None:
            if not cap.grab():
                break
            if position == target:
                ok, image = cap.retrieve()
                if ok:
                    buffer.append(reader.from_image(image))
                elif buffer:
                    buffer.append(buffer[-1])
                target = next(wanted, None)
                while target is not None and target == position:  # repeated index (padding)
                    buffer.append(buffer[-1])
                    target = next(wanted, None)
                if len(buffer) >= chunk:
                    yield np.stack(buffer)
                    buffer = []
            position += 1
    finally:
        cap.release()
    if target is not None:
        log.warning(
            "%s: video ended at frame %d before the expected frame %d", frames.source.path, position, target
        )
    if buffer:
        yield np.stack(buffer)


class ChannelMaker:
    """Turns a stream of uint8 crops into the model's input channels, carrying state across chunks so that
    chunked and whole-video processing give identical results."""

    def __init__(self, config: SpotterConfig, fps: float, stride: int) -> None:
        self.inputs = config.inputs
        self.alpha = 1.0 - math.exp(-stride / (fps * config.dev_seconds))
        self.previous: np.ndarray | None = None
        self.mean: np.ndarray | None = None

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """``(n, H, W)`` uint8 -> ``(C, n, H, W)`` float32."""
        grey = crops.astype(np.float32) / 255.0
        if self.previous is None:
            self.previous = grey[0]
            self.mean = grey[0].copy()
        out = np.empty((len(self.inputs), *grey.shape), np.float32)
        for t, frame in enumerate(grey):
            for c, name in enumerate(self.inputs):
                if name == "grey":
                    out[c, t] = frame
                elif name == "diff":
                    out[c, t] = frame - self.previous
                else:  # dev
                    out[c, t] = frame - self.mean
            self.mean += self.alpha * (frame - self.mean)
            self.previous = frame
        return out


def soft_labels(video: LongVideo, grid: np.ndarray) -> np.ndarray:
    """``(len(grid), 2)`` targets for (micro, macro): 1 at the apex, falling linearly to 0.5 at the onset and
    offset, 0 outside; the max where events overlap. A missing apex is taken at the midpoint."""
    labels = np.zeros((len(grid), len(OUTPUTS)), np.float32)
    for ev in video.events:
        k = OUTPUTS.index(ev.expression_type)
        apex = ev.apex if ev.apex is not None else (ev.onset + ev.offset) // 2
        inside = (grid >= ev.onset) & (grid <= ev.offset)
        if not inside.any():
            continue
        g = grid[inside].astype(np.float32)
        half = np.where(g <= apex, max(apex - ev.onset, 1), max(ev.offset - apex, 1))
        value = 1.0 - 0.5 * np.minimum(np.abs(g - apex) / half, 1.0)
        labels[inside, k] = np.maximum(labels[inside, k], value)
    return labels


def emotion_targets(video: LongVideo, grid: np.ndarray, emotions: Sequence[str]) -> np.ndarray:
    """Class index per grid frame inside an event whose coarse emotion is one of ``emotions``; -1 elsewhere.
    A fine label outside the composite counts as ``others`` when ``others`` is a class."""
    targets = np.full(len(grid), -1, np.int64)
    for ev in video.events:
        name = ev.coarse_emotion or ("others" if ev.fine_emotion and "others" in emotions else None)
        if name not in emotions:
            continue
        targets[(grid >= ev.onset) & (grid <= ev.offset)] = list(emotions).index(name)
    return targets


@dataclass
class PreparedVideo:
    """One training video held in memory at the sampling grid: channels (C, N, H, W) float16 and targets."""

    video: LongVideo
    grid: np.ndarray
    channels: np.ndarray
    labels: np.ndarray
    emotions: np.ndarray


def prepare_video(
    video: LongVideo, config: SpotterConfig, crop: Crop | None = None, chunk: int = 256, phase: int = 0
) -> PreparedVideo:
    """Decode and preprocess a whole video for training (``phase`` shifts the grid by that many frames)."""
    frames = VideoFrames.open(video.source)
    if crop is None and config.face_crop:
        crop = face_crop_for(frames, video.video_id)
    stride = config.stride_for(video.fps)
    grid = sample_grid(frames.first + phase, frames.last, stride)
    chosen, missing = frames.resolve(grid)
    if missing:
        log.info(
            "%s: %d of %d sampled frames dropped, filled from earlier frames",
            video.video_id,
            missing,
            len(grid),
        )
    maker = ChannelMaker(config, video.fps, stride)
    parts = [maker(c).astype(np.float16) for c in iter_crop_chunks(frames, chosen, config.size, chunk, crop)]
    channels = np.concatenate(parts, axis=1)
    grid = grid[: channels.shape[1]]
    return PreparedVideo(
        video, grid, channels, soft_labels(video, grid), emotion_targets(video, grid, config.emotions)
    )


class WindowDataset:
    """Training windows of ``n_frames`` consecutive grid frames from prepared videos (a torch map-style
    dataset). ``weights()`` gives windows touching an event ``balance`` times the total weight of the
    others, for a ``WeightedRandomSampler`` (class balancing: events are a few percent of a long video)."""

    def __init__(self, videos: Sequence[PreparedVideo], n_frames: int, hop: int = 1) -> None:
        self.videos = list(videos)
        self.n_frames = n_frames
        self.index: list[tuple[int, int]] = []
        for v, pv in enumerate(self.videos):
            n = pv.channels.shape[1]
            starts = range(0, max(n - n_frames, 0) + 1, hop)
            self.index.extend((v, s) for s in starts)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        import torch

        v, s = self.index[i]
        pv = self.videos[v]
        x = _pad_time(pv.channels[:, s : s + self.n_frames], self.n_frames)
        y = _pad_time(pv.labels[s : s + self.n_frames].T, self.n_frames)
        e = pv.emotions[s : s + self.n_frames]
        e = np.concatenate([e, np.full(self.n_frames - len(e), -1, np.int64)])
        return (
            torch.from_numpy(x.astype(np.float32)),
            torch.from_numpy(y.astype(np.float32)),
            torch.from_numpy(e),
        )

    def positive(self) -> np.ndarray:
        """Whether each window overlaps an event label."""
        return np.array(
            [self.videos[v].labels[s : s + self.n_frames].max(initial=0) > 0 for v, s in self.index], bool
        )

    def weights(self, balance: float = 1.0) -> np.ndarray:
        pos = self.positive()
        n_pos, n_neg = int(pos.sum()), int((~pos).sum())
        if not n_pos or not n_neg:
            return np.ones(len(pos))
        return np.where(pos, balance / n_pos, 1.0 / n_neg)


def _pad_time(x: np.ndarray, n: int) -> np.ndarray:
    """Repeat the last frame along the last-but-spatial time axis up to ``n`` (short videos)."""
    t = x.shape[1] if x.ndim == 4 else x.shape[-1]
    if t >= n:
        return x
    if x.ndim == 4:
        return np.concatenate([x, np.repeat(x[:, -1:], n - t, axis=1)], axis=1)
    return np.concatenate([x, np.zeros((*x.shape[:-1], n - t), x.dtype)], axis=-1)
