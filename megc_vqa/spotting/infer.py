"""Spotting a whole long video: streamed, batched sliding windows -> per-frame score curves -> intervals.

Memory is flat in video length: frames are decoded and turned into channels chunk by chunk, only the last
window's worth of channels is carried over, and what grows with the video is one small float row per sampled
frame. Overlapping windows (hop ``n_frames // 2``) are averaged with a triangular weight, because a window's
edge frames see less temporal context than its centre.

Intervals (SPEC section 6): the score curves are interpolated to every original frame, smoothed and
thresholded (absolute, or per video relative: mean + p x (max - mean)); every peak above the threshold grows
to where the curve falls below ``extent`` x its height. Then the duration rules apply per fps: a
micro-expression spans at most ``micro_max_seconds`` (0.5 s, onset to offset) and at least
``micro_min_seconds``; a macro-expression more than ``micro_max_seconds`` and at most ``macro_max_seconds``.
With ``typing="duration"`` (default) the intervals come from the max of the micro and macro curves and the
type follows the length (a 0.5 s window cannot tell a macro-expression's plateau from its onset, but the
length can): micro up to ``micro_cut_seconds``, which defaults to the 0.5 s rule, and which ``spot-train``
may pick higher on validation, because smoothing and the extent rule make an interval longer than the
expression (a micro interval is then fitted to the micro lengths around its peak); with
``typing="channel"`` each curve gives intervals of its own type, shrunk or grown around the peak to fit
that type. Overlapping intervals keep the higher score, across types too.

Videos shorter than one window (documented fallback): the window is padded by repeating the last frame, the
real frames are scored, and a warning says so.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields
from typing import Literal

import cv2
import numpy as np
import torch
from scipy.ndimage import uniform_filter1d
from scipy.signal import find_peaks

from megc_vqa.errors import UsageError, check_number, reject_unknown_keys
from megc_vqa.records import FrameSource

from .data import (
    ChannelMaker,
    Crop,
    FaceView,
    NoFramesError,
    Stabiliser,
    VideoFrames,
    face_view_for,
    iter_crop_chunks,
    sample_grid,
)
from .model import OUTPUTS, Spotter

log = logging.getLogger(__name__)


@dataclass
class SpottedInterval:
    """One predicted expression: inclusive absolute frame range, the peak frame, type, score and emotion."""

    onset: int
    offset: int
    apex: int
    type: Literal["micro", "macro"]
    score: float
    emotion: str | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScoreCurve:
    """Scores on the sampling grid. ``scores``: (N, 2) probabilities (micro, macro); ``emotions``: (N, E)
    class probabilities of the emotion head, or None."""

    grid: np.ndarray
    scores: np.ndarray
    fps: float
    stride: int
    first: int
    last: int
    emotions: np.ndarray | None = None
    emotion_names: tuple[str, ...] = ()

    def per_frame(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames first..last, curve k linearly interpolated to every frame)."""
        frames = np.arange(self.first, self.last + 1)
        return frames, np.interp(frames, self.grid, self.scores[:, k])


