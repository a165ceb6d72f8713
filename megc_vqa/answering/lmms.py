"""MEGC ME-VQA tasks for lmms-eval (``megc_vqa/lmms_tasks``, used through ``--include_path``).

The task files stay thin: every piece they call lives here.

- Documents: the organisers' question files (``megc_vqa_2025_samm``, ..., ``megc_vqa_2026_casme3``; found in
  ``$MEGC_VQA_QUESTIONS_DIR/<year>/`` or the checkout's ``data/megc/<year>/``) with their clips' frames
  under ``$MEGC_VQA_FRAMES_ROOT`` (the layouts ``run_vqa`` reads), or a ``megc-vqa prep`` output with ground
  truth (``megc_vqa_prep``: ``$MEGC_VQA_QA``, its ``qa.jsonl`` or folder). A clip without frames stops
  the run before any model work, with one line naming the first such clip.
- Visual inputs: the project's own sampler with the default visual settings, or those of the training
  record in ``$MEGC_VQA_MODEL_DIR`` (an adapter or merged model folder), so every lmms-eval model sees
  the frames and flow image a project model sees. Text: the visuals' description, then the question.
- Metrics: the project's scorer (:func:`megc_vqa.metrics.vqa.score_vqa`) as the aggregation: UF1/UAR
  coarse and fine, BLEU, ROUGE, and the count of invalid answers. The question files carry no answers,
  so their tasks report only ``n_rows`` and ``n_invalid``; ``--log_samples`` keeps the answers.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from megc_vqa.answering.run_vqa import clip_dataset, clip_fps, frame_folder
from megc_vqa.errors import InputError, UsageError
from megc_vqa.frame_names import frame_number, is_image
from megc_vqa.lmms_tasks import ENV_FRAMES, ENV_MODEL, ENV_QA, ENV_QUESTIONS
from megc_vqa.metrics.scoring import answer_problem
from megc_vqa.metrics.vqa import score_vqa
from megc_vqa.models.contract import ModelContract, read_contract
from megc_vqa.models.prompting import DEFAULT_OPTIONS
from megc_vqa.qa.io import QAFileError, read_qa_jsonl, read_questions
from megc_vqa.qa.kinds import kind_of
from megc_vqa.training.data import make_visual_fn
from megc_vqa.visual.frames import clip_from_folder

log = logging.getLogger(__name__)

CHECKOUT_QUESTIONS = Path(__file__).resolve().parents[2] / "data" / "megc"
# The organisers' question files of the tasks (their dataset_kwargs.megc_source).
QUESTION_SOURCES: dict[str, str] = {
    f"megc_vqa_{year}_{ds}": f"{year}/me_vqa_{ds}{'_v2' if year == '2026' else ''}_test_to_answer.jsonl"
    for year in ("2025", "2026")
    for ds in ("samm", "casme3")
}
# The scores a task with ground truth reports (keys of the scorer's ``overall`` split).
SCORED_METRICS: tuple[str, ...] = ("uf1_coarse", "uar_coarse", "uf1_fine", "uar_fine", "bleu", "rouge")


def _env_path(name: str, what: str) -> Path:
    value = os.environ.get(name, "").strip()
    if not value:
        raise UsageError(f"{name} is not set: set it to {what}")
    return Path(value).expanduser()


def question_file(relative: str) -> Path:
    """An organisers' question file (``2025/me_vqa_samm_test_to_answer.jsonl``) under
    ``$MEGC_VQA_QUESTIONS_DIR``, else under the checkout's ``data/megc``."""
    roots = [Path(os.environ[ENV_QUESTIONS]).expanduser()] if os.environ.get(ENV_QUESTIONS) else []
    roots.append(CHECKOUT_QUESTIONS)
    for root in roots:
        if (root / relative).is_file():
            return root / relative
    looked = " and ".join(str(r / relative) for r in roots)
    raise UsageError(
        f"question file {relative} not found ({looked}): set {ENV_QUESTIONS} to the folder of 2025/ and 2026/"
    )


def _has_frames(folder: Path) -> bool:
    return any(is_image(n) and frame_number(n) is not None for n in os.listdir(folder))


def question_docs(relative: str) -> list[dict[str, Any]]:
    """The documents of one organisers' question file, each with its clip's frame folder; the first clip
    without frames under ``$MEGC_VQA_FRAMES_ROOT`` is an ``InputError`` of one line."""
    path = question_file(relative)
    root = _env_path(ENV_FRAMES, "the folder of the test clips' frames (as run_vqa's --frames-root)")
    if not root.is_dir():
        raise InputError(f"{ENV_FRAMES}={root}: no such folder")
    try:
        rows = read_questions(path)
    except QAFileError as err:
        raise InputError(str(err)) from None
    docs: list[dict[str, Any]] = []
    folders: dict[str, Path] = {}
    for row in rows:
        if row.video not in folders:
            folder = frame_folder(root, row.video)
            if folder is None or not _has_frames(folder):
                raise InputError(
                    f"{ENV_FRAMES}={root}: no frames for clip {row.video} ({path.name}); looked for "
                    f"<root>/{row.video}/, <root>/<SAMM|CAS>/{row.video}/ and <root>/frames/{row.video}/"
                )
            folders[row.video] = folder
        docs.append(
            {
                "video_id": row.video_id,
                "video": row.video,
                "question": row.question,
                "answer": "",
                "dataset": clip_dataset(path, row) or "other",
                "source": str(folders[row.video]),
                "fps": clip_fps(path, row),
            }
        )
    return docs


