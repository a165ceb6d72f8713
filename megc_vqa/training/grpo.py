"""The GRPO stage (``stage: grpo``): ``trl.GRPOTrainer`` on the QA records, rewarded by the MEGC scorer.

    accelerate launch recipes/finetune.py --config recipes/tiny/grpo.yaml --sft_model runs/tiny-lora

It starts from an SFT run's output (``sft_model``: its LoRA adapter, trained on; or its full model) and
samples ``num_generations`` answers per question; each answer is rewarded by
:mod:`megc_vqa.training.rewards` (the scorer's value of the answer, and whether it follows the kind's
grammar), weighted by ``reward_weights``. The prompts are the project's own
(:func:`megc_vqa.models.prompting.build_messages`: the same visual inputs, description line and system
prompt as SFT and answering), and the output folder is an SFT one: the adapter (or full model), the
training record, validation answers and scores, plus ``reward_curves.png`` and ``reward_log.jsonl``.
``balance_classes`` repeats the clips of rare classes as in SFT (class-balanced sampling).

How the VLM inputs reach GRPOTrainer (trl 1.16): each dataset row carries the conversational ``prompt``
with ``{"type": "image"}`` placeholders and its ``images``; the trainer puts the images into the
placeholders (``prepare_multimodal_messages``), renders and tokenises the prompts with the processor's
chat template, and calls the processor again on the rendered text for the log-probability pass; it
forwards ``pixel_values``/``image_grid_thw``/``mm_token_type_ids`` (images only: no video inputs, hence
``visual_mode: images``). Neither call passes the recipe's pixel bounds, so the one adapter here is
:func:`processor_for_trl`: for the run, the processor's image size defaults are the recipe's bounds, so
the pixels match those of SFT and answering (a test compares them), and it pads on the left as the
trainer assumes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from megc_vqa.fileio import RunRecord, atomic_write_text
from megc_vqa.models.prompting import (
    PromptOptions,
    VisualFn,
    _pixel_kwargs,
    build_messages,
    get_field,
    model_visuals,
)
from megc_vqa.training.config import ConfigError, Recipe
from megc_vqa.training.finetune import (
    RUN_RECORD,
    TrainingError,
    TrainResult,
    _resume_path,
    build_model,
    check_output_dir,
    check_resume_settings,
    finished_at,
    prepare_data,
    prompt_options,
    run_settings,
    save_run,
    stage_visuals,
)
from megc_vqa.training.preflight import is_out_of_memory, out_of_memory_advice
from megc_vqa.training.rewards import reward_functions
from megc_vqa.training.stages import check_answer_bound, reward_vocab, stage_contract

log = logging.getLogger(__name__)

REWARD_LOG = "reward_log.jsonl"
REWARD_PLOT = "reward_curves.png"
# Columns of a GRPO row the rewards read (the rest of the record stays in memory, found by "row").
REWARD_COLUMNS = ("id", "question", "answer", "question_type", "dataset")


def grpo_dataset(records: Sequence[Any], visual_fn: VisualFn, options: PromptOptions) -> Any:
    """A ``datasets.Dataset`` of the records whose rows gain, when read, the conversational ``prompt``
    (the project's messages, image placeholders) and the ``images`` (the visual layer's, in order)."""
    from datasets import Dataset

    rows = [
        {"row": i, **{k: str(get_field(r, k) or "") for k in REWARD_COLUMNS}} for i, r in enumerate(records)
    ]

    def with_visuals(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        prompts, images = [], []
        for i, question in zip(batch["row"], batch["question"], strict=True):
            visual = visual_fn(records[i])
            prompts.append(build_messages(question, visual, None, options))
            images.append(model_visuals(visual, options.visual_mode)[0])
        return {**batch, "prompt": prompts, "images": images}

    return Dataset.from_list(rows).with_transform(with_visuals)


@contextlib.contextmanager
def processor_for_trl(processor: Any, options: PromptOptions) -> Iterator[None]:
    """Within the block, the processor behaves as GRPOTrainer assumes and as SFT encodes: the image
    processor's default size is the recipe's pixel bounds (what
    :func:`megc_vqa.models.prompting.encode_prompts` passes per call), and the tokenizer pads on the left
    (the trainer left-pads the prompt ids itself but takes ``mm_token_type_ids`` from the processor's
    padding: right padding misplaces the image tokens of the shorter prompts of a batch). The processor is
    saved unchanged afterwards."""
    image_processor, tokenizer = processor.image_processor, processor.tokenizer
    size = _pixel_kwargs(options, processor)["images_kwargs"].get("size")
    before = {k: getattr(image_processor, k, None) for k in ("size", "min_pixels", "max_pixels")}
    padding_side = tokenizer.padding_side
    if size is not None:
        image_processor.size = size
        for key, edge in (("min_pixels", "shortest_edge"), ("max_pixels", "longest_edge")):
            if hasattr(image_processor, key):
                setattr(image_processor, key, size.get(edge, before[key]))
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = padding_side
        for key, value in before.items():
            if value is not None or hasattr(image_processor, key):
                setattr(image_processor, key, value)


VISION_TOKENS = ("<|vision_start|>", "<|vision_end|>", "<|vision_pad|>", "<|image_pad|>", "<|video_pad|>")


def suppress_vision_tokens(recipe: Recipe, tokenizer: Any) -> list[str]:
    """Keep sampled answers free of the vision tokens. The model counts the image and video pad tokens of
    its input against the visual features it is given, so a sampled pad token fails the log-probability
    pass (trl suppresses the image pad only, not the video pad); the vision start/end tokens never belong
    in an answer either. Sets ``generation_kwargs`` (vLLM: ``bad_words``); returns the tokens suppressed."""
    t = recipe.training
    unknown = tokenizer.unk_token_id
    found = [tok for tok in VISION_TOKENS if tokenizer.convert_tokens_to_ids(tok) not in (None, unknown)]
    extra = dict(t.generation_kwargs or {})
    if t.use_vllm:
        extra["bad_words"] = sorted({*extra.get("bad_words", []), *found})
    else:
        ids = [tokenizer.convert_tokens_to_ids(tok) for tok in found]
        extra["suppress_tokens"] = sorted({*extra.get("suppress_tokens", []), *ids})
    t.generation_kwargs = extra
    return found


def generation_backend(recipe: Recipe) -> str:
    """``vllm`` when the recipe asks for it and vLLM is installed; else plain ``generate`` (said once)."""
    t = recipe.training
    if t.use_vllm and importlib.util.find_spec("vllm") is None:
        log.warning(
            "use_vllm is set but vLLM is not installed: generating with transformers' generate instead"
        )
        t.use_vllm = False
    return "vllm" if t.use_vllm else "generate"


def reward_history(log_history: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The reward entries of the trainer's log: step, mean reward, and each reward's mean and spread."""
    keep = (
        "reward",
        "reward_std",
        "frac_reward_zero_std",
        "completions/mean_length",
        "completions/clipped_ratio",
    )
    out = []
    for entry in log_history:
        values = {k: v for k, v in entry.items() if k in keep or k.startswith("rewards/")}
        if values:
            out.append({"step": entry.get("step"), **values})
    return out


