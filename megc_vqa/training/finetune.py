"""LoRA / QLoRA / full instruction tuning of a video LVLM on MEGC QA records.

Run through ``recipes/finetune.py`` (``accelerate launch recipes/finetune.py --config R.yaml [--key v]``).
The flow: parse the recipe (:mod:`megc_vqa.training.config`), read and split the records by subject
(:mod:`megc_vqa.training.split`), load model and processor (:mod:`megc_vqa.models.registry`), wrap the
model with PEFT, and train with the transformers ``Trainer`` fed raw records through
:class:`megc_vqa.models.collator.VQACollator`. The output folder holds the adapter (standard PEFT
format) or the full model, the processor, ``megc_vqa_train.json`` (everything inference needs to build
the same prompts) and, when there is a validation split, ``val_predictions.jsonl`` and ``val_metrics.json``.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from megc_vqa.models.prompting import PromptOptions, VisualFn, blanked, generate_answers, get_field
from megc_vqa.training.config import ConfigError, Recipe, parse_config, parse_question_mix

log = logging.getLogger(__name__)

TRAIN_META = "megc_vqa_train.json"


@dataclass
class TrainResult:
    """What :func:`train` leaves: the metrics, the trained (PEFT) model and its processor."""

    metrics: dict[str, Any]
    model: Any
    processor: Any
    output_dir: Path


class TrainingError(RuntimeError):
    """Training could not go on (out of memory, ...); the message says what to change."""


def prompt_options(recipe: Recipe) -> PromptOptions:
    d = recipe.data
    return PromptOptions(
        visual_mode=d.visual_mode,
        system_prompt=d.system_prompt,
        describe_visuals=d.describe_visuals,
        min_pixels=d.min_pixels,
        max_pixels=d.max_pixels,
    )


def visual_settings(recipe: Recipe) -> dict[str, Any]:
    """Keyword arguments of :func:`megc_vqa.training.data.make_visual_fn` for this recipe."""
    d = recipe.data
    return {
        "spec": d.visual_spec,
        "size": d.image_size,
        "face_crop": d.face_crop,
        "cache_dir": d.visual_cache_dir,
        "memory_cache": d.visual_memory_cache,
    }


def load_training_meta(output_dir: str | Path) -> dict[str, Any]:
    """What a training run recorded for inference: ``prompt`` (PromptOptions fields), ``visual``
    (make_visual_fn arguments), ``model_name_or_path``, ``val_subjects``."""
    return json.loads((Path(output_dir) / TRAIN_META).read_text())


def prepare_data(recipe: Recipe) -> tuple[list[dict], list[dict], list[str]]:
    """``(train, val, held-out subject names)`` from the recipe's files and split settings."""
    from megc_vqa.training.data import load_records, select_records
    from megc_vqa.training.split import select_fold, split_by_subject, subject_key

    d = recipe.data
    try:
        records = load_records(d.train_file)
        if d.eval_file:
            train, val = records, load_records(d.eval_file)
        elif d.loso_fold is not None:
            fold = select_fold(records, d.loso_fold)
            train, val = fold.train, fold.val
        else:
            train, val = split_by_subject(records, d.val_fraction, d.split_seed, d.val_subjects)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    held = sorted({"/".join(subject_key(r)) for r in val})
    train = select_records(train, d.question_types, parse_question_mix(d.question_mix))
    if d.max_train_samples:
        train = train[: d.max_train_samples]
    if not train:
        raise ConfigError("no training records left after the split and question_types filter")
    log.info("records: %d train, %d validation (%d held-out subjects)", len(train), len(val), len(held))
    return train, val, held


