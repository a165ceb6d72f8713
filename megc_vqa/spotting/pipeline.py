"""ME-STR, spot then recognise: every long video in a folder -> spotted intervals -> an emotion per interval
-> the STR CSV ``subject,video,onset,offset,emotion`` (SPEC section 6).

Emotion per interval, configurable (``STRConfig.emotion``):
  ``vqa``:      a callable ``ask(source, [onset, apex, offset], question, fps) -> answer`` (the VQA model on the
                interval's key frames) is asked the coarse question; the first STR class named in the answer
                is taken, otherwise ``fallback_emotion``;
  ``head``:     the spotter's emotion head (mean class probability over the interval);
  ``constant``: ``fallback_emotion`` for every interval (default ``negative``: the majority class of every
                ME dataset), a baseline.

Output folder (a rerun skips finished videos; a video interrupted mid-way is redone):
  ``str_run.json``      the settings the run was started with and the files it wrote (:data:`RUN_RECORD`):
                        a rerun resumes only a run made with the same settings (spotter weights, peak
                        settings, emotion source and VQA model, each video's subject, video id and fps);
                        another is refused naming what differs, unless ``restart`` discards the earlier
                        run's files (those it wrote, nothing else in the folder);
  ``str_pred.csv``      rows appended per video as it finishes;
  ``intervals.jsonl``   one line per finished video: intervals with type, score, emotion (LVQA reads it);
  ``progress.jsonl``    one line per finished video (the resume record; written last);
  ``curves/<name>.npz`` the score curve; ``plots/<name>.png`` the per-video plot.
Videos that cannot be read (no frames) are logged and listed in the summary; the run goes on.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from megc_vqa.annotations.long_videos import (  # noqa: F401  (discover_videos re-exported: the pipeline's inputs)
    VideoJob,
    discover_videos,
    fps_summary,
)
from megc_vqa.errors import MegcError, UsageError
from megc_vqa.fileio import (
    TOLERATED_PROBLEMS,
    RunRecord,
    atomic_write_text,
    claim_outputs,
    content_identity,
    is_regular_file,
    parse_jsonl,
    read_jsonl_bytes,
)
from megc_vqa.labels import STR_CLASSES
from megc_vqa.qa.templates import COARSE_QUESTION
from megc_vqa.records import Clip, FrameSource
from megc_vqa.visual.errors import FaceSkip

log = logging.getLogger(__name__)

RUN_RECORD = "str_run.json"
# What the runner, run_str and run_lvqa write in --out; nothing else there is theirs to replace.
OUTPUT_NAMES = (
    "str_pred.csv", "intervals.jsonl", "progress.jsonl", "summary.json", "curves", "plots", "scores.json",
    "str_summary.json", "lvqa_flags.jsonl", "lvqa_scores.json", "lvqa_report.md", "lvqa_videos.csv",
    "lvqa_summary.json", RUN_RECORD,
)  # fmt: skip
WRITER = "megc-vqa run_str/run_lvqa"

STR_HEADER = ("subject", "video", "onset", "offset", "emotion")
# What a run (run_str or run_lvqa) always writes under these names; a restart removes them with the files
# the record lists (per-video curves and plots, the LVQA prediction files), even when an older run left no
# record.
RUN_FILES = (
    "str_pred.csv", "intervals.jsonl", "progress.jsonl", "summary.json", "str_summary.json", "scores.json",
    "plots/threshold_curve.png", "lvqa_flags.jsonl", "lvqa_report.md", "lvqa_videos.csv", "lvqa_scores.json",
    "lvqa_summary.json",
)  # fmt: skip
# (frames, [onset, apex, offset], question, fps) -> free-text answer. The answering engine plugs in here.
VQAAsk = Callable[[FrameSource, Sequence[int], str, float], str]


@dataclass
class STRConfig:
    emotion: Literal["vqa", "head", "constant"] = "head"
    fallback_emotion: str = "negative"
    chunk: int = 256
    batch: int = 64
    workers: int = 2
    device: str = "cpu"
    plots: bool = True
    peaks: dict = field(default_factory=dict)  # PeakParams overrides on top of the checkpoint's

    def settings(self) -> dict:
        """What changes the results (chunk, batch, workers, device and plots do not change them)."""
        return {"emotion": self.emotion, "fallback_emotion": self.fallback_emotion}


def parse_emotion(answer: str, fallback: str = "negative", classes: Sequence[str] = STR_CLASSES) -> str:
    """The first class word in a free answer (``"The coarse class is Negative."`` -> ``negative``)."""
    words = re.findall(r"[a-z]+", answer.lower())
    for word in words:
        if word in classes:
            return word
    return fallback


def spotter_identity(spotter) -> str:
    """What spotted, by content: the baseline, or the SHA-256 of a trained spotter's configuration and
    weights (two checkpoint files with the same weights spot alike wherever they lie; hashing the loaded
    weights costs milliseconds for a spotter of a few MB)."""
    import hashlib

    import torch

    from .infer import BASELINE_NAME

    if spotter is None:
        return BASELINE_NAME
    digest = hashlib.sha256(json.dumps(spotter.config.to_dict(), sort_keys=True, default=str).encode())
    for name, tensor in spotter.state_dict().items():
        digest.update(name.encode())
        # Bytes of any dtype (bfloat16 has no NumPy type): the tensor viewed as raw uint8.
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return f"trained spotter, weights sha256 {digest.hexdigest()[:24]}"


def merged_peaks(peaks, config: STRConfig):
    """The peak settings a run uses: the checkpoint's (or the baseline's), then the config's overrides."""
    from .infer import PeakParams

    base = peaks if isinstance(peaks, PeakParams) else PeakParams.from_dict(peaks)
    return PeakParams.from_dict({**base.__dict__, **config.peaks})


