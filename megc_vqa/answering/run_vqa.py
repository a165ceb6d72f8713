"""Answer organiser question files with a model: prediction files, the submission zip, and scores.

``run_vqa(question_files, frames_root, model, out_dir, ...)`` is what ``eval/run_vqa.py`` calls:

1. read every question file (an empty one is an error) and find each clip's frame folder; every
   missing folder is listed in one error *before* any model loads;
2. load the model (+ adapter) once;
3. answer clip by clip, in fixed batches of whole clips (each clip's visual inputs are prepared once
   and shared by its questions), appending every answer to ``OUT/answers.jsonl`` as it is produced; a
   killed run rerun with the same arguments answers only what is missing and, because batches are fixed
   by the question files and not by what is left, writes the same files as an uninterrupted run;
4. write each official prediction file and ``OUT/submission.zip``, check them with the validator;
5. with ground truth: ``OUT/scores.json`` and a report (``report.md``, wrong rows, confusion matrices, and
   ``report.html``: the wrong rows with the frames the model saw, :mod:`megc_vqa.submission.html_report`);
6. ``OUT/run_summary.json``: counts, timings, every fallback row and every unknown question.
7. with ``label_scores=True`` (``--label-scores``): ``OUT/label_scores.jsonl``, one line per row with each
   label's log-probability and probability (normalised over the row's label set) for the closed questions
   (coarse, fine, presence, side); ``null`` for open ones. The answer log carries the same log-probabilities
   (``label_logprobs``), so the file is rewritten from the log on a resumed run.

Every row gets a non-empty answer: rows the model fails on get a documented fallback and are listed.
"""

from __future__ import annotations

import functools
import json
import logging
import shlex
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megc_vqa.annotations.long_videos import check_fps
from megc_vqa.answering.answer_log import AnswerLog
from megc_vqa.answering.postprocess import fallback_answer
from megc_vqa.errors import InputError, MegcError, UsageError, check_number, set_output_folder
from megc_vqa.fileio import (
    atomic_write_text,
    check_folder_option,
    claim_outputs,
    content_identity,
    input_file_problem,
    is_inside,
    is_plain_name,
    is_regular_file,
    parse_jsonl,
    problems_text,
    read_jsonl_bytes,
)
from megc_vqa.limits import BATCH_SIZE, REPORT_ROWS, VOTES, check_count, check_image_size
from megc_vqa.metrics.vqa import align, ground_truth_id, score_aligned
from megc_vqa.models.serving import ServingError, check_servable
from megc_vqa.qa.io import QAFileError, read_questions
from megc_vqa.records import FrameSource
from megc_vqa.submission.files import prediction_file_name, read_jsonl
from megc_vqa.submission.report import markdown_table, write_vqa_report
from megc_vqa.submission.validate import validate_files
from megc_vqa.submission.writer import make_submission_zip, write_predictions
from megc_vqa.visual.errors import FaceSkip

log = logging.getLogger(__name__)

LOG_NAME = "answers.jsonl"
SUMMARY_NAME = "run_summary.json"
SCORES_NAME = "scores.json"
LABEL_SCORES_NAME = "label_scores.jsonl"
# Besides the prediction files and confusion matrices, what run_vqa writes in --out (nothing else there is its).
OUTPUT_NAMES = (
    LOG_NAME, SUMMARY_NAME, SCORES_NAME, LABEL_SCORES_NAME, "submission.zip", "report.md", "wrong_rows.csv",
    "report.html",
)  # fmt: skip
WRITER = "megc-vqa run_vqa"
# The dataset a MEGC test clip is from, by the prefix of its video id or question file name
# (``samm_test_SAMM-1_1``, ``me_vqa_casme3_test_to_answer.jsonl``), and its frame rate (SPEC section 4/6).
DATASET_BY_PREFIX = {"samm": "samm", "casme3": "casme3", "cas": "casme3", "casme2": "casme2", "smic": "smic"}
FPS_BY_DATASET = {"samm": 200.0, "casme3": 30.0, "casme2": 200.0, "smic": 100.0}
DEFAULT_FPS = 30.0


class RunError(MegcError, RuntimeError):
    """run_vqa cannot start: bad question files, missing frames, a model that does not load."""


