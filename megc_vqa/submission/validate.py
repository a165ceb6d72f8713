"""The submission validator: checks prediction files against the organisers' question files before upload.

Errors (the leaderboard would reject or mis-score the file): wrong file name, BOM, CRLF, an empty file, a
line that is not one JSON object, missing / extra / duplicated ``video_id``, rows out of order, keys other
than the question file's, a changed ``video`` or ``question``, an answer that is not a non-empty string;
for the STR CSV: missing columns, non-integer frames, onset after offset, an unknown emotion.
Warnings (the file is accepted but will probably score badly): answers that are not in the training
format (``Negative.`` instead of ``negative``, unknown AU names, a joint answer off its template).
"""

from __future__ import annotations

import logging
import os
import zipfile
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from megc_vqa.annotations.long_videos import FpsPolicy, discover_videos
from megc_vqa.errors import InputError, cut
from megc_vqa.fileio import TOLERATED_PROBLEMS, check_input_file, input_file_problem, read_jsonl_bytes
from megc_vqa.frame_names import frame_number, is_image
from megc_vqa.labels import AU_NAMES, STR_CLASSES
from megc_vqa.limits import ZIP_MEMBER_BYTES, ZIP_MEMBERS, ZIP_TOTAL_BYTES, read_stream_bounded
from megc_vqa.metrics.strs import parse_str_csv, read_intervals
from megc_vqa.qa.io import QAFileError, read_questions
from megc_vqa.qa.kinds import kind_of
from megc_vqa.qa.templates import is_plural, parse_joint_answer
from megc_vqa.submission.files import (
    OFFICIAL_PREDICTION_NAMES,
    PREDICTION_SUFFIX,
    STR_PREDICTION_NAME,
    Problem,
    parse_jsonl,
    prediction_file_name,
)

log = logging.getLogger(__name__)

_AU_NAME_SET = frozenset(AU_NAMES.values())
# Longer answers are reported (cut): even the free-form analysis answer is a few sentences.
LONG_ANSWER = 4000
# The keys of every organiser question row, hence of every prediction row.
QUESTION_KEYS = frozenset({"video_id", "video", "question", "answer"})


def _id(value: object) -> str:
    """A video_id as it is, or cut when it is too long to be one."""
    text = str(value)
    return text if len(text) <= 80 else cut(text, 60)


def _key_problem(
    name: str, line: int, keys: set[str], expected: set[str], cut_extra: bool = False
) -> Problem:
    """A row whose keys are not the expected ones: what is missing, what is extra (cut to 120 characters
    with ``cut_extra``, for files read without their question file), what was expected."""
    missing, extra = sorted(expected - keys), sorted(keys - expected)
    extra_text = cut(", ".join(extra), 120) if cut_extra else ", ".join(extra)
    parts = ([f"missing key(s) {', '.join(missing)}"] if missing else []) + (
        [f"unexpected key(s) {extra_text}"] if extra else []
    )
    return Problem(name, line, "; ".join(parts) + f" (expected {', '.join(sorted(expected))})")


def _answer_format_warnings(question: str, answer: str) -> list[str]:
    """Why an answer is off the training format (empty list when it is on it); the kinds registry says
    what each kind's answer looks like."""
    kind = kind_of(question)
    a = answer.strip()
    if len(a) > LONG_ANSWER:
        return [f"answer is {len(a):,} characters long: {cut(a, 60)}"]
    if kind.classification and not kind.labels_published:  # e.g. fine: any bare lower-case word passes
        return (
            []
            if a.isalpha() and a == a.lower()
            else [f"{kind.name} answer {cut(a, 60)} is not a bare lower-case label"]
        )
    if kind.classification and a not in kind.labels:
        return [f"{kind.name} answer {cut(a, 60)} is not one of {', '.join(kind.labels)}"]
    if kind.form == "au_list":
        unknown = [n for n in a.split(", ") if n not in (kind.labels or _AU_NAME_SET)]
        return [f"unknown AU name(s) {cut(', '.join(map(repr, unknown)), 200)}"] if unknown else []
    if kind.form == "joint":
        parsed = parse_joint_answer(a)
        if parsed is None:
            return ["joint answer does not follow the template 'The action unit(s) present ...'"]
        if a.startswith("The action units") != is_plural(question):
            return ["joint answer: singular/plural wording does not match the question"]
    if kind.form == "count" and not a.isdigit():
        return [f"count answer {cut(a, 60)} is not a bare integer"]
    return []


