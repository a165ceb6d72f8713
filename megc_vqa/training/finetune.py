"""LoRA / QLoRA / full instruction tuning of a video LVLM on MEGC QA records.

Run through ``recipes/finetune.py`` (``accelerate launch recipes/finetune.py --config R.yaml [--key v]``).
The flow: parse the recipe (:mod:`megc_vqa.training.config`), read and split the records by subject
(:mod:`megc_vqa.training.split`), load model and processor (:mod:`megc_vqa.models.registry`), wrap the
model with PEFT, and train with the transformers ``Trainer`` fed raw records through
:class:`megc_vqa.models.collator.VQACollator`. The output folder holds the adapter (standard PEFT
format) or the full model, the processor, the training record ``megc_vqa_train.json``
(:class:`megc_vqa.models.contract.ModelContract`: everything inference needs to build the same inputs)
and, when there is a validation split, the validation answers of the answering engine and their scores
by the submission scorer: ``val_predictions.jsonl`` and ``val_truth.jsonl`` (prediction and
ground-truth formats; ``eval/score.py vqa --pred ... --gt ...`` reproduces the scores) and
``val_metrics.json`` (the scorer's full output), and a model card ``README.md``
(:mod:`megc_vqa.training.model_card`; a README.md of the user's is kept, never replaced).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from megc_vqa.answering.engine import Engine, EngineOptions
from megc_vqa.errors import MegcError, run_command
from megc_vqa.face_settings import FaceSettings
from megc_vqa.fileio import (
    RunRecord,
    atomic_write_text,
    check_outside,
    content_identity,
    read_json_object,
    read_jsonl,
    write_jsonl,
)
from megc_vqa.metrics.vqa import align, score_aligned
from megc_vqa.models.collator import VQACollator
from megc_vqa.models.contract import RECORD_NAME, LabelContract, ModelContract, VisualContract, read_contract
from megc_vqa.models.prompting import PromptOptions, VisualFn, blanked, get_field
from megc_vqa.models.registry import (
    load_model,
    load_processor,
    lora_target_parameters,
    lora_target_regex,
    resolve,
)
from megc_vqa.qa.io import QAFileError
from megc_vqa.training.config import NEW_MODEL_KEYS, ConfigError, Recipe, parse_config, parse_question_mix
from megc_vqa.training.data import (
    balance_classes,
    clip_key,
    drop_face_skips,
    load_records,
    make_visual_fn,
    resolve_qa_file,
    select_records,
)
from megc_vqa.training.losses import LOSS_FUNCTIONS
from megc_vqa.training.model_card import card_guard, data_summary, model_card, write_model_card
from megc_vqa.training.preflight import (
    check_lora_targets,
    check_token_budget,
    is_out_of_memory,
    lora_scope_targets,
    out_of_memory_advice,
)
from megc_vqa.training.split import select_fold, split_by_subject, subject_key

log = logging.getLogger(__name__)

VAL_PREDICTIONS = "val_predictions.jsonl"
VAL_TRUTH = "val_truth.jsonl"
VAL_METRICS = "val_metrics.json"
RUN_RECORD = "megc_vqa_run.json"
TRAIN_METRICS = "train_metrics.json"
WRITER = "megc-vqa finetune"
# The TrainingArguments that shape what is learned (a resume must keep them). The others (output folder,
# how long to train, saving, logging, evaluation, workers) may change between a run and its resume:
# raising max_steps is how a finished run trains further.
LEARNING_ARGS = (
    "learning_rate", "weight_decay", "adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm",
    "lr_scheduler_type", "lr_scheduler_kwargs", "warmup_ratio", "warmup_steps", "optim", "optim_args",
    "per_device_train_batch_size", "gradient_accumulation_steps", "seed", "data_seed", "bf16", "fp16",
    "label_smoothing_factor", "group_by_length", "activation_checkpointing", "gradient_checkpointing",
)  # fmt: skip
# DataArguments that touch only validation, caching or memory, not training.
DATA_FREE = {"eval_file", "visual_cache_dir", "visual_memory_cache", "final_eval", "max_new_tokens"}


@dataclass
class TrainResult:
    """What :func:`train` leaves: the metrics, the trained (PEFT) model and its processor."""

    metrics: dict[str, Any]
    model: Any
    processor: Any
    output_dir: Path


class TrainingError(MegcError, RuntimeError):
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


def visual_contract(recipe: Recipe) -> VisualContract:
    """The recipe's visual settings as the training record holds them."""
    d = recipe.data
    # FaceSettings.key() names its switches as the record does (face, face_margin, ...)
    face = FaceSettings.from_keys(d).key()
    return VisualContract(spec=d.visual_spec, size=d.image_size, apex_policy=d.apex_policy, **face)