def check_run_options(
    *,
    batch_size: int = 1,
    votes: int = 1,
    temperature: float = 0.7,
    image_size: int | None = None,
    fps: float | None = None,
    max_fallback_share: float = 0.0,
    fine_labels: Sequence[str] | None = None,
) -> None:
    """Every numeric option of a run, and the ``--fine-labels`` words, checked before anything loads
    (``UsageError`` naming the option)."""
    check_count("--batch-size", batch_size, BATCH_SIZE)
    check_count("--votes", votes, VOTES)
    check_number("--temperature", temperature, minimum=0)
    if votes > 1 and temperature <= 0:
        raise UsageError(
            f"--votes {votes} samples answers, which needs --temperature above 0 (got {temperature:g}); "
            "use --votes 1 for greedy decoding"
        )
    check_image_size("--image-size", image_size)
    check_fps("--fps", fps)
    check_number("--max-fallback-share", max_fallback_share, minimum=0, maximum=1)
    for label in fine_labels or ():  # constrained decoding picks one of them: an empty one is no answer
        if not label.strip() or label != label.strip():
            raise UsageError(
                f"--fine-labels: {label!r} is not a label; give words without spaces around them, e.g. "
                "--fine-labels happiness disgust"
            )


def fallback_failure(result: RunResult, max_share: float) -> str | None:
    """Why the run is a failure because too many rows fell back (``None`` when within ``max_share``)."""
    rows = result.summary["rows"]
    fallbacks = result.summary["fallback_rows"]
    if not rows or len(fallbacks) <= max_share * rows:
        return None
    reasons: dict[str, int] = {}
    for f in fallbacks:
        reason = str(f.get("reason") or "unknown")[:400]  # whole: its end says what to change
        reasons[reason] = reasons.get(reason, 0) + 1
    top = max(reasons, key=reasons.__getitem__)
    return (
        f"{len(fallbacks)} of {rows} rows ({len(fallbacks) / rows:.0%}) got a fallback answer, more than "
        f"--max-fallback-share {max_share:g}; the files were written but are not worth uploading. Most common "
        f"reason ({reasons[top]} rows): {top}. Every fallback row is in {result.summary.get('summary_file')}"
    )


@dataclass
class ClipJob:
    """One clip of one question file: its rows (file order) and frame folder."""

    file: Path
    video: str
    folder: Path
    fps: float
    rows: list[Any] = field(default_factory=list)  # megc_vqa.qa.records.QuestionRow
    dataset: str | None = None  # its fine answers are drawn from this dataset's labels
    frames_stamp: str | None = None  # its frame files (names, sizes, mtimes): a logged answer is theirs

    def key(self, row: Any) -> str:
        return f"{self.file.name}:{row.video_id}"


@dataclass
class RunResult:
    prediction_files: list[Path]
    zip_path: Path
    summary: dict[str, Any]
    scores: dict[str, Any] | None = None


def frame_folder(frames_root: Path, video: str) -> Path | None:
    """Where a test clip's frames are: ``ROOT/<video>/``, or the organisers' ``ROOT/<SAMM|CAS>/<video>/``,
    or ``ROOT/frames/<video>/`` (``megc-vqa synth-test`` output).

    ``video`` comes from a question file, so only a plain name is looked up (``read_questions`` refuses
    others) and every candidate must lie under ``frames_root`` (lexically: a root laid out with symlinks
    by its owner still works; a name written in a file cannot climb out, e.g. ``..-x`` whose prefix is
    ``..``)."""
    if not is_plain_name(video):
        return None
    prefix = video.split("-")[0]
    candidates = [frames_root / video, frames_root / "frames" / video]
    if is_plain_name(prefix):
        candidates.insert(1, frames_root / prefix / video)
    for candidate in candidates:
        if is_inside(candidate, frames_root) and candidate.is_dir():
            return candidate
    return None


def clip_dataset(path: Path, row: Any) -> str | None:
    """The dataset of a test clip from its video id's or question file's prefix (``samm_test_...``)."""
    for text in (row.video_id.lower(), path.name.lower().removeprefix("me_vqa_").removeprefix("me_lvqa_")):
        for prefix, dataset in DATASET_BY_PREFIX.items():
            # a whole word: "cas" names "CAS-1", never "casme2_..." (CASME II clips are not CAS(ME)^3's)
            if text.startswith(prefix) and not text[len(prefix) : len(prefix) + 1].isalnum():
                return dataset
    return None


