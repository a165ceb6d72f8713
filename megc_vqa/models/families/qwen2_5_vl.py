"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): ChatML, patch 14 x merge 2, M-RoPE with one
interval per video (``second_per_grid_ts``, set from the key frames' sampled rate)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from megc_vqa.models.chat_templates import QWEN2_5_VL_TEMPLATE, QWEN_SPECIAL_TOKENS
from megc_vqa.models.families.base import Family

LANGUAGE = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"

# Tiny text model: 2 layers, hidden 64, 4 heads of 16 dims, so the M-RoPE sections (temporal, height,
# width) sum to 16 / 2 = 8.
TINY_TEXT = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}


def tiny_text(tokenizer: Any, ids: dict[str, int]) -> dict[str, Any]:
    """The tiny text config shared by the Qwen families, with the tokenizer's vocabulary and ids."""
    return {
        "vocab_size": len(tokenizer),
        **TINY_TEXT,
        **{k: ids[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
    }


def vision_ids(ids: dict[str, int]) -> dict[str, int]:
    keys = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return {k: ids[k] for k in keys}


@dataclass(frozen=True)
class Qwen25VL(Family):
    def tiny_config(self, tokenizer: Any) -> Any:
        ids = self.token_ids(tokenizer)
        text = tiny_text(tokenizer, ids)
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
        }
        return self.transformers_class("config")(text_config=text, vision_config=vision, **vision_ids(ids))

    def tiny_processor(self, tokenizer: Any) -> Any:
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        return self.transformers_class("processor")(
            image_processor=Qwen2VLImageProcessor(),
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(),
            chat_template=self.chat_template,
        )


FAMILY = Qwen25VL(
    name="qwen2_5_vl",
    model_types=("qwen2_5_vl",),
    model_class="Qwen2_5_VLForConditionalGeneration",
    config_class="Qwen2_5_VLConfig",
    processor_class="Qwen2_5_VLProcessor",
    lora_modules={
        "language": LANGUAGE,
        "vision": r".*visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate|up|down)_proj)",
        "merger": r".*visual\.merger\.mlp\.(?:0|2)",  # mlp.1 is the GELU between the Linears
    },
    save_modules={"vision": "visual", "merger": "merger"},
    vision_module=r"(?:^|\.)visual\.",
    projector_module=r"\.merger\.",
    patch_factor=28,
    chat_template=QWEN2_5_VL_TEMPLATE,
    special_tokens=QWEN_SPECIAL_TOKENS,
    eos_token="<|im_end|>",
    pad_token="<|endoftext|>",
    image_token="<|image_pad|>",
    video_token="<|video_pad|>",
    stop_tokens=("<|im_end|>", "<|endoftext|>"),
    description="Qwen2.5-VL (3B/7B/32B/72B)",
)
