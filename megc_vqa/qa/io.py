"""Reading and writing MEGC QA files.

- ``write_qa_jsonl`` / ``read_qa_jsonl``: the project's ``qa.jsonl`` (official training schema + extras).
- ``read_training_file``: the organisers' ``me_vqa_samm_casme2_smic(_v2).jsonl``, mapped onto the user's
  own dataset folders through the annotation loaders.
- ``read_questions``: an organiser ``*_to_answer.jsonl`` question file.
- ``save_as_dataset``: the records as a Hugging Face ``datasets`` dataset on disk.

Files are written the way the organisers distribute theirs: UTF-8, one compact JSON object per line
(``{"id":"...","dataset":"..."}``), non-ASCII kept as is. Readers accept a UTF-8 BOM, CRLF line ends
and blank lines, and name the file and line of anything they cannot use.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from megc_vqa import annotations
from megc_vqa.errors import InputError, MegcError
from megc_vqa.fileio import (
    TOLERATED_PROBLEMS,
    Problem,
    atomic_folder,
    atomic_write_text,
    input_file_problem,
    is_plain_name,
    parse_jsonl,
    read_jsonl_bytes,
)
from megc_vqa.qa.mapping import OfficialRow, map_rows
from megc_vqa.qa.records import EXTRA_KEYS, OFFICIAL_KEYS, QARecord, QuestionRow

log = logging.getLogger(__name__)


# parse_jsonl problems that a reader of QA files lets pass (an empty file is an empty list here).
_TOLERATED = TOLERATED_PROBLEMS


class QAFileError(MegcError, ValueError):
    """A QA or question file that cannot be used; the message names the file and line."""


def dumps_row(row: dict[str, Any]) -> str:
    """One row in the organisers' compact style."""
    return json.dumps(row, ensure_ascii=False, separators=(",", ":"))


def write_jsonl_atomic(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as compact JSON lines via a temporary file renamed over ``path``: a crash or Ctrl-C
    mid-write leaves the previous file (if any) untouched."""
    return atomic_write_text(path, "".join(dumps_row(row) + "\n" for row in rows))


def write_qa_jsonl(records: Iterable[QARecord], path: str | Path, *, relative_sources: bool = False) -> Path:
    """Write QA records, official keys first, one compact JSON object per line (atomically).

    ``relative_sources``: write each frame source relative to the file's folder (``read_qa_jsonl``
    resolves it back), so the file works from any working folder and moves with its data.
    """
    folder = os.path.abspath(Path(path).parent)

    def row(record: QARecord) -> dict[str, Any]:
        data = record.to_json()
        if relative_sources and record.source:
            try:
                data["source"] = Path(os.path.relpath(os.path.abspath(record.source), folder)).as_posix()
            except ValueError:  # another drive (Windows): keep it absolute
                data["source"] = os.path.abspath(record.source)
        return data

    return write_jsonl_atomic((row(record) for record in records), path)


def _problem(path: str | Path, line: int, message: str) -> QAFileError:
    return QAFileError(Problem(str(path), line, message).located())


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) for each non-blank line; ``QAFileError`` naming file and line for a
    line that is not one JSON object or for bytes that are not UTF-8. A BOM, CRLF line ends and blank
    lines are tolerated (the parser is the submission validator's, which is strict about those)."""
    path = Path(path)
    problem = input_file_problem(path)  # a folder or a FIFO: said as such, never read (a FIFO blocks)
    if problem:
        raise _problem(path, 0, problem)
    try:
        data = read_jsonl_bytes(path)  # bounded: megc_vqa.limits.JSONL_BYTES
    except FileNotFoundError:
        raise _problem(path, 0, "no such file") from None
    except InputError as err:
        raise QAFileError(str(err)) from None
    except OSError as err:
        raise _problem(path, 0, f"cannot read ({err.strerror})") from None
    rows, problems = parse_jsonl(data, str(path))
    fatal = [p for p in problems if not p.message.startswith(_TOLERATED)]
    if fatal:
        more = f" (and {len(fatal) - 1} more problems)" if len(fatal) > 1 else ""
        raise QAFileError(f"{fatal[0].located()}{more}")
    for row in rows:
        yield row.line, row.data


def foreign_row_hint(obj: dict[str, Any]) -> str:
    """What a row of the wrong kind of file looks like, for the message of a reader that refuses it."""
    if "video_id" in obj and "id" not in obj:
        return (
            " (this looks like an organiser question or ground-truth file, *_to_answer.jsonl, which run_vqa "
            "answers, not a qa.jsonl written by `megc-vqa prep`)"
        )
    if "id" in obj and "image_id" in obj and "video_id" not in obj:
        return " (this looks like a QA file, qa.jsonl of `megc-vqa prep`, not an organiser question file)"
    if {"messages", "conversations"} & set(obj):
        return " (this looks like a trainer's chat dataset, written by `megc-vqa export`)"
    return ""


def read_qa_jsonl(path: str | Path) -> list[QARecord]:
    """Read a ``qa.jsonl`` written by ``write_qa_jsonl`` (or an official training file, without mapping).

    A relative frame ``source`` is relative to the file's own folder, whatever the working folder; it
    comes back as an absolute path.
    """
    folder = os.path.abspath(Path(path).parent)
    records = []
    for number, obj in iter_jsonl(path):
        try:
            record = QARecord.from_json(obj)
        except (KeyError, TypeError) as err:
            raise _problem(path, number, err.args[0] + foreign_row_hint(obj)) from None
        if record.source and not os.path.isabs(record.source):
            record = record.with_source(source=os.path.normpath(os.path.join(folder, record.source)))
        records.append(record)
    return records


