"""Tiny models, registry, prompting and the collator, on CPU and offline."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from megc_vqa.models import registry  # noqa: E402
from megc_vqa.models.collator import VisualInputError, VQACollator  # noqa: E402
from megc_vqa.models.prompting import (  # noqa: E402
    IGNORE_INDEX,
    PromptOptions,
    build_messages,
    encode_for_training,
    render_prompt,
)
from megc_vqa.qa.templates import COARSE_QUESTION  # noqa: E402
from megc_vqa.visual.samplers import VisualInputs  # noqa: E402


def make_visual(seed: int, n_key: int = 3, size: int = 56) -> VisualInputs:
    rng = np.random.default_rng(seed)
    key = rng.integers(0, 256, (n_key, size, size, 3), dtype=np.uint8)
    flow = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    indices = tuple(range(10, 10 + 2 * n_key, 2))
    return VisualInputs(
        (*key, flow), key, indices, 100.0, "onset, apex and offset frames, then the optical flow"
    )


SMALL = PromptOptions(max_pixels=56 * 56)


@pytest.fixture(scope="module", params=["tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def tiny(request):
    torch.manual_seed(0)
    model = registry.load_model(request.param, dtype="float32")
    processor = registry.load_processor(request.param)
    return request.param, model, processor


def test_tiny_config_matches_tokenizer_and_mrope(tiny):
    _, model, processor = tiny
    tok, cfg = processor.tokenizer, model.config
    assert cfg.image_token_id == tok.convert_tokens_to_ids("<|image_pad|>")
    assert cfg.video_token_id == tok.convert_tokens_to_ids("<|video_pad|>")
    assert cfg.vision_start_token_id == tok.convert_tokens_to_ids("<|vision_start|>")
    assert cfg.text_config.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
    assert cfg.text_config.vocab_size == len(tok)
    text = cfg.text_config
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // text.num_attention_heads
    assert sum(text.rope_parameters["mrope_section"]) == head_dim // 2
    # The QA vocabulary is compact: answers are whole tokens.
    assert len(tok.tokenize(" negative")) == 1


def test_tiny_build_is_deterministic(tmp_path):
    from megc_vqa.models.tiny import build_tiny

    def digest(folder):
        return {
            f: hashlib.sha256((folder / f).read_bytes()).hexdigest()
            for f in ("model.safetensors", "tokenizer.json")
        }

    a = digest(build_tiny("tiny-qwen2.5-vl", tmp_path / "a"))
    b = digest(build_tiny("tiny-qwen2.5-vl", tmp_path / "b"))
    assert a == b


def test_labels_cover_exactly_the_answer_and_match_the_template_mask(tiny):
    _, _, processor = tiny
    batch = encode_for_training(
        processor,
        [
            (COARSE_QUESTION, make_visual(0), "negative"),
            ("What is the action unit?", make_visual(1), "lip pucker"),
        ],
        SMALL,
    )
    tok = processor.tokenizer
    for row, answer in zip(batch["labels"], ["negative", "lip pucker"], strict=True):
        assert tok.decode(row[row != IGNORE_INDEX]) == answer + "<|im_end|>"
    # The {% generation %} block of the template marks the same tokens.
    messages = build_messages(COARSE_QUESTION, None, "negative")
    out = processor.apply_chat_template(
        [messages], tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids, mask = out["input_ids"][0], out["assistant_masks"][0]
    assert tok.decode([i for i, m in zip(ids, mask, strict=True) if m]) == "negative<|im_end|>"


@pytest.mark.parametrize("mode", ["images", "video"])
def test_mm_token_type_ids_mark_the_visual_tokens(tiny, mode):
    _, model, processor = tiny
    options = PromptOptions(max_pixels=56 * 56, visual_mode=mode)
    batch = encode_for_training(processor, [(COARSE_QUESTION, make_visual(0), "negative")], options)
    ids, types = batch["input_ids"], batch["mm_token_type_ids"]
    expected = (ids == model.config.image_token_id).long() + 2 * (ids == model.config.video_token_id).long()
    assert torch.equal(types.long(), expected)
    assert (types == 1).any()
    assert (types == 2).any() == (mode == "video")


def test_qwen3_template_emits_a_bare_video_pad():
    processor = registry.load_processor("tiny-qwen3-vl")
    options = PromptOptions(visual_mode="video")
    text = render_prompt(processor, build_messages(COARSE_QUESTION, make_visual(0), None, options))
    assert text.count("<|video_pad|>") == 1
    assert "<|vision_start|><|video_pad|>" not in text


@pytest.mark.parametrize("mode", ["images", "video"])
def test_pixels_reach_the_vision_tower(tiny, mode):
    """The loss depends on the pixels: SFTTrainer-style text-only training would fail this."""
    _, model, processor = tiny
    options = PromptOptions(max_pixels=56 * 56, visual_mode=mode)
    collator = VQACollator(processor, lambda r: make_visual(r["seed"]), options)

    def loss(seed):
        batch = collator([{"id": "x", "question": COARSE_QUESTION, "answer": "negative", "seed": seed}])
        with torch.no_grad():
            return model(**batch).loss.item()

    assert np.isfinite(loss(0))
    assert loss(0) == pytest.approx(loss(0))
    assert abs(loss(0) - loss(1)) > 1e-4


def test_collator_names_the_record_whose_frames_are_missing(tiny):
    _, _, processor = tiny

    def missing(record):
        raise FileNotFoundError("no numbered image files")

    collator = VQACollator(processor, missing, SMALL)
    with pytest.raises(VisualInputError, match=r"casme2_sub01_EP02_01f_1.*/data/sub01"):
        collator([{"id": "casme2_sub01_EP02_01f_1", "source": "/data/sub01", "question": "q", "answer": "a"}])


def test_lora_scopes_select_the_right_modules(tiny):
    import re

    name, model, _ = tiny
    _, family = registry.resolve(name)
    linear = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]

    def hits(scope):
        rx = re.compile(registry.lora_target_regex(family, scope))
        return [n for n in linear if rx.fullmatch(n)]

    language = hits("language")
    assert language and all("language_model" in n for n in language)
    assert len(language) == 7 * model.config.text_config.num_hidden_layers
    vision, merger = hits("vision"), hits("merger")
    assert vision and all(".visual.blocks." in n for n in vision)
    assert merger and all("merger" in n for n in merger)
    assert sorted(hits("all")) == sorted(language + vision + merger)
    with pytest.raises(ValueError, match="unknown LoRA scope"):
        registry.lora_target_regex(family, "language+decoder")


def test_registry_errors_say_what_to_change(tmp_path):
    with pytest.raises(registry.ModelLoadError, match="hf download"):
        registry.resolve("Qwen/Qwen2.5-VL-3B-Instruct-does-not-exist")
    with pytest.raises(registry.ModelLoadError, match="not a registry name"):
        registry.resolve("no such model")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(registry.ModelLoadError, match="not supported"):
        registry.resolve(tmp_path)


def test_hub_names_map_to_families():
    assert registry.MODELS["qwen2.5-vl-3b"].hub_id == "Qwen/Qwen2.5-VL-3B-Instruct"
    for spec in registry.MODELS.values():
        assert spec.family in registry.FAMILIES
        assert spec.tiny or spec.hub_id
