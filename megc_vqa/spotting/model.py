"""The spotter: a small 3D CNN over short windows of face frames that scores every frame for micro- and
macro-expression, and (optionally) the coarse emotion.

A window holds ``n_frames`` face crops sampled every ``stride`` original frames, where the stride comes from
the video's fps so a window spans about ``window_seconds`` (0.2-0.5 s) at any frame rate. Each sampled frame
enters as a few channels (see ``INPUT_CHANNELS``); the network keeps the time axis at full resolution and
returns one score per sampled frame, so overlapping windows can be averaged into a per-frame curve.

The spatial grid is flattened, not pooled, before the temporal head: face crops are roughly aligned, and
*where* the motion is (eyes blinking vs. brows or mouth corners moving) is what separates an expression from a
distractor.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from megc_vqa.face_settings import FaceSettings

# What each sampled frame contributes, in channel order:
#   grey: the face crop itself, scaled to [0, 1];
#   diff: the crop minus the previous *sampled* crop (motion at the window's time scale);
#   dev:  the crop minus a slow running mean of the video (deviation from the recent neutral face, which
#         stays visible through the plateau of a long macro-expression where ``diff`` is ~0);
#   neutral: the crop minus the median crop of the ``neutral_seconds`` centred on it (the neutral face
#         before *and* after: a macro-expression's whole extent stands out, at the cost of a delay).
INPUT_CHANNELS: tuple[str, ...] = ("grey", "diff", "dev", "neutral")
OUTPUTS: tuple[str, ...] = ("micro", "macro")


@dataclass
class SpotterConfig:
    """Everything that defines a spotter; saved in every checkpoint.

    size: side of the square face crop fed to the network (64-128 px).
    n_frames: sampled frames per window (T).
    window_seconds: target span of one window; the stride is chosen per fps to match it.
    inputs: channels per sampled frame, a subset of ``INPUT_CHANNELS``.
    dev_seconds: time constant of the running mean used by the ``dev`` channel.
    neutral_seconds: span of the centred running median used by the ``neutral`` channel.
    face_crop: the earlier switch, ``face: box``: crop every frame to the face box found on the video's first
        frame (Haar cascade); the centre square when no face (or no detector) is found.
    face: ``none`` (centre square), ``box`` (as ``face_crop``), ``crop`` or ``align``: the face pipeline of
        ``megc_vqa.visual.facepipe`` on the first frame (a square around the landmarks plus ``face_margin``,
        or the eyes levelled at a fixed distance); a video without one usable face is skipped, with a line
        naming it. Head motion is steadied by ``stabilise``. Saved with the model so training and inference
        agree.
    face_margin, face_detector: as in the VQA visual settings (``megc_vqa.face_settings.FaceSettings``).
    widths: channels of the three 3D conv stages.
    hidden: channels of the temporal head.
    dilations: one 3-tap temporal conv per entry in the head, with that dilation (wider temporal context).
    emotions: class names of the optional emotion head (empty: no head).
    dropout: before the temporal head.
    stabilise: steady every crop against lighting (divide by its mean) and head motion (phase-correlation
        shift onto the first crop) before the channels are made (``data.Stabiliser``).
    train_fps: frame rates of the training videos (set by ``spot-train``); a video at another rate is still
        spotted (the stride rescales the window) with a warning.
    """

    size: int = 64
    n_frames: int = 8
    window_seconds: float = 0.3
    inputs: tuple[str, ...] = ("diff", "dev")
    dev_seconds: float = 2.0
    neutral_seconds: float = 3.0
    face_crop: bool = False
    face: str = "none"
    face_margin: float = 0.15
    face_detector: str = "auto"
    widths: tuple[int, int, int] = (16, 32, 48)
    hidden: int = 64
    dilations: tuple[int, ...] = (1, 2)
    emotions: tuple[str, ...] = ()
    dropout: float = 0.1
    stabilise: bool = False
    train_fps: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        unknown = set(self.inputs) - set(INPUT_CHANNELS)
        if unknown or not self.inputs:
            raise ValueError(f"inputs must be a non-empty subset of {INPUT_CHANNELS}, got {self.inputs}")
        if self.size % 16:
            raise ValueError(f"size must be a multiple of 16 (got {self.size})")
        if self.n_frames < 3:
            raise ValueError(f"n_frames must be at least 3 (got {self.n_frames})")
        self.inputs = tuple(self.inputs)
        self.widths = tuple(self.widths)
        self.dilations = tuple(self.dilations)
        self.emotions = tuple(self.emotions)
        self.train_fps = tuple(float(f) for f in self.train_fps)
        self.face_settings()  # a bad face key is an error here, not at the first video

    def face_settings(self) -> FaceSettings:
        """The face switches as the visual layer takes them (``face_crop: true`` is ``face: box``)."""
        return FaceSettings.from_keys(self)

    def stride_for(self, fps: float) -> int:
        """Original frames between two sampled frames, so ``(n_frames - 1) * stride`` spans ~``window_seconds``.

        >>> SpotterConfig().stride_for(200), SpotterConfig().stride_for(30)
        (9, 1)
        """
        if not fps or fps <= 0 or not math.isfinite(fps):
            raise ValueError(f"fps must be a positive number (got {fps!r})")
        return max(1, round(self.window_seconds * fps / (self.n_frames - 1)))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "model") -> SpotterConfig:
        """A config from a recipe's ``model:`` section or a checkpoint; an unknown key is an error (a typo
        would otherwise be dropped and the default trained), every number is range-checked."""
        from megc_vqa.errors import InputError, check_number, reject_unknown_keys
        from megc_vqa.limits import SAMPLED_FRAMES, SPOTTER_CROP, SPOTTER_WIDTH, check_count

        reject_unknown_keys(data, [f.name for f in dataclasses.fields(cls)], where)
        config = cls(**data)
        check_number(f"{where}.size", config.size, minimum=16)
        check_number(f"{where}.window_seconds", config.window_seconds, above=0)
        check_number(f"{where}.dev_seconds", config.dev_seconds, above=0)
        check_number(f"{where}.hidden", config.hidden, minimum=1)
        check_number(f"{where}.dropout", config.dropout, minimum=0, maximum=0.99)
        for w in (*config.widths, *config.dilations):
            check_number(f"{where}.widths/dilations entry", w, minimum=1)
        # Upper bounds: a few characters of a recipe must not ask for a network that fills the memory.
        check_count(f"{where}.size", config.size, SPOTTER_CROP, error=InputError)
        check_count(f"{where}.n_frames", config.n_frames, SAMPLED_FRAMES, error=InputError)
        check_count(f"{where}.hidden", config.hidden, SPOTTER_WIDTH, error=InputError)
        for w in config.widths:
            check_count(f"{where}.widths entry", w, SPOTTER_WIDTH, error=InputError)
        for d in config.dilations:
            check_count(f"{where}.dilations entry", d, SAMPLED_FRAMES, error=InputError)
        return config


def _conv3d(
    c_in: int, c_out: int, kernel: tuple[int, int, int], stride: tuple[int, int, int]
) -> nn.Sequential:
    padding = tuple(k // 2 if k % 2 else 0 for k in kernel)  # even kernels are patchify (stride = kernel)
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, kernel, stride=stride, padding=padding, bias=False),
        nn.BatchNorm3d(c_out),
        nn.ReLU(inplace=True),
    )


class Spotter(nn.Module):
    """(B, C, T, H, W) windows -> (B, 2 + E, T) logits: micro, macro, then E emotion logits, per sampled frame.

    The first stage is a per-frame 4x4 patchify (cheap: inference must keep up with decoding), the next two
    mix time and space (3x3x3, spatial stride 2), then each frame's (size/16)^2 grid is flattened and a
    temporal conv head (dilated 3-tap convs, then a 1x1) scores it.
    """

    def __init__(self, config: SpotterConfig) -> None:
        super().__init__()
        self.config = config
        w1, w2, w3 = config.widths
        self.features = nn.Sequential(
            _conv3d(len(config.inputs), w1, (1, 4, 4), (1, 4, 4)),
            _conv3d(w1, w2, (3, 3, 3), (1, 2, 2)),
            _conv3d(w2, w3, (3, 3, 3), (1, 2, 2)),
        )
        grid = config.size // 16
        layers: list[nn.Module] = [nn.Dropout(config.dropout)]
        width = w3 * grid * grid
        for d in config.dilations:
            layers += [nn.Conv1d(width, config.hidden, 3, padding=d, dilation=d), nn.ReLU(inplace=True)]
            width = config.hidden
        layers.append(nn.Conv1d(width, len(OUTPUTS) + len(config.emotions), 1))
        self.head = nn.Sequential(*layers)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = windows.shape
        expected = (len(self.config.inputs), self.config.size, self.config.size)
        if (c, h, w) != expected:
            raise ValueError(
                f"expected windows (B, {expected[0]}, T, {expected[1]}, {expected[2]}), got {tuple(windows.shape)}"
            )
        x = self.features(windows)  # (B, w3, T, g, g)
        x = x.permute(0, 1, 3, 4, 2).reshape(b, -1, t)  # channels x grid cells, per frame
        return self.head(x)


def save_checkpoint(path, model: Spotter, **extra) -> None:
    """Config, weights and whatever the trainer chose (thresholds, fold, epoch) in one file, written atomically.

    Everything but the weights is stored as plain data (a JSON round trip), so the file loads with
    ``torch.load(weights_only=True)``: a checkpoint is data, never code.
    """
    import io

    from megc_vqa.fileio import atomic_write_bytes

    plain = json.loads(json.dumps({"config": model.config.to_dict(), **extra}, default=_plain))
    buffer = io.BytesIO()
    torch.save({**plain, "state_dict": model.state_dict()}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _plain(value):
    """numpy scalars and tuples-of-floats the trainer hands over -> JSON values."""
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"checkpoint entry of type {type(value).__name__} is not plain data")


class CheckpointError(ValueError):
    """A spotter checkpoint that cannot be used; the message names the file and what to do."""


def load_checkpoint(path, map_location: str | torch.device = "cpu") -> tuple[Spotter, dict]:
    """The model (eval mode) and the checkpoint's other entries.

    Loaded with ``weights_only=True``: tensors and plain containers only, so a crafted file cannot run code
    (it is refused with :class:`CheckpointError` instead).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such spotter checkpoint (train one with `megc-vqa spot-train`)")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: empty file, not a spotter checkpoint (a run killed while saving?)")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for foreign files
        # torch's own text is not shown: it advises weights_only=False, which would let a crafted file run code
        raise CheckpointError(
            f"{path}: not a spotter checkpoint written by `megc-vqa spot-train` ({type(err).__name__}); "
            "give the spotter.pt of a spot-train run (nothing in a checkpoint is ever executed)"
        ) from None
    if not isinstance(data, dict) or "config" not in data or "state_dict" not in data:
        raise CheckpointError(f"{path}: not a spotter checkpoint (no config/state_dict)")
    try:
        model = Spotter(SpotterConfig.from_dict(data.pop("config")))
        model.load_state_dict(data.pop("state_dict"))
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: spotter checkpoint does not fit this version's model ({err})"
        ) from None
    model.eval()
    return model, data
