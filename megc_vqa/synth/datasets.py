"""Complete fake datasets in the real layouts: frame folders plus annotation spreadsheets.

Short-clip datasets (CASME II, SAMM, SMIC, CAS(ME)^3) keep only each clip's frames from
``onset - margin`` to ``offset + margin``, so generation stays fast; long-video datasets (CAS(ME)^2,
SAMM Long Videos) hold whole videos with several micro- and macro-expressions. Everything is planned
serially from the seed and rendered by :mod:`megc_vqa.synth.jobs` jobs with their own seeds, so the
frames are byte-identical for a seed whatever the pool size.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from megc_vqa.labels import coarse_of, normalise_fine
from megc_vqa.records import Clip, Event, FrameSource, LongVideo
from megc_vqa.synth import layout
from megc_vqa.synth.emotions import Expression, sample_expression
from megc_vqa.synth.face import FaceIdentity, sample_identity
from megc_vqa.synth.jobs import RenderJob, Track, run_jobs
from megc_vqa.synth.realism import (
    RELEASE,
    SYNTHETIC,
    SubjectLook,
    amplitude_scale,
    release_micro_course,
    sample_look,
)

log = logging.getLogger(__name__)

SHORT_DATASETS = ("casme2", "samm", "smic", "casme3")
LONG_DATASETS = ("casme2_long", "samm_lv")
ALL_DATASETS = SHORT_DATASETS + LONG_DATASETS
MICRO_MAX_S = 0.5  # a micro-expression lasts at most 500 ms from onset to offset (SPEC 6)
NEGATIVE_FINE = ("disgust", "anger", "sadness", "fear")
# AUs that move a large region clearly; every long-video event has one, so spotters can find it.
SALIENT_AUS = frozenset({1, 2, 4, 9, 10, 12, 15, 20, 25, 26})
# Long videos: slow head drift (canonical px) and lighting change depth (fraction of brightness).
LONG_DRIFT = 2.0
LONG_FLICKER = 0.02


@dataclass(frozen=True)
class DatasetSpec:
    """How one dataset looks: frame rate, colour, and its emotion words (as written) with sampling weights."""

    name: str
    fps: float
    grey: bool
    emotions: dict[str, float]


SPECS: dict[str, DatasetSpec] = {
    "casme2": DatasetSpec(
        "casme2", 200, False,
        {"happiness": 3, "disgust": 2, "repression": 2, "surprise": 3, "fear": 0.5, "sadness": 0.5, "others": 1},
    ),
    "samm": DatasetSpec(
        "samm", 200, True,
        {"Anger": 1, "Contempt": 1, "Disgust": 1, "Fear": 0.5, "Happiness": 3, "Sadness": 0.5, "Surprise": 3,
         "Other": 1},
    ),
    "smic": DatasetSpec("smic", 100, False, {"ne": 3, "po": 3, "sur": 3}),
    "casme3": DatasetSpec(
        "casme3", 30, False,
        {"happy": 3, "disgust": 1, "anger": 1, "sad": 0.5, "fear": 0.5, "surprise": 3, "others": 1},
    ),
    "casme2_long": DatasetSpec(
        "casme2_long", 30, False, {"happiness": 2, "disgust": 1, "anger": 1, "sadness": 0.5, "surprise": 2, "others": 0.5}
    ),
    "samm_lv": DatasetSpec(
        "samm_lv", 200, True, {"Happiness": 2, "Disgust": 1, "Anger": 1, "Contempt": 1, "Surprise": 2, "Other": 0.5}
    ),
}  # fmt: skip


def render_emotion(word: str, rng: np.random.Generator) -> str:
    """The fine emotion the face shows for a dataset's word (SMIC's ``ne`` draws a negative one)."""
    fine = normalise_fine(word)
    return {"ne": NEGATIVE_FINE[rng.integers(len(NEGATIVE_FINE))], "po": "happiness", "sur": "surprise"}.get(
        fine, fine
    )


def coarse_for(dataset: str, fine: str) -> str | None:
    """Coarse class of a fine label; long-video datasets use the CAS(ME)^3/SAMM maps and call the rest others."""
    if dataset in LONG_DATASETS:
        return coarse_of("samm", fine) or coarse_of("casme3", fine) or "others"
    return coarse_of(dataset, fine)


def draw_word(spec: DatasetSpec, rng: np.random.Generator) -> str:
    words = list(spec.emotions)
    weights = np.array([spec.emotions[w] for w in words], dtype=float)
    return words[rng.choice(len(words), p=weights / weights.sum())]


def micro_course(fps: float, rng: np.random.Generator) -> tuple[int, int]:
    """(length in frames, apex position) of a micro-expression: 200-450 ms, so never over 500 ms."""
    n = max(4, round(rng.uniform(0.2, 0.45) * fps))
    n = min(n, int(MICRO_MAX_S * fps))
    return n, max(1, min(n - 2, round(rng.uniform(0.35, 0.6) * (n - 1))))


def macro_course(fps: float, rng: np.random.Generator) -> tuple[int, int]:
    """(length, apex position) of a macro-expression: 0.7-1.5 s."""
    n = max(int(MICRO_MAX_S * fps) + 2, round(rng.uniform(0.7, 1.5) * fps))
    return n, round(rng.uniform(0.3, 0.5) * (n - 1))


def tracks_for(expr: Expression, onset: int, apex: int, offset: int, scale: float = 1.0) -> list[Track]:
    return [Track(n, expr.sides.get(n), onset, apex, offset, expr.peaks[n], scale) for n in expr.aus]


def margin_frames(fps: float) -> int:
    """Neutral frames kept before onset and after offset of a short clip (about 60 ms, at least 3)."""
    return max(3, round(0.06 * fps))


# ---------------------------------------------------------------------------------------------- short clips


def _plan_short(
    dataset: str,
    root: Path,
    subjects: int,
    clips: int,
    rng: np.random.Generator,
    seed: int,
    size: int,
    realism: str = SYNTHETIC,
) -> tuple[list[Clip], list[RenderJob]]:
    spec = SPECS[dataset]
    records: list[Clip] = []
    jobs: list[RenderJob] = []
    margin = margin_frames(spec.fps)
    for s_idx in range(subjects):
        identity = sample_identity(rng)
        look = (
            sample_look(dataset, rng) if realism == RELEASE else None
        )  # drawn only here: synthetic unchanged
        subject, folder_key = layout.subject_names(dataset, s_idx)
        next_start = {}  # CAS(ME)^3: clips share a video folder, one after another
        smic_counts: dict[str, int] = {}
        for c_idx in range(clips):
            word = draw_word(spec, rng)
            expr = sample_expression(render_emotion(word, rng), rng)
            n, apex_pos = micro_course(spec.fps, rng) if look is None else release_micro_course(spec.fps, rng)
            clip_id = layout.clip_name(dataset, folder_key, c_idx, word, smic_counts, rng)
            repeated = dataset == "casme3" and any(
                layout.casme3_video(k) == clip_id for k in range(clips) if k != c_idx
            )
            if dataset == "casme3":
                onset = next_start.get(clip_id, int(rng.integers(20, 60)))
                next_start[clip_id] = onset + n + 2 * margin + int(rng.integers(10, 40))
            elif s_idx == 0 and c_idx == 0:
                onset = 100 - margin - n // 2  # the span crosses img99 -> img100: numeric sort matters
            else:
                onset = int(rng.integers(margin + 1, 400))
            offset, apex = onset + n - 1, onset + apex_pos
            first = onset - margin
            span = offset + margin - first + 1
            folder = layout.clip_dir(dataset, root, subject, clip_id)
            paths: list[str | None] = [
                str(layout.frame_path(dataset, folder, clip_id, first + i)) for i in range(span)
            ]
            if dataset == "casme3" and rng.random() < 0.5:  # a dropped frame away from the key frames
                drop = int(rng.integers(first, offset + margin + 1))
                if drop not in (onset, apex, offset):
                    paths[drop - first] = None
            fine = normalise_fine(word) if dataset != "smic" else None
            records.append(
                Clip(
                    dataset=dataset,
                    subject=subject,
                    clip_id=clip_id,
                    image_id=layout.image_id(dataset, subject, clip_id, onset, repeated),
                    source=FrameSource("folder", folder),
                    fps=spec.fps,
                    onset=onset,
                    offset=offset,
                    apex=None if dataset == "smic" else apex,
                    aus=expr.action_units(intensity_letters=dataset == "samm"),
                    fine_emotion=fine,
                    coarse_emotion=coarse_of(dataset, word),
                    expression_type="micro",
                )
            )
            scale = 1.0 if look is None else amplitude_scale(dataset, "micro", identity.face_axes, rng)
            tracks = tracks_for(expr, margin, apex - first, offset - first, scale)
            job_seed = (seed, ALL_DATASETS.index(dataset), s_idx, c_idx)
            jobs.append(
                RenderJob(identity, span, paths, tracks, spec.fps, job_seed, size, spec.grey, look=look)
            )
    return records, jobs


# ---------------------------------------------------------------------------------------------- long videos


def plan_long_events(
    fps: float,
    rng: np.random.Generator,
    dataset: str,
    n_events: int,
    words: dict[str, float] | None = None,
) -> tuple[int, list[tuple[Event, Expression]]]:
    """Place ``n_events`` expressions (at least one micro and one macro when n >= 2) one after another,
    separated by 0.5-1.2 s of neutral face; returns the video length and the events (frames from 1)."""
    spec = DatasetSpec(dataset, fps, False, words or SPECS["casme2_long"].emotions)
    kinds = ["micro", "macro"] if n_events >= 2 else []
    kinds += ["micro" if rng.random() < 0.6 else "macro" for _ in range(n_events - len(kinds))]
    rng.shuffle(kinds)
    t = 1 + round(rng.uniform(0.4, 0.8) * fps)
    events: list[tuple[Event, Expression]] = []
    for kind in kinds:
        fine = render_emotion(draw_word(spec, rng), rng)
        expr = sample_expression(fine, rng)
        while not SALIENT_AUS.intersection(expr.aus):  # eye-only or tiny events would hide among blinks
            fine = render_emotion(draw_word(spec, rng), rng)
            expr = sample_expression(fine, rng)
        n, apex_pos = micro_course(fps, rng) if kind == "micro" else macro_course(fps, rng)
        event = Event(
            onset=t,
            offset=t + n - 1,
            apex=t + apex_pos,
            aus=expr.action_units(intensity_letters=dataset == "samm_lv"),
            fine_emotion=fine,
            coarse_emotion=coarse_for("samm_lv", fine),
            expression_type=kind,
        )
        events.append((event, expr))
        t += n + round(rng.uniform(0.5, 1.2) * fps)
    return t + round(rng.uniform(0.2, 0.5) * fps), events


def long_video_job(
    identity: FaceIdentity,
    n_frames: int,
    events: Sequence[tuple[Event, Expression]],
    paths: list[str | None],
    fps: float,
    seed: tuple[int, ...],
    size: int,
    grey: bool,
    look: SubjectLook | None = None,
    rng: np.random.Generator | None = None,
) -> RenderJob:
    """A job rendering a whole long video whose frame ``k`` (from 1) is ``paths[k - 1]``.

    What real long videos carry besides the expressions: head sway and a slow drift, blinks (rare: every
    event stays visible above them), lighting flicker and slow illumination changes. With a ``look`` (release
    preset) each event's amplitude is drawn from ``rng`` for its kind (micro or macro) and the scene renders
    head drift, blinks at the release's rate, flicker and noise itself.
    """
    if look is not None:
        if rng is None:
            raise ValueError("a release long video needs the planning rng to draw its events' amplitudes")
        scales = [
            amplitude_scale(look.dataset, ev.expression_type, identity.face_axes, rng) for ev, _ in events
        ]
        tracks = [tr for (ev, ex), k in zip(events, scales, strict=True)
                  for tr in tracks_for(ex, ev.onset - 1, ev.apex - 1, ev.offset - 1, k)]  # fmt: skip
        return RenderJob(identity, n_frames, paths, tracks, fps, seed, size, grey, look=look)
    tracks = [tr for ev, ex in events for tr in tracks_for(ex, ev.onset - 1, ev.apex - 1, ev.offset - 1)]
    return RenderJob(
        identity,
        n_frames,
        paths,
        tracks,
        fps,
        seed,
        size,
        grey,
        blink_rate=0.06,
        jitter=0.4,
        drift=LONG_DRIFT,
        flicker=LONG_FLICKER,
    )


def _plan_long(
    dataset: str,
    root: Path,
    subjects: int,
    videos: int,
    rng: np.random.Generator,
    seed: int,
    size: int,
    realism: str = SYNTHETIC,
    long_events: int | None = None,
) -> tuple[list[LongVideo], list[RenderJob]]:
    spec = SPECS[dataset]
    records: list[LongVideo] = []
    jobs: list[RenderJob] = []
    for s_idx in range(subjects):
        identity = sample_identity(rng)
        look = sample_look(dataset, rng, long_video=True) if realism == RELEASE else None
        subject, folder_key = layout.subject_names(dataset, s_idx)
        for v_idx in range(videos):
            n_events = int(rng.integers(3, 6) if spec.fps > 60 else rng.integers(4, 8))
            n_events = long_events or n_events
            n_frames, events = plan_long_events(spec.fps, rng, dataset, n_events, spec.emotions)
            video_id = layout.video_name(dataset, folder_key, v_idx)
            folder = layout.clip_dir(dataset, root, subject, video_id)
            paths = [str(layout.frame_path(dataset, folder, video_id, k)) for k in range(1, n_frames + 1)]
            job_seed = (seed, ALL_DATASETS.index(dataset), s_idx, v_idx)
            jobs.append(
                long_video_job(
                    identity, n_frames, events, paths, spec.fps, job_seed, size, spec.grey, look, rng
                )
            )
            source = FrameSource("folder", folder)
            records.append(
                LongVideo(dataset, subject, video_id, source, spec.fps, tuple(e for e, _ in events))
            )
    return records, jobs


# ---------------------------------------------------------------------------------------------- entry point


def write_datasets(
    out: Path,
    seed: int = 0,
    subjects: int = 4,
    clips_per_subject: int = 4,
    datasets: Sequence[str] = ALL_DATASETS,
    size: int = 128,
    workers: int | None = None,
    realism: str = SYNTHETIC,
    long_events: int | None = None,
) -> dict[str, list[Clip] | list[LongVideo]]:
    """Write each dataset under ``out/<dataset>/`` (frames + annotation file); returns its records.

    Long-video datasets get ``max(2, subjects // 2)`` subjects with ``max(1, clips_per_subject // 4)``
    videos each (each video holds 3-7 events, or ``long_events``: the length of a long video follows).
    realism: ``synthetic`` (square ``size`` frames) or ``release`` (:mod:`megc_vqa.synth.realism`: each
    release's frame size, face placement, amplitudes and recording; ``size`` is not used).
    """
    unknown = [d for d in datasets if d not in SPECS]
    if unknown:
        raise ValueError(f"unknown dataset(s) {unknown}; choose from {', '.join(ALL_DATASETS)}")
    out = Path(out)
    planned: dict[str, list] = {}
    jobs: list[RenderJob] = []
    for dataset in datasets:
        rng = np.random.default_rng(np.random.SeedSequence([seed, ALL_DATASETS.index(dataset)]))
        root = out / dataset
        if dataset in LONG_DATASETS:
            recs, js = _plan_long(
                dataset, root, max(2, subjects // 2), max(1, clips_per_subject // 4), rng, seed, size, realism,
                long_events,
            )  # fmt: skip
        else:
            recs, js = _plan_short(dataset, root, subjects, clips_per_subject, rng, seed, size, realism)
        planned[dataset] = recs
        jobs.extend(js)
    run_jobs(jobs, workers, desc="synth frames")
    for dataset, recs in planned.items():
        path = layout.write_annotations(dataset, recs, out / dataset)
        layout.make_reproducible(path)
        log.info(
            "%s: %d %s -> %s", dataset, len(recs), "videos" if dataset in LONG_DATASETS else "clips", path
        )
    return planned