def training_contract(
    recipe: Recipe, family: str | None = None, records: Sequence[Any] = (), held: Sequence[str] = ()
) -> ModelContract:
    """The record training writes: prompt, visual settings, label sets (the defaults plus any label the
    training answers use beyond them) and provenance."""
    labels = LabelContract()
    extra_fine = [
        str(get_field(r, "answer")).strip().lower()
        for r in records
        if get_field(r, "question_type") == "fine"
    ]
    fine = tuple(dict.fromkeys([*labels.fine, *extra_fine]))
    return ModelContract(
        prompt=prompt_options(recipe),
        visual=visual_contract(recipe),
        labels=LabelContract(labels.coarse, fine, labels.au_names),
        model_name_or_path=recipe.model.model_name_or_path,
        family=family,
        use_peft=recipe.model.use_peft,
        blank_pixels=recipe.data.blank_pixels,
        val_subjects=tuple(held),
        recipe=recipe.config_path,
    )


def load_training_meta(output_dir: str | Path) -> ModelContract:
    """The training record a run wrote (:func:`megc_vqa.models.contract.read_contract`)."""
    return read_contract(output_dir)


def prepare_data(recipe: Recipe) -> tuple[list[Any], list[Any], list[str]]:
    """``(train, val, held-out subject names)`` from the recipe's files and split settings."""
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
    except (QAFileError, ValueError) as err:
        raise ConfigError(str(err)) from None
    held = sorted({"/".join(subject_key(r)) for r in val})
    if d.balance_classes:
        train = balance_classes(train, d.balance_classes, d.balance_cap)
    train = select_records(train, d.question_types, parse_question_mix(d.question_mix))
    if d.max_train_samples:
        train = train[: d.max_train_samples]
    if not train:
        raise ConfigError("no training records left after the split and question_types filter")
    log.info("records: %d train, %d validation (%d held-out subjects)", len(train), len(val), len(held))
    return train, val, held


def sft_start(recipe: Recipe) -> tuple[str, str | None]:
    """``(folder or name the weights load from, SFT LoRA adapter folder or None)`` for the recipe's stage:
    ``sft_model`` is an SFT run's output, an adapter on ``model_name_or_path`` or a fully trained model."""
    sft, base = recipe.stage.sft_model, recipe.model.model_name_or_path
    if sft is None:
        return base, None
    config = Path(sft) / "adapter_config.json"
    if not config.is_file():
        return sft, None
    trained_on = read_json_object(config, "adapter config").get("base_model_name_or_path")
    if trained_on not in (None, base):
        raise ConfigError(
            f"sft_model {sft} is an adapter of {trained_on}, but model_name_or_path is {base}; "
            f"set model_name_or_path: {trained_on}"
        )
    return base, sft


