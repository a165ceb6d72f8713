"""The dataset and prediction formats of the trainers MEGC teams use: LLaMA-Factory and ms-swift.

Dataset rows (written by ``megc-vqa export``, :mod:`megc_vqa.training.export`):

- LLaMA-Factory, ``sharegpt`` formatting with OpenAI-style tags (its ``data/README.md``, "multimodal"):
  ``{"messages": [{"role": "user", "content": "<image><image>...question"}, {"role": "assistant",
  "content": answer}], "images": [paths]}``, one ``<image>`` per image in order, paths relative to the
  dataset folder (LLaMA-Factory's ``media_dir`` defaults to its ``dataset_dir``), and a
  ``dataset_info.json`` entry per file: ``{"file_name", "formatting": "sharegpt", "columns": {"messages",
  "images"}, "tags": {"role_tag", "content_tag", "user_tag", "assistant_tag", "system_tag"}}``.
- ms-swift, its standard format (docs "Custom Dataset"): ``{"messages": [...], "images": [paths]}`` with
  ``<image>`` placeholders; paths are absolute, as ms-swift reads them from wherever it is started.

Both carry ``megc_id`` (the QA record's ``id``) and ``megc_dataset``/``megc_subject``; the trainers ignore
unknown columns.

Prediction files, mapped back onto the exported rows (``read_predictions``):

- LLaMA-Factory ``generated_predictions.jsonl`` (``--do_predict --predict_with_generate``): one
  ``{"prompt", "predict", "label"}`` per line, in the order of the predicted dataset file;
- ms-swift ``swift infer --val_dataset ... --result_path``: one ``{"response", "labels", "messages", ...}``
  per line, in dataset order.

A row is matched by its ``megc_id`` when the trainer kept it, else by line number against the exported
file it answers (``exported``); the match is checked (the question must appear in the prompt, and a
non-empty label must be the exported answer) and every row that fails is listed with its line number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megc_vqa.errors import UsageError
from megc_vqa.fileio import read_jsonl

FORMATS: tuple[str, ...] = ("llamafactory", "swift")
PREDICTION_FORMATS: tuple[str, ...] = ("auto", "megc", *FORMATS)
IMAGE_TOKEN = "<image>"
ID_KEY = "megc_id"

LLAMAFACTORY_TAGS: dict[str, str] = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}


def chat_row(
    messages: Sequence[dict[str, Any]], images: Sequence[str], record_id: str, dataset: str, subject: str
) -> dict[str, Any]:
    """One trainer row from the project's chat messages (``megc_vqa.models.prompting.build_messages``).

    Image items become ``<image>`` placeholders in the text, in the order the model gets the images, so a
    trainer's template lays the prompt out as the project's own training does.
    """
    out = []
    for message in messages:
        content = message["content"]
        if isinstance(content, str):
            text = content
        else:
            text = "".join(
                IMAGE_TOKEN if item["type"] == "image" else item.get("text", "") for item in content
            )
            if any(item["type"] == "video" for item in content):
                raise UsageError("export writes images only; use visual_mode: images")
        out.append({"role": message["role"], "content": text})
    n_tokens = sum(m["content"].count(IMAGE_TOKEN) for m in out)
    if n_tokens != len(images):
        raise ValueError(f"{record_id}: {n_tokens} {IMAGE_TOKEN} placeholders for {len(images)} images")
    return {
        "messages": out,
        "images": list(images),
        ID_KEY: record_id,
        "megc_dataset": dataset,
        "megc_subject": subject,
    }


def llamafactory_entry(file_name: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry of one exported file."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "images": "images"},
        "tags": dict(LLAMAFACTORY_TAGS),
    }


# ---------------------------------------------------------------- predictions


@dataclass(frozen=True)
class ExportedRow:
    """What a prediction is checked against: the exported row's id, question and answer."""

    id: str
    question: str
    answer: str
    dataset: str = ""

    def ground_truth(self) -> dict[str, str]:
        """The row as the VQA scorer's ground truth (matched on ``id``)."""
        return {"id": self.id, "dataset": self.dataset, "question": self.question, "answer": self.answer}


def question_of(row: dict[str, Any]) -> str:
    """The question of an exported row: the last line of its user message (the description comes first)."""
    user = [m["content"] for m in row["messages"] if m.get("role") == "user"]
    return user[-1].replace(IMAGE_TOKEN, "").split("\n")[-1].strip() if user else ""


