"""What defines a spotter, whatever its network: ``SpotterConfig`` (crop, window, input channels, heads)
and ``SpotterModel``, the protocol every spotting network meets (training, inference, peak selection and
the checkpoint use nothing else). The networks themselves and their registry: :mod:`.model`.

Kept apart from the networks (no torch here), so a second spotter module imports this one and the registry
in :mod:`.model` imports that module: the graph stays acyclic.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from megc_vqa.errors import InputError, check_number, reject_unknown_keys
from megc_vqa.face_settings import FaceSettings
from megc_vqa.limits import SAMPLED_FRAMES, SPOTTER_CROP, SPOTTER_WIDTH, check_count

# The spotter a config names when it names none: the 3D CNN of ``model.Spotter`` (every checkpoint
# written before the registry holds one).
DEFAULT_ARCHITECTURE = "cnn3d"

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
    architecture: the network, a name of the registry ``model.SPOTTERS`` (default: the 3D CNN).
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
    architecture: str = DEFAULT_ARCHITECTURE

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
        """The config as plain data; the default architecture is left out, so a 3D-CNN spotter's record
        (and ``pipeline.spotter_identity``, its hash) is what it was before the registry."""
        data = dataclasses.asdict(self)
        if data["architecture"] == DEFAULT_ARCHITECTURE:
            del data["architecture"]
        return data

    @classmethod
    def from_dict(cls, data: dict, where: str = "model") -> SpotterConfig:
        """A config from a recipe's ``model:`` section or a checkpoint; an unknown key is an error (a typo
        would otherwise be dropped and the default trained), every number is range-checked."""
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


@runtime_checkable
class SpotterModel(Protocol):
    """What training, inference, peak selection and the checkpoint need of a spotting network (a
    ``torch.nn.Module`` meets it by construction): built from a :class:`SpotterConfig` alone, it takes
    ``(B, len(config.inputs), T, size, size)`` windows and returns ``(B, len(OUTPUTS) + len(config.emotions),
    T)`` logits, one per sampled frame (micro, macro, then the emotion logits)."""

    config: SpotterConfig

    def __call__(self, windows: Any) -> Any: ...

    def parameters(self) -> Iterator[Any]: ...

    def state_dict(self) -> Mapping[str, Any]: ...

    def load_state_dict(self, state: Mapping[str, Any]) -> Any: ...

    def to(self, device: Any) -> Any: ...

    def train(self, mode: bool = True) -> Any: ...

    def eval(self) -> Any: ...