@dataclass
class PeakParams:
    """Post-processing of the score curves; thresholds are picked on an inner validation split."""

    threshold: float = 0.5
    mode: Literal["absolute", "relative"] = "absolute"  # relative: mean + threshold * (max - mean), per video
    extent: float = 0.5
    smooth_seconds: float = 0.05
    micro_min_seconds: float = 0.1
    micro_max_seconds: float = 0.5
    macro_max_seconds: float = 6.0
    # typing "duration": a spotted interval up to this long (s) is micro (None: micro_max_seconds). Smoothing
    # and the extent rule widen intervals beyond the expression, so spot-train picks it on validation.
    micro_cut_seconds: float | None = None
    types: tuple[str, ...] = field(default=OUTPUTS)
    # "duration": intervals come from the max of the channels and are typed by length (<= micro_cut_seconds:
    # micro); "channel": each channel gives intervals of its own type, then clamped to that type's lengths.
    typing: Literal["duration", "channel"] = "duration"

    @property
    def micro_cut(self) -> float:
        """The length (s) up to which duration typing calls an interval micro."""
        return self.micro_max_seconds if self.micro_cut_seconds is None else self.micro_cut_seconds

    @classmethod
    def from_dict(cls, data: dict | None, where: str = "peaks") -> PeakParams:
        """Settings from a recipe's ``peaks:`` section or a checkpoint; unknown keys and out-of-range values
        are errors naming the key."""
        data = dict(data or {})
        reject_unknown_keys(data, [f.name for f in fields(cls)], where)
        if "types" in data:
            data["types"] = (
                tuple(data["types"]) if isinstance(data["types"], (list, tuple)) else (data["types"],)
            )
        params = cls(**data)
        choices = {"mode": ("absolute", "relative"), "typing": ("duration", "channel")}
        for key, allowed in choices.items():
            if getattr(params, key) not in allowed:
                raise UsageError(
                    f"{where}.{key} must be one of {', '.join(allowed)} (got {getattr(params, key)!r})"
                )
        if not params.types or set(params.types) - set(OUTPUTS):
            raise UsageError(
                f"{where}.types must be a non-empty subset of {', '.join(OUTPUTS)} (got {params.types})"
            )
        check_number(f"{where}.threshold", params.threshold, minimum=0, maximum=1)
        check_number(f"{where}.extent", params.extent, above=0, maximum=1)
        for key in ("smooth_seconds", "micro_min_seconds"):
            check_number(f"{where}.{key}", getattr(params, key), minimum=0)
        for key in ("micro_max_seconds", "macro_max_seconds", "micro_cut_seconds"):
            check_number(f"{where}.{key}", getattr(params, key), above=0)
        return params


def _windows(n: int, length: int, hop: int) -> list[int]:
    """Start positions covering 0..n-1 with windows of ``length`` (the last one flush with the end)."""
    if n <= length:
        return [0]
    starts = list(range(0, n - length + 1, hop))
    if starts[-1] != n - length:
        starts.append(n - length)
    return starts


def score_video(
    model: Spotter,
    source: FrameSource,
    fps: float,
    *,
    chunk: int = 256,
    batch: int = 64,
    hop: int | None = None,
    crop: Crop | None = None,
    device: str | torch.device = "cpu",
    workers: int = 2,
    name: str | None = None,
) -> ScoreCurve:
    """Stream a long video through the spotter. Raises ``NoFramesError`` for a source without frames."""
    cfg = model.config
    frames = VideoFrames.open(source)
    label = name or str(source.path)
    view = FaceView(crop=crop) if crop is not None else face_view_for(frames, cfg, label)
    stride = cfg.stride_for(fps)
    grid = sample_grid(frames.first, frames.last, stride)
    chosen, missing = frames.resolve(grid)
    if missing:
        log.warning(
            "%s: %d of %d sampled frames are dropped frames, filled from earlier ones",
            label,
            missing,
            len(grid),
        )
    if len(grid) < cfg.n_frames:
        log.warning(
            "%s: %d frames at %.0f fps give %d sampled frame(s), fewer than one %d-frame window: padded with the last frame",
            label,
            frames.last - frames.first + 1,
            fps,
            len(grid),
            cfg.n_frames,
        )
    maker = ChannelMaker(cfg, fps, stride)
    chunks = maker.stream(iter_crop_chunks(frames, chosen, cfg.size, chunk, view.crop, workers, view.matrix))
    return score_stream(
        model, chunks, grid, fps, stride, last=frames.last, batch=batch, hop=hop, device=device, name=label
    )


