"""Held-out evaluation: a trained model answers the QA records of subjects it never saw, through the
inference engine (constrained decoding, optional consistency pass), scored by the project's VQA scorer.

    scores = evaluate_heldout(model_dir, records, {"off": EngineOptions(consistency=False)})["off"]

The records are ``megc-vqa prep`` rows (``qa.jsonl``) of the held-out subjects, usually the validation
subjects a training run recorded (``val_subjects`` in ``megc_vqa_train.json``; :func:`heldout_records`).
Each clip's visual inputs are built once, with the visual settings the training run recorded, and shared
by its questions, as ``run_vqa`` does for the organisers' clips. The result is the scorer's ``overall``
split reduced to :data:`HELDOUT_KEYS`, plus the per-dataset splits and the row counts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from megc_vqa.answering.postprocess import fallback_answer
from megc_vqa.fileio import write_jsonl
from megc_vqa.metrics.vqa import score_vqa
from megc_vqa.visual.errors import FaceSkip

log = logging.getLogger(__name__)

# The held-out figures the demo reports (scores.json ``heldout``), all from megc_vqa.metrics.vqa.
HELDOUT_KEYS: tuple[str, ...] = (
    "uf1_coarse",
    "uar_coarse",
    "uf1_fine",
    "uar_fine",
    "au_f1",
    "presence_acc",
    "side_acc",
    "joint_exact",
)


def heldout_records(records: Iterable[Mapping[str, Any]], subjects: Iterable[str]) -> list[dict[str, Any]]:
    """The records whose ``dataset/subject`` is one of ``subjects`` (as training records them)."""
    wanted = set(subjects)
    rows = (r.to_json() if hasattr(r, "to_json") else dict(r) for r in records)  # QARecord or dict
    return [r for r in rows if f"{r['dataset']}/{r['subject']}" in wanted]


def clip_groups(records: Sequence[Mapping[str, Any]]) -> list[list[Mapping[str, Any]]]:
    """Records grouped by clip (dataset, image id), clips and questions in file order."""
    from megc_vqa.training.data import clip_key

    groups: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in records:
        groups.setdefault(clip_key(r), []).append(r)
    return list(groups.values())


def answer_records(
    engine: Any, records: Sequence[Mapping[str, Any]], visual_fn: Any, batch_rows: int | None = None
) -> list[dict[str, Any]]:
    """Prediction rows ``{"video_id": record id, "answer", "consistency"}`` for ``records``, in order,
    with the engine's own consistency setting (see :func:`answer_records_variants`)."""
    consistency = [engine.options.consistency]
    return answer_records_variants(engine, records, visual_fn, consistency, batch_rows)[0]


def answer_records_variants(
    engine: Any,
    records: Sequence[Mapping[str, Any]],
    visual_fn: Any,
    consistency: Sequence[bool],
    batch_rows: int | None = None,
) -> list[list[dict[str, Any]]]:
    """One prediction list per ``consistency`` setting (see :func:`answer_records`), decoded once.

    Clips go to ``engine.answer_clips_variants`` in fixed groups of at most ``batch_rows`` rows
    (default: two generate batches), each clip's visual inputs built once by ``visual_fn(first record
    of the clip)`` and its fine answers drawn from its dataset's own labels.
    """
    limit = batch_rows or 2 * max(1, engine.options.batch_size)
    clips = clip_groups(records)
    out: list[list[dict[str, Any]]] = [[] for _ in consistency]
    start = 0
    while start < len(clips):
        stop, rows = start, 0
        while stop < len(clips) and (stop == start or rows + len(clips[stop]) <= limit):
            rows += len(clips[stop])
            stop += 1
        batch, skipped = _visual_inputs(clips[start:stop], visual_fn)
        variants = engine.answer_clips_variants(
            [(visual, [str(r["question"]) for r in clip]) for clip, visual in batch],
            consistency,
            sample_seed=engine.options.seed + start,
            datasets=[str(clip[0]["dataset"]) for clip, _ in batch],
        ) if batch else [[] for _ in consistency]  # fmt: skip
        for predictions, results in zip(out, variants, strict=True):
            for (clip, _), (answers, changes) in zip(batch, results, strict=True):
                changed = {c.index for c in changes}
                predictions += [
                    {"video_id": str(r["id"]), "answer": a.text, "consistency": i in changed}
                    for i, (r, a) in enumerate(zip(clip, answers, strict=True))
                ]
            predictions += [
                {
                    "video_id": str(r["id"]),
                    "answer": fallback_answer(str(r["question"])),
                    "consistency": False,
                }
                for clip in skipped
                for r in clip
            ]
        start = stop
    order = {str(r["id"]): i for i, r in enumerate(records)}
    return [sorted(p, key=lambda row: order[row["video_id"]]) for p in out]