def clip_fps(path: Path, row: Any) -> float:
    """Frame rate of a test clip from its dataset (:func:`clip_dataset`), else ``DEFAULT_FPS``."""
    return FPS_BY_DATASET.get(clip_dataset(path, row) or "", DEFAULT_FPS)


def plan_jobs(question_files: Sequence[Path], frames_root: Path, fps: float | None = None) -> list[ClipJob]:
    """Read the question files and find every clip's frames; one error lists everything missing."""
    if not question_files:
        raise RunError("no question files given")

    by_prediction: dict[str, list[str]] = {}
    for p in question_files:
        by_prediction.setdefault(prediction_file_name(p), []).append(str(p))
    dupes = {name: paths for name, paths in by_prediction.items() if len(paths) > 1}
    if dupes:
        raise RunError(
            "question files would give the same prediction file: "
            + "; ".join(f"{' and '.join(paths)} -> {name}" for name, paths in sorted(dupes.items()))
            + "; answer them in separate runs (separate --out folders)"
        )
    jobs: list[ClipJob] = []
    missing: dict[str, list[str]] = {}
    for path in map(Path, question_files):
        problem = input_file_problem(path, "question file")
        if problem:
            raise RunError(f"--questions {path}: {problem}")
        try:
            rows = read_questions(path)
        except QAFileError as err:
            raise RunError(str(err)) from None
        by_video: dict[str, ClipJob] = {}
        for row in rows:
            job = by_video.get(row.video)
            if job is None:
                folder = frame_folder(frames_root, row.video)
                if folder is None:
                    missing.setdefault(row.video, []).append(path.name)
                    folder = frames_root / row.video
                job = by_video[row.video] = ClipJob(
                    path, row.video, folder, fps or clip_fps(path, row), dataset=clip_dataset(path, row)
                )
                jobs.append(job)
            job.rows.append(row)
    if missing:
        listing = "\n".join(f"  {v}  (in {', '.join(sorted(set(f)))})" for v, f in missing.items())
        raise RunError(
            f"{len(missing)} video(s) have no frame folder under {frames_root} "
            f"(looked for <root>/<video>/, <root>/<SAMM|CAS>/<video>/ and <root>/frames/<video>/):\n{listing}"
        )
    return jobs


def check_ground_truth(gt_files: Sequence[str | Path], jobs: Sequence[ClipJob]) -> None:
    """Every ``--gt`` file checked before any model loads: a readable JSONL of ground-truth rows (an id, a
    question and a non-empty answer, as the scorer needs them) sharing at least one ``video_id`` with the
    question files; else :class:`InputError` naming the file and what ``--gt`` takes."""
    takes = (
        "--gt takes the ME-VQA ground truth of these questions: their rows with the answers filled (JSONL)"
    )
    asked = {row.video_id for job in jobs for row in job.rows}
    for g in map(Path, gt_files):
        problem = input_file_problem(g, "ground-truth file")
        if problem:
            raise InputError(f"--gt {g}: {problem}")
        rows, problems = parse_jsonl(read_jsonl_bytes(g), str(g))  # bounded: limits.JSONL_BYTES
        fatal = [
            p for p in problems if p.level == "error" and "BOM" not in p.message and "CRLF" not in p.message
        ]
        if fatal:
            raise InputError(f"--gt {problems_text(fatal, 3)}; {takes}")
        ids: set[str] = set()
        for row in rows:
            try:
                ids.add(ground_truth_id(row.data, row.line, ids))
            except ValueError as err:
                raise InputError(f"--gt {g}:{row.line}: {err}; {takes}") from None
        if not any(vid in asked for vid in ids):
            raise InputError(
                f"--gt {g}: none of its {len(ids)} video_id(s) (e.g. {min(ids, default='none')}) is among "
                f"the questions' (e.g. {min(asked, default='none')}): ground truth of other questions; {takes}"
            )


