"""Fine-tuning configuration: a flat YAML recipe plus ``--key value`` overrides (``HfArgumentParser``).

Keys come from three dataclasses: :class:`ModelArguments` and :class:`DataArguments` here, and
``transformers.TrainingArguments`` (learning rate, schedule, epochs, batch size, gradient accumulation and
checkpointing, seed, checkpoints, ``resume_from_checkpoint``, TensorBoard logging, ...). A key that none
of them knows is an error that names the file and the closest known keys, so a typo never silently falls
back to a default.

    recipe = parse_config(["--config", "recipes/tiny/lora.yaml", "--max_steps", "2"])
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from megc_vqa.errors import InputError
from megc_vqa.fileio import load_yaml_file, resolve_inside
from megc_vqa.limits import (
    BATCH_SIZE,
    EPOCHS,
    IMAGE_PIXELS,
    LORA_RANK,
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
    TRAIN_STEPS,
    WORKERS,
    check_count,
)
from megc_vqa.models.registry import LORA_SCOPES
from megc_vqa.training.losses import LOSS_WEIGHTINGS


class ConfigError(ValueError):
    """A recipe or command line that cannot be used as written; the message says what to change."""


@dataclass
class ModelArguments:
    """Which model, how it is loaded, and what is trained."""

    model_name_or_path: str = field(
        default="qwen2.5-vl-3b",
        metadata={"help": "registry name (qwen2.5-vl-3b, tiny-qwen2.5-vl, ...), hub id, or model folder"},
    )
    dtype: str = field(
        default="auto",
        metadata={"help": "weights dtype", "choices": ["auto", "bfloat16", "float16", "float32"]},
    )
    attn_implementation: str | None = field(
        default=None, metadata={"help": "sdpa, eager or flash_attention_2; default: the model's choice"}
    )
    load_in_4bit: bool = field(
        default=False, metadata={"help": "QLoRA: load the language model in 4-bit NF4"}
    )
    load_in_8bit: bool = field(default=False, metadata={"help": "load the language model in 8-bit"})
    use_peft: bool = field(default=True, metadata={"help": "train a LoRA adapter (false: full fine-tuning)"})
    lora_r: int = field(default=16, metadata={"help": "LoRA rank"})
    lora_alpha: int = field(default=32, metadata={"help": "LoRA alpha (scale = alpha / r)"})
    lora_dropout: float = field(default=0.05, metadata={"help": "LoRA dropout"})
    lora_target: str = field(
        default="language",
        metadata={"help": f"where LoRA goes: {', '.join(LORA_SCOPES)} joined by '+', or 'all'"},
    )
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "explicit module names or a regex; overrides lora_target"}
    )
    train_fully: str | None = field(
        default=None,
        metadata={
            "help": "scopes trained in full next to LoRA and saved in the adapter: vision, merger ('+')"
        },
    )
    freeze_vision_tower: bool = field(
        default=True,
        metadata={"help": "full fine-tuning only: keep the vision tower (not the merger) frozen"},
    )
    freeze_language_model: bool = field(
        default=False, metadata={"help": "full fine-tuning only: keep the language model frozen"}
    )


@dataclass
class DataArguments:
    """Which records, how they become visual inputs and prompts, and how validation is split."""

    train_file: str | None = field(
        default=None,
        metadata={
            "help": "QA records (qa.jsonl written by `megc-vqa prep`), or synth:NAME for synthetic "
            "records built on first use in the cache (synth:tiny)"
        },
    )
    eval_file: str | None = field(
        default=None, metadata={"help": "separate validation records; default: split train_file by subject"}
    )
    visual_spec: str = field(
        default="oao+flow",
        metadata={
            "help": "visual sampler spec of megc_vqa.visual.samplers (key frames, flow, video, frames)"
        },
    )
    visual_mode: str = field(
        default="images",
        metadata={
            "help": "images: key frames + flow as images; video: key frames as one video + flow image",
            "choices": ["images", "video"],
        },
    )
    image_size: int = field(default=224, metadata={"help": "side of the sampled frames in pixels"})
    face_crop: bool = field(default=False, metadata={"help": "crop frames to the detected face"})
    apex_policy: str = field(
        default="annotated",
        metadata={
            "help": "apex of the training clips: annotated (estimated where missing), estimated (always, "
            "as at test time), mix (half of the clips each, stable per clip); validation always estimates",
            "choices": ["annotated", "estimated", "mix"],
        },
    )
    visual_cache_dir: str | None = field(
        default=None, metadata={"help": "disk cache for sampled frames/flow"}
    )
    min_pixels: int | None = field(
        default=None, metadata={"help": "processor minimum pixels per image/frame"}
    )
    max_pixels: int | None = field(
        default=None, metadata={"help": "processor maximum pixels per image/frame"}
    )
    describe_visuals: bool = field(
        default=True, metadata={"help": "prefix the question with the visual layer's description"}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "system message (default: template's)"})
    question_types: list[str] | None = field(
        default=None, metadata={"help": "train only on these question types (coarse, fine, au, ...)"}
    )
    question_mix: str | None = field(
        default=None,
        metadata={"help": "repeat records of a type, e.g. 'coarse=3,joint=2' (integers; default 1 each)"},
    )
    balance_classes: str | None = field(
        default=None,
        metadata={
            "help": "a question type (fine, coarse): clips of its rare answer classes are repeated, per "
            "dataset, towards the commonest class's count (at most balance_cap times), every question of "
            "the clip with them; UF1 and UAR weigh each class the same"
        },
    )
    balance_cap: int = field(default=4, metadata={"help": "most repeats of a clip under balance_classes"})
    loss_weighting: str = field(
        default="token",
        metadata={
            "help": "token: every answer token weighs the same (the transformers default: long answers such "
            "as AU lists dominate); answer: each answer's tokens are averaged first, so every question "
            "weighs the same, as in the MEGC scores",
            "choices": list(LOSS_WEIGHTINGS),
        },
    )
    max_train_samples: int | None = field(default=None, metadata={"help": "cap on training records"})
    max_length: int | None = field(
        default=None,
        metadata={"help": "tokens per sample (prompt + visual + answer); longer is an error before training"},
    )
    val_fraction: float = field(
        default=0.0, metadata={"help": "fraction of subjects (per dataset) held out for validation"}
    )
    val_subjects: list[str] | None = field(
        default=None, metadata={"help": "subjects held out, as 'dataset/subject' or 'subject'"}
    )
    loso_fold: str | None = field(
        default=None,
        metadata={"help": "leave-one-subject-out: hold out this subject ('dataset/subject') or fold number"},
    )
    split_seed: int = field(default=0, metadata={"help": "seed of the subject split"})
    blank_pixels: bool = field(default=False, metadata={"help": "ablation: black images and videos"})
    final_eval: bool = field(
        default=True, metadata={"help": "after training, answer the validation records and write metrics"}
    )
    max_new_tokens: int = field(
        default=256, metadata={"help": "length cap of free-text answers in the final evaluation"}
    )
    visual_memory_cache: int = field(
        default=512, metadata={"help": "clips whose visual inputs are kept in memory between epochs"}
    )


# Defaults of TrainingArguments that differ for this project (a recipe may still set any of them).
TRAINING_DEFAULTS: dict[str, Any] = {
    "remove_unused_columns": False,  # the collator needs the raw records
    "report_to": ["tensorboard"],
    "logging_steps": 10,
    "save_strategy": "steps",
    "save_steps": 100,
    "save_total_limit": 2,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.03,
    "per_device_train_batch_size": 1,
    "gradient_accumulation_steps": 8,
    "num_train_epochs": 3.0,
    "output_dir": "runs/finetune",
    "dataloader_num_workers": 0,
}


@dataclass
class Recipe:
    model: ModelArguments
    data: DataArguments
    training: Any  # transformers.TrainingArguments
    config_path: str | None = None
    # ``--overwrite_output_dir`` (command line only, see finetune.pop_overwrite_flag): replace an earlier run
    overwrite_output_dir: bool = False


def _dataclass_types() -> tuple[type, ...]:
    from transformers import TrainingArguments

    return (ModelArguments, DataArguments, TrainingArguments)


def known_keys() -> set[str]:
    return {f.name for cls in _dataclass_types() for f in fields(cls) if f.init}


def _unknown(keys: list[str], where: str) -> ConfigError:
    known = sorted(known_keys())
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hints.append(f"{key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    return ConfigError(f"{where}: unknown key(s) {'; '.join(hints)}. See `recipes/finetune.py --help`.")


def load_yaml(path: str | Path) -> dict[str, Any]:
    import yaml

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"recipe {p} does not exist")
    try:
        data = load_yaml_file(p, "recipe") or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a recipe is a mapping of key: value lines, got {type(data).__name__}")
    unknown = sorted(set(data) - known_keys())
    if unknown:
        raise _unknown(unknown, str(p))
    return data


# Recipe keys that name files or folders. Written in a recipe they must stay below the working folder
# (relative, no '..'): recipes travel between labs, and a path in one must not read or write anywhere the
# user did not choose. An absolute or outside path is given on the command line (``--output_dir /x``).
RECIPE_PATH_KEYS = ("train_file", "eval_file", "visual_cache_dir", "output_dir", "logging_dir")


def check_recipe_paths(
    values: dict[str, Any], config_path: str | Path, given: set[str] = frozenset()
) -> None:
    """Refuse a path key of a recipe (:data:`RECIPE_PATH_KEYS`) that is absolute or climbs out of the working
    folder, unless the command line gives that key (``given``), which then wins anyway."""
    from megc_vqa.training.data import SYNTH_PREFIX

    cwd = Path.cwd()
    for key in RECIPE_PATH_KEYS:
        value = values.get(key)
        if key in given or not isinstance(value, str) or value.startswith(SYNTH_PREFIX):
            continue
        allow = (
            "relative paths in a recipe are taken from the working folder and must stay below it; give this "
            f"path on the command line instead (--{key} {value})"
        )
        try:
            resolve_inside(value, [cwd], f"{config_path}: {key}", allow)
        except InputError as err:
            raise ConfigError(str(err)) from None


def build_parser():
    """The ``HfArgumentParser`` over the three dataclasses, with this project's training defaults."""
    from transformers import HfArgumentParser

    # allow_abbrev=False: a typo such as --max_step must not silently mean --max_steps.
    parser = HfArgumentParser(
        _dataclass_types(), description="LoRA/QLoRA fine-tuning of a video LVLM", allow_abbrev=False
    )
    parser.add_argument("--config", default=None, help="YAML recipe; command-line keys override it")
    parser.set_defaults(**TRAINING_DEFAULTS)
    return parser


