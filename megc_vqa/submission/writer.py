"""Writers for leaderboard files: prediction JSONL files under their official names, the STR CSV and
``submission.zip``. Every write is atomic (temporary file, then rename)."""

from __future__ import annotations

import csv
import io
import os
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from megc_vqa.metrics.strs import REQUIRED_COLUMNS, Interval
from megc_vqa.qa.io import read_questions
from megc_vqa.submission.files import (
    SUBMISSION_ZIP_NAME,
    atomic_write_bytes,
    prediction_file_name,
    write_jsonl,
)


def fill_answers(
    question_rows: Sequence[Mapping[str, Any]], answers: Mapping[str, str], *, allow_missing: bool = False
) -> list[dict[str, Any]]:
    """The question rows, same order and keys, with ``answer`` taken from ``answers[video_id]``.

    Raises ``ValueError`` naming the unanswered ids (or the ids answered with an empty string) unless
    ``allow_missing``, which leaves their answer empty (for a partial run that will be resumed).
    """
    out: list[dict[str, Any]] = []
    missing: list[str] = []
    for row in question_rows:
        vid = str(row["video_id"])
        answer = answers.get(vid, "")
        if not isinstance(answer, str):
            raise ValueError(f"answer for {vid} is a {type(answer).__name__}, not a string")
        if not answer.strip():
            missing.append(vid)
        out.append({**row, "answer": answer.strip()})
    if missing and not allow_missing:
        raise ValueError(
            f"{len(missing)} question(s) unanswered: {', '.join(missing[:10])}"
            + (" ..." if len(missing) > 10 else "")
        )
    return out


def write_predictions(
    question_path: str | os.PathLike[str],
    answers: Mapping[str, str],
    out_dir: str | os.PathLike[str],
    *,
    allow_missing: bool = False,
) -> Path:
    """Write ``out_dir/<official prediction name>`` for a question file (read by the one reader of question
    files, :func:`megc_vqa.qa.io.read_questions`); returns its path."""
    questions = [row.to_json() for row in read_questions(question_path)]
    rows = fill_answers(questions, answers, allow_missing=allow_missing)
    return write_jsonl(Path(out_dir) / prediction_file_name(question_path), rows)


def write_str_csv(intervals: Iterable[Interval | Mapping[str, Any]], path: str | os.PathLike[str]) -> Path:
    """Write an STR prediction CSV (``subject,video,onset,offset,emotion``), checking each interval."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(REQUIRED_COLUMNS)
    for n, item in enumerate(intervals, start=1):
        row = {c: getattr(item, c) for c in REQUIRED_COLUMNS} if isinstance(item, Interval) else dict(item)
        onset, offset = int(row["onset"]), int(row["offset"])
        if onset > offset:
            raise ValueError(
                f"interval {n} ({row['subject']}/{row['video']}): onset {onset} after offset {offset}"
            )
        writer.writerow([row["subject"], row["video"], onset, offset, str(row["emotion"]).strip().lower()])
    return atomic_write_bytes(path, buffer.getvalue().encode("utf-8"))


def make_submission_zip(
    files: Sequence[str | os.PathLike[str]], zip_path: str | os.PathLike[str] | None = None
) -> Path:
    """Zip the files at the archive root (default ``submission.zip`` beside the first file)."""
    if not files:
        raise ValueError("no files to zip")
    paths = [Path(f) for f in files]
    names = [p.name for p in paths]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise ValueError(f"two files share the name {', '.join(sorted(dupes))}: the zip root can hold one")
    target = Path(zip_path) if zip_path else paths[0].parent / SUBMISSION_ZIP_NAME
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in paths:
            zf.write(p, arcname=p.name)
    return atomic_write_bytes(target, buffer.getvalue())
