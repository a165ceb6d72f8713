"""Recipes through TRL's TrlParser (issue 24): the same settings as the hand-written parser gave, the same
clear errors, and the stage keys of GRPO and rejection-sampling fine-tuning."""

from __future__ import annotations

import importlib.util
import json
from dataclasses import fields
from pathlib import Path

import pytest

from megc_vqa.training import config
from megc_vqa.training.config import (
    DEFAULT_REWARDS,
    ConfigError,
    ModelArguments,
    RecipeParser,
    load_yaml,
    parse_config,
)

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures"


def _capture_module():
    spec = importlib.util.spec_from_file_location("capture", FIXTURES / "capture_recipe_settings.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def in_run_folder(tmp_path, monkeypatch):
    """A working folder holding the recipes' runs/prep/qa.jsonl, as the fixture was captured in."""
    (tmp_path / "runs/prep").mkdir(parents=True)
    (tmp_path / "runs/prep/qa.jsonl").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


# ModelConfig keys that the hand-written parser did not have, with the value every recipe gets.
NEW_MODEL_KEYS = {
    "model_revision": "main",
    "use_rslora": False,
    "use_dora": False,
    "lora_modules_to_save": None,
    "lora_target_parameters": None,
    "lora_task_type": "CAUSAL_LM",
    "bnb_4bit_quant_type": "nf4",
    "use_bnb_nested_quant": True,
    "bnb_4bit_quant_storage": None,
}


def test_every_shipped_recipe_parses_to_the_settings_of_the_old_parser(in_run_folder):
    capture = _capture_module()
    recorded = json.loads((FIXTURES / "recipe_settings.json").read_text())
    assert recorded["captured_at"] == "59a8fb8"
    assert {tuple(c["argv"]) for c in recorded["cases"]} == {tuple(c) for c in capture.CASES}
    for case in recorded["cases"]:
        now = capture.settings_of(parse_config(capture.argv_of(case["argv"])))
        for part in ("model", "data", "training"):
            before = case["settings"][part]
            changed = {k: (v, now[part].get(k, "(gone)")) for k, v in before.items() if now[part].get(k) != v}
            assert not changed, (case["argv"], part, changed)
        added = {k: v for k, v in now["model"].items() if k not in case["settings"]["model"]}
        assert added == NEW_MODEL_KEYS, case["argv"]
    assert set(NEW_MODEL_KEYS) == set(config.NEW_MODEL_KEYS)


def test_the_parser_is_trls_and_model_arguments_are_trls_model_config():
    from trl import ModelConfig, TrlParser

    assert isinstance(RecipeParser(), TrlParser)
    assert issubclass(ModelArguments, ModelConfig)
    init = {f.name for f in fields(ModelArguments) if f.init}
    # the keys that mean the same in both keep trl's names
    assert {"model_name_or_path", "dtype", "attn_implementation", "use_peft", "lora_r", "lora_alpha"} <= init
    assert {"lora_dropout", "lora_target_modules", "load_in_4bit", "load_in_8bit", "use_rslora"} <= init
    # keys this project does not read are not recipe keys (an error, never ignored)
    assert not {"model_revision", "bnb_4bit_quant_type", "lora_task_type"} & init


def test_a_one_item_lora_target_modules_stays_a_list(in_run_folder):
    """trl's ModelConfig turns ['q_proj'] into 'q_proj', which PEFT reads as a regex matching nothing."""
    recipe = parse_config(["--train_file", "runs/prep/qa.jsonl", "--lora_target_modules", "q_proj"])
    assert recipe.model.lora_target_modules == ["q_proj"]


@pytest.mark.parametrize(
    ("text", "argv", "message"),
    [
        ("learning_rat: 1.0e-4\n", [], r"r.yaml: unknown key\(s\) 'learning_rat' \(did you mean learning_rate"),
        ("model_revision: v1\n", [], r"unknown key\(s\) 'model_revision'"),
        ("env: {A: b}\n", [], r"unknown key\(s\) 'env'"),
        ("num_generations: 4\n", [], r"'num_generations' \(a key of stage: grpo, not of stage: sft\)"),
        ("", ["--max_step", "2"], r"command line: unknown key\(s\) 'max_step' \(did you mean max_steps"),
        ("", ["--dtype", "float8"], r"^command line: argument --dtype: invalid choice: 'float8'"),
        ("", ["--lora_r", "many"], r"^[^:]*command line: argument --lora_r/--lora-r: invalid int value"),
        ("stage: ppo\n", [], r"stage must be one of sft, grpo, rft \(got 'ppo'\)"),
        ("rewards: [answer]\n", [], r"rewards act only in stage: grpo or rft"),
        ("sft_model: runs/prep\nrft_samples: 2\n", [], r": rft_samples act only in stage: grpo or rft"),
        ("stage: grpo\nrewards: [answer, fromat]\n", [], r"unknown reward\(s\) \['fromat'\]; the rewards are: answer, format, brevity"),
        ("stage: grpo\nnum_generations: 1\nper_device_train_batch_size: 1\n", [], r"num_generations must be at least 2 \(got 1\)"),
        ("stage: grpo\nreward_weights: [1.0]\n", [], r"reward_weights has 1 value\(s\) for 2 reward\(s\)"),
        ("stage: grpo\ntemperature: 0\n", [], r"temperature must be greater than 0"),
        ("stage: grpo\nvisual_mode: video\n", [], r"stage grpo takes visual_mode: images only"),
        ("stage: rft\nrft_samples: 100000\n", [], r"rft_samples: 100,000 is too many"),
        ("stage: rft\nsft_model: nowhere\n", [], r"sft_model nowhere is not a folder"),
        ("output_dir: /elsewhere\n", [], r"output_dir: '/elsewhere' is outside"),
    ],
)  # fmt: skip
def test_bad_recipes_say_what_to_change(in_run_folder, text, argv, message):
    recipe = in_run_folder / "r.yaml"
    recipe.write_text("model_name_or_path: tiny-qwen2.5-vl\ntrain_file: runs/prep/qa.jsonl\n" + text)
    with pytest.raises(ConfigError, match=message):
        parse_config(["--config", str(recipe), "--use_cpu", "true", *argv])


def test_stage_keys_parse_per_stage(in_run_folder):
    base = ["--train_file", "runs/prep/qa.jsonl", "--use_cpu", "true", "--bf16", "false"]
    grpo = parse_config(
        [*base, "--stage", "grpo", "--num_generations", "4", "--per_device_train_batch_size", "4"]
    )
    assert grpo.stage.stage == "grpo" and grpo.training.num_generations == 4
    assert grpo.stage.rewards == list(DEFAULT_REWARDS) == ["answer", "format"]
    assert grpo.training.learning_rate == 1e-6  # GRPOConfig's, not the SFT default
    assert grpo.training.remove_unused_columns is False
    rft = parse_config([*base, "--stage=rft", "--rft_samples", "3", "--rewards", "answer"])
    assert (rft.stage.stage, rft.stage.rft_samples, rft.stage.rewards) == ("rft", 3, ["answer"])
    assert not hasattr(rft.training, "num_generations")  # SFT's TrainingArguments


def test_the_shipped_recipes_load_and_name_their_stage():
    for path in sorted((ROOT / "recipes").rglob("*.yaml")):
        if path.parent.name in ("accelerate", "spotting"):
            continue
        values = load_yaml(path)
        assert values.get("stage", "sft") in ("sft", "grpo", "rft"), path


def test_help_lists_the_keys_of_the_stage(capsys):
    with pytest.raises(SystemExit) as exit_:
        parse_config(["--stage", "grpo", "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "--num_generations" in text and "--sft_model" in text and "--lora_target" in text
