"""Fine-tuning configuration: a flat YAML recipe plus ``--key value`` overrides, through TRL's ``TrlParser``.

Keys come from four dataclasses: :class:`ModelArguments` (``trl.ModelConfig`` with this project's
defaults and LoRA scopes), :class:`DataArguments` and :class:`StageArguments` here, and the trainer's
arguments: ``transformers.TrainingArguments`` for supervised stages (learning rate, schedule, epochs,
batch size, gradient accumulation and checkpointing, seed, checkpoints, ``resume_from_checkpoint``,
TensorBoard logging, ...), and ``trl.GRPOConfig`` (through :class:`GRPOArguments`) for ``stage: grpo``.
A key that none of them knows is an error that names the file and the closest known keys, so a typo never
silently falls back to a default.

    recipe = parse_config(["--config", "recipes/tiny/lora.yaml", "--max_steps", "2"])
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from trl import GRPOConfig, ModelConfig, TrlParser

from megc_vqa.errors import InputError, MegcError, UsageError, check_number
from megc_vqa.face_settings import FACE_DETECTORS, FACE_MODES, MAX_MAGNIFY, FaceSettings
from megc_vqa.fileio import read_yaml_mapping, resolve_inside
from megc_vqa.limits import (
    BATCH_SIZE,
    EPOCHS,
    GENERATIONS,
    IMAGE_PIXELS,
    LORA_RANK,
    MAX_IMAGE_SIDE,
    MIN_IMAGE_SIDE,
    TRAIN_STEPS,
    WORKERS,
    check_count,
)
from megc_vqa.models.families.base import ALL_SCOPES
from megc_vqa.models.registry import family_of_name, known_scopes, lora_target_regex
from megc_vqa.qa.templates import QuestionType
from megc_vqa.training.losses import LOSS_WEIGHTINGS
from megc_vqa.visual.spec import parse_sampler


class ConfigError(MegcError, ValueError):
    """A recipe or command line that cannot be used as written; the message says what to change."""


# trl.ModelConfig's keys that the hand-written parser before it did not have (a run record made before
# them holds none of them: see megc_vqa.training.finetune.run_settings).
NEW_MODEL_KEYS: frozenset[str] = frozenset(
    {"model_revision", "use_rslora", "use_dora", "lora_modules_to_save", "lora_target_parameters",
     "lora_task_type", "bnb_4bit_quant_type", "use_bnb_nested_quant", "bnb_4bit_quant_storage"}
)  # fmt: skip


@dataclass
class ModelArguments(ModelConfig):
    """Which model, how it is loaded, and what is trained: ``trl.ModelConfig`` (its names for the model,
    dtype, attention, PEFT and LoRA keys, and ``use_rslora``, ``use_dora``, ``lora_modules_to_save``) with
    this project's defaults, plus the LoRA scopes and full-training freezes of the model registry.

    Quantisation is always NF4 with double quantisation and the vision tower left unquantised
    (``megc_vqa.models.registry.quantization_config``), so the bnb_* keys of ``ModelConfig`` are not keys
    here; nor are ``model_revision`` (download the revision into a folder and name the folder),
    ``lora_target_parameters`` and ``lora_task_type`` (always a causal LM).
    """

    model_name_or_path: str = field(
        default="qwen2.5-vl-3b",
        metadata={"help": "registry name (qwen2.5-vl-3b, tiny-qwen2.5-vl, ...), hub id, or model folder"},
    )
    # trl.ModelConfig fields this project does not read are init=False: not recipe keys (an error if a
    # recipe sets one), instead of keys that would be accepted and silently do nothing.
    model_revision: str = field(default="main", init=False, repr=False)
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
    lora_target_modules: list[str] | None = field(
        default=None, metadata={"help": "explicit module names or a regex; overrides lora_target"}
    )
    lora_modules_to_save: list[str] | None = field(
        default=None,
        metadata={
            "help": "module names trained in full next to LoRA and saved with it (see also train_fully)"
        },
    )
    lora_target_parameters: list[str] | None = field(default=None, init=False, repr=False)
    lora_task_type: str = field(default="CAUSAL_LM", init=False, repr=False)
    bnb_4bit_quant_type: str = field(default="nf4", init=False, repr=False)
    use_bnb_nested_quant: bool = field(default=True, init=False, repr=False)
    bnb_4bit_quant_storage: str | None = field(default=None, init=False, repr=False)
    lora_target: str = field(
        default="language",
        metadata={
            "help": f"where LoRA goes: {', '.join(ALL_SCOPES)} (experts: MoE families) joined by '+', or 'all'"
        },
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

    def __post_init__(self) -> None:
        # ModelConfig's own check raises a message without the recipe's name, and it turns a one-item
        # lora_target_modules into a string, which PEFT reads as a regex ('q_proj' would match nothing):
        # :func:`validate` checks, and build_model reads the list.
        pass


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
    face_crop: bool = field(
        default=False,
        metadata={
            "help": "the earlier switch: true is face: box (the Haar box of the onset frame grown 15%%)"
        },
    )
    face: str | None = field(
        default=None,
        metadata={
            "help": "face pipeline: none (full frame), box (the earlier face_crop), crop (square around the "
            "landmarks plus face_margin), align (eyes level at a fixed distance); a clip without one usable "
            "face is skipped and counted",
            "choices": list(FACE_MODES),
        },
    )
    face_margin: float = field(default=0.15, metadata={"help": "share of the face's size added on each side"})
    face_detector: str = field(
        default="auto",
        metadata={
            "help": "auto (dlib when installed, else Haar), dlib or haar",
            "choices": list(FACE_DETECTORS),
        },
    )
    register: bool = field(
        default=False,
        metadata={"help": "register every frame to the onset (removes head motion before flow)"},
    )
    magnify: float = field(
        default=1.0,
        metadata={
            "help": f"motion magnification factor, 1 (off) to {MAX_MAGNIFY:g}; bounded per clip by noise"
        },
    )
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


STAGES: tuple[str, ...] = ("sft", "grpo", "rft")
REWARD_NAMES: tuple[str, ...] = (
    "answer",
    "format",
    "brevity",
)  # megc_vqa.training.rewards.REWARDS, kept in step by a test
DEFAULT_REWARDS: tuple[str, ...] = ("answer", "format")


@dataclass
class StageArguments:
    """Which training stage the recipe runs, and the keys of the stages after supervised fine-tuning."""

    stage: str = field(
        default="sft",
        metadata={
            "help": "sft: supervised fine-tuning on the QA records; grpo: GRPO (trl.GRPOTrainer) rewarded by "
            "the MEGC scorer, from an SFT model; rft: rejection-sampling fine-tuning (sample rft_samples "
            "answers per training question from the SFT model, keep the rewarded ones, fine-tune on them)",
            "choices": list(STAGES),
        },
    )
    sft_model: str | None = field(
        default=None,
        metadata={
            "help": "the SFT run's output folder to start from (its LoRA adapter, trained on, or its full "
            "model when SFT trained fully); for grpo/rft its training record must match the recipe's prompt "
            "and visual settings, and without it they start from model_name_or_path (rewards near chance); "
            "for sft it continues an earlier SFT run with new settings"
        },
    )
    rewards: list[str] = field(
        default_factory=lambda: list(DEFAULT_REWARDS),
        metadata={
            "help": f"grpo/rft: reward functions ({', '.join(REWARD_NAMES)}); answer: the MEGC scorer per question "
            "kind (exact label, AU set F1, the joint answer's parts), format: 1 when the answer follows the "
            "kind's grammar, brevity: the reference's length over the answer's (1 when no longer; shapes a "
            "model that rambles). grpo weighs them with reward_weights"
        },
    )
    rft_samples: int = field(default=4, metadata={"help": "rft: answers sampled per training question"})
    rft_temperature: float = field(default=1.0, metadata={"help": "rft: sampling temperature"})
    rft_min_reward: float = field(
        default=1.0,
        metadata={"help": "rft: a sample is kept when its mean reward is at least this (1.0: fully right)"},
    )


@dataclass
class GRPOArguments(GRPOConfig):
    """``trl.GRPOConfig`` with the group size checked first, in words that name the key."""

    def __post_init__(self) -> None:
        if self.num_generations is not None and self.num_generations < 2:
            raise ValueError(
                f"num_generations must be at least 2 (got {self.num_generations}): GRPO scores each answer "
                "against the other answers of its question, so a group of one learns nothing"
            )
        super().__post_init__()


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
# GRPO keeps trl.GRPOConfig's learning rate, schedule, batch and epochs (RL steps are small and few).
GRPO_DEFAULTS: dict[str, Any] = {
    **{k: v for k, v in TRAINING_DEFAULTS.items() if k not in ("learning_rate", "lr_scheduler_type", "warmup_steps",
                                                               "per_device_train_batch_size", "num_train_epochs",
                                                               "gradient_accumulation_steps")},
    "output_dir": "runs/grpo",
    "activation_checkpointing": False,  # GRPOConfig turns it on; a recipe asks for it as SFT recipes do
}  # fmt: skip


@dataclass
class Recipe:
    model: ModelArguments
    data: DataArguments
    training: Any  # transformers.TrainingArguments, or GRPOArguments for stage grpo
    config_path: str | None = None
    stage: StageArguments = field(default_factory=StageArguments)
    # ``--overwrite_output_dir`` (command line only, see finetune.pop_overwrite_flag): replace an earlier run
    overwrite_output_dir: bool = False


def _dataclass_types(stage: str = "sft") -> tuple[type, ...]:
    if stage == "grpo":
        return (ModelArguments, DataArguments, StageArguments, GRPOArguments)
    from transformers import TrainingArguments

    return (ModelArguments, DataArguments, StageArguments, TrainingArguments)


def known_keys(stage: str = "sft") -> set[str]:
    return {f.name for cls in _dataclass_types(stage) for f in fields(cls) if f.init}


def _unknown(keys: list[str], where: str, stage: str = "sft") -> ConfigError:
    known = sorted(known_keys(stage))
    others = {s: known_keys(s) for s in STAGES if s != stage}
    hints = []
    for key in keys:
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.6)
        hint = f"{key!r}" + (f" (did you mean {', '.join(close)}?)" if close else "")
        elsewhere = [s for s, keys_of in others.items() if key in keys_of]
        if elsewhere and not close:
            hint += f" (a key of stage: {' or '.join(elsewhere)}, not of stage: {stage})"
        hints.append(hint)
    return ConfigError(f"{where}: unknown key(s) {'; '.join(hints)}. See `recipes/finetune.py --help`.")


def read_recipe_yaml(path: str | Path) -> dict[str, Any]:
    """A recipe file as a mapping, read through the project's bounded YAML reader (size limit, no aliases)."""
    return read_yaml_mapping(path, "recipe", error=ConfigError)


