"""The stages after SFT (issue 24): MEGC rewards, GRPO through trl's GRPOTrainer and rejection-sampling
fine-tuning on the tiny model, and their bad inputs."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from megc_vqa.qa import templates as T  # noqa: E402
from megc_vqa.training.config import REWARD_NAMES, ConfigError, parse_config  # noqa: E402
from megc_vqa.training.rewards import (  # noqa: E402
    answer_score,
    brevity_score,
    completion_text,
    format_score,
    mean_reward,
    reward_functions,
)

ROOT = Path(__file__).resolve().parents[1]
JOINT = T.JOINT_QUESTION_PLURAL


# --- rewards -------------------------------------------------------------------------------------


def test_answer_reward_is_the_scorers_value_per_kind():
    assert answer_score(T.COARSE_QUESTION, "negative", " Negative ") == 1.0
    assert answer_score(T.FINE_QUESTION, "disgust", "happiness") == 0.0
    assert answer_score(T.SIDE_QUESTION.format(name="brow lowerer"), "left", "right") == 0.0
    assert answer_score(T.PRESENCE_QUESTION.format(name="brow lowerer"), "yes", "yes") == 1.0
    au = T.AU_QUESTION_PLURAL
    assert answer_score(au, "brow lowerer, lid tightener", "lid tightener") == pytest.approx(2 / 3)
    ref = T.joint_answer(["brow lowerer", "lid tightener"], "disgust", "negative")
    half = T.joint_answer(["brow lowerer"], "disgust", "positive")  # AU F1 2/3, fine right, coarse wrong
    assert answer_score(JOINT, ref, ref) == 1.0
    assert answer_score(JOINT, ref, half) == pytest.approx((2 / 3 + 1 + 0) / 3)
    assert answer_score(JOINT, ref, "negative") == 0.0  # not the template


def test_format_reward_follows_the_answer_grammar():
    assert format_score(T.COARSE_QUESTION, "surprise") == 1.0
    assert format_score(T.COARSE_QUESTION, "surprised") == 0.0
    assert format_score(T.AU_QUESTION_SINGULAR, "brow lowerer, lid tightener") == 0.0  # singular: one AU
    assert (
        format_score(JOINT, T.joint_answer(["brow lowerer", "lid tightener"], "disgust", "negative")) == 1.0
    )
    assert format_score("Describe the analysis of this clip in free words.", "anything", "analysis") is None


def test_reward_functions_take_trls_conversational_completions():
    answer, form, brevity = reward_functions(["answer", "format", "brevity"])
    assert (answer.__name__, form.__name__, brevity.__name__) == REWARD_NAMES
    completions = [[{"role": "assistant", "content": "negative"}], [{"role": "assistant", "content": "nope"}]]
    kwargs = {
        "question": [T.COARSE_QUESTION] * 2,
        "answer": ["negative"] * 2,
        "question_type": ["coarse"] * 2,
    }
    assert answer(prompts=[None, None], completions=completions, **kwargs) == [1.0, 0.0]
    assert form(prompts=[None, None], completions=completions, **kwargs) == [1.0, 0.0]
    assert brevity(prompts=[None, None], completions=completions, **kwargs) == [1.0, 1.0]
    assert completion_text([{"role": "assistant", "content": [{"type": "text", "text": "yes"}]}]) == "yes"
    assert mean_reward([answer, form], T.COARSE_QUESTION, "negative", "positive", "coarse") == 0.5
    with pytest.raises(ValueError, match=r"unknown reward.*the rewards are: answer, format, brevity"):
        reward_functions(["accuracy"])


def test_brevity_separates_answers_of_different_lengths():
    """Graded where answer and format are all-or-nothing: two wrong answers of different lengths differ,
    so a group's advantages are not all zero (the real-size GRPO step relies on it)."""
    assert brevity_score("negative", "negative") == 1.0
    assert brevity_score("negative", "  neg  ") == 1.0  # shorter than the reference: no penalty
    assert brevity_score("negative", "x" * 16) == 0.5
    assert brevity_score("negative", "x" * 17) != brevity_score("negative", "x" * 18)
    assert brevity_score("negative", "   ") == 0.0