def build_model(recipe: Recipe) -> tuple[Any, Any, Any]:
    """``(model ready to train, processor, family)``: loaded, optionally quantised, PEFT-wrapped."""
    from transformers import set_seed

    m, t = recipe.model, recipe.training
    base, adapter = sft_start(recipe)
    _, family = resolve(base)
    bits = 4 if m.load_in_4bit else 8 if m.load_in_8bit else None
    processor = load_processor(base)
    model = load_model(base, dtype=m.dtype, bits=bits, attn_implementation=m.attn_implementation)
    model.config.use_cache = False  # the KV cache is useless in training and conflicts with checkpointing
    set_seed(t.seed)  # LoRA initialisation
    if adapter is not None:  # a later stage goes on training the SFT adapter itself
        from peft import PeftModel, prepare_model_for_kbit_training

        if bits:
            model = prepare_model_for_kbit_training(
                model, use_gradient_checkpointing=t.activation_checkpointing
            )
        model = PeftModel.from_pretrained(model, adapter, is_trainable=True)
        log.info("training on from the SFT adapter %s (its LoRA settings, not the recipe's)", adapter)
        if t.activation_checkpointing and not bits:
            model.enable_input_require_grads()
        return model, processor, family
    if not m.use_peft:
        for name, param in model.named_parameters():
            frozen_vision = m.freeze_vision_tower and family.is_frozen_vision(name)
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

    check_lora_targets(  # PEFT's own error does not say which modules exist
        model,
        lora_scope_targets(family, m.lora_target, targets if m.lora_target_modules else None),
        recipe.config_path or "command line",
    )
    save += list(m.lora_modules_to_save or [])
    parameters = None if m.lora_target_modules else lora_target_parameters(family, m.lora_target)
    config = LoraConfig(
        r=m.lora_r,
        lora_alpha=m.lora_alpha,
        lora_dropout=m.lora_dropout,
        target_modules=targets,
        target_parameters=parameters or None,  # an MoE's fused experts; the router stays frozen
        modules_to_save=save or None,
        use_rslora=m.use_rslora,
        use_dora=m.use_dora,
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(model, config)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_all = sum(p.numel() for p in model.parameters())
    log.info("trainable parameters: %d of %d (%.2f%%)", n_train, n_all, 100 * n_train / max(1, n_all))
    if t.activation_checkpointing and not bits:
        model.enable_input_require_grads()
    return model, processor, family


def validate(
    model: Any,
    processor: Any,
    records: Sequence[Any],
    visual_fn: VisualFn,
    contract: ModelContract,
    out_dir: Path,
    free_max_new_tokens: int = 256,
) -> dict[str, Any]:
    """Answer the validation records with the answering engine (grammar, normalisation, consistency, as
    for a submission), write ``val_predictions.jsonl`` / ``val_truth.jsonl`` and score them with the
    submission scorer (``megc_vqa.metrics.vqa``); ``val_metrics.json`` is its full output, returned."""
    engine = Engine(
        model,
        processor,
        EngineOptions(batch_size=8, prompt=contract.prompt, free_max_new_tokens=free_max_new_tokens),
        name="validation",
        contract=contract,
    )
    by_clip: dict[tuple[str, str], list[Any]] = {}
    for r in records:  # one clip's questions share its visual inputs and its consistency rules
        by_clip.setdefault(clip_key(r), []).append(r)
    clips = [(visual_fn(rows[0]), [str(get_field(r, "question")) for r in rows]) for rows in by_clip.values()]
    results = engine.answer_clips(clips, datasets=[dataset for dataset, _ in by_clip])
    predictions, truth = [], []
    for rows, (answers, _) in zip(by_clip.values(), results, strict=True):
        for r, a in zip(rows, answers, strict=True):
            row = {"video_id": str(get_field(r, "id")), "video": str(get_field(r, "image_id"))}
            row["question"] = str(get_field(r, "question"))
            predictions.append({**row, "answer": a.text})
            truth.append({**row, "answer": str(get_field(r, "answer")), "dataset": get_field(r, "dataset")})
    pred_path = write_jsonl(out_dir / VAL_PREDICTIONS, predictions)
    truth_path = write_jsonl(out_dir / VAL_TRUTH, truth)
    # Scored from the files as written, exactly as `eval/score.py vqa` reads them.
    rows, problems = align(read_jsonl(pred_path), read_jsonl(truth_path))
    scores = score_aligned(rows, problems=problems)
    scores["settings"] = engine.settings()
    atomic_write_text(out_dir / VAL_METRICS, json.dumps(scores, indent=2, default=str) + "\n")
    return scores


_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin", "model.safetensors", "pytorch_model.bin")


def checkpoint_problem(folder: Path) -> str | None:
    """Why a ``checkpoint-*`` folder cannot be resumed from (``None`` when it is complete): the Trainer
    writes the weights, the optimizer and ``trainer_state.json`` one after another, so a run killed while
    saving leaves a folder that lacks some of them."""
    state = folder / "trainer_state.json"
    try:
        step = json.loads(state.read_text(encoding="utf-8")).get("global_step")
    except FileNotFoundError:
        return "no trainer_state.json"
    except (OSError, ValueError, AttributeError):
        return "trainer_state.json is cut or unreadable"
    if not isinstance(step, int):
        return "trainer_state.json has no global_step"
    weights = [folder / name for name in _WEIGHT_FILES] + sorted(folder.glob("model-*.safetensors"))
    if not any(w.is_file() and w.stat().st_size for w in weights):
        return "no model weights"
    for name in ("optimizer.pt", "scheduler.pt"):
        if (folder / name).exists() and not (folder / name).stat().st_size:
            return f"{name} is empty"
    return None


def last_complete_checkpoint(out: Path) -> Path | None:
    """The newest complete ``checkpoint-N`` folder of ``out``; incomplete newer ones are skipped, each with
    a warning naming what is missing."""
    folders = []
    for folder in out.glob("checkpoint-*") if out.is_dir() else ():
        suffix = folder.name.removeprefix("checkpoint-")
        if folder.is_dir() and suffix.isdigit():
            folders.append((int(suffix), folder))
    for _, folder in sorted(folders, reverse=True):
        problem = checkpoint_problem(folder)
        if problem is None:
            return folder
        log.warning(
            "%s is incomplete (%s; a run killed while saving?): skipped, trying the one before",
            folder,
            problem,
        )
    return None


def _resume_requested(recipe: Recipe) -> bool:
    value = recipe.training.resume_from_checkpoint
    return value is not None and str(value).lower() not in ("false", "no", "")


def _resume_path(recipe: Recipe) -> str | None:
    if not _resume_requested(recipe):
        return None
    value = recipe.training.resume_from_checkpoint
    out = Path(recipe.training.output_dir)
    if str(value).lower() in ("true", "yes", "latest", "last"):
        last = last_complete_checkpoint(out)
        if last is None:
            raise ConfigError(
                f"resume_from_checkpoint: no complete checkpoint-* folder in {out} to resume from"
            )
        return str(last)
    if not Path(value).is_dir():
        raise ConfigError(f"resume_from_checkpoint: {value} is not a checkpoint folder")
    problem = checkpoint_problem(Path(value))
    if problem:
        raise ConfigError(
            f"resume_from_checkpoint: {value} is incomplete ({problem}); name another checkpoint"
        )
    return str(value)


def run_settings(recipe: Recipe) -> dict[str, Any]:
    """What a resumed training run must share with its checkpoints: the model and LoRA settings, the data
    and visual settings (the training file by content), and the learning settings (:data:`LEARNING_ARGS`)."""
    from dataclasses import asdict

    m, d, t = recipe.model, recipe.data, recipe.training
    data = {k: v for k, v in asdict(d).items() if k not in DATA_FREE}
    if d.train_file and not str(d.train_file).startswith("synth:"):
        data["train_file"] = {
            "path": str(d.train_file),
            "content": content_identity(resolve_qa_file(d.train_file)),
        }
    model = {k: v for k, v in asdict(m).items() if k != "attn_implementation"}  # same maths either way
    settings = {
        "model": {**model, "files": content_identity(m.model_name_or_path)},
        "data": data,
        "training": {k: getattr(t, k, None) for k in LEARNING_ARGS},
    }
    return without_new_defaults(settings, recipe)


def without_new_defaults(settings: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """``settings`` without the keys issue 24 added (trl.ModelConfig's, the stage's) where they hold their
    defaults, so a run recorded before them still resumes; a stage after SFT records its keys."""
    from dataclasses import MISSING, asdict, fields

    defaults = {f.name: f.default for f in fields(recipe.model) if f.default is not MISSING}
    model = {k: v for k, v in settings["model"].items() if k not in NEW_MODEL_KEYS or v != defaults.get(k)}
    out = {**settings, "model": model}
    if recipe.stage.stage != "sft":
        out["stage"] = asdict(recipe.stage)
    return out


def check_resume_settings(recipe: Recipe, resume: str) -> None:
    """Refuse to resume (or to report as finished) checkpoints trained with other settings."""
    out = Path(resume).parent  # the run that wrote the checkpoint (output_dir, or another run's folder)
    record = RunRecord(out / RUN_RECORD)
    if record.settings is None:
        log.warning(
            "%s has no %s (a run from before it was written): resuming %s without checking that it was "
            "trained with this recipe's settings",
            out,
            RUN_RECORD,
            resume,
        )
        return
    differences = record.differences(run_settings(recipe))
    if differences:
        raise ConfigError(
            f"resume_from_checkpoint: {resume} was trained with other settings than this recipe "
            f"({'; '.join(differences)}; recorded in {record.path}): resuming would continue, or report, "
            "another run. Use the recipe it was trained with, or another output_dir (or "
            "resume_from_checkpoint false to train from scratch)."
        )


def finished_at(recipe: Recipe, checkpoint: str) -> int | None:
    """The checkpoint's step when it already ends the run the recipe asks for (``max_steps`` reached, or
    every epoch done), else ``None``."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text(encoding="utf-8"))
    step, epoch = int(state.get("global_step", 0)), float(state.get("epoch") or 0.0)
    t = recipe.training
    if t.max_steps and t.max_steps > 0:
        return step if step >= t.max_steps else None
    return step if epoch >= float(t.num_train_epochs) - 1e-6 else None


def train(
    recipe: Recipe,
    visual_fn: VisualFn | None = None,
    data: tuple[list[Any], list[Any], list[str]] | None = None,
) -> TrainResult:
    """Run one fine-tuning recipe; returns the final metrics (training loss, validation answers).

    visual_fn: record -> visual inputs; default: the visual layer's sampler with the recipe's settings.
    data: ``(train, val, held-out subjects)`` instead of the recipe's files (rejection sampling's answers).
    """
    import torch
    from torch.utils.data import Dataset
    from transformers import Trainer

    t, d = recipe.training, recipe.data
    if t.label_names is None:
        t.label_names = ["labels"]  # PeftModel hides forward's signature from the Trainer
    if t.activation_checkpointing and t.activation_checkpointing_kwargs is None:
        t.activation_checkpointing_kwargs = {"use_reentrant": False}
    out_dir = Path(t.output_dir)
    resume = _resume_path(recipe)
    if resume is not None:
        check_resume_settings(recipe, resume)
    if resume is not None and (step := finished_at(recipe, resume)) is not None:
        # Resuming a finished run would train one more step and overwrite the final adapter: do nothing.
        limit = (
            f"max_steps {t.max_steps}"
            if t.max_steps and t.max_steps > 0
            else f"{t.num_train_epochs:g} epoch(s)"
        )
        log.warning(
            "%s already finished (%s reached at step %d): nothing to do; raise max_steps or num_train_epochs "
            "to train further",
            resume,
            limit,
            step,
        )
        metrics_path = out_dir / TRAIN_METRICS
        metrics = json.loads(metrics_path.read_text()) if metrics_path.is_file() else {}
        return TrainResult({**metrics, "already_finished": True}, None, None, out_dir)
    check_output_dir(recipe)  # before any data or model loads

    if os.environ.get("RANK", "0") == "0":  # what the checkpoints about to be written are trained with
        RunRecord(out_dir / RUN_RECORD).start(run_settings(recipe))
    train_records, val_records, held = data or prepare_data(recipe)
    options = prompt_options(recipe)
    model, processor, family = build_model(recipe)
    contract = training_contract(recipe, family.name, train_records, held)
    contract = replace(contract, model_name_or_path=sft_start(recipe)[0])  # a later stage's SFT model
    train_records, val_records, face_skips, visual_fn, val_visual_fn = stage_visuals(
        recipe, contract, train_records, val_records, visual_fn
    )

    class Records(Dataset):
        def __init__(self, rows: list[dict]):
            self.rows = rows

        def __len__(self) -> int:
            return len(self.rows)

        def __getitem__(self, i: int) -> dict:
            return self.rows[i]

    collator = VQACollator(processor, visual_fn, options)
    if d.max_length:  # fail before the first step, not after minutes of loading and stepping
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
        compute_loss_func=LOSS_FUNCTIONS[d.loss_weighting],
    )
    if trainer.compute_loss_func is not None:
        trainer.loss_is_scaled_for_ga = False  # a per-batch mean: the Trainer divides by the accumulation
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise TrainingError(out_of_memory_advice(recipe)) from None
    metrics: dict[str, Any] = dict(result.metrics)
    metrics["data_summary"] = data_summary(train_records, val_records)  # for the model card
    if contract.visual.face_settings().pipeline:
        metrics["face_skipped_clips"] = len(face_skips)
    metrics = save_run(trainer, recipe, contract, (val_records, val_visual_fn), metrics)
    return TrainResult(metrics, trainer.model, processor, out_dir)


def save_run(
    trainer: Any,
    recipe: Recipe,
    contract: ModelContract,
    validation: tuple[Sequence[Any], VisualFn | None],
    metrics: dict[str, Any],
) -> dict[str, Any]:
    """What every stage leaves in ``output_dir`` after training: the adapter (PEFT format) or full model and
    the processor, the training record, the validation answers and scores, ``train_metrics.json`` and the
    model card."""
    out_dir, d = Path(recipe.training.output_dir), recipe.data
    val_records, val_visual_fn = validation
    # Claimed before the save: PEFT writes (or updates) a README.md in the folder; a user's is kept.
    guard = card_guard(out_dir, WRITER) if trainer.is_world_process_zero() else contextlib.nullcontext(False)
    with guard as card:
        trainer.save_model(str(out_dir))  # adapter (PEFT format) or full model, plus the processor
    if trainer.is_world_process_zero():
        adapter_config = out_dir / "adapter_config.json"
        if adapter_config.is_file():  # name the base as the user did: a registry name stays portable
            config = read_json_object(adapter_config, "adapter config")
            config["base_model_name_or_path"] = contract.model_name_or_path or recipe.model.model_name_or_path
            atomic_write_text(adapter_config, json.dumps(config, indent=2))
        record = contract.write(out_dir)
        log.info("training record: %s", record)
        if val_records and d.final_eval:
            trainer.model.config.use_cache = True
            scores = validate(
                trainer.model, trainer.processing_class, val_records, val_visual_fn, contract, out_dir,
                d.max_new_tokens,
            )  # fmt: skip
            metrics.update({f"val_{k}": v for k, v in scores["overall"].items()})
            log.info("validation: %s (%s)", out_dir / VAL_METRICS, scores["variant"])
        atomic_write_text(out_dir / TRAIN_METRICS, json.dumps(metrics, indent=2, default=str))
        if card:
            log.info("model card: %s", write_model_card(out_dir, model_card(out_dir)))
        log.info("saved to %s: %s", out_dir, {k: v for k, v in metrics.items() if "uf1" in k or "loss" in k})
    return metrics


def stage_visuals(
    recipe: Recipe,
    contract: ModelContract,
    train_records: list[Any],
    val_records: list[Any],
    visual_fn: VisualFn | None = None,
) -> tuple[list[Any], list[Any], list[str], VisualFn | None, VisualFn | None]:
    """The visual inputs of a training stage (SFT, GRPO, RFT): ``(train, validation, face skips, visual_fn,
    validation visual_fn)``. Without ``visual_fn`` both are built from the contract's visual settings, and
    validation sees what a test clip gets: the apex always estimated. The clips they cannot use are left out
    (:func:`drop_unusable_clips`), and the pixels blanked when the recipe asks (``blank_pixels``)."""
    d = recipe.data
    val_visual_fn = visual_fn
    if visual_fn is None:
        visual_fn = make_visual_fn(contract.visual, d.visual_cache_dir, d.visual_memory_cache)
        val_visual_fn = make_visual_fn(
            contract.visual, d.visual_cache_dir, d.visual_memory_cache, apex_policy="estimated"
        )
    train_records, val_records, face_skips = drop_unusable_clips(
        contract, train_records, val_records, visual_fn, val_visual_fn
    )
    if d.blank_pixels:
        visual_fn, val_visual_fn = blanked(visual_fn), blanked(val_visual_fn)
    return train_records, val_records, face_skips, visual_fn, val_visual_fn


def drop_unusable_clips(
    contract: ModelContract,
    train_records: list[Any],
    val_records: list[Any],
    visual_fn: VisualFn | None,
    val_visual_fn: VisualFn | None,
) -> tuple[list[Any], list[Any], list[str]]:
    """``(train, validation, skips)``: with a face pipeline, the records of clips without one usable face
    are named, counted and left out (every stage: a later stage trains on the clips SFT trained on)."""
    if not contract.visual.face_settings().pipeline:
        return train_records, val_records, []
    train_records, skips = _without_face_skips(train_records, visual_fn, "training")
    val_records, val_skips = _without_face_skips(val_records, val_visual_fn, "validation")
    return train_records, val_records, skips + val_skips


def _without_face_skips(
    records: list[Any], visual_fn: VisualFn | None, what: str
) -> tuple[list[Any], list[str]]:
    """``records`` less those of clips the face pipeline skips; all of them skipped is a TrainingError."""
    if not records or visual_fn is None:
        return records, []
    kept, skipped = drop_face_skips(records, visual_fn, what)
    if not kept:
        raise TrainingError(
            f"the face pipeline skipped every {what} clip ({len(skipped)}; the first: {skipped[0]}); check the "
            "face settings (face, face_margin, face_detector) against the frames, or use face: none"
        )
    return kept, skipped


def _main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    argv, overwrite = pop_overwrite_flag(sys.argv[1:] if argv is None else argv)
    recipe = parse_config(argv)
    recipe.overwrite_output_dir = overwrite
    run_stage(recipe)
    return 0


def run_stage(recipe: Recipe, visual_fn: VisualFn | None = None) -> TrainResult:
    """Train the recipe's stage: ``sft`` (:func:`train`), ``grpo`` or ``rft`` (their modules)."""
    if recipe.stage.stage == "grpo":
        from megc_vqa.training.grpo import train_grpo

        return train_grpo(recipe, visual_fn)
    if recipe.stage.stage == "rft":
        from megc_vqa.training.rft import train_rft

        return train_rft(recipe, visual_fn)
    return train(recipe, visual_fn)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``recipes/finetune.py``: behind the project's error boundary (one line, exit 2, and
    under ``accelerate launch`` the line comes again after the launcher's traceback)."""
    return run_command(_main, argv)


# What a training run leaves in output_dir early on: a folder holding one of them is an earlier run's.
_RUN_FILES = (
    RECORD_NAME,
    RUN_RECORD,
    "adapter_config.json",
    "trainer_state.json",
    "train_metrics.json",
    "runs",
    "rft_samples.jsonl",
)
# What a training run leaves that is worth keeping: its weights, its training record, its metrics.
_RESULT_FILES = (*_WEIGHT_FILES, RECORD_NAME, "train_metrics.json")
OVERWRITE_FLAG = "--overwrite_output_dir"


def pop_overwrite_flag(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--overwrite_output_dir [true|false]``, and whether it asked to overwrite: a switch
    of the command line only (a recipe that always overwrote would defeat it), as HF scripts spell it."""
    rest, overwrite, args = [], False, list(argv)
    i = 0
    while i < len(args):
        arg = args[i]
        name, eq, value = arg.partition("=")
        if name != OVERWRITE_FLAG:
            rest.append(arg)
        elif eq:
            overwrite = _flag_value(value)
        elif i + 1 < len(args) and args[i + 1].lower() in ("true", "false", "yes", "no", "1", "0"):
            overwrite, i = _flag_value(args[i + 1]), i + 1
        else:
            overwrite = True
        i += 1
    return rest, overwrite


def _flag_value(value: str) -> bool:
    if value.lower() not in ("true", "false", "yes", "no", "1", "0"):
        raise ConfigError(f"{OVERWRITE_FLAG}={value}: give true or false (or the flag alone)")
    return value.lower() in ("true", "yes", "1")


def earlier_results(out: Path) -> list[str]:
    """What an earlier training run left in ``out`` that a new run would replace: its weights, training
    record and metrics at the top, and its complete checkpoints (a run cut before its first checkpoint
    leaves nothing worth keeping)."""
    found = [name for name in _RESULT_FILES if (out / name).is_file()]
    found += sorted(
        f.name
        for f in out.glob("checkpoint-*")
        if f.is_dir() and f.name.removeprefix("checkpoint-").isdigit() and checkpoint_problem(f) is None
    )
    return found


def check_output_dir(recipe: Recipe) -> None:
    """Refuse an ``output_dir`` that is a file; that is or holds the base model, the QA files or the working
    folder; that is not empty and not an earlier training run's (the trainer writes adapter, tokenizer,
    processor and README files there, replacing those of the same names: a base model's own); or that
    holds an earlier run's adapter or checkpoints, unless the recipe resumes (``resume_from_checkpoint``)
    or ``recipe.overwrite_output_dir`` (the ``--overwrite_output_dir`` switch) says to replace them."""
    out = Path(recipe.training.output_dir)
    if os.path.lexists(out) and not out.is_dir():
        kind = "link to nothing" if not os.path.exists(out) else "file"
        raise ConfigError(
            f"output_dir {out}: is a {kind}, not a folder; give a folder (created when missing)"
        )
    inputs: list[tuple[str, Path]] = [("the current folder", Path.cwd())]
    candidates = [
        ("the base model", recipe.model.model_name_or_path),
        ("train_file", recipe.data.train_file),
        ("eval_file", recipe.data.eval_file),
    ]
    inputs += [(what, Path(value)) for what, value in candidates if value and Path(value).exists()]
    check_outside(out, inputs, label=f"output_dir {out}")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not (any((out / name).exists() for name in _RUN_FILES) or any(out.glob("checkpoint-*"))):
        shown = ", ".join(sorted(p.name for p in out.iterdir())[:5])
        raise ConfigError(
            f"output_dir {out}: holds {shown}, and no earlier training run ({RECORD_NAME} or checkpoint-*); "
            "the trainer would replace files there. Choose a new or empty output_dir"
        )
    results = earlier_results(out)
    if _resume_requested(recipe) or not results:
        return
    if recipe.overwrite_output_dir:
        replace_earlier_run(out)
        return
    shown = ", ".join(results[:5]) + (f" and {len(results) - 5} more" if len(results) > 5 else "")
    raise ConfigError(
        f"output_dir {out}: holds an earlier training run ({shown}); training again would replace it. "
        f"Pass --resume_from_checkpoint true to continue it, {OVERWRITE_FLAG} to replace it, "
        "or choose another output_dir"
    )


def replace_earlier_run(out: Path) -> None:
    """Before a run that replaces an earlier one (``--overwrite_output_dir``): remove the earlier run's
    ``checkpoint-N`` folders (real folders only, never through a link), so that its checkpoints are not
    mixed with the new run's (a later resume would take the newest of either); the other files of the
    earlier run are overwritten by the new run's."""
    import shutil

    for folder in sorted(out.glob("checkpoint-*")):
        if folder.name.removeprefix("checkpoint-").isdigit() and folder.is_dir() and not folder.is_symlink():
            log.warning("%s: removing %s of the earlier run (%s)", out, folder.name, OVERWRITE_FLAG)
            shutil.rmtree(folder)