def _visual_inputs(
    clips: Sequence[Sequence[Mapping[str, Any]]], visual_fn: Any
) -> tuple[list[tuple[Sequence[Mapping[str, Any]], Any]], list[Sequence[Mapping[str, Any]]]]:
    """Each clip's visual inputs, and the clips the face pipeline skipped (named in the log): those are
    answered with fallback answers and still scored, as ``run_vqa`` does, so that settings that skip more
    clips are not scored on an easier set."""
    ready, skipped = [], []
    for clip in clips:
        try:
            ready.append((clip, visual_fn(clip[0])))
        except FaceSkip as err:
            log.warning("%s: fallback answers", err)
            skipped.append(clip)
    return ready, skipped


def score_heldout(records: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]]) -> dict:
    """``HELDOUT_KEYS`` of the scorer's ``overall`` split, ``n_clips``, ``n_rows``, the per-dataset
    splits and the number of answers the consistency pass rewrote."""
    truth = [
        {"video_id": str(r["id"]), "question": r["question"], "answer": r["answer"], "dataset": r["dataset"]}
        for r in records
    ]
    scores = score_vqa(predictions, truth)
    overall = scores["overall"]
    result: dict[str, Any] = {k: overall.get(k) for k in HELDOUT_KEYS}
    result["n_clips"] = len(clip_groups(records))
    result["n_rows"] = overall["n_rows"]
    result["consistency_changes"] = sum(1 for p in predictions if p.get("consistency"))
    result["datasets"] = {
        name: {k: split.get(k) for k in HELDOUT_KEYS}
        for name, split in scores.items()
        if name not in ("overall", "variant", "problems") and isinstance(split, dict) and split.get("n_rows")
    }
    return result


def evaluate_heldout(
    model_dir: str | Path,
    records: Sequence[Mapping[str, Any]],
    option_sets: Mapping[str, Any],
    predictions_dir: str | Path | None = None,
    visual_cache_dir: str | Path | None = None,
) -> dict[str, dict[str, Any]]:
    """Load the trained model once and score ``records`` under each named ``EngineOptions``.

    Returns ``{name: score_heldout(...)}``; with ``predictions_dir``, each run's rows (id, question,
    reference, prediction, consistency rewrite) go to ``<name>_predictions.jsonl`` there;
    ``visual_cache_dir`` is the sampler's disk cache (training's, when models of one clip set are compared).
    A LoRA output folder is loaded on its recorded base model.
    """
    from dataclasses import replace

    from megc_vqa.answering.engine import Engine
    from megc_vqa.training.data import make_visual_fn

    if not records:
        raise ValueError("no held-out records to evaluate")
    names = list(option_sets)
    engine = Engine.load(model_dir, None, option_sets[names[0]])
    # The record's visual settings, the apex estimated as at test time (as training's validation does).
    visual_fn = make_visual_fn(engine.contract.visual, visual_cache_dir, apex_policy="estimated")
    # Option sets that differ only in the consistency pass share one decoding.
    groups: dict[Any, list[str]] = {}
    for name in names:
        groups.setdefault(replace(option_sets[name], consistency=False), []).append(name)
    results: dict[str, dict[str, Any]] = {}
    for shared, group in groups.items():
        # Keep the prompt layout Engine.load took from the training record.
        engine.options = replace(shared, prompt=engine.options.prompt)
        consistency = [option_sets[name].consistency for name in group]
        variants = answer_records_variants(engine, records, visual_fn, consistency)
        for name, predictions in zip(group, variants, strict=True):
            results[name] = score_heldout(records, predictions)
            if predictions_dir is not None:
                write_jsonl(
                    Path(predictions_dir) / f"{name}_predictions.jsonl",
                    (
                        {"id": r["id"], "question": r["question"], "answer": r["answer"],
                         "prediction": p["answer"], "consistency": p["consistency"]}
                        for r, p in zip(records, predictions, strict=True)
                    ),
                )  # fmt: skip
            log.info("held-out (%s): %s", name, results[name])
    return results