def clip_batches(jobs: Sequence[ClipJob], batch_rows: int) -> list[list[ClipJob]]:
    """Consecutive clips grouped so that a batch holds at most ``batch_rows`` rows (at least one clip).

    Fixed by the question files alone, so a resumed run batches exactly like the first one.
    """
    batches: list[list[ClipJob]] = []
    current: list[ClipJob] = []
    for job in jobs:
        if current and sum(len(j.rows) for j in current) + len(job.rows) > batch_rows:
            batches.append(current)
            current = []
        current.append(job)
    if current:
        batches.append(current)
    return batches


@dataclass(frozen=True)
class VisualSettings:
    """Explicit visual options; ``None`` fields keep what the training record says (else the defaults).
    An option that differs from the record is used, logged as a warning and listed in the run summary."""

    spec: str | None = None
    size: int | None = None
    face_crop: bool | None = None
    cache_dir: Path | None = None

    def apply(self, contract: Any) -> Any:
        """The ``ModelContract`` with these options applied."""
        return contract.override(spec=self.spec, size=self.size, face_crop=self.face_crop)


def _visual_inputs(job: ClipJob, contract: Any, cache_dir: Path | None) -> Any:
    from megc_vqa.visual.frames import clip_from_folder

    return contract.sample(clip_from_folder(job.folder, job.fps, dataset="test"), cache_dir)