def build_model(recipe: Recipe) -> tuple[Any, Any, Any]:
    """``(model ready to train, processor, family)``: loaded, optionally quantised, PEFT-wrapped."""
    from transformers import set_seed

    from megc_vqa.models.registry import load_model, load_processor, lora_target_regex, resolve

    m, t = recipe.model, recipe.training
    _, family = resolve(m.model_name_or_path)
    bits = 4 if m.load_in_4bit else 8 if m.load_in_8bit else None
    processor = load_processor(m.model_name_or_path)
    model = load_model(
        m.model_name_or_path, dtype=m.dtype, bits=bits, attn_implementation=m.attn_implementation
    )
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    set_seed(t.seed)  # LoRA initialisation
    if not m.use_peft:
        for name, param in model.named_parameters():
            frozen_vision = m.freeze_vision_tower and ".visual." in f".{name}" and ".merger." not in name
            frozen_lm = m.freeze_language_model and ("language_model" in name or name.startswith("lm_head"))
            param.requires_grad_(not (frozen_vision or frozen_lm))
        return model, processor, family

    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if bits:
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=t.activation_checkpointing)
    targets: Any = m.lora_target_modules or lora_target_regex(family, m.lora_target)
    if isinstance(targets, list) and len(targets) == 1 and any(c in targets[0] for c in "*\\|(["):
        targets = targets[0]  # one regex
    save = [family.save_modules[s] for s in (m.train_fully or "").split("+") if s.strip()]
    from megc_vqa.training.preflight import check_lora_targets, lora_scope_targets

    check_lora_targets(  # PEFT's own error does not say which modules exist
        model,
        lora_scope_targets(family, m.lora_target, targets if m.lora_target_modules else None),
        recipe.config_path or "command line",
    )
    config = LoraConfig(
        r=m.lora_r,
        lora_alpha=m.lora_alpha,
        lora_dropout=m.lora_dropout,
        target_modules=targets,
        modules_to_save=save or None,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.info("trainable parameters: %d of %d (%.2f%%)", n_train, n_all, 100 * n_train / max(1, n_all))
    if t.activation_checkpointing and not bits:
        model.enable_input_require_grads()
    return model, processor, family


def answer_metrics(records: list[dict], answers: list[str]) -> dict[str, Any]:
    """Exact-match accuracy per question type, and coarse UF1/UAR (macro F1/recall over the 3 classes)."""
    from sklearn.metrics import f1_score, recall_score

    from megc_vqa.labels import COARSE_CLASSES

    by_type: dict[str, list[bool]] = {}
    for r, a in zip(records, answers, strict=True):
        by_type.setdefault(str(get_field(r, "question_type")), []).append(
            a.strip().lower() == str(get_field(r, "answer")).strip().lower()
        )
    metrics: dict[str, Any] = {f"acc_{k}": sum(v) / len(v) for k, v in sorted(by_type.items())}
    coarse = [
        (str(get_field(r, "answer")), a.strip().lower())
        for r, a in zip(records, answers, strict=True)
        if get_field(r, "question_type") == "coarse"
    ]
    if coarse:
        truth, pred = zip(*coarse, strict=True)
        labels = list(COARSE_CLASSES)
        metrics["coarse_uf1"] = float(f1_score(truth, pred, labels=labels, average="macro", zero_division=0))
        metrics["coarse_uar"] = float(
            recall_score(truth, pred, labels=labels, average="macro", zero_division=0)
        )
        metrics["coarse_n"] = len(coarse)
    metrics["n"] = len(records)
    return metrics


def evaluate_answers(
    model, processor, records, visual_fn, options, out_dir: Path, max_new_tokens: int
) -> dict:
    """Answer ``records``, write ``val_predictions.jsonl`` and ``val_metrics.json``, return the metrics."""
    answers = generate_answers(model, processor, records, visual_fn, options, max_new_tokens=max_new_tokens)
    with (out_dir / "val_predictions.jsonl").open("w", encoding="utf-8") as f:
        for r, a in zip(records, answers, strict=True):
            f.write(
                json.dumps(
                    {
                        "id": get_field(r, "id"),
                        "question": get_field(r, "question"),
                        "answer": get_field(r, "answer"),
                        "prediction": a,
                    }
                )
                + "\n"
            )
    metrics = answer_metrics(records, answers)
    (out_dir / "val_metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def _resume_path(recipe: Recipe) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    value = recipe.training.resume_from_checkpoint
    if value is None or str(value).lower() in ("false", "no", ""):
        return None
    out = Path(recipe.training.output_dir)
    if str(value).lower() in ("true", "yes", "latest", "last"):
        last = get_last_checkpoint(str(out)) if out.is_dir() else None
        if last is None:
            raise ConfigError(f"resume_from_checkpoint: no checkpoint-* folder in {out} to resume from")
        return last
    if not Path(value).is_dir():
        raise ConfigError(f"resume_from_checkpoint: {value} is not a checkpoint folder")
    return str(value)


def train(recipe: Recipe, visual_fn: VisualFn | None = None) -> TrainResult:
    """Run one fine-tuning recipe; returns the final metrics (training loss, validation answers).

    visual_fn: record -> visual inputs; default: the visual layer's sampler with the recipe's settings.
    """
    import torch
    from torch.utils.data import Dataset
    from transformers import Trainer

    from megc_vqa.models.collator import VQACollator
    from megc_vqa.training.data import make_visual_fn

    t, d = recipe.training, recipe.data
    t.remove_unused_columns = False  # the collator needs whole records, whatever the recipe says
    if t.label_names is None:
        t.label_names = ["labels"]  # PeftModel hides forward's signature from the Trainer
    if t.activation_checkpointing and t.activation_checkpointing_kwargs is None:
        t.activation_checkpointing_kwargs = {"use_reentrant": False}
    out_dir = Path(t.output_dir)
    resume = _resume_path(recipe)
    if resume is None and out_dir.is_dir() and any(out_dir.glob("checkpoint-*")):
        log.warning(
            "%s already has checkpoints; pass --resume_from_checkpoint true to continue them", out_dir
        )

    train_records, val_records, held = prepare_data(recipe)
    options = prompt_options(recipe)
    if visual_fn is None:
        visual_fn = make_visual_fn(**visual_settings(recipe))
    if d.blank_pixels:
        visual_fn = blanked(visual_fn)
    model, processor, family = build_model(recipe)

    class Records(Dataset):
        def __init__(self, rows: list[dict]):
            self.rows = rows

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int) -> dict:
            return self.rows[i]

    collator = VQACollator(processor, visual_fn, options)
    if d.max_length:  # fail before the first step, not after minutes of loading and stepping
        from megc_vqa.training.preflight import check_token_budget

        settings = f"image_size={d.image_size}, max_pixels={d.max_pixels}, visual_spec={d.visual_spec!r}"
        check_token_budget(
            collator(train_records[:1]),
            processor,
            d.max_length,
            recipe.config_path or "command line",
            settings,
        )
    has_eval = bool(val_records) and t.eval_strategy != "no"
    trainer = Trainer(
        model=model,
        args=t,
        train_dataset=Records(train_records),
        eval_dataset=Records(val_records) if has_eval else None,
        data_collator=collator,
        processing_class=processor,
    )
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        from megc_vqa.training.preflight import is_out_of_memory, out_of_memory_advice

        if not is_out_of_memory(err):
            raise
        raise TrainingError(out_of_memory_advice(recipe)) from None
    metrics: dict[str, Any] = dict(result.metrics)
    trainer.save_model(str(out_dir))  # adapter (PEFT format) or full model, plus the processor
    if trainer.is_world_process_zero():
        adapter_config = out_dir / "adapter_config.json"
        if adapter_config.is_file():  # name the base as the user did: a registry name stays portable
            config = json.loads(adapter_config.read_text())
            config["base_model_name_or_path"] = recipe.model.model_name_or_path
            adapter_config.write_text(json.dumps(config, indent=2))
        meta = {
            "model_name_or_path": recipe.model.model_name_or_path,
            "family": family.name,
            "use_peft": recipe.model.use_peft,
            "prompt": asdict(options),
            "visual": visual_settings(recipe),
            "blank_pixels": d.blank_pixels,
            "val_subjects": held,
            "recipe": recipe.config_path,
        }
        (out_dir / TRAIN_META).write_text(json.dumps(meta, indent=2))
        if val_records and d.final_eval:
            model.config.use_cache = True
            metrics.update(
                {
                    f"val_{k}": v
                    for k, v in evaluate_answers(
                        trainer.model, processor, val_records, visual_fn, options, out_dir, d.max_new_tokens
                    ).items()
                }
            )
        (out_dir / "train_metrics.json").write_text(json.dumps(metrics, indent=2, default=str))
        log.info("saved to %s: %s", out_dir, {k: v for k, v in metrics.items() if "uf1" in k or "loss" in k})
    return TrainResult(metrics, trainer.model, processor, out_dir)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``recipes/finetune.py``: clear one-line errors for bad recipes and inputs."""
    from megc_vqa.models.collator import VisualInputError
    from megc_vqa.models.registry import ModelLoadError

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        recipe = parse_config(argv)
        train(recipe)
    except (ConfigError, ModelLoadError, VisualInputError, TrainingError) as err:
        print(f"finetune: error: {err}", file=sys.stderr)
        return 2
    return 0