def load_yaml(path: str | Path, stage: str | None = None) -> dict[str, Any]:
    """A recipe file whose every key is known to its stage (``stage:`` in the file, else ``sft``)."""
    data = read_recipe_yaml(path)
    stage = stage or str(data.get("stage", "sft"))
    if stage not in STAGES:
        raise ConfigError(f"{path}: stage must be one of {', '.join(STAGES)} (got {stage!r})")
    unknown = sorted(set(data) - known_keys(stage))
    if unknown:
        raise _unknown(unknown, str(path), stage)
    return data


# Recipe keys that name files or folders. Written in a recipe they must stay below the working folder
# (relative, no '..'): recipes travel between labs, and a path in one must not read or write anywhere the
# user did not choose. An absolute or outside path is given on the command line (``--output_dir /x``).
RECIPE_PATH_KEYS = ("train_file", "eval_file", "visual_cache_dir", "output_dir", "logging_dir", "sft_model")


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


def _flag_value(args: list[str], name: str) -> tuple[str | None, list[str]]:
    """``--name value`` or ``--name=value`` taken out of ``args``: ``(value or None, the other args)``."""
    flag = f"--{name}"
    for i, arg in enumerate(args):
        if arg == flag:
            if i + 1 >= len(args):
                raise ConfigError(f"{flag} needs a value")
            return args[i + 1], args[:i] + args[i + 2 :]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1], args[:i] + args[i + 1 :]
    return None, args