@torch.inference_mode()
def score_stream(
    model: Spotter,
    chunks: Iterable[np.ndarray],
    grid: np.ndarray,
    fps: float,
    stride: int,
    *,
    last: int | None = None,
    batch: int = 64,
    hop: int | None = None,
    device: str | torch.device = "cpu",
    name: str = "video",
) -> ScoreCurve:
    """Score channel chunks ``(C, n, H, W)`` covering ``grid`` in order; holds at most one chunk plus one
    window of channels at a time."""
    cfg = model.config
    model.eval()
    n, length = len(grid), cfg.n_frames
    hop = hop or max(1, length // 2)
    starts = _windows(n, length, hop)
    weight = np.minimum(np.arange(1, length + 1), np.arange(length, 0, -1)).astype(np.float32)
    n_out = len(OUTPUTS) + len(cfg.emotions)
    sums = np.zeros((n, n_out), np.float64)
    weights = np.zeros(n, np.float64)

    def run(batch_starts: list[int], buffer: np.ndarray, offset: int) -> None:
        x = np.stack([_window(buffer, s - offset, length) for s in batch_starts])
        logits = model(torch.from_numpy(x).to(device)).float().cpu().numpy()  # (B, n_out, T)
        probs = _to_probs(logits, len(cfg.emotions))
        for s, p in zip(batch_starts, probs, strict=True):
            stop = min(s + length, n)
            sums[s:stop] += p[: stop - s] * weight[: stop - s, None]
            weights[s:stop] += weight[: stop - s]

    buffer = np.zeros((len(cfg.inputs), 0, cfg.size, cfg.size), np.float32)
    offset = 0  # grid position of buffer[:, 0]
    next_window = 0
    for channels in chunks:
        buffer = np.concatenate([buffer, channels.astype(np.float32, copy=False)], axis=1)
        end = offset + buffer.shape[1]
        ready = []
        while next_window < len(starts) and min(starts[next_window] + length, n) <= end:
            ready.append(starts[next_window])
            next_window += 1
            if len(ready) == batch:
                run(ready, buffer, offset)
                ready = []
        if ready:
            run(ready, buffer, offset)
        keep_from = starts[next_window] if next_window < len(starts) else end
        buffer = buffer[:, keep_from - offset :]
        offset = keep_from
    if next_window < len(starts):  # the source ended early (a truncated video file)
        n = offset + buffer.shape[1]
        log.warning("%s: only %d of %d sampled frames could be read", name, n, len(grid))
        if n == 0:
            raise NoFramesError(f"{name}: no frame could be decoded")
        grid, sums, weights = grid[:n], sums[:n], weights[:n]
        run([s for s in starts[next_window:] if s < n], buffer, offset)
    probs = (sums / np.maximum(weights, 1e-9)[:, None]).astype(np.float32)
    return ScoreCurve(
        grid=grid,
        scores=probs[:, : len(OUTPUTS)],
        fps=fps,
        stride=stride,
        first=int(grid[0]),
        last=max(int(grid[-1]), last if last is not None else int(grid[-1])),
        emotions=probs[:, len(OUTPUTS) :] if cfg.emotions else None,
        emotion_names=tuple(cfg.emotions),
    )


def _window(buffer: np.ndarray, start: int, length: int) -> np.ndarray:
    x = buffer[:, start : start + length]
    if x.shape[1] < length:
        x = np.concatenate([x, np.repeat(x[:, -1:], length - x.shape[1], axis=1)], axis=1)
    return x


def _to_probs(logits: np.ndarray, n_emotions: int) -> np.ndarray:
    """Sigmoid on the spotting outputs, softmax over the emotion outputs: (B, T, n_out)."""
    out = np.empty_like(logits)
    k = len(OUTPUTS)
    out[:, :k] = 1.0 / (1.0 + np.exp(-logits[:, :k]))
    if n_emotions:
        e = logits[:, k:] - logits[:, k:].max(axis=1, keepdims=True)
        e = np.exp(e)
        out[:, k:] = e / e.sum(axis=1, keepdims=True)
    return out.transpose(0, 2, 1)


def _fit_length(
    lo: int, hi: int, peak: int, min_len: int, max_len: int, first: int, last: int
) -> tuple[int, int]:
    """Shrink or grow [lo, hi] around ``peak`` so its length (frames, inclusive) is within [min_len, max_len]."""
    length = hi - lo + 1
    target = min(max(length, min_len), max_len)
    if target == length:
        return lo, hi
    start = peak - target // 2  # centred on the peak
    if target < length:  # shrinking: also stay inside [lo, hi]
        start = min(max(start, lo), hi - target + 1)
    start = min(max(start, first), max(last - target + 1, first))
    return start, min(start + target - 1, last)


def extract_intervals(curve: ScoreCurve, params: PeakParams | None = None) -> list[SpottedInterval]:
    """Intervals from a score curve, sorted by onset (see the module docstring for the rules)."""
    params = params or PeakParams()
    fps = curve.fps

    def frames_up_to(seconds: float) -> int:  # inclusive length in frames with offset - onset <= seconds
        return max(1, int(np.floor(seconds * fps)) + 1)

    micro_max = frames_up_to(params.micro_max_seconds)
    limits = {
        "micro": (max(1, round(params.micro_min_seconds * fps)), micro_max),
        "macro": (micro_max + 1, max(micro_max + 1, round(params.macro_max_seconds * fps))),
    }
    micro_cut = frames_up_to(params.micro_cut)
    channels = [k for k, kind in enumerate(OUTPUTS) if kind in params.types]
    # "duration": one curve (the max over the channels), the type follows the length.
    curves = [(channels, None)] if params.typing == "duration" else [([k], OUTPUTS[k]) for k in channels]
    found: list[SpottedInterval] = []
    for ks, kind in curves:
        frames, s = curve.per_frame(ks[0])
        for k in ks[1:]:
            s = np.maximum(s, curve.per_frame(k)[1])
        width = max(1, round(params.smooth_seconds * fps))
        if width > 1:
            s = uniform_filter1d(s, width, mode="nearest")
        if params.mode == "relative":
            threshold = s.mean() + params.threshold * (s.max() - s.mean())
        else:
            threshold = params.threshold
        min_len = limits[kind or "micro"][0]
        peaks, _ = find_peaks(np.concatenate([[-np.inf], s, [-np.inf]]), height=threshold, distance=min_len)
        for p in peaks - 1:
            level = params.extent * s[p]
            lo = p
            while lo > 0 and s[lo - 1] >= level:
                lo -= 1
            hi = p
            while hi < len(s) - 1 and s[hi + 1] >= level:
                hi += 1
            lo_f, hi_f, peak_f = int(frames[lo]), int(frames[hi]), int(frames[p])
            this = kind or ("micro" if hi_f - lo_f + 1 <= micro_cut else "macro")
            onset, offset = _fit_length(lo_f, hi_f, peak_f, *limits[this], curve.first, curve.last)
            if offset - onset + 1 < max(2, limits[this][0]):
                continue  # the video is too short to hold an expression of this type (a 1-frame video)
            found.append(SpottedInterval(onset, offset, peak_f, this, float(s[p])))
    kept = _suppress(found)
    if curve.emotions is not None:
        for iv in kept:
            iv.emotion = interval_emotion(curve, iv)
    return sorted(kept, key=lambda iv: (iv.onset, iv.offset))


def _suppress(intervals: list[SpottedInterval]) -> list[SpottedInterval]:
    """Greedy by score: drop an interval that overlaps a kept one by half of the shorter of the two."""
    kept: list[SpottedInterval] = []
    for iv in sorted(intervals, key=lambda iv: -iv.score):
        ok = True
        for other in kept:
            inter = min(iv.offset, other.offset) - max(iv.onset, other.onset) + 1
            shorter = min(iv.offset - iv.onset, other.offset - other.onset) + 1
            if inter > 0 and inter >= 0.5 * shorter:
                ok = False
                break
        if ok:
            kept.append(iv)
    return kept


def interval_emotion(curve: ScoreCurve, interval: SpottedInterval) -> str | None:
    """The emotion head's class with the highest mean probability over the interval's sampled frames."""
    if curve.emotions is None or not curve.emotion_names:
        return None
    inside = (curve.grid >= interval.onset) & (curve.grid <= interval.offset)
    if not inside.any():
        inside = np.abs(curve.grid - interval.apex) == np.abs(curve.grid - interval.apex).min()
    return curve.emotion_names[int(curve.emotions[inside].mean(axis=0).argmax())]


# The model-free baseline: its name in every report, and its post-processing (SPEC section 6: threshold at
# mean + p x (max - mean) per video; intervals typed by their length, micro up to 0.5 s).
BASELINE_NAME = "baseline: model-free motion spotter (MEGC-style; no --spotter checkpoint given)"
MOTION_PEAKS = {
    "mode": "relative",
    "threshold": 0.15,  # chosen on synth-test long videos of seed 0 only (held-out seeds 1, 2 report)
    "extent": 0.3,
    "smooth_seconds": 0.05,
    "micro_min_seconds": 0.15,
    "typing": "duration",
}


@dataclass(frozen=True)
class MotionParams:
    """Settings of the model-free baseline; every duration is in seconds, so windows follow the fps.

    size: side of the face crop the motion is measured on; cells: the crop is split into cells x cells
    facial regions; rate: sampled frames per second (stride = fps / rate, at least 1); neutral_seconds:
    span of the running median that stands for the neutral face; top: regions averaged per frame.
    """

    size: int = 64
    cells: int = 6
    rate: float = 40.0
    neutral_seconds: float = 3.0
    top: int = 2


def motion_score_video(
    source: FrameSource,
    fps: float,
    *,
    params: MotionParams | None = None,
    chunk: int = 256,
    crop: Crop | None = None,
    workers: int = 2,
) -> ScoreCurve:
    """The model-free baseline in the spirit of the MEGC spotting baselines: per sampled frame, the face crop
    is stabilised against head motion (sub-pixel translation to the first frame by phase correlation) and
    against lighting (divided by its own mean brightness); its deviation from the neutral face (a running
    median over ``neutral_seconds``) is averaged over facial regions, each region's noise floor (median and
    MAD over the video) is removed, and the frame scores the mean of its ``top`` strongest regions, scaled
    per video to [0, 1]. Both curves (micro, macro) carry that score; use it with ``MOTION_PEAKS``, which
    types intervals by length. Memory: one small (size/2)^2 image per sampled frame."""
    from scipy.ndimage import median_filter

    params = params or MotionParams()
    if not fps or fps <= 0:
        raise ValueError(f"fps must be a positive number (got {fps!r})")
    stride = max(1, round(fps / params.rate))
    frames = VideoFrames.open(source)
    grid = sample_grid(frames.first, frames.last, stride)
    chosen, _ = frames.resolve(grid)
    small = params.size // 2
    steady = Stabiliser()
    kept: list[np.ndarray] = []
    for crops in iter_crop_chunks(frames, chosen, params.size, chunk, crop, workers):
        for image in crops:
            kept.append(cv2.resize(steady(image), (small, small), interpolation=cv2.INTER_AREA))
    if not kept:
        raise NoFramesError(f"{source.path}: no frame could be decoded")
    stack = np.stack(kept)  # (N, small, small)
    border = max(1, small // 16)  # the warp's replicated border carries no face
    stack = stack[:, border:-border, border:-border]
    span = max(3, round(params.neutral_seconds * fps / stride) | 1)
    neutral = median_filter(stack, size=(span, 1, 1), mode="nearest")
    deviation = np.abs(stack - neutral)
    _, h, w = deviation.shape
    c = params.cells
    rows, cols = np.array_split(np.arange(h), c), np.array_split(np.arange(w), c)
    regions = np.stack(
        [deviation[:, r[0] : r[-1] + 1, q[0] : q[-1] + 1].mean(axis=(1, 2)) for r in rows for q in cols],
        axis=1,
    )  # (N, cells^2)
    floor = np.median(regions, axis=0)
    mad = np.median(np.abs(regions - floor), axis=0) * 1.4826 + 1e-6
    z = np.clip((regions - floor) / mad, 0, None)
    top = np.sort(z, axis=1)[:, -max(1, min(params.top, z.shape[1])) :].mean(axis=1)
    score = top / top.max() if top.max() > 0 else np.zeros_like(top)
    scores = np.stack([score, score], axis=1).astype(np.float32)
    grid = grid[: len(score)]
    return ScoreCurve(grid=grid, scores=scores, fps=fps, stride=stride, first=int(grid[0]), last=frames.last)