def read_exported(path: str | Path) -> list[ExportedRow]:
    """The rows of an exported dataset file (either format), in order."""
    rows = []
    for number, row in enumerate(read_jsonl(path), start=1):
        if ID_KEY not in row or "messages" not in row:
            raise UsageError(
                f"{path}:{number}: not a file written by `megc-vqa export` (keys {', '.join(row)}); pass the "
                "exported dataset file the predictions answer"
            )
        answers = [m["content"] for m in row["messages"] if m.get("role") == "assistant"]
        rows.append(
            ExportedRow(
                str(row[ID_KEY]),
                question_of(row),
                answers[-1] if answers else "",
                str(row.get("megc_dataset", "")),
            )
        )
    return rows


def detect_format(row: dict[str, Any], path: str | Path) -> str:
    """``llamafactory``, ``swift`` or ``megc`` from one row's keys; an error naming them otherwise."""
    if "predict" in row:
        return "llamafactory"
    if "response" in row:
        return "swift"
    if "answer" in row and ("video_id" in row or "id" in row):
        return "megc"
    raise UsageError(
        f"{path}:1: unknown prediction format (keys {', '.join(row) or 'none'}): expected a MEGC file "
        "(video_id/id + answer), LLaMA-Factory's generated_predictions.jsonl (prompt/predict/label) or "
        "ms-swift's inference JSONL (response/labels/messages)"
    )


def _prompt_text(row: dict[str, Any], fmt: str) -> str:
    if fmt == "llamafactory":
        return str(row.get("prompt", ""))
    messages = row.get("messages") or []
    return "\n".join(
        str(m.get("content", "")) for m in messages if isinstance(m, dict) and m.get("role") == "user"
    )


def _label(row: dict[str, Any], fmt: str) -> str | None:
    value = row.get("label" if fmt == "llamafactory" else "labels")
    if isinstance(value, list):  # some ms-swift versions keep the label as a list of turns
        value = value[-1] if value else None
    return None if value is None else str(value)


def map_predictions(
    rows: Sequence[dict[str, Any]], fmt: str, path: str | Path, exported: Sequence[ExportedRow] | None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Trainer prediction rows -> ``[{"id", "answer"}]`` and the problems (file:line) of rows left out."""
    by_id = {row.id: row for row in exported or ()}
    mapped: list[dict[str, Any]] = []
    problems: list[str] = []
    answer_key = "predict" if fmt == "llamafactory" else "response"
    for number, row in enumerate(rows, start=1):
        where = f"{path}:{number}"
        target: ExportedRow | None
        if row.get(ID_KEY) is not None:
            target = by_id.get(str(row[ID_KEY])) or ExportedRow(str(row[ID_KEY]), "", "")
        elif exported is None:
            raise UsageError(
                f"{where}: the predictions carry no {ID_KEY}; pass --exported with the exported dataset file "
                "they answer (e.g. X/megc_val.jsonl), whose rows they follow in order"
            )
        elif number > len(exported):
            problems.append(
                f"{where}: no exported row {number} (the exported file has {len(exported)}): not scored"
            )
            continue
        else:
            target = exported[number - 1]
        if target.question and target.question not in _prompt_text(row, fmt):
            problems.append(f"{where}: the prompt does not ask {target.question!r} ({target.id}): not scored")
            continue
        label = _label(row, fmt)
        if label and target.answer and label.strip() != target.answer.strip():
            problems.append(
                f"{where}: label {label[:60]!r} is not the answer of {target.id} ({target.answer[:60]!r}): "
                "the predictions follow another file or order; not scored"
            )
            continue
        answer = row.get(answer_key)
        mapped.append({"id": target.id, "answer": "" if answer is None else str(answer)})
    return mapped, problems


def read_predictions(
    paths: Sequence[str | Path], fmt: str = "auto", exported: str | Path | None = None
) -> tuple[list[dict[str, Any]], list[str]]:
    """Prediction rows from MEGC files or trainer outputs (see the module doc), and the problems found."""
    if fmt not in PREDICTION_FORMATS:
        raise UsageError(f"--pred-format {fmt!r}: choose one of {', '.join(PREDICTION_FORMATS)}")
    reference = read_exported(exported) if exported else None
    out: list[dict[str, Any]] = []
    problems: list[str] = []
    for path in paths:
        rows = read_jsonl(path)
        if not rows:
            raise UsageError(f"{path}: no prediction rows")
        kind = detect_format(rows[0], path) if fmt == "auto" else fmt
        if kind == "megc":
            out += rows
            continue
        mapped, found = map_predictions(rows, kind, path, reference)
        out += mapped
        problems += found
    return out, problems