def str_settings(
    spotter, peaks, config: STRConfig, ask: VQAAsk | None = None, extra: dict | None = None
) -> dict:
    """Every setting that changes a run's results (see the module docstring): the spotter by its weights,
    the peak settings used, the emotion source and, for ``vqa``, the asker's settings; ``extra``: what only
    the command knows (:func:`run_settings`)."""
    vqa = None
    if config.emotion == "vqa" and ask is not None:
        vqa = getattr(ask, "settings", None) or getattr(ask, "__qualname__", repr(ask))
    return {
        "spotter": spotter_identity(spotter),
        "peaks": dict(merged_peaks(peaks, config).__dict__),
        **config.settings(),
        "vqa": vqa,
        **(extra or {}),
    }


def refuse_other_settings(out: str | Path, settings: dict, ignore: Sequence[str] = ()) -> None:
    """Raise :class:`UsageError` naming every setting that differs when ``out`` holds finished videos of
    a run made with other settings. ``ignore``: keys not known yet (run_str and run_lvqa check the rest
    before the VQA model loads, so a mismatch costs no model load)."""
    out = Path(out)
    finished = {rec["name"] for rec in _json_lines(out / "progress.jsonl") if "name" in rec}
    if not finished:
        return  # nothing finished: no result of another run can be reported
    record = RunRecord(out / RUN_RECORD)
    differences = record.differences({k: v for k, v in settings.items() if k not in ignore})
    differences = [d for d in differences if d.split(".")[0].split(":")[0] not in ignore]
    if differences:
        raise UsageError(
            f"{out} holds {len(finished)} video(s) of an earlier run made with other settings "
            f"({'; '.join(differences)}): resuming would report its results as this run's. Pass "
            "--restart to discard the earlier run's files (only those it wrote), or choose another --out."
        )