def plot_reward_curves(history: Sequence[dict[str, Any]], path: Path) -> Path | None:
    """Each reward's mean over the steps (and the total), one line each; ``None`` without entries."""
    series = sorted(
        {k for e in history for k in e if k == "reward" or (k.startswith("rewards/") and k.endswith("/mean"))}
    )
    if not series:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for key in series:
        points = [(e["step"], e[key]) for e in history if key in e and e.get("step") is not None]
        ax.plot(
            *zip(*points, strict=True), marker=".", label="total" if key == "reward" else key.split("/")[1]
        )
    ax.set_xlabel("step")
    ax.set_ylabel("mean reward")
    ax.set_ylim(-0.02, None)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _finished(recipe: Recipe, resume: str | None) -> TrainResult | None:
    """The result of a run already finished at ``resume`` (nothing to do), else ``None``."""
    if resume is None or (step := finished_at(recipe, resume)) is None:
        return None
    out = Path(recipe.training.output_dir)
    log.warning(
        "%s already finished at step %d: nothing to do; raise max_steps to train further", resume, step
    )
    path = out / "train_metrics.json"
    metrics = json.loads(path.read_text()) if path.is_file() else {}
    return TrainResult({**metrics, "already_finished": True}, None, None, out)


def train_grpo(recipe: Recipe, visual_fn: VisualFn | None = None) -> TrainResult:
    """Run a ``stage: grpo`` recipe (see the module doc); returns the metrics and the trained model."""
    import os

    import torch
    from trl import GRPOTrainer

    t = recipe.training
    where = recipe.config_path or "command line"
    out_dir = Path(t.output_dir)
    resume = _resume_path(recipe)
    if resume is not None:
        check_resume_settings(recipe, resume)
    if (done := _finished(recipe, resume)) is not None:
        return done
    check_output_dir(recipe)
    if os.environ.get("RANK", "0") == "0":
        RunRecord(out_dir / RUN_RECORD).start(run_settings(recipe))
    train_records, val_records, held = prepare_data(recipe)
    options = prompt_options(recipe)
    model, processor, family = build_model(recipe)
    contract = stage_contract(recipe, family.name, train_records, held)
    check_answer_bound(
        train_records, processor.tokenizer, t.max_completion_length, "max_completion_length", where
    )
    train_records, val_records, _, visual_fn, val_visual_fn = stage_visuals(
        recipe, contract, train_records, val_records, visual_fn
    )
    log.info(
        "GRPO: %d questions, %d answers each, generation by %s",
        len(train_records),
        t.num_generations,
        generation_backend(recipe),
    )
    suppress_vision_tokens(recipe, processor.tokenizer)
    trainer = GRPOTrainer(
        model=model,
        reward_funcs=reward_functions(recipe.stage.rewards, reward_vocab(contract)),
        args=t,
        train_dataset=grpo_dataset(train_records, visual_fn, options),
        processing_class=processor,
    )
    try:
        with processor_for_trl(processor, options):
            result = trainer.train(resume_from_checkpoint=resume)
    except (torch.OutOfMemoryError, RuntimeError) as err:
        if not is_out_of_memory(err):
            raise
        raise TrainingError(out_of_memory_advice(recipe)) from None
    if "ref" in getattr(trainer.model, "peft_config", {}):  # the KL reference (beta > 0) is not the result
        trainer.model.delete_adapter("ref")
    history = reward_history(trainer.state.log_history)
    metrics = save_run(trainer, recipe, contract, (val_records, val_visual_fn), dict(result.metrics))
    if trainer.is_world_process_zero():
        atomic_write_text(out_dir / REWARD_LOG, "".join(json.dumps(h) + "\n" for h in history))
        if plot_reward_curves(history, out_dir / REWARD_PLOT):
            log.info("reward curves: %s", out_dir / REWARD_PLOT)
    if not history:
        raise ConfigError(f"{where}: GRPO logged no rewards (logging_steps above max_steps?)")
    return TrainResult(metrics, trainer.model, processor, out_dir)