def parse_config(argv: list[str] | None = None) -> Recipe:
    """Parse ``--config recipe.yaml`` and ``--key value`` overrides into a :class:`Recipe`."""
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    config_path = None
    if "--config" in args:
        i = args.index("--config")
        if i + 1 >= len(args):
            raise ConfigError("--config needs a path to a YAML recipe")
        config_path = args[i + 1]
        del args[i : i + 2]
        values = load_yaml(config_path)
        given = {a.split("=", 1)[0].lstrip("-").replace("-", "_") for a in args if a.startswith("--")}
        check_recipe_paths(values, config_path, given)
        for action in parser._actions:  # a recipe value replaces the default; the CLI still wins
            if action.dest in values:
                action.required = False
        parser.set_defaults(**values)
    try:
        # The outputs are the three dataclasses, a namespace holding --config, and the leftover strings.
        *outputs, remaining = parser.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
        model_args, data_args, training_args = outputs[:3]
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{config_path or 'command line'}: {err}") from None
    if remaining:
        flags = [r.lstrip("-").split("=")[0] for r in remaining if r.startswith("--")]
        raise _unknown(flags or remaining, "command line")
    recipe = Recipe(model_args, data_args, training_args, config_path)
    validate(recipe)
    return recipe


def parse_question_mix(mix: str | dict | None) -> dict[str, int]:
    """``'coarse=3,joint=2'`` (or a YAML mapping) -> ``{'coarse': 3, 'joint': 2}``."""
    if not mix:
        return {}
    items = (
        mix.items() if isinstance(mix, dict) else (p.split("=", 1) for p in str(mix).split(",") if p.strip())
    )
    out = {}
    for item in items:
        try:
            key, value = item
            out[str(key).strip()] = int(value)
        except ValueError:
            raise ConfigError(
                f"question_mix: expected 'type=count,...' with integer counts, got {mix!r}"
            ) from None
    return out