class STRRunner:
    """Runs the spot-then-recognise pipeline over video jobs into an output folder, resumably.

    ``settings``: what else changes the results and only the caller knows (the VQA model and adapter by
    content, the videos' folder), recorded with the runner's own (:meth:`run_settings`). ``restart``:
    discard an earlier run's files in ``out`` instead of resuming it."""

    def __init__(
        self,
        out: str | Path,
        spotter=None,
        peaks=None,
        config: STRConfig | None = None,
        ask: VQAAsk | None = None,
        settings: dict | None = None,
        restart: bool = False,
    ):
        self.out = Path(out)
        self.config = config or STRConfig()
        self.spotter = spotter
        self.peaks = merged_peaks(peaks, self.config)
        self.ask = ask
        if self.config.emotion == "vqa" and ask is None:
            raise UsageError(
                "--emotion vqa needs --model (the VQA model asked each interval's emotion); give --model, "
                "or --emotion head / constant"
            )
        if self.config.fallback_emotion not in STR_CLASSES:
            raise UsageError(
                f"--fallback-emotion {self.config.fallback_emotion!r} is not an STR class; use one of "
                f"{', '.join(STR_CLASSES)}"
            )
        self.out.mkdir(parents=True, exist_ok=True)
        claim_outputs(self.out, WRITER, OUTPUT_NAMES, legacy=_earlier_run)  # a user's str_pred.csv is kept
        self.csv_path = self.out / "str_pred.csv"
        self.progress_path = self.out / "progress.jsonl"
        self.intervals_path = self.out / "intervals.jsonl"
        self.extra_settings = dict(settings or {})
        self.record = RunRecord(self.out / RUN_RECORD)
        self._check_earlier_run(restart)
        self.done = self._resume()
        self._warned_fps: set[float] = set()

    @property
    def spotter_description(self) -> str:
        """What spotted: the model-free baseline, or a trained checkpoint (with the fps it was trained at)."""
        from .infer import BASELINE_NAME

        if self.spotter is None:
            return BASELINE_NAME
        trained = self.spotter.config.train_fps
        at = ", ".join(f"{f:g}" for f in trained) if trained else "unrecorded"
        return f"trained spotter (checkpoint; trained at {at} fps)"

    def check_fps(self, job: VideoJob) -> None:
        """A checkpoint trained at other frame rates than the video's: the sampling stride is rescaled from
        the fps so a window still spans ``window_seconds``; said once per fps, since scores may be off."""
        if self.spotter is None or job.fps in self._warned_fps:
            return
        cfg = self.spotter.config
        if cfg.train_fps and not any(abs(job.fps - f) < 1e-6 for f in cfg.train_fps):
            log.warning(
                "%s: the spotter was trained at %s fps, this video is at %g fps: the window is rescaled "
                "(stride %d, %d frames ~ %.2f s), but its scores were never validated at this rate",
                job.name,
                ", ".join(f"{f:g}" for f in cfg.train_fps),
                job.fps,
                cfg.stride_for(job.fps),
                cfg.n_frames,
                (cfg.n_frames - 1) * cfg.stride_for(job.fps) / job.fps,
            )
            self._warned_fps.add(job.fps)

    # --- resume -------------------------------------------------------------------------------------------
    def run_settings(self) -> dict:
        """Every setting that changes this run's results (see the module docstring)."""
        return str_settings(self.spotter, self.peaks, self.config, self.ask, self.extra_settings)

    def _earlier_videos(self) -> list[str]:
        names = [
            rec.get("name") for path in (self.progress_path, self.intervals_path) for rec in _json_lines(path)
        ]
        return sorted({n for n in names if isinstance(n, str)})

    def _check_earlier_run(self, restart: bool) -> None:
        """Resume only a run made with the same settings; refuse another (naming what differs) or, with
        ``restart``, remove its files first."""
        settings = self.run_settings()
        earlier = self._earlier_videos()
        if restart:
            removed = self.record.discard(
                [
                    *RUN_FILES,
                    *(f"{d}/{n}.{e}" for n in earlier for d, e in (("curves", "npz"), ("plots", "png"))),
                ]
            )
            if removed:
                log.info("--restart: removed %d file(s) of the earlier run in %s", len(removed), self.out)
        else:
            refuse_other_settings(self.out, settings)
        self.record.start(settings, self.record.files)

    def _check_videos(self, jobs: Sequence[VideoJob]) -> None:
        """A finished video is reused only when it is the same video now: subject, video id and fps."""
        recorded = {
            rec["name"]: rec for rec in _json_lines(self.intervals_path) if rec.get("name") in self.done
        }
        changed = []
        for job in jobs:
            rec = recorded.get(job.name)
            if rec is None:
                continue
            then = (str(rec.get("subject")), str(rec.get("video")), float(rec.get("fps") or 0))
            if then != (job.subject, job.video, float(job.fps)):
                changed.append(
                    f"{job.name}: earlier subject {then[0]}, video {then[1]} at {then[2]:g} fps, "
                    f"now subject {job.subject}, video {job.video} at {job.fps:g} fps"
                )
        if changed:
            raise UsageError(
                f"{self.out} holds finished video(s) read differently now ({'; '.join(changed[:5])}"
                f"{' ...' if len(changed) > 5 else ''}; the fps options, videos.json or the ground truth's "
                "naming changed): pass --restart to discard the earlier run's files (only those it wrote), or "
                "choose another --out."
            )

    def _resume(self) -> set[str]:
        """Finished video names; rows and records of unfinished (interrupted) videos are dropped."""
        done = {rec["name"] for rec in _json_lines(self.progress_path) if "name" in rec}
        finished_keys = set()
        records = []
        for rec in _json_lines(self.intervals_path):
            if rec.get("name") in done:
                records.append(json.dumps(rec))
                finished_keys.add((rec["subject"], rec["video"]))
        done &= {json.loads(r)["name"] for r in records}  # a video without its record is redone
        atomic_write_text(self.intervals_path, "".join(r + "\n" for r in records))
        rows = []
        if self.csv_path.exists():
            with open(self.csv_path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if (r.get("subject"), r.get("video")) in finished_keys]
        self._csv_rows = [[r[k] for k in STR_HEADER] for r in rows]
        self._write_csv()
        if done:
            log.info("resuming: %d video(s) already finished in %s", len(done), self.out)
        return done

    # --- one video ----------------------------------------------------------------------------------------
    def spot(self, job: VideoJob):
        """(score curve, intervals with emotions) for one video."""
        from .infer import extract_intervals, score_video

        if self.spotter is None:
            from .infer import motion_score_video

            curve = motion_score_video(
                job.source, job.fps, chunk=self.config.chunk, workers=self.config.workers
            )
        else:
            self.check_fps(job)
            curve = score_video(
                self.spotter,
                job.source,
                job.fps,
                chunk=self.config.chunk,
                batch=self.config.batch,
                device=self.config.device,
                workers=self.config.workers,
                name=job.name,
            )
        intervals = extract_intervals(curve, self.peaks)
        for iv in intervals:
            iv.emotion = self._emotion(job, iv)
        return curve, intervals

    def _emotion(self, job: VideoJob, iv) -> str:
        mode = self.config.emotion
        if mode == "vqa":
            answer = self.ask(job.source, [iv.onset, iv.apex, iv.offset], COARSE_QUESTION, job.fps)
            return parse_emotion(answer, self.config.fallback_emotion)
        if mode == "head" and iv.emotion in STR_CLASSES:
            return iv.emotion
        return self.config.fallback_emotion

    def run(self, jobs: Sequence[VideoJob], gt: dict | None = None) -> dict:
        """Process every unfinished job; returns ``{"done": [...], "skipped": [...], "failed": {name: reason}}``."""
        from tqdm import tqdm

        from .data import NoFramesError

        if self.config.emotion == "head" and self.spotter is not None and not self.spotter.config.emotions:
            log.warning(
                "the spotter has no emotion head: every interval gets %r", self.config.fallback_emotion
            )
        self._check_videos(jobs)
        summary: dict = {"done": [], "skipped": [], "failed": {}}
        for job in tqdm(jobs, desc="videos", disable=None):
            if job.name in self.done:
                summary["skipped"].append(job.name)
                continue
            started = time.perf_counter()
            try:
                curve, intervals = self.spot(job)
            except (
                NoFramesError,
                FileNotFoundError,
                MegcError,
                FaceSkip,
            ) as err:  # an input's fault (a video the face pipeline cannot use too): said, no traceback
                log.error("%s: skipped: %s", job.name, err)
                summary["failed"][job.name] = str(err)
                continue
            except Exception as err:  # one bad video must not end a run of many; listed at the end
                log.exception("%s: failed, going on with the next video", job.name)
                summary["failed"][job.name] = f"{type(err).__name__}: {err}"
                continue
            self._write(
                job, curve, intervals, (gt or {}).get((job.subject, job.video)), time.perf_counter() - started
            )
            summary["done"].append(job.name)
        self._write_summary(jobs, summary)
        if summary["failed"]:
            log.error(
                "%d video(s) could not be processed: %s", len(summary["failed"]), ", ".join(summary["failed"])
            )
        return summary

    def _write_csv(self) -> None:
        import io

        buffer = io.StringIO(newline="")
        w = csv.writer(buffer)
        w.writerow(STR_HEADER)
        w.writerows(self._csv_rows)
        atomic_write_text(self.csv_path, buffer.getvalue())

    def _write_summary(self, jobs: Sequence[VideoJob], summary: dict) -> None:
        record = {
            "spotter": self.spotter_description,
            "baseline": self.spotter is None,
            "peaks": self.peaks.__dict__,
            "emotion": self.config.emotion,
            "videos": fps_summary(jobs),
            **summary,
        }
        atomic_write_text(self.out / "summary.json", json.dumps(record, indent=2, default=list) + "\n")

    def _write(self, job: VideoJob, curve, intervals, gt_events, seconds: float) -> None:
        import numpy as np

        # Owned before written: a restart removes them even when this run is killed half-way.
        self.record.own(f"curves/{job.name}.npz", *([f"plots/{job.name}.png"] if self.config.plots else []))
        # The whole CSV is rewritten atomically: a reader (score.py, a resumed run) never sees half a row.
        self._csv_rows += [[job.subject, job.video, iv.onset, iv.offset, iv.emotion] for iv in intervals]
        self._write_csv()
        record = {
            "name": job.name,
            "subject": job.subject,
            "video": job.video,
            "fps": job.fps,
            "intervals": [iv.to_dict() for iv in intervals],
        }
        _append_line(self.intervals_path, json.dumps(record))
        (self.out / "curves").mkdir(exist_ok=True)
        np.savez_compressed(
            self.out / "curves" / f"{job.name}.npz",
            grid=curve.grid,
            scores=curve.scores,
            fps=curve.fps,
            stride=curve.stride,
            last=curve.last,
        )
        if self.config.plots:
            from .plot import plot_video

            plot_video(
                curve, intervals, gt_events or [], self.out / "plots" / f"{job.name}.png", title=job.name
            )
        _append_line(
            self.progress_path,
            json.dumps({"name": job.name, "n_intervals": len(intervals), "seconds": round(seconds, 3)}),
        )
        self.done.add(job.name)
        log.info("%s: %d interval(s) in %.1f s", job.name, len(intervals), seconds)