def validate_prediction_bytes(
    data: bytes, name: str, question_rows: Sequence[Mapping[str, Any]], *, check_format: bool = True
) -> list[Problem]:
    """Check one prediction file's content against its question file's rows (already parsed).

    Every problem carries the prediction file's line number; a missing row names the question file line.
    """
    rows, problems = parse_jsonl(data, name)
    expected_keys = set(question_rows[0]) if question_rows else {"video_id", "video", "question", "answer"}
    by_id = {str(q.get("video_id")): (i, q) for i, q in enumerate(question_rows, start=1)}
    first_line: dict[str, int] = {}
    order: list[str] = []
    for row in rows:
        obj, line = row.data, row.line
        keys = set(obj)
        if keys != expected_keys:
            problems.append(_key_problem(name, line, keys, expected_keys))
        vid = obj.get("video_id")
        if not isinstance(vid, str):
            problems.append(Problem(name, line, "no string video_id"))
            continue
        if len(vid) > 200:
            problems.append(Problem(name, line, f"video_id {cut(vid, 60)} is not a question id"))
            continue
        if vid in first_line:
            problems.append(
                Problem(name, line, f"duplicated video_id {vid} (first on line {first_line[vid]})")
            )
            continue
        first_line[vid] = line
        if vid not in by_id:
            problems.append(Problem(name, line, f"extra video_id {_id(vid)}: not in the question file"))
            continue
        order.append(vid)
        _, question = by_id[vid]
        for key in ("video", "question"):
            if key in question and key in obj and obj[key] != question[key]:
                problems.append(
                    Problem(
                        name,
                        line,
                        f"{key} {cut(obj[key], 80)} differs from the question file's {cut(question[key], 80)}",
                    )
                )
        answer = obj.get("answer")
        if not isinstance(answer, str):
            problems.append(Problem(name, line, f"answer must be a string, got {type(answer).__name__}"))
        elif not answer.strip():
            problems.append(Problem(name, line, f"empty answer for {vid}"))
        elif check_format:
            q = str(question.get("question", obj.get("question", "")))
            problems.extend(Problem(name, line, w, "warning") for w in _answer_format_warnings(q, answer))
    for vid, (qline, _) in by_id.items():
        if vid not in first_line:
            problems.append(Problem(name, 0, f"missing video_id {vid} (question file line {qline})"))
    present = set(order)  # once: a set built per question made this quadratic in the rows
    expected_order = [vid for vid in by_id if vid in present]
    for got, want in zip(order, expected_order, strict=True):
        if got != want:
            problems.append(Problem(name, first_line[got], f"rows out of order: {got} here, {want} expected"))
            break
    return sorted(problems, key=lambda p: (p.line, p.message))


def validate_str_bytes(
    data: bytes,
    name: str,
    emotions: Iterable[str] = STR_CLASSES,
    videos: Mapping[tuple[str, str], tuple[int, int] | None] | None = None,
) -> list[Problem]:
    """Check an STR prediction CSV with the scorer's own reader (``parse_str_csv(role="prediction")``):
    exactly the official columns, integer frames in range, onset <= offset, known emotions, no duplicated
    interval and, with ``videos``, known videos and frames inside them."""
    intervals, problems = parse_str_csv(data, name, emotions=emotions, role="prediction", videos=videos)
    if not problems and not intervals:
        problems.append(Problem(name, 0, "no intervals: the file has a header only", "warning"))
    return problems