def read_questions(path: str | Path) -> list[QuestionRow]:
    """Read an organiser ``*_to_answer.jsonl`` file, keeping each row's keys, extra keys and order.

    Raises ``QAFileError`` naming the line for a non-JSON line, a missing or non-string key, an empty
    ``video_id`` or ``question``, a duplicate ``video_id``, or a ``video`` that is not a plain folder name
    (``../x`` would escape the media root). The one reader of question files: ``run_vqa`` and the
    validator (``--questions``) accept and refuse the same files.
    """
    rows: list[QuestionRow] = []
    first_line: dict[str, int] = {}
    for number, obj in iter_jsonl(path):
        try:
            row = QuestionRow.from_json(obj, line=number)
        except (KeyError, TypeError) as err:
            raise _problem(path, number, err.args[0] + foreign_row_hint(obj)) from None
        for key in ("video_id", "question"):  # an empty id cannot be scored; an empty question not answered
            if not getattr(row, key).strip():
                raise _problem(path, number, f"empty {key}; every question row needs one")
        if not is_plain_name(row.video):
            raise _problem(path, number, f"video {row.video!r} is not a plain folder name")
        if row.video_id in first_line:
            raise _problem(
                path, number, f"video_id {row.video_id!r} already used on line {first_line[row.video_id]}"
            )
        first_line[row.video_id] = number
        rows.append(row)
    if not rows:
        raise _problem(path, 0, "no question rows (the file is empty); give an organiser *_to_answer.jsonl")
    return rows


def read_training_file(
    path: str | Path, data_root: str | Path | None = None, unmatched: list[QARecord] | None = None
) -> list[QARecord]:
    """Read the official training JSONL and attach each row's clip from the user's dataset folders.

    Every row comes back, in file order. With ``data_root``, the annotation loaders
    (``megc_vqa.annotations.load_all``) find the clips and the one mapping (:func:`megc_vqa.qa.mapping.map_rows`)
    matches a row on (dataset, image_id), else on (dataset, subject, filename); it gets the clip's source,
    fps and onset/apex/offset. A row whose clip
    is not found keeps ``source=None``: it is logged (count and examples) and appended to ``unmatched``
    when given, so training can report it instead of silently training on fewer clips.
    ``AnnotationError`` from the loaders propagates.
    """
    records = read_qa_jsonl(path)
    if data_root is None:
        return records

    clips = annotations.load_all(Path(data_root).absolute()).clips  # absolute sources: valid from any folder
    mapping = map_rows(path, [OfficialRow(k, r) for k, r in enumerate(records)], clips)
    missed = {u.line for u in mapping.unmatched}
    attached = iter(mapping.records)  # map_rows keeps file order
    mapped = [records[k] if k in missed else next(attached) for k in range(len(records))]
    missing = [records[k] for k in sorted(missed)]
    if missing:
        clips_missing = sorted({f"{r.dataset}/{r.image_id}" for r in missing})
        log.warning(
            "%s: %d of %d rows (%d clips) have no clip under %s, e.g. %s",
            path,
            len(missing),
            len(records),
            len(clips_missing),
            data_root,
            ", ".join(clips_missing[:5]),
        )
        if unmatched is not None:
            unmatched.extend(missing)
    return mapped


def dataset_features() -> Any:
    """The ``datasets.Features`` of a saved QA dataset (explicit, so an all-null column keeps its type)."""
    from datasets import Features, Value

    types = {
        "first_frame": Value("int64"),
        "fps": Value("float64"),
        "onset": Value("int64"),
        "apex": Value("int64"),
        "offset": Value("int64"),
    }
    return Features({key: types.get(key, Value("string")) for key in (*OFFICIAL_KEYS, *EXTRA_KEYS)})


def is_saved_qa_dataset(path: Path) -> bool:
    """Whether ``path`` is a QA dataset as :func:`save_as_dataset` wrote it before it left an output marker
    (``save_to_disk``'s files only, with the QA columns): such a folder may be replaced."""
    try:
        names = {p.name for p in path.iterdir()}
        arrows = {n for n in names if n.startswith("data-") and n.endswith(".arrow")}
        if not arrows or names - arrows != {"state.json", "dataset_info.json"}:
            return False
        info = json.loads((path / "dataset_info.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(info, dict) and set(OFFICIAL_KEYS) <= set(info.get("features") or {})


def save_as_dataset(
    records: Iterable[QARecord], out_dir: str | Path, *, writer: str = "megc-vqa save_as_dataset"
) -> Path:
    """Save the records as a ``datasets.Dataset`` with ``save_to_disk`` (columns in ``to_json`` order).

    Written to a temporary folder first and moved into place, so an interrupted save leaves no half dataset.
    An existing ``out_dir`` is replaced only when ``writer`` wrote it (or it is an earlier QA dataset):
    a folder of the user's is refused (:func:`megc_vqa.fileio.atomic_folder`).
    """
    from datasets import Dataset

    out_dir = Path(out_dir)
    rows = [record.to_json() for record in records]
    features = dataset_features()
    columns = {key: [row[key] for row in rows] for key in features}
    dataset = Dataset.from_dict(columns, features=features)
    with atomic_folder(out_dir, writer, legacy=is_saved_qa_dataset) as tmp:
        dataset.save_to_disk(str(tmp))
    return out_dir