def read_intervals(out: str | Path) -> dict[str, dict]:
    """``intervals.jsonl`` of a run folder: video folder name -> record (subject, video, fps, intervals)."""
    from .infer import SpottedInterval

    records = {}
    for rec in _json_lines(Path(out) / "intervals.jsonl"):
        rec["intervals"] = [SpottedInterval(**iv) for iv in rec["intervals"]]
        records[rec["name"]] = rec
    return records


def _earlier_run(path: Path) -> bool:
    """Whether ``path`` lies in a runner's output folder from before output markers: its
    ``progress.jsonl`` is the runner's resume record (empty, or lines with name and n_intervals)."""
    if not is_regular_file(path.parent / "progress.jsonl"):  # a FIFO there would block the read
        return False
    try:
        with open(path.parent / "progress.jsonl", "rb") as handle:
            line = handle.read(1 << 16).split(b"\n", 1)[0]
        first = json.loads(line) if line.strip() else {"name": "", "n_intervals": 0}
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and {"name", "n_intervals"} <= set(first)


def _json_lines(path: Path) -> list[dict]:
    """The complete JSON objects of a resume file, read by the project's JSONL parser
    (:func:`megc_vqa.fileio.parse_jsonl`); a line cut by a kill (or any broken line) is skipped, so its
    video is simply processed again."""
    if not path.exists():
        return []
    rows, problems = parse_jsonl(read_jsonl_bytes(path), str(path))
    for p in problems:
        if not p.message.startswith(TOLERATED_PROBLEMS):
            log.warning(
                "%s line %d: not a complete record (a run killed mid-write?); its video is redone",
                path,
                p.line,
            )
    return [row.data for row in rows]