def str_videos(path: str | os.PathLike[str]) -> dict[tuple[str, str], tuple[int, int] | None]:
    """The known long videos for checking an STR CSV: a folder of ``<subject>_<video>/`` frame folders (with
    each one's first and last frame) or a ground-truth STR CSV (videos only)."""
    path = Path(path)
    if path.is_file():
        return {i.key: None for i in read_intervals(path)}
    if not path.is_dir():
        raise FileNotFoundError(f"--str-videos {path}: no such folder or STR CSV")
    out: dict[tuple[str, str], tuple[int, int] | None] = {}
    # The videos named as run_str names them (its videos.json sidecar, else the folder's name with the
    # subject before its first "_"), and as a ground truth may (<subject>_<video> folders: the video after
    # the "_"; run_str matches both), so that run_str's own CSV checks clean. The fps plays no part here.
    for job in discover_videos(path, FpsPolicy(fps=1.0)):
        folder = job.source.path
        numbers = [n for f in os.listdir(folder) if is_image(f) and (n := frame_number(f)) is not None]
        frames = (min(numbers), max(numbers)) if numbers else None
        out[(job.subject, job.video)] = frames
        subject, sep, video = folder.name.partition("_")
        if sep and subject == job.subject:
            out.setdefault((subject, video), frames)
    return out


def check_prediction_file(data: bytes, name: str, *, check_format: bool = True) -> list[Problem]:
    """A prediction file checked without its question file: the format, the official keys, one string
    ``video_id`` per row, unique ids, non-empty string answers, and the answer-format warnings."""
    rows, problems = parse_jsonl(data, name)
    seen: dict[str, int] = {}
    for row in rows:
        obj, line = row.data, row.line
        keys = set(obj)
        if keys != QUESTION_KEYS:
            problems.append(_key_problem(name, line, keys, QUESTION_KEYS, cut_extra=True))
        vid, answer = obj.get("video_id"), obj.get("answer")
        if not isinstance(vid, str) or not vid.strip():
            problems.append(Problem(name, line, "no string video_id"))
        elif vid in seen:
            problems.append(
                Problem(name, line, f"duplicated video_id {_id(vid)} (first on line {seen[vid]})")
            )
        else:
            seen[vid] = line
        question = obj.get("question")
        # the leaderboard matches rows by question too: an empty one answers nothing it asked
        if "question" in obj and not isinstance(question, str):
            problems.append(Problem(name, line, f"question must be a string, got {type(question).__name__}"))
        elif "question" in obj and not question.strip():
            problems.append(
                Problem(name, line, f"empty question for {_id(vid)}: keep the organisers' question")
            )
        if not isinstance(answer, str):
            problems.append(Problem(name, line, f"answer must be a string, got {type(answer).__name__}"))
        elif not answer.strip():
            problems.append(Problem(name, line, f"empty answer for {_id(vid)}"))
        elif check_format and isinstance(obj.get("question"), str):
            problems.extend(
                Problem(name, line, w, "warning") for w in _answer_format_warnings(obj["question"], answer)
            )
    return sorted(problems, key=lambda p: (p.line, p.message))