def check_tensor_parallel(size: int, backend: str, engine: Any = None) -> None:
    """``--tensor-parallel-size``: a positive count, and only where vLLM loads the model (the transformers
    backend runs one model copy per process; a given ``engine`` is already loaded)."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise RunError(f"--tensor-parallel-size {size!r}: give a whole number of GPUs, 1 or more")
    if size > 1 and (backend != "vllm" or engine is not None):
        where = "an engine that is already loaded" if engine is not None else f"--backend {backend}"
        raise RunError(
            f"--tensor-parallel-size {size}: only vLLM splits a model over GPUs, not {where}; "
            "add --backend vllm (pip install vllm) or drop --tensor-parallel-size"
        )


def run_vqa(
    question_files: Sequence[str | Path],
    frames_root: str | Path,
    model: str | Path,
    out_dir: str | Path,
    *,
    adapter: str | Path | None = None,
    gt_files: Sequence[str | Path] = (),
    options: Any = None,
    visual: VisualSettings = VisualSettings(),
    fps: float | None = None,
    engine: Any = None,
    backend: str = "transformers",
    progress: bool = True,
    report_rows: int = 24,
    label_scores: bool = False,
    tensor_parallel_size: int = 1,
) -> RunResult:
    """Answer the question files; see the module docstring. ``options`` is an ``EngineOptions``;
    ``engine`` reuses an already loaded ``Engine`` (its model then wins over ``model``/``adapter``);
    ``backend="vllm"`` decodes with vLLM when it is installed; ``report_rows``: wrong rows of each kind
    shown in ``report.html`` (with ground truth); ``label_scores`` writes the per-row label scores file;
    ``tensor_parallel_size`` (vLLM only) splits the model over that many GPUs of this machine."""
    from megc_vqa.answering.engine import Engine, EngineOptions, contract_folders, with_contract
    from megc_vqa.models.contract import read_contract

    started = time.perf_counter()
    out = Path(out_dir)
    frames_root = Path(frames_root)
    question_files = [Path(p) for p in question_files]
    if out.exists() and not out.is_dir():
        raise RunError(f"--out {out}: is a file, not a folder; name a folder for the run's outputs")
    if options is not None:
        check_run_options(batch_size=options.batch_size, votes=options.votes, temperature=options.temperature)
    check_count("--report-rows", report_rows, REPORT_ROWS, minimum=0)
    check_tensor_parallel(tensor_parallel_size, backend, engine)
    jobs = plan_jobs(question_files, frames_root, fps)  # before any model loads
    check_ground_truth(gt_files, jobs)  # read only after answering, a wrong file would waste the run
    if visual.cache_dir is not None:
        check_folder_option(visual.cache_dir, "--visual-cache")

    # Only its own files in --out, and only those it wrote (a user's report.md or submission.zip is kept).
    claim_outputs(
        out, WRITER, [*OUTPUT_NAMES, *map(prediction_file_name, question_files)], legacy=_earlier_run
    )
    set_output_folder(out)
    if backend not in ("transformers", "vllm"):
        raise RunError(f"unknown backend {backend!r}; use transformers or vllm")
    if backend == "vllm" and engine is None:
        from megc_vqa.answering.vllm_backend import vllm_available

        if not vllm_available():
            raise RunError("--backend vllm needs the vllm package (pip install vllm)")
        if adapter is not None:  # before the model loads: vLLM drops LoRA outside the language model
            try:
                check_servable(adapter, "vllm")
            except (ServingError, FileNotFoundError) as err:
                raise RunError(str(err)) from None
    # The training record: the engine's when one is given, else read now (the engine gets the same one),
    # so the answer log's fingerprint holds the settings actually used before any model loads.
    recorded = getattr(engine, "contract", None) or read_contract(*contract_folders(model, adapter))
    contract = visual.apply(recorded)
    options = with_contract(options or (engine.options if engine is not None else EngineOptions()), contract)
    fingerprint = {
        "model": str(model),
        "adapter": str(adapter) if adapter else None,
        # By content: an adapter retrained into the same folder is another model (content_identity).
        "model_files": content_identity(model) if Path(str(model)).is_dir() else None,
        "adapter_files": content_identity(adapter),
        "options": options.fingerprint(),
        "visual": contract.visual.fingerprint(),
        "fps": fps,
        "backend": backend,
        "frames_root": str(frames_root.resolve()),
    }
    answer_log = AnswerLog(out / LOG_NAME, fingerprint)
    _forget_stale_answers(jobs, answer_log.done)
    todo = [job for job in jobs if any(job.key(r) not in answer_log.done for r in job.rows)]
    n_rows = sum(len(j.rows) for j in jobs)
    load_s = answer_s = 0.0
    answered_now = 0
    if todo:
        t0 = time.perf_counter()
        if engine is None and backend == "vllm":
            from megc_vqa.answering.vllm_backend import VllmEngine

            engine = VllmEngine(
                model, adapter, options, contract=contract, tensor_parallel_size=tensor_parallel_size
            )
        elif engine is None:
            engine = Engine.load(model, adapter, options, contract=contract)
        load_s = time.perf_counter() - t0
        t1 = time.perf_counter()
        answered_now = _answer_jobs(engine, jobs, answer_log, contract, visual.cache_dir, progress)
        answer_s = time.perf_counter() - t1
    else:
        log.info("every row is already in %s; writing files only", answer_log.path)
    return _finish(
        question_files,
        jobs,
        answer_log,
        out,
        gt_files,
        {**fingerprint, "settings": contract.summary()},
        n_rows,
        answered_now,
        {"load_s": load_s, "answer_s": answer_s, "total_s": time.perf_counter() - started},
        gallery=(contract, visual.cache_dir, report_rows),
        label_scores=label_scores,
    )


def _forget_stale_answers(jobs: list[ClipJob], done: dict[str, Any]) -> None:
    """A logged answer is resumed only for the same row (video and question) on the same frame files; the
    others are answered again (a question file or a frame folder changed since the log was written)."""
    import hashlib

    from megc_vqa.visual.samplers import source_fingerprint

    stale: list[str] = []
    for job in jobs:
        files = json.dumps(source_fingerprint(FrameSource("folder", job.folder)))
        job.frames_stamp = hashlib.sha256(files.encode()).hexdigest()[:16]
        for row in job.rows:
            entry = done.get(job.key(row))
            # The clip's dataset picks its fine labels and fps. A log from before it was logged named only
            # SAMM and CAS(ME)^3 clips (a CASME II one was taken for CAS(ME)^3, a SMIC one for none).
            legacy = job.dataset if job.dataset not in ("casme2", "smic") else "(not logged)"
            if entry is not None and (
                entry.get("video"),
                entry.get("question"),
                entry.get("frames"),
                entry.get("dataset", legacy),
            ) != (row.video, row.question, job.frames_stamp, job.dataset):
                stale.append(job.key(row))
                del done[job.key(row)]
    if stale:
        log.warning(
            "%d logged answer(s) are for another question or other frames than now (e.g. %s): answered again",
            len(stale),
            ", ".join(stale[:3]),
        )


def _earlier_run(path: Path) -> bool:
    """Whether ``path`` lies in a run_vqa output folder from before output markers: one whose
    ``answers.jsonl`` starts with the answer log's header line."""
    if not is_regular_file(path.parent / LOG_NAME):  # a FIFO there would block the read
        return False
    try:
        with open(path.parent / LOG_NAME, "rb") as handle:
            first = json.loads(handle.read(1 << 16).split(b"\n", 1)[0])
    except (OSError, ValueError):
        return False
    return isinstance(first, dict) and "_fingerprint" in first