def _append_line(path: Path, line: str) -> None:
    with open(path, "a") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_spotter(path: str | Path | None, device: str = "cpu"):
    """(model or None, peak settings): the checkpoint's model and the post-processing chosen on its inner
    validation split; without a checkpoint, the model-free motion baseline's settings."""
    from .infer import BASELINE_NAME, MOTION_PEAKS

    if path is None:
        log.warning("no --spotter checkpoint: %s", BASELINE_NAME)
        return None, dict(MOTION_PEAKS)
    from .model import load_checkpoint

    model, extra = load_checkpoint(path, map_location=device)
    return model.to(device), extra.get("peaks") or {}


def run_settings(
    videos_root: str | Path | None,
    sidecar: str | Path | None,
    model: str | Path | None = None,
    adapter: str | Path | None = None,
) -> dict:
    """The settings of a run_str / run_lvqa run that only the command knows: where the videos are, and
    the VQA model and adapter by content (:func:`megc_vqa.fileio.content_identity`: retrained weights in
    the same folder are another model)."""

    def where(path: str | Path | None) -> str | None:
        return str(Path(path).resolve()) if path is not None else None

    return {
        "videos_root": where(videos_root),
        "videos_json": where(sidecar),
        "vqa_model": content_identity(model),
        "vqa_adapter": content_identity(adapter),
    }