def validate(recipe: Recipe) -> None:
    """Checks that need more than one key, with messages that say what to change."""
    from typing import get_args

    from megc_vqa.models.registry import FAMILIES, lora_target_regex
    from megc_vqa.qa.templates import QuestionType

    m, d = recipe.model, recipe.data
    where = recipe.config_path or "command line"
    if m.load_in_4bit and m.load_in_8bit:
        raise ConfigError(f"{where}: choose one of load_in_4bit and load_in_8bit")
    if (m.load_in_4bit or m.load_in_8bit) and not m.use_peft:
        raise ConfigError(f"{where}: quantised weights cannot be trained in full; set use_peft: true (QLoRA)")
    try:
        lora_target_regex(FAMILIES["qwen2_5_vl"], m.lora_target)
        if m.train_fully:
            lora_target_regex(FAMILIES["qwen2_5_vl"], m.train_fully)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
    if d.train_file is None:
        raise ConfigError(
            f"{where}: train_file is not set; point it at the qa.jsonl that `megc-vqa prep` wrote"
        )
    from megc_vqa.training.data import SYNTH_PREFIX, SYNTHETIC_SETS
    from megc_vqa.visual.samplers import parse_sampler

    for key in ("train_file", "eval_file"):
        value = getattr(d, key)
        if value is not None and str(value).startswith(SYNTH_PREFIX):
            if str(value)[len(SYNTH_PREFIX) :] not in SYNTHETIC_SETS:
                raise ConfigError(
                    f"{where}: {key} {value}: unknown synthetic set; known: "
                    + ", ".join(SYNTH_PREFIX + n for n in SYNTHETIC_SETS)
                )
        elif value is not None and not Path(value).is_file():
            raise ConfigError(f"{where}: {key} {value} does not exist (run `megc-vqa prep` or fix the path)")
    if recipe.training.remove_unused_columns:
        raise ConfigError(f"{where}: remove_unused_columns must stay false: the collator needs whole records")
    try:
        parse_sampler(d.visual_spec)
    except ValueError as err:
        raise ConfigError(f"{where}: visual_spec: {err}") from None
    known_types = set(get_args(QuestionType))
    bad = [
        q for q in (d.question_types or []) + list(parse_question_mix(d.question_mix)) if q not in known_types
    ]
    if d.balance_classes and d.balance_classes not in known_types:
        bad.append(d.balance_classes)
    if bad:
        raise ConfigError(f"{where}: unknown question type(s) {bad}; known: {', '.join(sorted(known_types))}")
    if d.balance_cap < 1:
        raise ConfigError(f"{where}: balance_cap must be at least 1, got {d.balance_cap}")
    if not 0.0 <= d.val_fraction < 1.0:
        raise ConfigError(f"{where}: val_fraction must be in [0, 1), got {d.val_fraction}")
    if sum(bool(x) for x in (d.val_subjects, d.loso_fold, d.val_fraction)) > 1:
        raise ConfigError(f"{where}: use only one of val_fraction, val_subjects and loso_fold")
    if d.eval_file and (d.val_subjects or d.loso_fold or d.val_fraction):
        raise ConfigError(f"{where}: eval_file is given, so do not also split train_file (val_*/loso_fold)")
    check_ranges(recipe)
    check_choices(recipe)