def _answer_jobs(
    engine: Any,
    jobs: list[ClipJob],
    answer_log: Any,
    contract: Any,
    cache_dir: Path | None,
    progress: bool,
) -> int:
    from tqdm.auto import tqdm

    from megc_vqa.answering.engine import Answer

    done = answer_log.done
    remaining = sum(1 for j in jobs for r in j.rows if j.key(r) not in done)
    bar = tqdm(total=remaining, desc="answering", unit="row", disable=not progress)
    answered = 0
    # Two generate batches' worth of rows per clip batch: the engine regroups them by answer length.
    for b, batch in enumerate(clip_batches(jobs, 2 * max(1, engine.options.batch_size))):
        if all(j.key(r) in done for j in batch for r in j.rows):
            continue
        ready: list[tuple[ClipJob, Any]] = []
        failed: list[tuple[ClipJob, str]] = []
        for job in batch:
            try:
                ready.append((job, _visual_inputs(job, contract, cache_dir)))
            except FaceSkip as err:  # no usable face: a reported skip, the clip's rows get fallbacks
                log.warning("%s (%s): fallback answers", err, job.folder)
                failed.append((job, f"face pipeline skipped the clip: {err}"))
            except Exception as err:  # unreadable frames: the clip's rows get fallbacks
                log.error("%s: cannot prepare visual inputs (%s: %s)", job.folder, type(err).__name__, err)
                failed.append((job, f"visual inputs failed: {type(err).__name__}: {err}"))
        results = (
            engine.answer_clips(
                [(v, [r.question for r in job.rows]) for job, v in ready],
                sample_seed=engine.options.seed + b,
                kinds=[[r.question_type for r in job.rows] for job, _ in ready],
                datasets=[job.dataset for job, _ in ready],
            )
            if ready
            else []
        )
        entries: list[dict[str, Any]] = []
        for (job, _), (answers, changes) in zip(ready, results, strict=True):
            changed = {c.index: c.rule for c in changes}
            entries += [
                _entry(job, i, row, a, changed.get(i))
                for i, (row, a) in enumerate(zip(job.rows, answers, strict=True))
            ]
        for job, reason in failed:
            entries += [
                _entry(
                    job,
                    i,
                    row,
                    Answer(
                        fallback_answer(row.question, kind=row.question_type), fallback=True, reason=reason
                    ),
                    None,
                )
                for i, row in enumerate(job.rows)
            ]
        new = [e for e in entries if e["key"] not in done]
        answer_log.extend(new)
        answered += len(new)
        bar.update(len(new))
    bar.close()
    return answered


def _entry(job: ClipJob, index: int, row: Any, answer: Any, consistency_rule: str | None) -> dict[str, Any]:
    kind = row.question_type  # classified once, when the row was read
    return {
        "key": job.key(row),
        "file": job.file.name,
        "video_id": row.video_id,
        "video": row.video,
        "kind": kind,
        "question": row.question,
        "answer": answer.text,
        "raw": answer.raw,
        "fallback": answer.fallback,
        "reason": answer.reason,
        "samples": answer.samples,
        "consistency": consistency_rule,
        "frames": job.frames_stamp,
        "dataset": job.dataset,
        "label_logprobs": answer.scores,  # closed questions: label -> log-probability, else None
    }