# --- the GRPO inputs are SFT's ---------------------------------------------------------------------


def test_grpo_trainer_inputs_have_the_pixels_and_tokens_of_sft():
    """trl's GRPOTrainer tokenises the conversational prompt itself and calls the processor without the
    recipe's pixel bounds; with the bounds pinned it sees what SFT and answering encode."""
    from trl.data_utils import prepare_multimodal_messages

    from megc_vqa.models.prompting import PromptOptions, build_messages, encode_prompts, render_prompt
    from megc_vqa.models.registry import load_processor
    from megc_vqa.training.grpo import processor_for_trl
    from megc_vqa.visual.samplers import VisualInputs

    processor = load_processor("tiny-qwen2.5-vl")
    rng = np.random.default_rng(0)
    images = tuple(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(2))
    visual = VisualInputs(
        images=images, video=None, frame_indices=(0, 4), fps=50.0, description="onset, flow"
    )
    options = PromptOptions(max_pixels=3136)
    messages = build_messages(T.COARSE_QUESTION, visual, None, options)
    ours = encode_prompts(processor, [render_prompt(processor, messages)], [visual], options)

    def trl_way():
        conversation = [prepare_multimodal_messages(messages, images=list(images))]
        return processor.apply_chat_template(
            conversation=conversation, add_generation_prompt=True, tokenize=True, return_dict=True
        )

    unpinned = trl_way()
    assert unpinned["pixel_values"].shape != ours["pixel_values"].shape  # why the adapter exists
    with processor_for_trl(processor, options):
        theirs = trl_way()
        padded_left = processor.tokenizer.padding_side == "left"
        text_call = processor(
            images=[list(images)], text=[render_prompt(processor, messages)], return_tensors="pt"
        )
    assert torch.equal(torch.as_tensor(theirs["input_ids"])[0], ours["input_ids"][0])
    assert torch.equal(theirs["pixel_values"], ours["pixel_values"])
    assert torch.equal(text_call["pixel_values"], ours["pixel_values"])
    assert padded_left and processor.tokenizer.padding_side != "left"  # trl's assumption, for the run only
    assert torch.equal(theirs["image_grid_thw"], ours["image_grid_thw"])
    assert trl_way()["pixel_values"].shape == unpinned["pixel_values"].shape  # restored afterwards


# --- GRPO and RFT on the tiny model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def qa_file():
    return "synth:tiny"  # built once into the cache, as the tiny LoRA recipe's


def visual_fn(record):
    from megc_vqa.visual.samplers import VisualInputs

    key = np.random.default_rng(0).integers(0, 256, (3, 56, 56, 3), dtype=np.uint8)
    return VisualInputs(images=tuple(key), video=None, frame_indices=(0, 4, 8), fps=50.0, description="")


def common(qa_file, out, *extra):
    return ["--train_file", str(qa_file), "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true",
            "--max_steps", "2", "--val_fraction", "0.2", *extra]  # fmt: skip


# Fast variants for the default suite: one step, coarse questions only (a short bound), no validation.
# Coarse and joint questions differ by ~30 tokens: a batch mixing them must survive the trainer's padding
# (with the processor padding on the right, the image tokens of the shorter prompt were misplaced).
FAST = ["--max_steps", "1", "--question_types", "coarse", "joint", "--final_eval", "false"]


