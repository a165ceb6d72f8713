"""Rejection-sampling fine-tuning (``stage: rft``): the cheap step between SFT and GRPO.

    accelerate launch recipes/finetune.py --config recipes/tiny/lora.yaml --stage rft --sft_model runs/tiny-lora \
        --output_dir runs/tiny-rft

The SFT model (``sft_model``) answers every training question ``rft_samples`` times by sampling
(``rft_temperature``), through the answering engine without the grammar, so the samples are the model's
own answers laid out exactly as answering lays them out. Each distinct answer is rewarded
(:mod:`megc_vqa.training.rewards`: the mean of ``rewards``); those reaching ``rft_min_reward`` replace the
reference answer in a copy of the record, and the SFT model is fine-tuned on those records with the
recipe's training settings (:func:`megc_vqa.training.finetune.train`). ``rft_samples.jsonl`` in the output
folder lists every sample with its rewards and whether it was kept.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from megc_vqa.answering.engine import Engine, EngineOptions
from megc_vqa.fileio import atomic_write_text
from megc_vqa.models.prompting import VisualFn, get_field
from megc_vqa.qa.kinds import kind_of
from megc_vqa.training.config import ConfigError, Recipe
from megc_vqa.training.data import clip_key, make_visual_fn
from megc_vqa.training.finetune import (
    TrainResult,
    build_model,
    check_output_dir,
    drop_unusable_clips,
    prepare_data,
    train,
)
from megc_vqa.training.rewards import mean_reward, reward_functions
from megc_vqa.training.stages import reward_vocab, stage_contract

log = logging.getLogger(__name__)

RFT_SAMPLES = "rft_samples.jsonl"


def sample_answers(
    model: Any, processor: Any, contract: Any, records: Sequence[Any], visual_fn: VisualFn, recipe: Recipe
) -> list[list[str]]:
    """``rft_samples`` sampled answers per record, each clip's visual inputs built once."""
    s = recipe.stage
    options = EngineOptions(
        batch_size=8, constrained=False, consistency=False, votes=s.rft_samples,
        temperature=s.rft_temperature, top_p=1.0, seed=recipe.training.seed, prompt=contract.prompt,
    )  # fmt: skip
    engine = Engine(model, processor, options, name="rejection sampling", contract=contract)
    visuals: dict[tuple[str, str], Any] = {}
    out: list[list[str]] = []
    from tqdm import tqdm

    batch = 32
    for start in tqdm(range(0, len(records), batch), desc="rejection sampling", unit="batch"):
        rows = records[start : start + batch]
        for r in rows:
            if clip_key(r) not in visuals:
                visuals[clip_key(r)] = visual_fn(r)
        questions = [str(get_field(r, "question")) for r in rows]
        out += engine.generate(questions, [visuals[clip_key(r)] for r in rows], [None] * len(rows), start)
    return out


def keep_rewarded(
    records: Sequence[Any], samples: Sequence[Sequence[str]], recipe: Recipe, vocab: Any
) -> tuple[list[Any], list[dict[str, Any]]]:
    """``(records answered by a kept sample, one log row per distinct sample)``."""
    functions = reward_functions(recipe.stage.rewards, vocab)
    kept, rows = [], []
    for record, answers in zip(records, samples, strict=True):
        question, reference = str(get_field(record, "question")), str(get_field(record, "answer"))
        qtype = get_field(record, "question_type")
        for answer in dict.fromkeys(a.strip() for a in answers):  # distinct, in sampled order
            reward = mean_reward(functions, question, reference, answer, qtype)
            keep = bool(answer) and reward >= recipe.stage.rft_min_reward
            rows.append({"id": get_field(record, "id"), "question": question, "reference": reference,
                         "sample": answer, "reward": reward, "kept": keep})  # fmt: skip
            if keep:
                kept.append(_answered(record, answer))
    return kept, rows


def _answered(record: Any, answer: str) -> Any:
    if dataclasses.is_dataclass(record):
        return dataclasses.replace(record, answer=answer)
    return {**record, "answer": answer}


def summary(rows: Sequence[dict[str, Any]]) -> dict[str, str]:
    """Per question kind: kept samples of the distinct ones."""
    seen, kept = Counter(), Counter()
    for row in rows:
        kind = kind_of(row["question"]).name
        seen[kind] += 1
        kept[kind] += row["kept"]
    return {kind: f"{kept[kind]}/{n}" for kind, n in sorted(seen.items())}


def train_rft(recipe: Recipe, visual_fn: VisualFn | None = None) -> TrainResult:
    """Run a ``stage: rft`` recipe (see the module doc); returns the fine-tuning result."""
    import gc

    where = recipe.config_path or "command line"
    out_dir = Path(recipe.training.output_dir)
    check_output_dir(recipe)
    train_records, val_records, held = prepare_data(recipe)
    model, processor, family = build_model(recipe)
    contract = stage_contract(recipe, family.name, train_records, held)
    sample_fn = visual_fn or make_visual_fn(
        contract.visual, recipe.data.visual_cache_dir, recipe.data.visual_memory_cache
    )
    # Clips SFT left out (no usable face) are left out here too; validation is the fine-tuning's to filter.
    train_records, _, _ = drop_unusable_clips(contract, train_records, [], sample_fn, None)
    model.eval()
    model.config.use_cache = True
    samples = sample_answers(model, processor, contract, train_records, sample_fn, recipe)
    del model
    gc.collect()
    kept, rows = keep_rewarded(train_records, samples, recipe, reward_vocab(contract))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / RFT_SAMPLES, "".join(json.dumps(r) + "\n" for r in rows))
    counts = summary(rows)
    log.info("rejection sampling kept %d of %d distinct samples (per kind: %s)", len(kept), len(rows), counts)
    if not kept:
        raise ConfigError(
            f"{where}: no sampled answer reached rft_min_reward {recipe.stage.rft_min_reward} (see "
            f"{out_dir / RFT_SAMPLES}); lower rft_min_reward, raise rft_samples, or train SFT longer first"
        )
    result = train(recipe, visual_fn, data=(kept, val_records, held))
    result.metrics.update({"rft_kept": len(kept), "rft_samples": len(rows), "rft_kept_per_kind": counts})
    return result