def check_choices(recipe: Recipe) -> None:
    """Every key with a fixed set of values holds one of them (the CLI checks its own; YAML does not)."""
    where = recipe.config_path or "command line"
    for args in (recipe.model, recipe.data):
        for f in fields(args):
            choices = f.metadata.get("choices")
            value = getattr(args, f.name)
            if choices and value is not None and value not in choices:
                raise ConfigError(f"{where}: {f.name} must be one of {', '.join(choices)} (got {value!r})")


def check_ranges(recipe: Recipe) -> None:
    """Every numeric key in its allowed range, named as in the recipe (``ConfigError``)."""
    from megc_vqa.errors import UsageError, check_number

    m, d, t = recipe.model, recipe.data, recipe.training
    where = recipe.config_path or "command line"
    checks: list[tuple[str, Any, dict[str, float]]] = [
        ("lora_r", m.lora_r, {"minimum": 1}),
        ("lora_alpha", m.lora_alpha, {"above": 0}),
        ("lora_dropout", m.lora_dropout, {"minimum": 0, "maximum": 0.99}),
        ("image_size", d.image_size, {"minimum": MIN_IMAGE_SIDE, "maximum": MAX_IMAGE_SIDE}),
        ("min_pixels", d.min_pixels, {"minimum": 1}),
        ("max_pixels", d.max_pixels, {"minimum": 1}),
        ("max_train_samples", d.max_train_samples, {"minimum": 1}),
        ("max_new_tokens", d.max_new_tokens, {"minimum": 1}),
        ("visual_memory_cache", d.visual_memory_cache, {"minimum": 0}),
        ("per_device_train_batch_size", t.per_device_train_batch_size, {"minimum": 1}),
        ("per_device_eval_batch_size", t.per_device_eval_batch_size, {"minimum": 1}),
        ("gradient_accumulation_steps", t.gradient_accumulation_steps, {"minimum": 1}),
        ("learning_rate", t.learning_rate, {"above": 0}),
        ("weight_decay", t.weight_decay, {"minimum": 0}),
        ("warmup_ratio", getattr(t, "warmup_ratio", None), {"minimum": 0, "maximum": 1}),
        ("num_train_epochs", t.num_train_epochs, {"above": 0}),
        ("save_total_limit", t.save_total_limit, {"minimum": 1}),
        ("dataloader_num_workers", t.dataloader_num_workers, {"minimum": 0}),
    ]
    counts = [
        ("per_device_train_batch_size", t.per_device_train_batch_size, BATCH_SIZE),
        ("per_device_eval_batch_size", t.per_device_eval_batch_size, BATCH_SIZE),
        ("gradient_accumulation_steps", t.gradient_accumulation_steps, BATCH_SIZE),
        ("num_train_epochs", t.num_train_epochs, EPOCHS),
        ("max_steps", t.max_steps, TRAIN_STEPS),  # -1 (train by epochs) passes: no minimum here
        ("dataloader_num_workers", t.dataloader_num_workers, WORKERS),
        ("lora_r", m.lora_r, LORA_RANK),
        ("min_pixels", d.min_pixels, IMAGE_PIXELS),
        ("max_pixels", d.max_pixels, IMAGE_PIXELS),
    ]
    try:
        for name, value, bounds in checks:
            check_number(name, value, where=where, **bounds)
        for name, value, limit in counts:
            check_count(name, value, limit, minimum=None, where=where)
    except UsageError as err:
        raise ConfigError(str(err)) from None
    if (
        t.max_steps is not None
        and t.max_steps != -1
        and (not isinstance(t.max_steps, int) or t.max_steps < 1)
    ):
        raise ConfigError(
            f"{where}: max_steps must be -1 (train num_train_epochs) or at least 1 (got {t.max_steps})"
        )
    if d.min_pixels and d.max_pixels and d.min_pixels > d.max_pixels:
        raise ConfigError(f"{where}: min_pixels {d.min_pixels} is above max_pixels {d.max_pixels}")
