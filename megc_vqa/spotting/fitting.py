"""The spotter's training loop: ``fit`` trains a network of the registry (``model.build_spotter``) on the
training videos and keeps the epoch and post-processing with the best strict spotting F1 on the inner
validation videos (:mod:`.selection`)."""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass, field

from megc_vqa.errors import InputError
from megc_vqa.visual.errors import FaceSkip

from .recipe import TrainConfig
from .selection import choose_peaks
from .spotter_config import SpotterModel

# torch, OpenCV and the modules built on them (.data, .infer, .model) are imported inside the functions:
# ``spot-train`` is a command module, and command modules stay light until they run (``megc_vqa.cli``).

log = logging.getLogger(__name__)


@dataclass
class FitResult:
    model: SpotterModel
    epoch: int
    peaks: object
    val: dict
    history: list[dict] = field(default_factory=list)


def _prepare(videos, model_cfg, phases: int = 1):
    from .data import prepare_video

    prepared = []
    skipped = 0
    for v in videos:
        stride = model_cfg.stride_for(v.fps)
        try:
            for phase in sorted({round(k * stride / phases) for k in range(phases)}):
                prepared.append(prepare_video(v, model_cfg, phase=phase))
        except FaceSkip as err:  # no usable face on the first frame: named, counted, left out
            skipped += 1
            log.warning("%s", err)
    if skipped:
        log.warning("face pipeline: %d of %d video(s) skipped; each is named above", skipped, len(videos))
    return prepared


def _curves(model, prepared, device):
    from .infer import score_stream

    return [
        score_stream(
            model, [pv.channels], pv.grid, pv.video.fps, model.config.stride_for(pv.video.fps), device=device
        )
        for pv in prepared
    ]


def fit(
    train_videos, val_videos, model_cfg, train_cfg: TrainConfig, peaks=None, val_prepared=None
) -> FitResult:
    """Train on ``train_videos``; pick the epoch and post-processing on ``val_videos``."""
    import numpy as np
    import torch

    from .data import WindowDataset
    from .infer import PeakParams
    from .model import build_spotter

    if train_cfg.threads:
        torch.set_num_threads(train_cfg.threads)
    torch.manual_seed(train_cfg.seed)
    peaks = peaks or PeakParams()
    device = train_cfg.device
    train_prepared = _prepare(train_videos, model_cfg, train_cfg.phases)
    val_prepared = val_prepared if val_prepared is not None else _prepare(val_videos, model_cfg)
    dataset = WindowDataset(train_prepared, model_cfg.n_frames)
    if not len(dataset):
        raise InputError("no training windows: are the training videos empty?")
    labels = np.concatenate([pv.labels for pv in train_prepared])
    pos_mass = labels.sum(axis=0)
    pos_weight = np.clip((len(labels) - pos_mass) / np.maximum(pos_mass, 1.0), 1.0, train_cfg.pos_weight_max)
    pos_weight_t = torch.tensor(pos_weight, dtype=torch.float32, device=device)[None, :, None]
    sampler = torch.utils.data.WeightedRandomSampler(
        torch.from_numpy(dataset.weights(train_cfg.balance)),
        train_cfg.samples_per_epoch or len(dataset),
        generator=torch.Generator().manual_seed(train_cfg.seed),
    )
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=train_cfg.batch_size, sampler=sampler, drop_last=False
    )
    model = build_spotter(model_cfg).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=train_cfg.lr, total_steps=max(1, train_cfg.epochs * len(loader))
    )
    best: FitResult | None = None
    history = []
    for epoch in range(1, train_cfg.epochs + 1):
        started = time.perf_counter()
        mean_loss = _train_epoch(model, loader, (opt, sched), pos_weight_t, train_cfg, f"epoch {epoch}")
        curves = _curves(model, val_prepared, device)
        params, score = choose_peaks(curves, [pv.video for pv in val_prepared], peaks, train_cfg)
        row = {
            "epoch": epoch,
            "loss": mean_loss,
            "seconds": time.perf_counter() - started,
            **score,
        }
        row.update(
            threshold=params.threshold,
            extent=params.extent,
            smooth_seconds=params.smooth_seconds,
            micro_cut_seconds=params.micro_cut_seconds,
        )
        history.append(row)
        log.info(
            "epoch %d loss %.4f val F1 %.3f, typed %.3f "
            "(thr %.2f, extent %.2f, smooth %.2f s, micro up to %.2f s)",
            epoch,
            row["loss"],
            score["f1"],
            score["typed_f1"],
            params.threshold,
            params.extent,
            params.smooth_seconds,
            params.micro_cut,
        )
        if best is None or score["f1"] > best.val["f1"]:
            best = FitResult(copy.deepcopy(model).cpu().eval(), epoch, params, score)
    best.history = history
    return best


def _train_epoch(model, loader, steppers, pos_weight, train_cfg: TrainConfig, desc: str) -> float:
    """One pass over ``loader`` (optimiser and scheduler stepped per batch); the mean loss: BCE of the
    micro/macro frame targets, plus the emotion cross-entropy where a window has an emotion target."""
    from torch.nn import functional as F
    from tqdm import tqdm

    from .model import OUTPUTS

    opt, sched = steppers
    device, k = train_cfg.device, len(OUTPUTS)
    model.train()
    total, steps = 0.0, 0
    for x, y, e in tqdm(loader, desc=desc, leave=False, disable=None):
        x, y, e = x.to(device), y.to(device), e.to(device)
        out = model(x)
        loss = F.binary_cross_entropy_with_logits(out[:, :k], y, pos_weight=pos_weight)
        if model.config.emotions and (e >= 0).any():
            loss = loss + train_cfg.emotion_weight * F.cross_entropy(out[:, k:], e, ignore_index=-1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        total, steps = total + loss.item(), steps + 1
    return total / max(steps, 1)
