"""MEGC-style synthetic test sets: frame folders for the organisers' question files, with ground truth.

For every ``video`` a question file names, one micro-expression clip is rendered to
``out/frames/<video>/img1.jpg ...`` (a neutral lead-in, the expression, a neutral tail; no key frames
given) and the questions are answered consistently with it in ``out/gt/<same file name>``: one AU for
the singular wording and two or more for the plural, the joint answer in its template, and a presence
``yes``/``no`` that matches whether the named AU was rendered. A video whose questions are ME-LVQA
questions becomes a long video under ``out/long/<video>/``. :func:`write_long_videos` writes long videos
with several micro- and macro-expressions for spotting, with ``out/gt/str_gt.csv`` and
``out/gt/long_videos.jsonl``.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import re
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from megc_vqa.annotations.long_videos import SIDECAR, VideoEntry, str_names, write_sidecar
from megc_vqa.errors import MegcError
from megc_vqa.fileio import atomic_text_writer
from megc_vqa.labels import AU_NAMES, AU_NUMBERS
from megc_vqa.qa import io as qa_io
from megc_vqa.qa import templates as T
from megc_vqa.qa.records import QuestionRow
from megc_vqa.records import Clip, Event, FrameSource, LongVideo
from megc_vqa.synth.datasets import SPECS, long_video_job, micro_course, plan_long_events, tracks_for
from megc_vqa.synth.emotions import LATERAL_AUS, Expression, can_express, sample_expression
from megc_vqa.synth.face import sample_identity
from megc_vqa.synth.jobs import RenderJob, run_jobs
from megc_vqa.synth.layout import SAMM_SUBJECTS, numbered
from megc_vqa.synth.realism import (
    RELEASE,
    SYNTHETIC,
    amplitude_scale,
    look_for_fps,
    release_micro_course,
    sample_look,
)

log = logging.getLogger(__name__)

# Fine vocabularies of the test sets (composite emotions only: every test clip has a coarse answer).
TEST_VOCAB: dict[str, dict[str, tuple[str, ...]]] = {
    "samm": {"negative": ("anger", "contempt", "disgust", "fear", "sadness"), "positive": ("happiness",),
             "surprise": ("surprise",)},
    "casme3": {"negative": ("disgust", "fear", "anger", "sadness"), "positive": ("happiness",),
               "surprise": ("surprise",)},
    "casme2": {"negative": ("disgust", "repression"), "positive": ("happiness",), "surprise": ("surprise",)},
}  # fmt: skip
# AUs that may join an expression of a coarse class without blurring it (for a wanted presence "yes").
COMPATIBLE_EXTRAS: dict[str, frozenset[int]] = {
    "negative": frozenset({4, 5, 7, 9, 10, 14, 15, 17, 20, 23, 24}),
    "positive": frozenset({6, 7, 12, 25}),
    "surprise": frozenset({1, 2, 5, 25, 26}),
}
FPS = {"samm": 200.0, "casme3": 30.0, "casme2": 200.0}
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class QuestionFileError(MegcError, ValueError):
    """A question file that cannot be used; the message names the file and line."""


@dataclass
class VideoNeeds:
    """What the questions about one video require of its clip."""

    video: str
    family: str  # samm / casme3 / casme2: fine vocabulary, fps and colour
    single: bool | None = None
    presence: list[int] = field(default_factory=list)
    sides: list[int] = field(default_factory=list)
    long: bool = False
    min_events: int = 0
    where: str = ""


@dataclass
class TestSet:
    """What :func:`write_test_set` wrote: clips by video, long videos, and the ground-truth files."""

    clips: dict[str, Clip] = field(default_factory=dict)
    expressions: dict[str, Expression] = field(default_factory=dict)
    long_videos: list[LongVideo] = field(default_factory=list)
    gt_files: list[Path] = field(default_factory=list)


def read_questions(path: Path) -> list[QuestionRow]:
    """The rows of an organiser question file, read by the project's one reader of question files
    (:func:`megc_vqa.qa.io.read_questions`); its problems, and a video this command cannot write as a
    folder (letters, digits, ``.``, ``_``, ``-``, not starting with a dot), are a :class:`QuestionFileError`
    naming the file and line."""
    try:
        rows = qa_io.read_questions(path)
    except qa_io.QAFileError as err:
        raise QuestionFileError(str(err)) from None
    for row in rows:
        if not _SAFE_NAME.match(row.video) or ".." in row.video:
            raise QuestionFileError(
                f"{path}:{row.line}: video {row.video!r} is not a folder name synth-test writes (letters, "
                "digits, '.', '_' and '-', starting with a letter or digit)"
            )
    return rows


def _family(row: QuestionRow, path: Path) -> str:
    text = f"{row.video_id} {path.name}".lower()
    return "samm" if "samm" in text else "casme3" if "cas" in text else "casme2"


def _collect_needs(files: Sequence[tuple[Path, list[QuestionRow]]]) -> dict[str, VideoNeeds]:
    needs: dict[str, VideoNeeds] = {}
    for path, rows in files:
        for row in rows:
            video, question, where = row.video, row.question, f"{path}:{row.line}"
            need = needs.setdefault(video, VideoNeeds(video, _family(row, path), where=where))
            kind = row.question_type
            if kind in ("au", "joint"):
                plural = T.is_plural(question)
                if need.single is not None and need.single == plural:
                    raise QuestionFileError(
                        f"{where}: {video} is asked with both singular and plural AU wording"
                    )
                need.single = not plural
            elif kind in ("presence", "side"):
                name = T.question_au_name(question)
                if name not in AU_NUMBERS:
                    raise QuestionFileError(f"{where}: unknown action unit name {name!r}")
                number = AU_NUMBERS[name]
                target = need.presence if kind == "presence" else need.sides
                if number not in target:
                    target.append(number)
            elif kind.startswith("lvqa"):
                need.long = True
                need.min_events = max(need.min_events, T.event_number(question) or 0)
            elif kind == "unknown":
                log.warning(
                    "%s: unknown question for %s, answered with a description: %r", where, video, question
                )
    return needs


def _video_rng(seed: int, video: str, salt: int = 0) -> np.random.Generator:
    """A generator per video (stable whatever other files are given) from the seed and the video name."""
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(video.encode()), salt]))


def choose_expression(need: VideoNeeds, rng: np.random.Generator, coarse: str) -> tuple[str, str, Expression]:
    """(fine, coarse, expression) for a clip: the AU count and side questions must hold; the coarse class
    is kept unless the count makes it impossible; presence answers follow a coin per AU where they can."""
    vocab = TEST_VOCAB[need.family]
    want = {au: bool(rng.random() < 0.5) for au in need.presence}
    for c in [coarse, *[c for c in vocab if c != coarse]]:
        fines = [f for f in vocab[c] if can_express(f, need.single)]
        if not fines:
            continue
        for attempt in range(300):
            fine = fines[rng.integers(len(fines))]
            expr = sample_expression(fine, rng, single=need.single)
            if any(au not in expr.aus or au not in LATERAL_AUS for au in need.sides):
                continue
            if need.single is not True:  # a wanted AU that fits the class may join as an extra
                for au, yes in want.items():
                    if yes and au not in expr.aus and au in COMPATIBLE_EXTRAS[c]:
                        expr = _with_extra(expr, au, rng)
            if attempt < 150 and any((au in expr.aus) != yes for au, yes in want.items()):
                continue
            for au in need.sides:  # a side question needs that AU on one side only
                expr.sides[au] = "L" if rng.random() < 0.5 else "R"
            return fine, c, expr
    raise QuestionFileError(f"{need.where}: no expression satisfies the questions about {need.video}")


def _with_extra(expr: Expression, au: int, rng: np.random.Generator) -> Expression:
    aus = tuple(sorted({*expr.aus, au}))
    peaks = {**expr.peaks, au: float(rng.uniform(0.6, 0.85))}
    return Expression(expr.emotion, aus, {**expr.sides, au: None}, peaks)


def analysis_answer(expr: Expression, fine: str, coarse: str, fps: float, n_frames: int) -> str:
    """A short description naming the AUs and the emotion (MEGC2026 v2 analysis question)."""
    names = [f"{AU_NAMES[n]} (AU{n}{', ' + {'L': 'left', 'R': 'right'}[s] + ' side' if (s := expr.sides.get(n)) else ''})"
             for n in expr.aus]  # fmt: skip
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    verb = "appears" if len(names) == 1 else "appear"
    ms = round(1000 * n_frames / fps)
    return (
        f"The face shows a brief micro-expression of about {ms} ms in which the {listed} {verb}, "
        f"peak and fade back to neutral. These movements indicate {fine}, so the coarse expression "
        f"class is {coarse}."
    )


def _answer(row: QuestionRow, kind: str, clip_info: dict) -> str:
    expr: Expression = clip_info["expr"]
    names = expr.au_names
    fine, coarse = clip_info["fine"], clip_info["coarse"]
    q = row.question
    if kind == "coarse":
        return coarse
    if kind == "fine":
        return fine
    if kind == "au":
        return T.au_list_answer(names)
    if kind == "joint":
        return T.joint_answer(names, fine, coarse)
    if kind == "presence":
        return "yes" if AU_NUMBERS[T.question_au_name(q)] in expr.aus else "no"
    if kind == "side":
        return "left" if expr.sides[AU_NUMBERS[T.question_au_name(q)]] == "L" else "right"
    return analysis_answer(expr, fine, coarse, clip_info["fps"], clip_info["length"])


def _lvqa_answer(question: str, kind: str, video: LongVideo) -> str:
    events = video.events
    if kind == "lvqa_count_all":
        return str(len(events))
    if kind == "lvqa_count_micro":
        return str(sum(e.expression_type == "micro" for e in events))
    if kind == "lvqa_count_macro":
        return str(sum(e.expression_type == "macro" for e in events))
    if kind == "lvqa_aus":
        return T.au_list_answer([AU_NAMES[n] for n in sorted({a.number for e in events for a in e.aus})])
    if kind == "lvqa_event_type":
        return f"{events[T.event_number(question) - 1].expression_type}-expression"
    return f"A long video with {len(events)} expression events."


def write_test_set(
    questions: Sequence[Path],
    out: Path,
    seed: int = 0,
    size: int = 128,
    long_size: int = 96,
    workers: int | None = None,
    realism: str = SYNTHETIC,
) -> TestSet:
    """Render a clip (or, for ME-LVQA questions, a long video) per named video and write the ground truth.

    realism ``release`` draws each clip as its family's release records it (SAMM 2040x1088 grey, CAS(ME)^3
    1280x720, CASME II 640x480; :mod:`megc_vqa.synth.realism`); ``size`` and ``long_size`` are then unused."""
    out = Path(out)
    files = [(Path(p), read_questions(Path(p))) for p in questions]
    needs = _collect_needs(files)
    result = TestSet()
    jobs: list[RenderJob] = []
    info: dict[str, dict] = {}
    long_plans = []
    coarse_cycle: dict[str, int] = {}
    for video, need in needs.items():
        rng = _video_rng(seed, video)
        fps = FPS[need.family]
        if need.long:
            long_plans.append((video, need, fps))
            continue
        # Cycle the coarse class within a family (random start) so every class appears in a file.
        k = coarse_cycle.setdefault(need.family, int(_video_rng(seed, need.family).integers(3)))
        coarse_cycle[need.family] += 1
        fine, coarse, expr = choose_expression(need, rng, ("negative", "positive", "surprise")[k % 3])
        n, apex_pos = micro_course(fps, rng) if realism != RELEASE else release_micro_course(fps, rng)
        lead = max(3, round(rng.uniform(0.1, 0.25) * fps))
        total = lead + n + max(3, round(rng.uniform(0.1, 0.25) * fps))
        onset, apex, offset = lead + 1, lead + 1 + apex_pos, lead + n  # frames numbered from 1
        folder = out / "frames" / video
        paths = [str(folder / f"img{i}.jpg") for i in range(1, total + 1)]
        grey = need.family == "samm"
        identity = sample_identity(rng)
        look, scale = None, 1.0
        if realism == RELEASE:  # drawn after everything else: the synthetic preset stays byte-identical
            look = sample_look(need.family, rng)
            scale = amplitude_scale(need.family, "micro", identity.face_axes, rng)
        tracks = tracks_for(expr, onset - 1, apex - 1, offset - 1, scale)
        job_seed = (seed, zlib.crc32(video.encode()), 1)
        jobs.append(RenderJob(identity, total, paths, tracks, fps, job_seed, size, grey, look=look))
        result.clips[video] = Clip(
            dataset=f"{need.family}_test", subject=video, clip_id=video, image_id=video,
            source=FrameSource("folder", folder), fps=fps, onset=onset, offset=offset, apex=apex,
            aus=expr.action_units(), fine_emotion=fine, coarse_emotion=coarse,
        )  # fmt: skip
        result.expressions[video] = expr
        info[video] = {"expr": expr, "fine": fine, "coarse": coarse, "fps": fps, "length": n}
    for video, need, fps in long_plans:
        subject = video.partition("_")[
            0
        ]  # the STR naming rule: video = folder name (annotations.long_videos)
        rng = _video_rng(seed, video)
        n_events = max(need.min_events, int(rng.integers(3, 6)))
        lv, job = _long_video(out / "long" / video, subject, video, fps, n_events, rng,
                              (seed, zlib.crc32(video.encode()), 2), long_size, need.family == "samm",
                              realism)  # fmt: skip
        result.long_videos.append(lv)
        jobs.append(job)
    _clear_old_frames(jobs)
    run_jobs(jobs, workers, desc="synth-test frames")
    gt_dir = out / "gt"
    gt_dir.mkdir(parents=True, exist_ok=True)
    long_by_video = {lv.video_id: lv for lv in result.long_videos}
    for path, rows in files:
        target = gt_dir / path.name
        with atomic_text_writer(target) as fh:
            for row in rows:
                kind = row.question_type
                video = row.video
                if video in long_by_video:
                    answer = _lvqa_answer(row.question, kind, long_by_video[video])
                else:
                    answer = _answer(row, kind, info[video])
                fh.write(json.dumps(row.with_answer(answer).to_json(), ensure_ascii=False) + "\n")
        result.gt_files.append(target)
    _write_clip_index(gt_dir / "clips.jsonl", result, info)
    if result.long_videos:
        write_long_gt(gt_dir, result.long_videos)
    return result


def _clear_old_frames(jobs: Sequence[RenderJob]) -> None:
    """Remove ``img*.jpg`` left in a clip's folder by an earlier run: readers take every frame in a folder,
    so a longer old clip would leave stray frames behind the new one."""
    for folder in {Path(p).parent for job in jobs for p in job.paths if p}:
        old = list(folder.glob("img*.jpg"))
        if old:
            log.warning("%s: replacing %d frames from an earlier run", folder, len(old))
            for path in old:
                path.unlink()


def _write_clip_index(path: Path, result: TestSet, info: dict[str, dict]) -> None:
    """Per-clip truth (key frames, AUs with sides) for diagnostics and tests."""
    with atomic_text_writer(path) as fh:
        for video, clip in result.clips.items():
            expr = info[video]["expr"]
            fh.write(json.dumps({
                "video": video, "dataset": clip.dataset, "fps": clip.fps, "onset": clip.onset, "apex": clip.apex,
                "offset": clip.offset, "aus": [{"number": n, "name": AU_NAMES[n], "side": expr.sides.get(n)}
                                               for n in expr.aus],
                "fine": clip.fine_emotion, "coarse": clip.coarse_emotion,
            }) + "\n")  # fmt: skip


# ---------------------------------------------------------------------------------------------- long videos


def _long_video(
    folder: Path, subject: str, video: str, fps: float, n_events: int, rng: np.random.Generator,
    job_seed: tuple[int, ...], size: int, grey: bool, realism: str = SYNTHETIC,
) -> tuple[LongVideo, RenderJob]:  # fmt: skip

    n_frames, events = plan_long_events(fps, rng, "samm_lv", n_events, SPECS["samm_lv"].emotions)
    paths = [str(folder / f"img{k}.jpg") for k in range(1, n_frames + 1)]
    identity = sample_identity(rng)
    look = sample_look(look_for_fps(fps, grey), rng, long_video=True) if realism == RELEASE else None
    job = long_video_job(identity, n_frames, events, paths, fps, job_seed, size, grey, look, rng)
    lv = LongVideo(
        "synth_long", subject, video, FrameSource("folder", folder), fps, tuple(e for e, _ in events)
    )
    return lv, job


def write_long_videos(
    out: Path,
    n: int,
    seed: int = 0,
    fps: float | None = None,
    size: int = 96,
    workers: int | None = None,
    realism: str = SYNTHETIC,
    events: int | None = None,
) -> list[LongVideo]:
    """Write ``n`` long videos to ``out/long/<video>/img{k}.jpg`` with 3-7 events each (``events``: that many,
    which sets the length), plus ``out/gt/str_gt.csv``, ``out/gt/long_videos.jsonl`` and the
    ``out/long/videos.json`` sidecar (names, fps). realism ``release``: SAMM-LV's 2040x1088 grey frames above
    60 fps, CAS(ME)^3's 1280x720 colour frames at or below (``size`` unused).

    Names follow the SAMM-LV loader (``megc_vqa.annotations.long_videos``): subject ``006``, video ``006_1``.
    fps: every video at this rate; ``None`` alternates 30 and 200 fps by subject. Two videos per subject.
    """
    out = Path(out)
    videos, jobs = [], []
    for i in range(n):
        s_idx, v_idx = divmod(i, 2)
        rate = fps or (30.0 if s_idx % 2 == 0 else 200.0)
        subject = f"{numbered(SAMM_SUBJECTS, s_idx):03d}"
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, i]))
        n_events = int(rng.integers(3, 6) if rate > 60 else rng.integers(4, 8))
        n_events = events or n_events
        video = (
            f"{subject}_{v_idx + 1}"  # SAMM-LV naming: the folder name is the video (annotations.long_videos)
        )
        lv, job = _long_video(
            out / "long" / video, subject, video, rate, n_events, rng, (seed, 7, i), size, rate > 60, realism
        )
        videos.append(lv)
        jobs.append(job)
    _clear_old_frames(jobs)
    run_jobs(jobs, workers, desc="long videos")
    write_long_gt(out / "gt", videos)
    return videos


def write_long_gt(gt_dir: Path, videos: Sequence[LongVideo]) -> None:
    """``str_gt.csv`` (subject,video,onset,offset,emotion,type) and ``long_videos.jsonl`` (events with AUs),
    and a ``videos.json`` sidecar (STR names and fps) in every folder holding the videos' frame folders."""
    gt_dir.mkdir(parents=True, exist_ok=True)
    by_parent: dict[Path, list[VideoEntry]] = {}
    for v in videos:
        subject, video = str_names(v)
        entry = VideoEntry(Path(v.source.path), subject, video, v.fps, "synth")
        by_parent.setdefault(Path(v.source.path).parent, []).append(entry)
    for parent, entries in by_parent.items():
        write_sidecar(parent / SIDECAR, entries)
    with atomic_text_writer(gt_dir / "str_gt.csv") as fh:
        writer = csv.writer(fh)
        writer.writerow(["subject", "video", "onset", "offset", "emotion", "type"])
        for v in videos:
            for e in v.events:
                writer.writerow(
                    [v.subject, v.video_id, e.onset, e.offset, e.coarse_emotion, e.expression_type]
                )
    with atomic_text_writer(gt_dir / "long_videos.jsonl") as fh:
        for v in videos:
            fh.write(json.dumps({
                "subject": v.subject, "video": v.video_id, "folder": _folder_below(v.source.path, gt_dir.parent),
                "fps": v.fps,
                "n_frames": _count_frames(v), "events": [_event_json(e) for e in v.events],
            }) + "\n")  # fmt: skip


def _folder_below(folder: str | Path, base: Path) -> str:
    """``folder`` as written in ``long_videos.jsonl``: relative to ``base`` (the output folder, where the
    reader looks), so the file reads the same from any working folder and its folders stay inside."""
    try:
        return Path(os.path.relpath(os.path.abspath(folder), os.path.abspath(base))).as_posix()
    except ValueError:  # another drive (Windows)
        return os.path.abspath(folder)


def _count_frames(video: LongVideo) -> int:
    return sum(1 for _ in Path(video.source.path).glob("img*.jpg"))


def _event_json(e: Event) -> dict:
    return {
        "onset": e.onset, "apex": e.apex, "offset": e.offset, "type": e.expression_type,
        "emotion": e.coarse_emotion, "fine": e.fine_emotion, "aus": [AU_NAMES[a.number] for a in e.aus],
        "au_codes": "+".join(a.raw for a in e.aus),
    }  # fmt: skip