def _finish(
    question_files: list[Path],
    jobs: list[ClipJob],
    answer_log: Any,
    out: Path,
    gt_files: Sequence[str | Path],
    fingerprint: dict[str, Any],
    n_rows: int,
    answered_now: int,
    timings: dict[str, float],
    gallery: tuple[Any, Path | None, int] | None = None,
    label_scores: bool = False,
) -> RunResult:
    done = answer_log.done
    entries = [done[j.key(r)] for j in jobs for r in j.rows]
    files: list[Path] = []
    for path in question_files:
        answers = {e["video_id"]: e["answer"] for e in entries if e["file"] == path.name}
        files.append(write_predictions(path, answers, out))
    zip_path = make_submission_zip(files, out / "submission.zip")
    # The validator itself, on the zip as written, exactly as `eval/validate.py --questions Q... ZIP` runs
    # it: what this run calls valid is what the validator (and the leaderboard's names) accept.
    problems = validate_files([zip_path], question_files)
    errors = [str(p) for p in problems if p.level == "error"]
    warnings = [str(p) for p in problems if p.level != "error"]
    if errors:
        log.error("the validator rejects the submission:\n  %s", "\n  ".join(errors))
    summary: dict[str, Any] = {
        "run": fingerprint,
        "rows": n_rows,
        "answered_this_run": answered_now,
        "resumed_rows": n_rows - answered_now,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
        "rows_per_s": round(answered_now / timings["answer_s"], 3) if timings["answer_s"] else None,
        "fallback_rows": [
            {
                "file": e["file"],
                "video_id": e["video_id"],
                "question": e["question"],
                "answer": e["answer"],
                "reason": e["reason"],
            }
            for e in entries
            if e["fallback"]
        ],
        "unknown_questions": [
            {"file": e["file"], "video_id": e["video_id"], "question": e["question"]}
            for e in entries
            if e["kind"] == "unknown"
        ],
        "consistency_changes": sum(1 for e in entries if e.get("consistency")),
        "prediction_files": [str(f) for f in files],
        "submission_zip": str(zip_path),
        "validator_errors": errors,
        "validator_command": "python eval/validate.py --questions "
        + " ".join(shlex.quote(str(q)) for q in question_files)
        + f" {shlex.quote(str(zip_path))}",
        "validator_warnings": warnings,
    }
    scores = None
    if gt_files:
        gt_rows = [row for g in gt_files for row in read_jsonl(g)]
        by_name = {prediction_file_name(g): g for g in gt_files}
        preds = [row for f in files for row in read_jsonl(f)]
        rows, align_problems = align(preds, gt_rows)
        scores = score_aligned(rows, problems=align_problems)
        scores["files"] = {
            "predictions": [str(f) for f in files],
            "ground_truth": [str(g) for g in by_name.values()],
        }
        atomic_write_text(out / SCORES_NAME, json.dumps(scores, indent=2, default=str) + "\n")
        report = write_vqa_report(out, rows, scores, writer=WRITER, legacy=_earlier_run, what="--out")
        if gallery is not None:
            summary["report_html"] = str(_html_report(out, rows, scores, jobs, entries, gallery))
        summary["scores"] = str(out / SCORES_NAME)
        summary["report"] = str(report["report"])
        summary["score_table"] = markdown_table(scores)
    if label_scores:
        summary["label_scores"] = str(write_label_scores(out / LABEL_SCORES_NAME, entries))
    summary["summary_file"] = str(out / SUMMARY_NAME)
    atomic_write_text(out / SUMMARY_NAME, json.dumps(summary, indent=2) + "\n")
    return RunResult(files, zip_path, summary, scores)


def _html_report(
    out: Path,
    rows: Sequence[Any],
    scores: dict[str, Any],
    jobs: Sequence[ClipJob],
    entries: Sequence[dict[str, Any]],
    gallery: tuple[Any, Path | None, int],
) -> Path:
    """``OUT/report.html``: the wrong rows with the visual inputs of their clips, sampled as this run did,
    and what the answer log knows about each (raw answer, fallback, consistency rewrite)."""
    from megc_vqa.submission.html_report import write_html_report

    contract, cache_dir, max_wrong = gallery
    clip_of = {row.video_id: i for i, job in enumerate(jobs) for row in job.rows}

    @functools.lru_cache(maxsize=16)  # a clip's wrong rows of several kinds share its images
    def clip_visuals(index: int) -> Any:
        return _visual_inputs(jobs[index], contract, cache_dir)

    def visuals(row: Any) -> Any:
        return clip_visuals(clip_of[row.video_id]) if row.video_id in clip_of else None

    details = {
        e["video_id"]: {
            "raw output": e.get("raw") if e.get("raw") != e.get("answer") else None,
            "fallback": e.get("reason") if e.get("fallback") else None,
            "consistency rewrite": e.get("consistency"),
        }
        for e in entries
    }
    settings = {**contract.visual.sample_kwargs(), "record": contract.source or "none (defaults)"}
    return write_html_report(
        out, rows, scores, writer=WRITER, what="--out", visuals=visuals, visual_settings=settings,
        max_wrong=max_wrong, details=details, sources=[f"run: {out}"],
    )  # fmt: skip