class RecipeParser(TrlParser):
    """``TrlParser`` over the recipe dataclasses of one stage, with this project's training defaults.

    What it changes: the YAML is read through the project's bounded reader (no aliases, a size limit) and
    every key of it must be known, with the closest known keys suggested; a recipe path must stay below the
    working folder unless the command line gives it; unknown command-line keys are suggested the same way;
    and an argparse error is a :class:`ConfigError` instead of an exit with the usage text. ``env:`` (which
    TrlParser turns into environment variables) is not a recipe key: a recipe sets no process state.
    """

    def __init__(self, stage: str = "sft") -> None:
        # allow_abbrev=False: a typo such as --max_step must not silently mean --max_steps.
        super().__init__(
            _dataclass_types(stage),
            description="Fine-tuning of a video LVLM (SFT, GRPO, RFT)",
            allow_abbrev=False,
        )
        self.stage = stage
        self.add_argument("--config", default=None, help="YAML recipe; command-line keys override it")
        self.set_defaults(**(GRPO_DEFAULTS if stage == "grpo" else TRAINING_DEFAULTS))

    def error(self, message: str) -> Any:  # argparse calls it for a bad choice or type on the command line
        raise ConfigError(f"command line: {message}. See `recipes/finetune.py --help`.")

    def parse_args_and_config(  # type: ignore[override]
        self, args: list[str] | None = None, config_path: str | None = None
    ) -> tuple[Any, ...]:
        """The stage's dataclasses from ``config_path`` (recipe values replace the defaults) and ``args``
        (which win over the recipe)."""
        args = list(sys.argv[1:] if args is None else args)
        if config_path is not None:
            values = load_yaml(config_path, self.stage)
            given = {a.split("=", 1)[0].lstrip("-").replace("-", "_") for a in args if a.startswith("--")}
            check_recipe_paths(values, config_path, given)
            self.set_defaults_with_config(**values)
        try:
            *outputs, remaining = self.parse_args_into_dataclasses(args=args, return_remaining_strings=True)
        except ConfigError:
            raise
        except (ValueError, TypeError) as err:
            raise ConfigError(f"{config_path or 'command line'}: {err}") from None
        if remaining:
            flags = [r.lstrip("-").split("=")[0] for r in remaining if r.startswith("--")]
            raise _unknown(flags or remaining, "command line", self.stage)
        return tuple(outputs[: len(_dataclass_types(self.stage))])


