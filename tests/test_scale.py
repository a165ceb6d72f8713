"""Fast checks behind the real-size work: temporal facts of 200 fps key frames, the published configs,
the checks before training (LoRA targets, token budget, out-of-memory advice), which adapters a serving
backend can apply, and the GPU suite at ``--scale tiny``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from megc_vqa.models.prompting import PromptOptions, build_messages, encode_prompts, render_prompt  # noqa: E402
from megc_vqa.training.config import ConfigError, parse_config  # noqa: E402
from megc_vqa.visual.samplers import VisualInputs  # noqa: E402
from tests.helpers import seeded_key_frames  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VIDEO = PromptOptions(visual_mode="video", describe_visuals=False)


def key_frames(indices: tuple[int, ...], clip_fps: float = 200.0) -> VisualInputs:
    """Key frames as the visual layer gives them: absolute indices, fps = (T - 1) / seconds spanned."""
    video = np.full((len(indices), 56, 56, 3), 128, np.uint8)
    fps = (len(indices) - 1) / ((indices[-1] - indices[0]) / clip_fps)
    return VisualInputs(tuple(video), video, indices, fps, "")


def encode(name: str, visual: VisualInputs):
    from megc_vqa.models.registry import load_processor

    processor = load_processor(name)
    prompt = render_prompt(processor, build_messages("Which class?", visual, None, VIDEO))
    return processor, encode_prompts(processor, [prompt], [visual], VIDEO)


# ---------------------------------------------------------------- temporal facts at 200 fps


@pytest.mark.parametrize(
    ("indices", "seconds_per_grid", "temporal_ids"),
    [
        # onset 10, apex 60, offset 110 of a 200 fps clip: 0.5 s spanned, 4 frames/s as sampled.
        # Two temporal patches of 2 frames: 2 / 4 = 0.5 s apart; M-RoPE: 0.5 s * 2 tokens/s = 1 id.
        ((10, 60, 110), 0.5, (0, 1)),
        # uniform 4 frames over 0.3 s (10 frames/s): patches 0.2 s apart, 0.2 * 2 = 0.4 ids, which the
        # model itself floors to 0: Qwen2.5-VL resolves time in steps of 1 / tokens_per_second = 0.5 s.
        ((100, 120, 140, 160), 0.2, (0, 0)),
        # 2 s spanned (1 frame/s): patches 2 s apart -> 4 ids.
        ((0, 200, 400), 2.0, (0, 4)),
    ],
)
def test_qwen25_temporal_positions_follow_true_time(indices, seconds_per_grid, temporal_ids):
    from megc_vqa.models.registry import load_model

    processor, batch = encode("tiny-qwen2.5-vl", key_frames(indices))
    assert batch["second_per_grid_ts"].dtype == torch.float32
    assert batch["second_per_grid_ts"].tolist() == pytest.approx([seconds_per_grid])
    model = load_model("tiny-qwen2.5-vl")
    pos, _ = model.model.get_rope_index(
        batch["input_ids"],
        batch["mm_token_type_ids"],
        video_grid_thw=batch["video_grid_thw"],
        second_per_grid_ts=batch["second_per_grid_ts"],
        attention_mask=batch["attention_mask"],
    )
    is_video = batch["input_ids"][0] == processor.video_token_id
    temporal = pos[0, 0][is_video]
    start = int(temporal.min())
    per_patch = int(is_video.sum()) // len(temporal_ids)
    got = tuple(int(t) - start for t in temporal[::per_patch])
    assert got == temporal_ids


def test_qwen3_timestamps_are_the_frames_true_times():
    # onset 0, apex 80, offset 100 at 200 fps: 0, 0.4 and 0.5 s. Qwen3-VL pads 3 frames to 4 (the
    # last repeated) and writes each pair's mean: (0 + 0.4) / 2 = 0.2 s and 0.5 s. Evenly spaced
    # frames (the old metadata) would have said 0.1 s for the first pair.
    processor, batch = encode("tiny-qwen3-vl", key_frames((0, 80, 100)))
    text = processor.tokenizer.decode(batch["input_ids"][0])
    assert "<0.2 seconds>" in text and "<0.5 seconds>" in text
    assert "<0.1 seconds>" not in text


# ---------------------------------------------------------------- published configurations


def test_published_configs_have_the_published_sizes():
    from megc_vqa.models.published import PUBLISHED, model_class, model_config

    expected = {  # parameters of the hub checkpoints (billions, model cards / safetensors index)
        "Qwen/Qwen2.5-VL-3B-Instruct": 3.75,
        "Qwen/Qwen2.5-VL-7B-Instruct": 8.29,
        "Qwen/Qwen3-VL-4B-Instruct": 4.44,
    }
    assert set(expected) <= set(PUBLISHED)  # issue 23's families: tests/test_families.py
    for hub_id, billions in expected.items():
        with torch.device("meta"):
            model = model_class(PUBLISHED[hub_id].family)._from_config(model_config(hub_id))
        assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.01)
    assert model_config("Qwen/Qwen2.5-VL-7B-Instruct", layers=8).text_config.num_hidden_layers == 8
    with pytest.raises(ValueError, match="layers"):
        model_config("Qwen/Qwen2.5-VL-7B-Instruct", layers=40)


def test_every_recipe_names_a_published_config():
    from megc_vqa.models.published import PUBLISHED
    from megc_vqa.training.config import load_yaml

    for path in (ROOT / "recipes").glob("qwen*/*.yaml"):
        assert load_yaml(path)["model_name_or_path"] in PUBLISHED, path


def test_random_processor_has_published_pixel_settings():
    from megc_vqa.models.published import random_processor

    p = random_processor("Qwen/Qwen3-VL-4B-Instruct")
    assert p.image_processor.size == {"shortest_edge": 65536, "longest_edge": 16777216}
    assert p.image_processor.patch_size == p.video_processor.patch_size == 16


# ---------------------------------------------------------------- checks before training


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    from megc_vqa.qa import templates as t

    rows = [
        {
            "id": f"casme2_s{s}_{c}",
            "dataset": "casme2",
            "subject": f"s{s}",
            "image_id": f"s{s}_EP{c}",
            "filename": f"s{s}_EP{c}",
            "question": t.COARSE_QUESTION,
            "answer": "positive",
            "source": "/nowhere",
            "fps": 200.0,
            "onset": 0,
            "apex": 4,
            "offset": 8,
        }
        for s in range(3)
        for c in range(2)
    ]
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def visual_fn(record) -> VisualInputs:
    return seeded_key_frames(0, fps=50.0, description="")  # the same pixels for every clip


def tiny_recipe(qa_file: Path, out: Path, *extra: str):
    return parse_config(
        [
            "--config", str(ROOT / "recipes/tiny/lora.yaml"), "--train_file", str(qa_file),
            "--output_dir", str(out), "--max_steps", "1", "--val_fraction", "0", "--report_to", "none",
            *extra,
        ]
    )  # fmt: skip


def test_lora_targets_matching_nothing_list_the_modules_that_exist(qa_file, tmp_path):
    from megc_vqa.training.finetune import build_model

    recipe = tiny_recipe(qa_file, tmp_path, "--lora_target_modules", "query_key_value")
    with pytest.raises(ConfigError) as err:
        build_model(recipe)
    text = str(err.value)
    assert "query_key_value" in text and "match no module" in text
    assert "model.language_model.layers.N.self_attn.q_proj" in text
    assert "model.visual.blocks.N.attn.qkv" in text


def test_every_lora_scope_must_wrap_something():
    from megc_vqa.models.registry import FAMILIES, load_model
    from megc_vqa.training.preflight import check_lora_targets, lora_scope_targets

    model = load_model("tiny-qwen2.5-vl")
    scopes = lora_scope_targets(FAMILIES["qwen2_5_vl"], "language+merger")
    counts = check_lora_targets(model, scopes)
    assert counts["language"] == 2 * 7 and counts["merger"] == 2
    # the Qwen3-VL merger names do not exist in a Qwen2.5-VL model
    with pytest.raises(ConfigError, match=r"merger .* match no module"):
        check_lora_targets(model, lora_scope_targets(FAMILIES["qwen3_vl"], "language+merger"))


def test_pixel_budget_over_max_length_fails_before_training(qa_file, tmp_path, monkeypatch):
    from transformers import Trainer

    from megc_vqa.training.finetune import train

    def no_training(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(Trainer, "train", no_training)
    recipe = tiny_recipe(qa_file, tmp_path, "--max_length", "40")
    with pytest.raises(ConfigError) as err:
        train(recipe, visual_fn=visual_fn)
    text = str(err.value)
    assert "max_length is 40" in text and "max_pixels=3136" in text and "visual" in text


def test_out_of_memory_says_which_setting_to_lower(qa_file, tmp_path, monkeypatch):
    from transformers import Trainer

    from megc_vqa.training.finetune import TrainingError, train
    from megc_vqa.training.preflight import is_out_of_memory

    def oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(Trainer, "train", oom)
    with pytest.raises(TrainingError) as err:
        train(tiny_recipe(qa_file, tmp_path), visual_fn=visual_fn)
    text = str(err.value)
    assert "per_device_train_batch_size=4" in text and "max_pixels=3136" in text and "load_in_4bit" in text
    assert not is_out_of_memory(RuntimeError("shape mismatch"))


# ---------------------------------------------------------------- serving what was trained


def save_adapter(folder: Path, target: str) -> Path:
    from peft import LoraConfig, get_peft_model

    from megc_vqa.models.registry import FAMILIES, load_model, lora_target_regex

    model = load_model("tiny-qwen2.5-vl")
    regex = lora_target_regex(FAMILIES["qwen2_5_vl"], target)
    get_peft_model(model, LoraConfig(r=4, target_modules=regex)).save_pretrained(folder)
    cfg = json.loads((folder / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "tiny-qwen2.5-vl"
    (folder / "adapter_config.json").write_text(json.dumps(cfg))
    return folder


def test_vllm_refuses_an_adapter_on_the_vision_tower(tmp_path):
    from megc_vqa.models.serving import ServingError, adapter_scopes, check_servable

    language = save_adapter(tmp_path / "language", "language")
    vision = save_adapter(tmp_path / "vision", "language+vision")
    assert set(adapter_scopes(language)) == {"language"}
    assert set(adapter_scopes(vision)) == {"language", "vision"}
    check_servable(language, "vllm")
    check_servable(vision, "transformers")
    with pytest.raises(ServingError) as err:
        check_servable(vision, "vllm")
    assert "vision: 10 module(s), e.g. model.visual.blocks.0.attn.proj" in str(err.value)
    assert f"merge-adapter {vision}" in str(err.value)


# ---------------------------------------------------------------- the GPU suite, at tiny scale


@pytest.mark.slow  # ~1 min alone, 10 on the shared 2-core test machine
def test_gpu_suite_tiny_scale_runs_every_section(tmp_path, capsys):
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from gpu_suite import main

    out = tmp_path / "suite.json"
    assert main(["--scale", "tiny", "--device", "cpu", "--out", str(out), "--workdir", str(tmp_path)]) == 0
    result = json.loads(out.read_text())
    variants = {r["variant"]: r for r in result["results"]}
    assert set(variants) == {
        "lora-bf16",
        "qlora-nf4",
        "7b-qlora-nf4",
        "answer",
        "answer-constrained",
        "answer-vllm",
    }
    for name in ("lora-bf16", "qlora-nf4"):
        assert variants[name]["step_s"] > 0 and variants[name]["tokens_per_s"] > 0
    for name in ("answer", "answer-constrained"):
        assert variants[name]["engine_rows_per_s"] > 0 and variants[name]["naive_rows_per_s"] > 0
    printed = capsys.readouterr().out
    assert "lora-bf16" in printed and "goal met" in printed


def test_lora_on_the_merger_wraps_only_its_linear_layers():
    """The 7B recipe's language+merger: Qwen2.5-VL's merger MLP is Linear, GELU, Linear."""
    from peft import LoraConfig, get_peft_model

    from megc_vqa.models.registry import FAMILIES, load_model, lora_target_regex

    regex = lora_target_regex(FAMILIES["qwen2_5_vl"], "language+merger")
    model = get_peft_model(load_model("tiny-qwen2.5-vl"), LoraConfig(r=4, target_modules=regex))
    wrapped = {n.split(".lora_A")[0] for n, _ in model.named_parameters() if ".lora_A" in n}
    assert {n for n in wrapped if "merger" in n} == {
        "base_model.model.model.visual.merger.mlp.0",
        "base_model.model.model.visual.merger.mlp.2",
    }


@pytest.mark.parametrize("recipe", ["qwen2.5-vl-3b/lora.yaml", "qwen2.5-vl-3b/qlora.yaml"])
def test_realsize_check_runs_a_shipped_recipe_on_the_tiny_model(recipe: str, tmp_path: Path):
    """The code of ``make test-realsize`` itself, end to end on the tiny model (the real sizes are slow):
    a shipped recipe trains, its adapter reloads to the same loss, and the merged model matches it."""
    from megc_vqa.models.tiny import ensure_tiny
    from megc_vqa.training.realsize import check

    merge = recipe.endswith("/lora.yaml")
    r = check(  # float32: the tolerances below are float32's (the bf16 path has its own test)
        ROOT / "recipes" / recipe,
        tmp_path,
        model_path=ensure_tiny("tiny-qwen2.5-vl"),
        steps=2,
        merge=merge,
        dtype="float32",
    )
    assert r["failures"] == [], r["failures"]
    assert r["lora_wrapped"] == sum(r["lora_modules"].values()) > 0
    assert r["visual_tokens"] == r["visual_tokens_promised"] > 0
    assert r["adapter_weights_changed"] and r["adapter_weights_reloaded_equal"]
    assert r["loss_reloaded"] == pytest.approx(r["loss_trained"], abs=1e-4)
    assert r["full_depth"]["layers"] == 36 and r["full_depth"]["stray_trainable"] == []
    if merge:
        assert r["merge_logits_max_diff"] <= 1e-3 * max(1.0, r["logits_scale"])


@pytest.mark.parametrize(
    "recipe, tiny, scopes",
    [
        # LoRA on attention (modules) and on the fused experts (PEFT target_parameters, 2 per layer)
        ("qwen3_vl_moe/lora.yaml", "tiny-qwen3-vl-moe", {"language", "experts"}),
        # one GRPO step from a fresh adapter on a random model: the graded brevity reward the check adds
        # gives the group unequal rewards, so the step reaches the adapter
        ("qwen2.5-vl-3b/grpo.yaml", "tiny-qwen2.5-vl", {"language"}),
    ],
)
def test_realsize_check_counts_parameter_scopes_and_moves_a_grpo_adapter(recipe, tiny, scopes, tmp_path):
    from megc_vqa.models.tiny import ensure_tiny
    from megc_vqa.training.realsize import check

    r = check(ROOT / "recipes" / recipe, tmp_path, model_path=ensure_tiny(tiny), steps=2, dtype="float32")
    assert r["failures"] == [], r["failures"]
    assert set(r["lora_modules"]) == set(r["full_depth"]["lora_modules"]) == scopes
    assert r["lora_wrapped"] == sum(r["lora_modules"].values()) and r["stray_trainable"] == []
    assert all(n > 0 for n in r["full_depth"]["lora_modules"].values())
    assert r["adapter_weights_changed"]


def test_an_moe_adapter_on_the_experts_is_scoped_experts(tmp_path):
    """LoRA on the fused experts (PEFT target_parameters, nested ``.base_layer`` wrappers) is read back as
    the experts scope by serving, and counted as targeted (not stray) by the real-size check."""
    from peft import LoraConfig, get_peft_model

    from megc_vqa.models.families.base import unwrapped_name
    from megc_vqa.models.registry import FAMILIES, load_model, lora_target_parameters, lora_target_regex
    from megc_vqa.models.serving import adapter_scopes
    from megc_vqa.training.preflight import lora_wrapped_allowed

    family = FAMILIES["qwen3_vl_moe"]
    regex, parameters = (
        lora_target_regex(family, "language+experts"),
        lora_target_parameters(family, "experts"),
    )
    model = get_peft_model(
        load_model("tiny-qwen3-vl-moe"), LoraConfig(r=4, target_modules=regex, target_parameters=parameters)
    )
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert any(".experts.base_layer.lora_" in n for n in trainable)  # two parameters of one module: nested
    assert all(lora_wrapped_allowed(n, regex, parameters) for n in trainable)
    assert not any(lora_wrapped_allowed(n, regex, []) for n in trainable if ".experts." in n)
    model.save_pretrained(tmp_path / "moe")
    cfg = json.loads((tmp_path / "moe" / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "tiny-qwen3-vl-moe"
    (tmp_path / "moe" / "adapter_config.json").write_text(json.dumps(cfg))
    scopes = adapter_scopes(tmp_path / "moe")
    assert set(scopes) == {"language", "experts"}
    experts = {unwrapped_name(m) for m in scopes["experts"]}  # each layer's experts, once per parameter
    assert len(experts) == 2 and all(m.endswith(".mlp.experts") for m in experts)
