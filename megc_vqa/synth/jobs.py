"""Render-and-write jobs: one frame folder span (a clip or a long video) per job, run in a small pool.

Planning (which subject shows which AUs when) happens serially from the seed; a job carries its own
seed, so the files are byte-identical whatever the pool size or the order jobs finish in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from megc_vqa.synth.face import BLINK, FaceIdentity, render_sided
from megc_vqa.synth.motion import au_course, blink_course, head_motion, lighting_gain, slow_drift
from megc_vqa.synth.realism import SubjectLook
from megc_vqa.synth.scene import run_release_job

log = logging.getLogger(__name__)
CHUNK = 96  # frames rendered at once: memory stays flat for long videos


@dataclass(frozen=True)
class Track:
    """One AU's onset-apex-offset course inside a job, in job frame positions (0 = the job's first frame)."""

    au: int
    side: str | None
    onset: int
    apex: int
    offset: int
    peak: float = 1.0
    scale: float = 1.0  # release preset: factor on the canonical motion (a micro-expression's pixel or two)


@dataclass
class RenderJob:
    """Frames ``first_frame .. first_frame + n_frames - 1`` of one subject, written to ``paths``.

    paths: one file per frame; ``None`` drops that frame (CAS(ME)^3 has dropped frames).
    seed: entropy for this job's noise, head motion and blinks.
    drift: amplitude (canonical px) of a slow head drift over tens of seconds (long videos); 0: none.
    flicker: depth of the lighting changes (flicker, slow illumination, exposure jitter); 0: none.
    Both are drawn after everything else, so jobs without them render exactly as before.
    """

    identity: FaceIdentity
    n_frames: int
    paths: list[str | None]
    tracks: list[Track]
    fps: float
    seed: tuple[int, ...]
    size: int = 128
    grey: bool = False
    blink_rate: float = 0.2
    jitter: float = 0.6
    noise: float = 2.0
    drift: float = 0.0
    flicker: float = 0.0
    meta: dict = field(default_factory=dict)
    look: SubjectLook | None = (
        None  # release preset: the recorded scene (megc_vqa.synth.scene); None: synthetic
    )


def side_curves(
    tracks: Sequence[Track], n_frames: int
) -> tuple[dict[int, np.ndarray], dict[int, np.ndarray]]:
    """Per-AU intensity curves for the subject's left and right halves (overlapping courses add, capped at 1)."""
    left: dict[int, np.ndarray] = {}
    right: dict[int, np.ndarray] = {}
    for tr in tracks:
        curve = tr.peak * au_course(n_frames, tr.onset, tr.apex, tr.offset)
        for side, curves in (("L", left), ("R", right)):
            if tr.side in (None, side):
                curves[tr.au] = np.minimum(curves.get(tr.au, 0) + curve, 1.0)
    return left, right


def run_job(job: RenderJob) -> int:
    """Render one job and write its frames; returns the number of files written."""
    import cv2

    if job.look is not None:
        return run_release_job(job)
    rng = np.random.default_rng(np.random.SeedSequence(list(job.seed)))
    left, right = side_curves(job.tracks, job.n_frames)
    busy = np.zeros(job.n_frames, bool)
    for curve in (*left.values(), *right.values()):
        busy |= curve > 0
    blinks = blink_course(job.n_frames, job.fps, rng, job.blink_rate, avoid=busy)
    left[BLINK] = right[BLINK] = blinks
    head = head_motion(job.n_frames, job.fps, rng, job.jitter)
    if job.drift:
        head = head + slow_drift(job.n_frames, job.fps, rng, job.drift)
    gain = lighting_gain(job.n_frames, job.fps, rng, job.flicker) if job.flicker else None
    written = 0
    for start in range(0, job.n_frames, CHUNK):
        span = slice(start, min(start + CHUNK, job.n_frames))
        frames = render_sided(
            job.identity,
            {au: c[span] for au, c in left.items()},
            {au: c[span] for au, c in right.items()},
            rng,
            job.size,
            job.grey,
            head=head[span],
            noise=job.noise,
            gain=None if gain is None else gain[span],
        )
        for frame, path in zip(frames, job.paths[span], strict=True):
            if path is None:
                continue
            if not cv2.imwrite(path, frame[..., 0] if job.grey else frame):
                raise OSError(f"could not write frame {path}")
            written += 1
    return written


def _init_worker() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # first, then unblock: see _pool_keeping_ctrl_c_from_workers
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    import cv2

    cv2.setNumThreads(1)  # two render processes on two cores: OpenCV's own threads only contend
    # Ctrl-C reaches the whole process group: the parent stops the pool and says "interrupted"; a worker
    # that took it too would print its own traceback first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _pool_keeping_ctrl_c_from_workers(context: Any, workers: int) -> Any:
    """A pool whose workers never take Ctrl-C: SIGINT is blocked while they start (they inherit the mask,
    also through a fork server, and ``_init_worker`` ignores it before unblocking), so a worker still
    importing prints no traceback; a Ctrl-C in that moment stays pending here and interrupts right after."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return context.Pool(workers, _init_worker)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        return context.Pool(workers, _init_worker)
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def run_jobs(jobs: Sequence[RenderJob], workers: int | None = None, desc: str = "rendering") -> int:
    """Run jobs in a pool of ``workers`` processes (default: min(2, CPUs)) with a progress bar over frames."""
    from tqdm import tqdm

    for job in jobs:
        for path in {os.path.dirname(p) for p in job.paths if p}:
            Path(path).mkdir(parents=True, exist_ok=True)
    workers = workers or min(2, os.cpu_count() or 1)
    total = sum(j.n_frames for j in jobs)
    written = 0
    with tqdm(total=total, desc=desc, unit="frame", disable=None) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                written += run_job(job)
                bar.update(job.n_frames)
        else:
            import multiprocessing as mp

            # Big jobs first so the pool finishes evenly; results are order-independent.
            order = sorted(range(len(jobs)), key=lambda i: -jobs[i].n_frames)
            # Never "fork": forking a process whose torch/OpenMP thread pools already run (a test suite,
            # the demo after training) can deadlock the children. A fork server starts from a clean process.
            methods = mp.get_all_start_methods()
            context = mp.get_context("forkserver" if "forkserver" in methods else "spawn")
            with _pool_keeping_ctrl_c_from_workers(context, workers) as pool:
                for i, count in zip(order, pool.imap(run_job, [jobs[i] for i in order]), strict=True):
                    written += count
                    bar.update(jobs[i].n_frames)
    log.debug("wrote %d frames in %d jobs", written, len(jobs))
    return written