def prep_docs() -> list[dict[str, Any]]:
    """The documents of a ``prep`` output (``$MEGC_VQA_QA``: ``qa.jsonl`` or its folder), with answers;
    the first record whose clip has no frames is an ``InputError`` of one line."""
    path = _env_path(ENV_QA, "a `megc-vqa prep` output (its qa.jsonl or folder)")
    if path.is_dir():
        path = path / "qa.jsonl"
    if not path.is_file():
        raise InputError(f"{ENV_QA}={path}: no such file (a `megc-vqa prep` output's qa.jsonl)")
    try:
        records = read_qa_jsonl(path)
    except QAFileError as err:
        raise InputError(str(err)) from None
    docs: list[dict[str, Any]] = []
    for record in records:
        if not record.source or not Path(record.source).exists():
            raise InputError(
                f"{ENV_QA}={path}: no frames for clip {record.dataset}/{record.image_id} ({record.id}: its "
                f"frames {record.source} are not there)"
            )
        docs.append({**record.to_json(), "video_id": record.id})
    return docs


@lru_cache(maxsize=1)
def contract() -> ModelContract:
    """The visual settings: the training record in ``$MEGC_VQA_MODEL_DIR``, else the defaults."""
    folder = os.environ.get(ENV_MODEL)
    return read_contract(folder) if folder else ModelContract()


@lru_cache(maxsize=256)
def _visual(doc_key: tuple[Any, ...]) -> Any:
    record = dict(doc_key)
    if record.get("onset") is None:  # a test clip: first and last frame, estimated apex
        return contract().sample(
            clip_from_folder(Path(record["source"]), float(record["fps"]), dataset="test")
        )
    return make_visual_fn(contract().visual, apex_policy="estimated", memory_cache=0)(record)


_VISUAL_KEYS = ("source", "source_kind", "first_frame", "fps", "onset", "apex", "offset", "dataset", "subject",
                "filename", "image_id", "id")  # fmt: skip


def doc_to_visual(doc: Mapping[str, Any]) -> list[Any]:
    """The clip's key frames, flow (and diff) images as PIL images, as the project's sampler builds them."""
    from PIL import Image

    visual = _visual(tuple((k, doc.get(k)) for k in _VISUAL_KEYS))
    return [Image.fromarray(image) for image in visual.images]


def doc_to_text(doc: Mapping[str, Any], lmms_eval_specific_kwargs: Mapping[str, Any] | None = None) -> str:
    """The question, after the description of the visuals when the prompt layout describes them."""
    question = str(doc["question"])
    options = contract().prompt if os.environ.get(ENV_MODEL) else DEFAULT_OPTIONS
    if not options.describe_visuals:
        return question
    description = _visual(tuple((k, doc.get(k)) for k in _VISUAL_KEYS)).description
    return f"{description}\n{question}" if description else question


def doc_to_target(doc: Mapping[str, Any]) -> str:
    return str(doc.get("answer") or "")


def process_results(doc: Mapping[str, Any], results: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Every metric gets the same row; the aggregation scores all rows at once."""
    row = {
        "video_id": str(doc["video_id"]),
        "question": str(doc["question"]),
        "reference": str(doc.get("answer") or ""),
        "dataset": str(doc.get("dataset") or ""),
        "prediction": str(results[0]) if results else "",
    }
    return {name: row for name in (*SCORED_METRICS, "n_invalid", "n_rows")}


def score_items(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The project scorer's output for the rows of :func:`process_results`."""
    preds = [{"video_id": r["video_id"], "answer": r["prediction"]} for r in items]
    truth = [
        {"video_id": r["video_id"], "question": r["question"], "answer": r["reference"],
         **({"dataset": r["dataset"]} if r["dataset"] else {})}
        for r in items
    ]  # fmt: skip
    return score_vqa(preds, truth)


def _aggregate(key: str):
    def aggregate(items: Sequence[Mapping[str, Any]]) -> float | None:
        if key in ("n_invalid", "n_rows") and not all(r["reference"] for r in items):
            bad = sum(answer_problem(kind_of(r["question"]), r["prediction"]) is not None for r in items)
            return float(bad if key == "n_invalid" else len(items))
        value = score_items(items)["overall"][key]
        return None if value is None else float(value)

    aggregate.__name__ = f"aggregate_{key}"
    return aggregate


AGGREGATIONS = {key: _aggregate(key) for key in (*SCORED_METRICS, "n_invalid", "n_rows")}
