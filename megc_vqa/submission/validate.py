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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from megc_vqa.labels import AU_NAMES, STR_CLASSES
from megc_vqa.metrics.strs import parse_str_csv
from megc_vqa.qa.kinds import kind_of
from megc_vqa.qa.templates import is_plural, parse_joint_answer
from megc_vqa.submission.files import STR_PREDICTION_NAME, Problem, parse_jsonl, prediction_file_name

log = logging.getLogger(__name__)

_AU_NAME_SET = frozenset(AU_NAMES.values())


def _answer_format_warnings(question: str, answer: str) -> list[str]:
    """Why an answer is off the training format (empty list when it is on it); the kinds registry says
    what each kind's answer looks like."""
    kind = kind_of(question)
    a = answer.strip()
    if kind.name == "fine":  # the test's fine vocabulary was never published: any bare word passes
        return [] if a.isalpha() and a == a.lower() else [f"fine answer {a!r} is not a bare lower-case label"]
    if kind.classification and a not in kind.labels:
        return [f"{kind.name} answer {a!r} is not one of {', '.join(kind.labels)}"]
    if kind.form == "au_list":
        unknown = [n for n in a.split(", ") if n not in _AU_NAME_SET]
        return [f"unknown AU name(s) {', '.join(map(repr, unknown))}"] if unknown else []
    if kind.form == "joint":
        parsed = parse_joint_answer(a)
        if parsed is None:
            return ["joint answer does not follow the template 'The action unit(s) present ...'"]
        if a.startswith("The action units") != is_plural(question):
            return ["joint answer: singular/plural wording does not match the question"]
    if kind.form == "count" and not a.isdigit():
        return [f"count answer {a!r} is not a bare integer"]
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
            missing, extra = sorted(expected_keys - keys), sorted(keys - expected_keys)
            parts = ([f"missing key(s) {', '.join(missing)}"] if missing else []) + (
                [f"unexpected key(s) {', '.join(extra)}"] if extra else []
            )
            problems.append(
                Problem(name, line, "; ".join(parts) + f" (expected {', '.join(sorted(expected_keys))})")
            )
        vid = obj.get("video_id")
        if not isinstance(vid, str):
            problems.append(Problem(name, line, "no string video_id"))
            continue
        if vid in first_line:
            problems.append(
                Problem(name, line, f"duplicated video_id {vid} (first on line {first_line[vid]})")
            )
            continue
        first_line[vid] = line
        if vid not in by_id:
            problems.append(Problem(name, line, f"extra video_id {vid}: not in the question file"))
            continue
        order.append(vid)
        _, question = by_id[vid]
        for key in ("video", "question"):
            if key in question and key in obj and obj[key] != question[key]:
                problems.append(
                    Problem(
                        name, line, f"{key} {obj[key]!r} differs from the question file's {question[key]!r}"
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
    expected_order = [vid for vid in by_id if vid in set(order)]
    for got, want in zip(order, expected_order, strict=True):
        if got != want:
            problems.append(Problem(name, first_line[got], f"rows out of order: {got} here, {want} expected"))
            break
    return sorted(problems, key=lambda p: (p.line, p.message))


def validate_str_bytes(data: bytes, name: str, emotions: Iterable[str] = STR_CLASSES) -> list[Problem]:
    """Check an STR CSV: header, integer frames, onset <= offset, known emotions."""
    intervals, problems = parse_str_csv(data, name, emotions=emotions)
    if not problems and not intervals:
        problems.append(Problem(name, 0, "no intervals: the file has a header only", "warning"))
    for i in intervals:
        if i.onset < 0:
            problems.append(Problem(name, i.line, f"negative onset {i.onset}", "warning"))
    return problems


def split_questions(paths: Sequence[str | os.PathLike[str]]) -> tuple[list[str], list[str]]:
    """Tell question files from prediction files in one list (for ``--questions Q... FILES``, where the
    option swallows every path): a question file is a JSONL file whose answers are all empty."""
    questions: list[str] = []
    others: list[str] = []
    for path in map(str, paths):
        if path.endswith(".jsonl") and Path(path).is_file():
            rows, _ = parse_jsonl(Path(path).read_bytes(), path)
            if rows and all(not str(r.data.get("answer", "")).strip() for r in rows):
                questions.append(path)
                continue
        others.append(path)
    return questions, others


def _load_questions(
    question_paths: Iterable[str | os.PathLike[str]],
) -> dict[str, tuple[str, list[dict[str, Any]]]]:
    """Prediction file name -> (question path, question rows)."""
    out: dict[str, tuple[str, list[dict[str, Any]]]] = {}
    for path in question_paths:
        rows, problems = parse_jsonl(Path(path).read_bytes(), str(path))
        fatal = [p for p in problems if "BOM" not in p.message and "CRLF" not in p.message]
        if fatal:
            raise ValueError("question file unreadable: " + "; ".join(map(str, fatal)))
        out[prediction_file_name(path)] = (str(path), [r.data for r in rows])
    return out


def validate_files(
    files: Sequence[str | os.PathLike[str]],
    question_paths: Sequence[str | os.PathLike[str]],
    *,
    emotions: Iterable[str] = STR_CLASSES,
    check_format: bool = True,
) -> list[Problem]:
    """Validate prediction files and/or submission zips against the question files.

    Files are matched to question files by their official name (``prediction_file_name``). A single loose
    file with another name is still checked against a single remaining question file, and its name is
    reported. ``.csv`` files are STR predictions. Inside a zip every file must sit at the archive root.
    """
    questions = _load_questions(question_paths)
    entries: list[tuple[str, str, bytes, bool]] = []  # (display name, base name, data, from zip)
    problems: list[Problem] = []
    for f in files:
        path = Path(f)
        if not path.is_file():
            problems.append(Problem(str(path), 0, "no such file"))
            continue
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as zf:
                for info in zf.infolist():
                    if info.is_dir():
                        continue
                    display = f"{path.name}:{info.filename}"
                    if "/" in info.filename.strip("/"):
                        problems.append(
                            Problem(display, 0, "file is in a folder: put it at the archive root")
                        )
                    entries.append((display, Path(info.filename).name, zf.read(info), True))
            if not any(e[3] and e[0].startswith(f"{path.name}:") for e in entries):
                problems.append(Problem(str(path), 0, "the zip is empty"))
        else:
            entries.append((str(path), path.name, path.read_bytes(), False))
    matched: set[str] = set()
    unmatched: list[tuple[str, str, bytes, bool]] = []
    for display, base, data, in_zip in entries:
        if base.endswith(".csv"):
            if base != STR_PREDICTION_NAME:
                level = "error" if in_zip else "warning"
                problems.append(Problem(display, 0, f"STR file name should be {STR_PREDICTION_NAME}", level))
            problems.extend(validate_str_bytes(data, display, emotions))
        elif base in questions:
            matched.add(base)
            problems.extend(
                validate_prediction_bytes(data, display, questions[base][1], check_format=check_format)
            )
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
            expected = ", ".join(sorted(questions)) or "an official prediction file name"
            problems.append(Problem(display, 0, f"{where} {base!r}: expected one of {expected}"))
    for name, (qpath, _) in questions.items():
        if name not in matched:
            problems.append(Problem(name, 0, f"no prediction file for {qpath} (expected the name {name})"))
    return problems