def build_parser(stage: str = "sft") -> RecipeParser:
    """The recipe parser of ``stage`` (``--help`` lists its keys)."""
    return RecipeParser(stage)


def recipe_stage(args: list[str], config_path: str | None) -> str:
    """The stage a command line runs: ``--stage``, else the recipe's ``stage:``, else ``sft``."""
    stage, _ = _flag_value(args, "stage")
    if stage is None and config_path is not None:
        stage = read_recipe_yaml(config_path).get("stage")
    stage = str(stage or "sft")
    if stage not in STAGES:
        raise ConfigError(
            f"{config_path or 'command line'}: stage must be one of {', '.join(STAGES)} (got {stage!r})"
        )
    return stage


def parse_config(argv: list[str] | None = None) -> Recipe:
    """Parse ``--config recipe.yaml`` and ``--key value`` overrides into a :class:`Recipe`."""
    args = list(sys.argv[1:] if argv is None else argv)
    config_path, args = _flag_value(args, "config")
    try:
        stage = recipe_stage(args, config_path)
        model_args, data_args, stage_args, training_args = RecipeParser(stage).parse_args_and_config(
            args, config_path
        )
        recipe = Recipe(model_args, data_args, training_args, config_path, stage_args)
        validate(recipe)
    except ConfigError as err:
        raise _blame_the_command_line(err, config_path, args) from None
    return recipe


def _blame_the_command_line(err: ConfigError, config_path: str | None, args: Sequence[str]) -> ConfigError:
    """A check of a value given as ``--key value`` names the option, not the recipe it overrode."""
    prefix = f"{config_path}: "
    message = str(err)
    if not config_path or not message.startswith(prefix):
        return err
    rest = message[len(prefix) :]
    key = rest.split(" ", 1)[0]
    given = {a[2:].split("=", 1)[0] for a in args if a.startswith("--")}
    if key not in given:
        return err
    return ConfigError(f"--{key} on the command line (over {config_path}): {rest}")


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


def check_scopes(where: str, model: str, lora_target: str, train_fully: str | None) -> None:
    """LoRA and full-training scopes against the model's family when the name tells it without loading
    (a registry name or hub id), else against the scopes any family has; the error lists the scopes."""
    family = family_of_name(str(model))
    for key, value in (("lora_target", lora_target), ("train_fully", train_fully)):
        parts = [p.strip() for p in (value or "").split("+") if p.strip()]
        if key == "train_fully" and not parts:
            continue
        if family is not None:
            try:
                lora_target_regex(family, value or "")
            except ValueError as err:
                raise ConfigError(f"{where}: {key}: {err}") from None
            if key == "train_fully" and (bad := [p for p in parts if p not in family.save_modules]):
                raise ConfigError(
                    f"{where}: train_fully: {bad} cannot be trained fully in {family.name}; choose from "
                    f"{', '.join(family.save_modules)}"
                )
            continue
        bad = [p for p in parts if p != "all" and p not in known_scopes()]
        if bad or not parts:
            raise ConfigError(
                f"{where}: {key}: unknown scope(s) {bad or value!r}; use {', '.join(known_scopes())} "
                "joined by '+', or 'all'"
            )


