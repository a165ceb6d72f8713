"""Qwen2.5-VL (``Qwen2_5_VLForConditionalGeneration``): ChatML, patch 14 x merge 2, M-RoPE with one
interval per video (``second_per_grid_ts``, set from the key frames' sampled rate).

Tokens, the ``visual`` tower and its ``merger`` are the Qwen-VL defaults of :class:`Family`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from megc_vqa.models.chat_templates import QWEN2_5_VL_TEMPLATE
from megc_vqa.models.families.base import TINY_VISION, Family, tiny_text

LANGUAGE = r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)"

# M-RoPE sections (temporal, height, width) of the tiny text model's 16-dim heads: they sum to 16 / 2 = 8.
TINY_ROPE = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
TINY_QWEN2_5_VISION = {
    **TINY_VISION,
    "window_size": 112,
    "fullatt_block_indexes": [1],
    "tokens_per_second": 2,
}


def vision_ids(ids: dict[str, int]) -> dict[str, int]:
    keys = ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    return {k: ids[k] for k in keys}


@dataclass(frozen=True)
class Qwen25VL(Family):
    def tiny_config(self, tokenizer: Any) -> Any:
        ids = self.token_ids(tokenizer)
        text = {**tiny_text(tokenizer, ids), "rope_parameters": dict(TINY_ROPE)}
        return self.transformers_class("config")(
            text_config=text, vision_config=dict(TINY_QWEN2_5_VISION), **vision_ids(ids)
        )

    def tiny_processor(self, tokenizer: Any) -> Any:
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        return self.build_processor(tokenizer, Qwen2VLImageProcessor(), Qwen2VLVideoProcessor())


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
    patch_factor=28,
    chat_template=QWEN2_5_VL_TEMPLATE,
    description="Qwen2.5-VL (3B/7B/32B/72B)",
)
