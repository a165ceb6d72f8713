"""Spotter inputs: sampled face crops streamed from a long video, their input channels, soft labels and
training windows.

Only the frames on the sampling grid (every ``stride`` original frames, stride from the fps) are decoded, by
the project's one frame reader (``megc_vqa.visual.frames``): grey levels, reduced at decode time when the
image is much larger than the crop (JPEG DCT scaling: far cheaper than a full decode), centre-cropped to a
square and resized.

Face crop: MEGC long videos are recorded with a fixed camera and a seated subject, so one face view per video
is enough, found on the first frame by the visual layer's face pipeline (``SpotterConfig.face``). ``box``
(the earlier ``face_crop``) is the Haar box grown by 15%, or the centre square with a warning when no face
(or no detector) is found; ``crop`` and ``align`` use ``megc_vqa.visual.facepipe`` (landmarks, margin,
eyes levelled) and skip a video without one usable face, with a line naming it; ``none`` is the centre
square.

Dropped frames (gaps in the numbering, as in CAS(ME)^3) are filled with the nearest earlier frame that
exists, so the grid stays regular in time; unreadable images reuse the previous crop. Both are logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from megc_vqa.errors import MegcError
from megc_vqa.records import FrameSource, LongVideo
from megc_vqa.visual.face import FaceDetectorUnavailable, face_box
from megc_vqa.visual.facepipe import face_geometry
from megc_vqa.visual.frames import FrameError, FrameReader
from megc_vqa.visual.frames import list_frames as list_numbered

from .model import OUTPUTS, SpotterConfig

log = logging.getLogger(__name__)

Crop = tuple[int, int, int, int]


class NoFramesError(MegcError, ValueError):
    """A frame folder or video file holds no readable frame."""


def list_frames(folder: str | Path) -> list[tuple[int, Path]]:
    """``(frame index, path)`` of every image in ``folder``, in numeric order (``img100`` after ``img46``),
    through ``megc_vqa.visual.frames``; raises ``NoFramesError`` naming the folder when there is none."""
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
    """An opened source (the project's one frame reader, ``megc_vqa.visual.frames.FrameReader``) and what
    it offers: the frame range and which indices exist."""

    source: FrameSource
    reader: FrameReader
    first: int
    last: int
    n_available: int

    @classmethod
    def open(cls, source: FrameSource) -> VideoFrames:
        try:
            reader = FrameReader(source)
        except FrameError as err:
            raise NoFramesError(str(err)) from None
        return cls(source, reader, reader.first, reader.last, len(reader.indices))

    def resolve(self, grid: np.ndarray) -> tuple[list[int], int]:
        """For each grid index, the frame actually read (nearest existing one at or before it, so no frame
        from the future leaks in); and how many grid positions fell on a dropped frame."""
        available = self.reader.indices
        grid = np.asarray(grid, dtype=np.int64)
        pos = np.clip(np.searchsorted(available, grid, side="right") - 1, 0, len(available) - 1)
        chosen = available[pos]
        return [int(c) for c in chosen], int((chosen != grid).sum())


def first_frame_grey(frames: VideoFrames) -> np.ndarray | None:
    """The first frame at full resolution, grey, or None when it cannot be decoded."""
    try:
        return frames.reader.read_grey([frames.first])[0]
    except FrameError:
        return None


def face_crop_for(frames: VideoFrames, label: str = "", margin: float = 0.15) -> Crop | None:
    """``face: box`` (the earlier ``face_crop``): the Haar face box on the first frame
    (``megc_vqa.visual.face.face_box``), or None (centre square) with a warning saying why."""
    image = first_frame_grey(frames)
    if image is None:
        log.warning("%s: first frame unreadable, no face crop: centre square used", label)
        return None
    try:
        return face_box(image, margin=margin, label=label)
    except FaceDetectorUnavailable as err:
        log.warning("%s: %s; centre square used", label, err)
        return None


@dataclass(frozen=True)
class FaceView:
    """Where each frame's crop comes from: a box (``crop``; ``box``), or an output->source affine map onto a
    ``size`` x ``size`` canvas (``align``)."""

    crop: Crop | None = None
    matrix: np.ndarray | None = None


def face_view_for(frames: VideoFrames, config: SpotterConfig, label: str = "") -> FaceView:
    """The video's face view by ``config.face`` through the visual layer's one face pipeline
    (``megc_vqa.visual.facepipe``), found on the first frame. ``crop``/``align`` raise ``FaceSkip`` (naming
    the video) when the first frame has no usable face; ``box`` falls back to the centre square, as
    ``face_crop`` always did."""
    settings = config.face_settings()
    if settings.face == "box":
        return FaceView(crop=face_crop_for(frames, label, settings.margin))
    if settings.face == "none":
        return FaceView()

    first = frames.reader.read([frames.first])[0]
    geometry = face_geometry(first, settings, config.size, label)
    if settings.face == "crop":
        return FaceView(crop=geometry.box)
    return FaceView(matrix=geometry.matrix)


def _reduction_for(shape: tuple[int, int], size: int, crop: Crop | None) -> int:
    side = min(crop[2], crop[3]) if crop else min(shape)
    factor = 1
    while factor < 8 and side / (factor * 2) >= size:
        factor *= 2
    return factor


def crop_square(image: np.ndarray, size: int, crop: Crop | None = None, factor: int = 1) -> np.ndarray:
    """A ``size`` x ``size`` uint8 grey crop of a grey frame decoded at 1/``factor`` scale: ``crop`` (full
    resolution coordinates, scaled along) or the whole frame, then its centre square."""
    if crop:
        x, y, cw, ch = (round(v / factor) for v in crop)
        image = image[max(y, 0) : y + ch, max(x, 0) : x + cw]
    h, w = image.shape
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    image = image[top : top + side, left : left + side]
    interp = cv2.INTER_AREA if side > size else cv2.INTER_LINEAR
    return cv2.resize(image, (size, size), interpolation=interp)


def iter_crop_chunks(
    frames: VideoFrames,
    indices: Sequence[int],
    size: int,
    chunk: int = 256,
    crop: Crop | None = None,
    workers: int = 2,
    matrix: np.ndarray | None = None,
) -> Iterator[np.ndarray]:
    """Yield ``(n <= chunk, size, size)`` uint8 crops of ``indices`` in order; memory holds about a chunk.

    Frames are decoded by ``FrameReader.read_grey``, reduced inside the JPEG decoder when the frame is much
    larger than the crop. A chunk that fails to decode is read frame by frame: unreadable frames repeat the
    previous crop (logged); if the very first frames are unreadable the first readable crop is used.
    ``workers`` is kept for callers; decoding is sequential (OpenCV's decoder is the cost, not Python).
    ``matrix`` (``face: align``): an output->source affine map onto a ``size`` x ``size`` canvas, used
    instead of ``crop``.
    """
    del workers
    indices = [int(i) for i in indices]
    if not indices:
        return
    name = frames.source.path
    first = first_frame_grey(frames)
    region = crop
    if matrix is not None:  # align: the canvas covers size * scale source pixels, not the whole frame
        side = round(size * float(np.sqrt(abs(np.linalg.det(matrix[:, :2])))))
        region = (0, 0, side, side)
    factor = 1 if first is None else _reduction_for(first.shape, size, region)
    if frames.source.kind != "folder":
        factor = 1  # video frames are decoded whole, then cropped
    previous: np.ndarray | None = None
    bad = 0
    for start in range(0, len(indices), chunk):
        part = indices[start : start + chunk]
        try:
            images: list[np.ndarray | None] = list(frames.reader.read_grey(part, reduce=factor))
        except FrameError:
            images = []
            for index in part:
                try:
                    images.append(frames.reader.read_grey([index], reduce=factor)[0])
                except FrameError:
                    images.append(None)
        if matrix is not None:
            reduced = matrix / factor  # source pixels are 1/factor as many in a reduced decode
            crops = [
                None
                if im is None
                else cv2.warpAffine(
                    im,
                    reduced,
                    (size, size),
                    flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
                    borderMode=cv2.BORDER_REPLICATE,
                )
                for im in images
            ]
        else:
            crops = [None if im is None else crop_square(im, size, crop, factor) for im in images]
        out = np.empty((len(crops), size, size), np.uint8)
        for k, crop_k in enumerate(crops):
            if crop_k is None:
                bad += 1
                crop_k = previous if previous is not None else _first_readable(crops, name, part[0])
            out[k] = previous = crop_k
        yield out
    if bad:
        log.warning("%s: %d unreadable frame(s) replaced by the previous frame", name, bad)


def _first_readable(crops: list, name: Path, first: int) -> np.ndarray:
    for c in crops:
        if c is not None:
            return c
    raise NoFramesError(f"{name}: none of the frames from {first} on could be decoded")


class Stabiliser:
    """Steadies a stream of face crops against what is not an expression, for the spotter's channels and the
    model-free baseline alike: each crop is divided by its own mean brightness (lighting flicker and slow
    illumination changes are global gains) and shifted back onto the first crop by the sub-pixel translation
    phase correlation finds (head sway and drift). State (the reference crop) carries across chunks."""

    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale
        self.reference: np.ndarray | None = None
        self.window: np.ndarray | None = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """One float32 crop -> the steadied crop (mean ``scale``)."""
        image = image.astype(np.float32) * (self.scale / max(float(image.mean()), 1e-6))
        if self.reference is None:
            h, w = image.shape
            self.window = np.outer(np.hanning(h), np.hanning(w)).astype(np.float32)
            self.reference = image * self.window
            return image
        (dx, dy), _ = cv2.phaseCorrelate(self.reference, image * self.window)
        shift = np.float32([[1, 0, -dx], [0, 1, -dy]])
        return cv2.warpAffine(
            image, shift, image.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )


class ChannelMaker:
    """Turns a stream of uint8 crops into the model's input channels, carrying state across chunks so that
    chunked and whole-video processing give identical results. With ``SpotterConfig.stabilise`` every crop
    goes through a :class:`Stabiliser` first (mean brightness 0.5, as an unsteadied crop has).

    The ``neutral`` channel (deviation from the median face of the ``neutral_seconds`` centred on the frame)
    needs frames from the future: the maker then holds back the last half window and returns fewer frames
    than it was given; :meth:`flush` returns the rest at the end. :meth:`stream` does both for an iterable
    of chunks. Without ``neutral`` nothing is held back.
    """

    def __init__(self, config: SpotterConfig, fps: float, stride: int) -> None:
        self.inputs = config.inputs
        self.alpha = 1.0 - math.exp(-stride / (fps * config.dev_seconds))
        self.previous: np.ndarray | None = None
        self.mean: np.ndarray | None = None
        self.stabiliser = Stabiliser(0.5) if config.stabilise else None
        self.half = (
            max(1, round(config.neutral_seconds * fps / stride / 2)) if "neutral" in self.inputs else 0
        )
        self.frames: list[np.ndarray] = []  # steadied frames, the last 2 * half + 1 at most
        self.pending: list[np.ndarray] = []  # causal channels of frames not returned yet
        self.first_pending = 0  # stream position of pending[0]
        self.seen = 0  # frames received
        self.start = 0  # stream position of frames[0]

    def __call__(self, crops: np.ndarray) -> np.ndarray:
        """``(n, H, W)`` uint8 -> ``(C, m, H, W)`` float32 (``m = n`` unless ``neutral`` holds frames back)."""
        grey = crops.astype(np.float32) / 255.0
        if self.stabiliser is not None:
            grey = np.stack([self.stabiliser(frame) for frame in grey])
        if self.previous is None and len(grey):
            self.previous = grey[0]
            self.mean = grey[0].copy()
        for frame in grey:
            causal = np.empty((len(self.inputs), *frame.shape), np.float32)
            for c, name in enumerate(self.inputs):
                if name == "grey":
                    causal[c] = frame
                elif name == "diff":
                    causal[c] = frame - self.previous
                elif name == "dev":
                    causal[c] = frame - self.mean
            self.mean += self.alpha * (frame - self.mean)
            self.previous = frame
            self.pending.append(causal)
            self.frames.append(frame)
            self.seen += 1
        return self._emit(final=False, shape=grey.shape[1:])

    def flush(self) -> np.ndarray:
        """The frames held back for the ``neutral`` channel (call once, after the last chunk)."""
        shape = self.frames[-1].shape if self.frames else (0, 0)
        return self._emit(final=True, shape=shape)

    def stream(self, chunks):
        """Channels for an iterable of crop chunks, held-back frames included at the end."""
        for crops in chunks:
            out = self(crops)
            if out.shape[1]:
                yield out
        tail = self.flush()
        if tail.shape[1]:
            yield tail

    def _emit(self, final: bool, shape: tuple[int, ...]) -> np.ndarray:
        ready = len(self.pending) if final else max(0, self.seen - self.half - self.first_pending)
        ready = min(ready, len(self.pending))
        out = np.empty((len(self.inputs), ready, *shape), np.float32)
        k = self.inputs.index("neutral") if "neutral" in self.inputs else None
        for i in range(ready):
            position = self.first_pending + i
            out[:, i] = self.pending[i]
            if k is not None:
                lo = max(position - self.half, self.start) - self.start
                hi = min(position + self.half + 1, self.seen) - self.start
                out[k, i] = self.frames[position - self.start] - np.median(self.frames[lo:hi], axis=0)
        del self.pending[:ready]
        self.first_pending += ready
        # keep only the frames a later median can still need
        drop = max(0, (self.first_pending - self.half) - self.start)
        if drop:
            del self.frames[:drop]
            self.start += drop
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
    view = FaceView(crop=crop) if crop is not None else face_view_for(frames, config, video.video_id)
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
    chunks = iter_crop_chunks(frames, chosen, config.size, chunk, view.crop, matrix=view.matrix)
    parts = [c.astype(np.float16) for c in maker.stream(chunks)]
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