def validate(recipe: Recipe) -> None:
    """Checks that need more than one key, with messages that say what to change."""
    from typing import get_args

    m, d = recipe.model, recipe.data
    where = recipe.config_path or "command line"
    if m.load_in_4bit and m.load_in_8bit:
        raise ConfigError(f"{where}: choose one of load_in_4bit and load_in_8bit")
    if (m.load_in_4bit or m.load_in_8bit) and not m.use_peft:
        raise ConfigError(f"{where}: quantised weights cannot be trained in full; set use_peft: true (QLoRA)")
    check_scopes(where, m.model_name_or_path, m.lora_target, m.train_fully)
    family = family_of_name(str(m.model_name_or_path))
    extra_images = any(k in str(d.visual_spec) for k in ("flow", "diff"))
    if family is not None and not family.video_with_images and d.visual_mode == "video" and extra_images:
        raise ConfigError(
            f"{where}: visual_mode: video with visual_spec {d.visual_spec!r} puts a video and images in one "
            f"prompt, which the {family.name} family cannot take; use visual_mode: images or key frames only"
        )
    if d.train_file is None:
        raise ConfigError(
            f"{where}: train_file is not set; point it at the qa.jsonl that `megc-vqa prep` wrote"
        )
    from megc_vqa.training.data import SYNTH_PREFIX, SYNTHETIC_SETS

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
    try:
        FaceSettings.from_keys(d)
    except ValueError as err:
        raise ConfigError(f"{where}: {err}") from None
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
    check_stage(recipe)


def check_stage(recipe: Recipe) -> None:
    """The keys of the stages after SFT: set only where they act, with known rewards and sane sampling."""
    from dataclasses import MISSING

    s, t = recipe.stage, recipe.training
    where = recipe.config_path or "command line"
    if s.stage == "sft":
        set_keys = []
        for f in fields(StageArguments):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            if f.name not in ("stage", "sft_model") and getattr(s, f.name) != default:
                set_keys.append(f.name)
        if set_keys:
            raise ConfigError(
                f"{where}: {', '.join(set_keys)} act only in stage: grpo or rft; set stage, or remove them"
            )
        return
    unknown = [r for r in s.rewards if r not in REWARD_NAMES]
    if unknown or not s.rewards:
        raise ConfigError(
            f"{where}: unknown reward(s) {unknown or '(none given)'}; the rewards are: {', '.join(REWARD_NAMES)}"
        )
    if len(set(s.rewards)) != len(s.rewards):
        raise ConfigError(f"{where}: rewards names one twice: {s.rewards}")
    if s.sft_model is not None and not Path(s.sft_model).is_dir():
        raise ConfigError(f"{where}: sft_model {s.sft_model} is not a folder (the output_dir of an SFT run)")
    if recipe.data.visual_mode != "images" and s.stage == "grpo":
        raise ConfigError(
            f"{where}: stage grpo takes visual_mode: images only (trl's GRPOTrainer passes images, not videos, "
            "to the model); train the Qwen3-VL video recipe with stage sft or rft"
        )
    if s.stage == "grpo":
        weights = t.reward_weights
        if weights is not None and len(weights) != len(s.rewards):
            raise ConfigError(
                f"{where}: reward_weights has {len(weights)} value(s) for {len(s.rewards)} reward(s) "
                f"({', '.join(s.rewards)}); give one weight per reward, in the same order"
            )

    checks: list[tuple[str, Any, dict[str, float]]] = [
        ("rft_temperature", s.rft_temperature, {"above": 0}),
        ("rft_min_reward", s.rft_min_reward, {"minimum": 0, "maximum": 1}),
        ("rft_samples", s.rft_samples, {"minimum": 1}),
    ]
    counts = [("rft_samples", s.rft_samples, GENERATIONS)]
    if s.stage == "grpo":
        checks += [
            ("temperature", t.temperature, {"above": 0}),
            ("top_p", t.top_p, {"above": 0, "maximum": 1}),
            ("max_completion_length", t.max_completion_length, {"minimum": 1}),
            ("beta", t.beta, {"minimum": 0}),
        ]
        counts.append(("num_generations", t.num_generations, GENERATIONS))
    _check_ranges(checks, counts, where)


def _check_ranges(checks: list, counts: list, where: str) -> None:
    """``(key, value, check_number bounds)`` and ``(key, value, Limit)`` rows, each checked, as ConfigError."""
    try:
        for name, value, bounds in checks:
            check_number(name, value, where=where, **bounds)
        for name, value, limit in counts:
            check_count(name, value, limit, minimum=None, where=where)
    except UsageError as err:
        raise ConfigError(str(err)) from None


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
    _check_ranges(checks, counts, where)
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