class EngineAsk:
    """A ``VQAAsk`` backed by the answering engine: each interval becomes a clip (onset, apex, offset) whose
    visual inputs are sampled with the engine's training record (``engine.contract``), so a model trained on
    ``oao+flow`` with face crops gets exactly that here. ``settings`` is what a run summary records."""

    def __init__(self, engine, contract) -> None:
        self.engine = engine
        self.contract = contract
        self.face_skips = 0  # intervals the face pipeline could not use (each logged)

    @property
    def settings(self) -> dict:
        return {**self.engine.settings(), **self.contract.summary()}

    def __call__(self, source: FrameSource, key_frames: Sequence[int], question: str, fps: float) -> str:
        onset, apex, offset = key_frames
        name = f"{source.path.name}_{onset}_{offset}"
        clip = Clip("str", "", name, name, source, fps, onset, offset, apex)
        try:
            visual = self.contract.sample(clip)
        except FaceSkip as err:  # the interval keeps the fallback answer; said, counted
            self.face_skips += 1
            log.warning("%s; the interval gets the fallback answer", err)
            return ""
        return self.engine.answer([question], [visual])[0].text


def engine_ask(
    model: str, adapter: str | None = None, visual_spec: str | None = None, image_size: int | None = None
) -> EngineAsk:
    """Load the answering engine once; ``visual_spec``/``image_size`` override the training record (with
    a warning, listed in ``settings``)."""
    from megc_vqa.answering.engine import Engine

    engine = Engine.load(model, adapter)
    return EngineAsk(engine, engine.contract.override(spec=visual_spec, size=image_size))


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a run_str / run_lvqa run besides its inputs: the overrides of the VQA model's
    training record (:func:`engine_ask`), the device, ``--restart`` and ``--no-plots``."""
    parser.add_argument("--visual-spec", help="override the sampler spec the model was trained with")
    parser.add_argument("--image-size", type=int, help="override the frame size the model was trained with")
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--restart",
        action="store_true",
        help="discard the files an earlier run wrote in --out (only those) instead of resuming it",
    )
    parser.add_argument("--no-plots", action="store_true")


def open_str_run(
    out: str | Path,
    spotter,
    peaks,
    config: STRConfig,
    *,
    videos_root: str | Path | None,
    sidecar: str | Path | None,
    model: str | None = None,
    adapter: str | None = None,
    visual_spec: str | None = None,
    image_size: int | None = None,
    restart: bool = False,
) -> STRRunner:
    """The runner of a run_str / run_lvqa command. Unless ``restart``, an earlier run in ``out`` made with
    other settings is refused first, on everything but the VQA model's (so a mismatch costs no model load);
    then the VQA model is loaded when ``model`` is given (the runner's ``ask``)."""
    settings = run_settings(videos_root, sidecar, model, adapter)
    if not restart:
        refuse_other_settings(out, str_settings(spotter, peaks, config, None, settings), ignore=["vqa"])
    ask = engine_ask(model, adapter, visual_spec, image_size) if model else None
    return STRRunner(out, spotter, peaks, config, ask, settings, restart=restart)