def _face_skip_count(fallback_rows: Sequence[dict[str, Any]]) -> str:
    """`` (N clip(s) skipped by the face pipeline)`` when there were any, else nothing."""
    clips = {
        (f.get("file"), f.get("video_id"))
        for f in fallback_rows
        if str(f.get("reason", "")).startswith("face pipeline skipped")
    }
    return f" ({len(clips)} clip(s) skipped by the face pipeline)" if clips else ""


def write_label_scores(path: Path, entries: Sequence[dict[str, Any]]) -> Path:
    """One JSON line per row (question-file order): its label log-probabilities and the probabilities they
    give over the row's label set; ``null`` where the row was not scored (open kinds, sampling, vLLM, or an
    answer logged before label scores existed)."""
    import math

    lines = []
    for e in entries:
        logprobs = e.get("label_logprobs")
        probs = None
        if logprobs:
            top = max(logprobs.values())
            weights = {k: math.exp(v - top) for k, v in logprobs.items()}
            total = sum(weights.values())
            probs = {k: w / total for k, w in weights.items()}
        keys = ("file", "video_id", "video", "kind", "question", "answer")
        lines.append(json.dumps({**{k: e.get(k) for k in keys}, "logprobs": logprobs, "probs": probs}))
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path


def format_summary(result: RunResult) -> str:
    """The few lines a person wants after a run."""
    s = result.summary
    used = s["run"].get("settings", {})
    visual = used.get("visual", {})
    lines = [
        f"settings: {visual.get('spec')} at {visual.get('size')} px, face {visual.get('face')}"
        f"{', registered' if visual.get('register') else ''}"
        f"{', magnified x' + format(visual.get('magnify'), 'g') if visual.get('magnify', 1.0) != 1.0 else ''}, "
        f"prompt {used.get('prompt', {}).get('visual_mode')} (record: {used.get('record')})"
        + "".join(
            f"; override {o['key']}={o['used']!r} (recorded {o['recorded']!r})"
            for o in used.get("overrides", [])
        ),
        f"answered {s['answered_this_run']} row(s) this run, {s['resumed_rows']} from the log; {s['rows']} in all",
        f"fallback answers: {len(s['fallback_rows'])}"
        f"{_face_skip_count(s['fallback_rows'])}; unknown questions (answered free-form): "
        f"{len(s['unknown_questions'])}; consistency rewrites: {s['consistency_changes']}",
    ]
    for f in s["fallback_rows"][:20]:
        lines.append(f"  fallback {f['file']} {f['video_id']}: {f['reason']} -> {f['answer']!r}")
    for u in s["unknown_questions"][:20]:
        lines.append(f"  unknown question {u['file']} {u['video_id']}: {u['question']!r}")
    if s["validator_errors"]:
        lines.append(
            "VALIDATOR ERRORS (the zip is not ready to upload):\n  " + "\n  ".join(s["validator_errors"])
        )
    else:
        lines.append(f"validator: OK ({len(s['validator_warnings'])} warning(s))")
    if "score_table" in s:
        lines += ["", s["score_table"], f"scores: {s['scores']} (BLEU/ROUGE variant (a), see scores.json)"]
        if "report_html" in s:
            lines.append(
                f"report: {s['report_html']} (open it in a browser: the wrong rows with their frames)"
            )
    lines += [
        "",
        "leaderboard files:",
        *(f"  {p}" for p in s["prediction_files"]),
        f"  upload: {s['submission_zip']}",
    ]
    return "\n".join(lines)