def test_one_grpo_step_from_the_base_model_moves_the_adapter(qa_file, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    import megc_vqa.training.grpo as grpo

    monkeypatch.setattr(grpo, "reward_functions", lambda names, vocab: [length_reward] * len(names))
    argv = ["--config", str(ROOT / "recipes/tiny/grpo.yaml"), *common(qa_file, tmp_path / "g"), *FAST,
            "--max_completion_length", "48", "--per_device_train_batch_size", "16", "--seed", "1"]  # fmt: skip
    grpo.train_grpo(parse_config(argv), visual_fn=visual_fn)
    weights = load_file(tmp_path / "g" / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in weights.items())  # B starts at 0
    assert (tmp_path / "g" / "megc_vqa_train.json").is_file()


def test_rejection_sampling_fast(qa_file, tmp_path, monkeypatch):
    import megc_vqa.training.rft as rft

    monkeypatch.setattr(rft, "sample_answers", lambda *a: [[str(r.answer), "maybe"] for r in a[3]])
    argv = ["--config", str(ROOT / "recipes/tiny/lora.yaml"), *common(qa_file, tmp_path / "r"), *FAST,
            "--stage", "rft", "--rft_samples", "2"]  # fmt: skip
    result = rft.train_rft(parse_config(argv), visual_fn=visual_fn)
    assert 0 < result.metrics["rft_kept"] < result.metrics["rft_samples"]
    assert (tmp_path / "r" / "adapter_model.safetensors").is_file()


@pytest.fixture(scope="module")
def sft_adapter(qa_file, tmp_path_factory):
    from megc_vqa.training.finetune import train

    out = tmp_path_factory.mktemp("sft") / "sft"
    train(
        parse_config(["--config", str(ROOT / "recipes/tiny/lora.yaml"), *common(qa_file, out)]),
        visual_fn=visual_fn,
    )
    return out


def length_reward(completions, **_):
    """A reward that differs within every group, so two steps must move the adapter."""
    from megc_vqa.training.rewards import completion_text

    return [len(completion_text(c)) / 64 for c in completions]


@pytest.mark.slow
def test_grpo_trains_the_sft_adapter_and_leaves_an_sft_like_output(
    qa_file, sft_adapter, tmp_path, monkeypatch
):
    from safetensors.torch import load_file

    import megc_vqa.training.grpo as grpo
    from megc_vqa.models.contract import read_contract

    monkeypatch.setattr(grpo, "reward_functions", lambda names, vocab: [length_reward] * len(names))
    out = tmp_path / "grpo"
    argv = [
        "--config",
        str(ROOT / "recipes/tiny/grpo.yaml"),
        *common(qa_file, out),
        "--sft_model",
        str(sft_adapter),
    ]
    result = grpo.train_grpo(parse_config(argv), visual_fn=visual_fn)
    before = load_file(sft_adapter / "adapter_model.safetensors")
    after = load_file(out / "adapter_model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before), "GRPO did not move the SFT adapter"
    assert not (out / "ref").exists()
    sft, ours = read_contract(sft_adapter), read_contract(out)
    assert (ours.prompt, ours.visual, ours.model_name_or_path) == (
        sft.prompt,
        sft.visual,
        sft.model_name_or_path,
    )
    assert (
        json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"] == "tiny-qwen2.5-vl"
    )
    log = [json.loads(line) for line in (out / grpo.REWARD_LOG).read_text().splitlines()]
    assert [e["step"] for e in log if "reward" in e] == [1, 2]
    assert (out / grpo.REWARD_PLOT).stat().st_size > 0
    assert (out / "val_metrics.json").is_file() and "val_uf1_coarse" in result.metrics


def test_grpo_without_an_sft_model_warns_and_a_short_bound_is_refused(qa_file, tmp_path, monkeypatch, caplog):
    import trl

    import megc_vqa.training.grpo as grpo

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(trl.GRPOTrainer, "train", no_training)
    argv = ["--config", str(ROOT / "recipes/tiny/grpo.yaml"), *common(qa_file, tmp_path / "g")]
    with caplog.at_level(logging.WARNING), pytest.raises(ConfigError) as err:
        grpo.train_grpo(parse_config([*argv, "--max_completion_length", "6"]), visual_fn=visual_fn)
    assert "without an SFT model" in caplog.text and "rewards, start near chance" in caplog.text
    text = str(err.value)
    assert "max_completion_length 6 cannot hold a valid answer of" in text and "joint" in text
    assert "set max_completion_length to at least" in text


@pytest.mark.slow
def test_rejection_sampling_keeps_rewarded_answers_and_fine_tunes_on_them(
    qa_file, sft_adapter, tmp_path, monkeypatch
):
    import megc_vqa.training.rft as rft

    # the tiny SFT model answers near chance: sampling is replaced by answers of known reward
    def samples(model, processor, contract, records, visual_fn, recipe):
        return [[str(r.answer), "certainly not", str(r.answer)] for r in records]

    monkeypatch.setattr(rft, "sample_answers", samples)
    out = tmp_path / "rft"
    argv = ["--config", str(ROOT / "recipes/tiny/lora.yaml"), *common(qa_file, out), "--stage", "rft",
            "--sft_model", str(sft_adapter), "--rft_samples", "3"]  # fmt: skip
    result = rft.train_rft(parse_config(argv), visual_fn=visual_fn)
    rows = [json.loads(line) for line in (out / rft.RFT_SAMPLES).read_text().splitlines()]
    kept = [r for r in rows if r["kept"]]
    assert kept and all(r["sample"] == r["reference"] and r["reward"] == 1.0 for r in kept)
    assert all(not r["kept"] for r in rows if r["sample"] == "certainly not")
    assert result.metrics["rft_kept"] == len(kept) < len(rows)
    assert (out / "adapter_model.safetensors").is_file() and (out / "megc_vqa_train.json").is_file()

    monkeypatch.setattr(rft, "sample_answers", lambda *a: [["certainly not"]] * len(a[3]))
    with pytest.raises(ConfigError, match=r"no sampled answer reached rft_min_reward 1\.0"):
        rft.train_rft(parse_config([*argv[:-4], "--output_dir", str(tmp_path / "r2"), "--sft_model", str(sft_adapter)]),
                      visual_fn=visual_fn)  # fmt: skip


@pytest.mark.slow
def test_the_tiny_sft_model_samples_through_the_answering_engine(qa_file, sft_adapter, tmp_path):
    from megc_vqa.training.finetune import build_model
    from megc_vqa.training.rft import sample_answers
    from megc_vqa.training.stages import stage_contract

    argv = ["--config", str(ROOT / "recipes/tiny/lora.yaml"), *common(qa_file, tmp_path / "o"), "--stage", "rft",
            "--sft_model", str(sft_adapter), "--rft_samples", "2"]  # fmt: skip
    recipe = parse_config(argv)
    model, processor, family = build_model(recipe)
    records = [{"question": T.COARSE_QUESTION, "dataset": "casme2", "image_id": str(i)} for i in range(3)]
    contract = stage_contract(recipe, family.name, records, [])
    model.eval()
    samples = sample_answers(model, processor, contract, records, visual_fn, recipe)
    assert [len(s) for s in samples] == [2, 2, 2] and all(isinstance(a, str) for s in samples for a in s)


def test_sampled_answers_cannot_hold_vision_tokens(tmp_path):
    """A sampled pad token would not match the visual features in the log-probability pass: generation
    suppresses every vision token, not only trl's image pad."""
    from megc_vqa.models.registry import load_processor
    from megc_vqa.training.grpo import VISION_TOKENS, suppress_vision_tokens

    tokenizer = load_processor("tiny-qwen2.5-vl").tokenizer
    argv = [
        "--config",
        str(ROOT / "recipes/tiny/grpo.yaml"),
        "--output_dir",
        str(tmp_path),
        "--train_file",
        "synth:tiny",
    ]
    recipe = parse_config(argv)
    assert suppress_vision_tokens(recipe, tokenizer) == list(VISION_TOKENS)
    ids = {tokenizer.convert_tokens_to_ids(t) for t in VISION_TOKENS}
    assert set(recipe.training.generation_kwargs["suppress_tokens"]) == ids
    recipe.training.use_vllm, recipe.training.generation_kwargs = True, None
    suppress_vision_tokens(recipe, tokenizer)
    assert recipe.training.generation_kwargs == {"bad_words": sorted(VISION_TOKENS)}
