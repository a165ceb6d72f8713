"""The spotter: a small 3D CNN over short windows of face frames that scores every frame for micro- and
macro-expression, and (optionally) the coarse emotion.

A window holds ``n_frames`` face crops sampled every ``stride`` original frames, where the stride comes from
the video's fps so a window spans about ``window_seconds`` (0.2-0.5 s) at any frame rate. Each sampled frame
enters as a few channels (see ``INPUT_CHANNELS``); the network keeps the time axis at full resolution and
returns one score per sampled frame, so overlapping windows can be averaged into a per-frame curve.

The spatial grid is flattened, not pooled, before the temporal head: face crops are roughly aligned, and
*where* the motion is (eyes blinking vs. brows or mouth corners moving) is what separates an expression from a
distractor.

``SPOTTERS`` is the registry of spotting networks (name -> class, this 3D CNN first); ``build_spotter``,
``save_checkpoint`` and ``load_checkpoint`` go through it, so a checkpoint records its network by name.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch
from torch import nn

from megc_vqa.errors import InputError, MegcError
from megc_vqa.fileio import atomic_write_bytes

from .spotter_config import (  # noqa: F401  (re-exported: the spotter's config lives with its protocol)
    DEFAULT_ARCHITECTURE,
    INPUT_CHANNELS,
    OUTPUTS,
    SpotterConfig,
    SpotterModel,
)


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


# The spotting networks, by the name a recipe's ``model.architecture`` and a checkpoint's config give. A fixed
# table of the project's own classes: a name read from a file never imports or runs code. A second spotter
# (a SoftNet- or SpotFormer-like network) is one module building on ``spotter_config`` and one line here.
SPOTTERS: dict[str, type[nn.Module]] = {DEFAULT_ARCHITECTURE: Spotter}


def check_architecture(name: object, where: str = "model.architecture") -> None:
    """``InputError`` naming the known networks unless ``name`` is one of :data:`SPOTTERS`."""
    if not isinstance(name, str) or name not in SPOTTERS:
        raise InputError(
            f"{where} {name!r} is not a known spotter; use one of {', '.join(sorted(SPOTTERS))} "
            "(a recipe names a network from this table, never a module)"
        )


def build_spotter(config: SpotterConfig) -> SpotterModel:
    """A new (untrained) network of the architecture ``config`` names."""
    check_architecture(config.architecture)
    return SPOTTERS[config.architecture](config)


def save_checkpoint(path, model: SpotterModel, **extra) -> None:
    """Config, weights and whatever the trainer chose (thresholds, fold, epoch) in one file, written atomically.

    Everything but the weights is stored as plain data (a JSON round trip), so the file loads with
    ``torch.load(weights_only=True)``: a checkpoint is data, never code.
    """
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


class CheckpointError(MegcError, ValueError):
    """A spotter checkpoint that cannot be used; the message names the file and what to do."""


def load_checkpoint(path, map_location: str | torch.device = "cpu") -> tuple[SpotterModel, dict]:
    """The model (eval mode; its network the one its config names in :data:`SPOTTERS`) and the
    checkpoint's other entries.

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
        config = SpotterConfig.from_dict(data.pop("config"))
        if config.architecture not in SPOTTERS:
            raise CheckpointError(
                f"{path}: spotter architecture {config.architecture!r} is not one this version knows "
                f"({', '.join(sorted(SPOTTERS))}); nothing in a checkpoint is ever imported"
            )
        model = build_spotter(config)
        model.load_state_dict(data.pop("state_dict"))
    except CheckpointError:
        raise
    except (TypeError, ValueError, KeyError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: spotter checkpoint does not fit this version's model ({err})"
        ) from None
    model.eval()
    return model, data