def _zip_entries(
    path: Path, needed: Callable[[str], bool] = lambda base: True
) -> tuple[list[tuple[str, str, bytes, bool]], list[Problem]]:
    """(display name, base name, bytes, True) of every file in a submission zip, and the zip's problems:
    not a zip / corrupt, empty, a member in a folder, the same member twice, and the limits of
    :mod:`megc_vqa.limits` (member count, unpacked size per member and in all), each named.

    Only members whose base name ``needed`` accepts are unpacked (the others are judged by their name
    alone, with empty bytes). The work is linear in the members (names are counted once), and no member is
    unpacked past its limit:
    the declared size is checked first and the read itself stops one chunk past the limit, so a member
    whose header lies is caught as well."""
    entries: list[tuple[str, str, bytes, bool]] = []
    problems: list[Problem] = []
    if path.stat().st_size == 0:
        return [], [Problem(str(path), 0, "empty file (0 bytes), not a zip archive")]
    member_cap, total_cap = ZIP_MEMBER_BYTES.value, ZIP_TOTAL_BYTES.value
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            if len(infos) > ZIP_MEMBERS.value:
                message = f"the zip holds {len(infos):,} members, over the {ZIP_MEMBERS.hint()}"
                return [], [Problem(str(path), 0, message)]
            names = [i.filename for i in infos if not i.is_dir()]
            count = Counter(names)
            folders_of: dict[str, set[str]] = {}
            for name in names:
                folders_of.setdefault(Path(name).name, set()).add(name)
            reported: set[str] = set()
            total = 0
            for info in infos:
                if info.is_dir():
                    continue
                display = f"{path.name}:{info.filename}"
                folder = info.filename.strip("/").rpartition("/")[0]
                if folder:
                    problems.append(
                        Problem(
                            display,
                            0,
                            f"file is in a folder ({folder}/) inside the zip: put it at the archive root",
                        )
                    )
                if count[info.filename] > 1:
                    if info.filename not in reported:
                        reported.add(info.filename)
                        problems.append(
                            Problem(
                                display,
                                0,
                                f"the zip holds {count[info.filename]} members named "
                                f"{info.filename}: keep one (the leaderboard reads only one of them)",
                            )
                        )
                    continue
                base = Path(info.filename).name
                if len(folders_of[base]) > 1:
                    problems.append(
                        Problem(display, 0, f"two members of the zip are named {base} (in different folders)")
                    )
                if info.flag_bits & 0x1:  # zipfile would raise a bare RuntimeError on open
                    problems.append(
                        Problem(display, 0, "the member is encrypted: zip it again without a password")
                    )
                    continue
                if info.file_size > member_cap:
                    size = f"{info.file_size:,} bytes"
                    problems.append(
                        Problem(display, 0, f"unpacks to {size}, over the {ZIP_MEMBER_BYTES.hint()}")
                    )
                    continue
                if total + info.file_size > total_cap:
                    problems.append(
                        Problem(
                            str(path),
                            0,
                            f"members unpack to over {total_cap:,} bytes: the {ZIP_TOTAL_BYTES.hint()}",
                        )
                    )
                    break
                if not needed(base):  # a name the leaderboard rejects: its content is never read
                    entries.append((display, base, b"", True))
                    continue
                cap = min(member_cap, total_cap - total)
                with zf.open(info) as member:
                    data = read_stream_bounded(member, cap)
                if data is None:  # more than its header declared (zipfile stops there; belt and braces)
                    limit = ZIP_MEMBER_BYTES if cap == member_cap else ZIP_TOTAL_BYTES
                    problems.append(Problem(display, 0, f"unpacks past {cap:,} bytes: the {limit.hint()}"))
                    break
                total += len(data)
                entries.append((display, base, data, True))
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, NotImplementedError) as err:
        return [], [Problem(str(path), 0, f"not a readable zip archive (corrupt or truncated: {err})")]
    if not names:
        problems.append(Problem(str(path), 0, "the zip is empty: it holds no file"))
    return entries, problems


def split_questions(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
    """Tell question files from prediction files in one list (for ``--questions Q... FILES``, where the
    option swallows every path): a question file is a JSONL file whose answers are all empty."""
    questions: list[str] = []
    others: list[str] = []
    for path in map(str, paths):
        if path.endswith(".jsonl") and Path(path).is_file():
            rows, _ = parse_jsonl(read_jsonl_bytes(path), path)
            if rows and all(not str(r.data.get("answer", "")).strip() for r in rows):
                questions.append(path)
                continue
        others.append(path)
    return questions, others


def _load_questions(
    question_paths: Iterable[str | os.PathLike[str]],
) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """Prediction file name -> (question path, question rows), read by run_vqa's own reader
    (:func:`megc_vqa.qa.io.read_questions`): both accept and refuse the same question files."""
    out: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for path in question_paths:
        check_input_file(path, "question file", option="--questions")
        try:
            rows = read_questions(path)
        except QAFileError as err:
            raise InputError(f"question file unreadable: {err}") from None
        out[prediction_file_name(path)] = (str(path), [r.to_json() for r in rows])
    return out


def validate_files(
    files: Sequence[str | os.PathLike[str]],
    question_paths: Sequence[str | os.PathLike[str]],
    *,
    emotions: Iterable[str] = STR_CLASSES,
    check_format: bool = True,
    videos: Mapping[tuple[str, str], tuple[int, int] | None] | None = None,
) -> list[Problem]:
    """Validate prediction files and/or submission zips against the question files (without any, the
    names and formats only: see :func:`check_prediction_file`).

    Files are matched to question files by their official name (``prediction_file_name``). A single loose
    file with another name is still checked against a single remaining question file, and its name is
    reported. ``.csv`` files are STR predictions. Inside a zip (what is uploaded) every file must sit at the
    archive root under a leaderboard name, whatever the question files are called.
    """
    questions = _load_questions(question_paths)
    official = set(OFFICIAL_PREDICTION_NAMES.values())

    def needed(base: str) -> bool:
        """Whether a zip member's content is checked (what the matching below reads); the rest are
        reported by name only."""
        return base.endswith(".csv") or base in questions or (not questions and base in official)

    entries: list[tuple[str, str, bytes, bool]] = []  # (display name, base name, data, from zip)
    problems: list[Problem] = []
    for f in files:
        path = Path(f)
        problem = input_file_problem(path, suffix=".jsonl, .csv or .zip")
        if problem:
            problems.append(Problem(str(path), 0, problem))
            continue
        if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            zip_entries, zip_problems = _zip_entries(path, needed)
            entries += zip_entries
            problems += zip_problems
        else:
            try:
                entries.append((str(path), path.name, read_jsonl_bytes(path), False))
            except InputError as err:  # over the size limit: named, and the file is not read
                problems.append(Problem(str(path), 0, str(err).removeprefix(f"{path}: ")))
    matched: set[str] = set()
    unmatched: list[tuple[str, str, bytes, bool]] = []
    for display, base, data, in_zip in entries:
        if base.endswith(".csv"):
            if base != STR_PREDICTION_NAME:
                level = "error" if in_zip else "warning"
                problems.append(Problem(display, 0, f"STR file name should be {STR_PREDICTION_NAME}", level))
            problems.extend(validate_str_bytes(data, display, emotions, videos))
        elif base in questions:
            matched.add(base)
            if in_zip and base not in official:
                # The zip is what gets uploaded: its names are the leaderboard's whatever the question files
                # were called here, so a zip is judged alike with or without --questions (and by run_vqa).
                problems.append(
                    Problem(
                        display,
                        0,
                        f"{cut(base, 100)} is not a leaderboard file name (the leaderboard reads "
                        f"{', '.join(sorted(official))}): it comes from the question file "
                        f"{Path(questions[base][0]).name!r}; answer the organisers' question file under its "
                        "own name (a renamed copy, such as a browser's 'NAME (1).jsonl', renames the prediction)",
                    )
                )
            problems.extend(
                validate_prediction_bytes(data, display, questions[base][1], check_format=check_format)
            )
        elif not questions and (base in official or (not in_zip and base.endswith(PREDICTION_SUFFIX))):
            # No question files: check the name and the format; rows are checked against nothing.
            problems.extend(check_prediction_file(data, display, check_format=check_format))
        else:
            unmatched.append((display, base, data, in_zip))
    remaining = [name for name in questions if name not in matched]
    for display, base, data, in_zip in unmatched:
        where = "wrong file name in zip" if in_zip else "wrong file name"
        if len(unmatched) == 1 and len(remaining) == 1 and not in_zip:
            problems.append(Problem(display, 0, f"{where} {base!r}: expected {remaining[0]!r}"))
            problems.extend(
                validate_prediction_bytes(
                    data, display, questions[remaining[0]][1], check_format=check_format
                )
            )
            matched.add(remaining[0])
        else:
            expected = ", ".join(sorted(questions or official))
            problems.append(Problem(display, 0, f"{where} {cut(base, 100)}: expected one of {expected}"))
    for name, (qpath, _) in questions.items():
        if name not in matched:
            problems.append(Problem(name, 0, f"no prediction file for {qpath} (expected the name {name})"))
    return problems


def check_scored_predictions(
    pred_paths: Sequence[str | os.PathLike[str]], gt_paths: Sequence[str | os.PathLike[str]]
) -> list[Problem]:
    """What the validator rejects in prediction files about to be scored against ground truth (the ground
    truth standing in for the question files). Rows the prediction lacks are left out: the scorer counts
    them wrong, as documented."""
    gts = {str(g): [r.data for r in parse_jsonl(read_jsonl_bytes(g), str(g))[0]] for g in gt_paths}
    by_name = {prediction_file_name(g): rows for g, rows in gts.items()}
    all_rows = [row for rows in gts.values() for row in rows]
    problems: list[Problem] = []
    for pred in map(Path, pred_paths):
        rows = by_name.get(pred.name) or (next(iter(gts.values())) if len(gts) == 1 else all_rows)
        questions = [{k: v for k, v in r.items() if k in QUESTION_KEYS} for r in rows]
        problems += [
            p
            for p in validate_prediction_bytes(
                read_jsonl_bytes(pred), str(pred), questions, check_format=False
            )
            if p.level == "error" and not p.message.startswith("missing video_id")
        ]
    return problems


def _unscorable_rows(data: bytes, name: str, truth: Mapping[str, Mapping[str, Any]]) -> list[Problem]:
    """What makes a prediction file not well-formed for scoring (each problem with its line): a line that is
    not one JSON object, a row without a string ``video_id`` or without an ``answer`` that is a string or
    ``null``, the same question answered twice (both lines named), a ``question`` other than the ground
    truth's for that id."""
    rows, parsed = parse_jsonl(data, name)
    problems = [p for p in parsed if not p.message.startswith(TOLERATED_PROBLEMS)]
    first_line: dict[str, int] = {}
    for row in rows:
        obj, line = row.data, row.line
        vid = obj.get("video_id")
        if not isinstance(vid, str) or not vid.strip():
            problems.append(
                Problem(name, line, "no string video_id: the row cannot be matched to a question")
            )
        elif vid in first_line:
            message = f"video_id {_id(vid)} answered twice, on lines {first_line[vid]} and {line}: keep one"
            problems.append(Problem(name, line, message))
            continue
        else:
            first_line[vid] = line
        if "answer" not in obj:
            problems.append(Problem(name, line, "no answer key"))
        elif obj["answer"] is not None and not isinstance(obj["answer"], str):
            problems.append(
                Problem(name, line, f"answer must be a string, got {type(obj['answer']).__name__}")
            )
        gt = truth.get(vid) if isinstance(vid, str) else None
        if gt is not None and isinstance(obj.get("question"), str) and obj["question"] != gt.get("question"):
            message = (
                f"question {cut(obj['question'], 80)} differs from the ground truth's "
                f"{cut(str(gt.get('question')), 80)} for {_id(vid)}: the predictions answer another file"
            )
            problems.append(Problem(name, line, message))
    return problems


def check_predictions_for_scoring(
    pred_paths: Sequence[str | os.PathLike[str]],
    gt_paths: Sequence[str | os.PathLike[str]],
    *,
    strict: bool = False,
) -> tuple[list[Problem], list[Problem]]:
    """(refused, reported) for prediction files about to be scored against ground truth.

    Refused: files that are not well-formed (:func:`_unscorable_rows`); with ``strict``, also everything
    the validator rejects for a leaderboard upload (:func:`check_scored_predictions`). Reported, and
    scored all the same: the validator's other errors (an empty answer, a row with no ground truth, rows
    out of order, keys other than the question file's), which the leaderboard would still reject."""
    truth: dict[str, Mapping[str, Any]] = {}
    for g in gt_paths:
        for row in parse_jsonl(read_jsonl_bytes(g), str(g))[0]:
            vid = row.data.get("video_id", row.data.get("id"))
            truth.setdefault(str(vid), row.data)
    refused = [
        p
        for pred in map(Path, pred_paths)
        for p in _unscorable_rows(read_jsonl_bytes(pred), str(pred), truth)
    ]
    upload = check_scored_predictions(pred_paths, gt_paths)
    if strict:
        seen = {(p.file, p.line, p.message) for p in refused}
        refused += [p for p in upload if (p.file, p.line, p.message) not in seen]
        return refused, []
    return refused, upload
