"""Qwen3-VL (``Qwen3VLForConditionalGeneration``): ChatML, patch 16 x merge 2, interleaved M-RoPE, a
timestamp per frame pair (``<t seconds>`` from the video metadata), DeepStack mergers.

Tokens, the ``visual`` tower and its ``merger`` are the Qwen-VL defaults of :class:`Family`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from megc_vqa.models.chat_templates import QWEN3_VL_TEMPLATE
from megc_vqa.models.families.base import TINY_VISION, Family, tiny_text
from megc_vqa.models.families.qwen2_5_vl import LANGUAGE, vision_ids

TINY_QWEN3_VISION = {
    **TINY_VISION,
    "patch_size": 16,
    "num_position_embeddings": 64,
    "deepstack_visual_indexes": [0],
}
TINY_ROPE = {"rope_type": "default", "rope_theta": 5e5, "mrope_section": [2, 3, 3], "mrope_interleaved": True}


@dataclass(frozen=True)
class Qwen3VL(Family):
    def tiny_text_config(self, tokenizer: Any, ids: dict[str, int]) -> dict[str, Any]:
        """The tiny text config (a subclass adds its own keys: the MoE's experts)."""
        return {**tiny_text(tokenizer, ids), "head_dim": 16, "rope_parameters": dict(TINY_ROPE)}

    def tiny_config(self, tokenizer: Any) -> Any:
        ids = self.token_ids(tokenizer)
        return self.transformers_class("config")(
            text_config=self.tiny_text_config(tokenizer, ids),
            vision_config=dict(TINY_QWEN3_VISION),
            **vision_ids(ids),
        )

    def tiny_processor(self, tokenizer: Any) -> Any:
        from transformers import Qwen2VLImageProcessor, Qwen3VLVideoProcessor

        return self.build_processor(
            tokenizer, Qwen2VLImageProcessor(patch_size=16), Qwen3VLVideoProcessor(patch_size=16)
        )

    def fix_prompt(self, text: str) -> str:
        """Qwen3-VL processors expand a bare ``<|video_pad|>`` into per-frame blocks that carry their own
        vision start/end tokens; a template that wraps the pad (as older hub templates do) would nest
        them."""
        return text.replace("<|vision_start|><|video_pad|><|vision_end|>", "<|video_pad|>")

    def video_size(self, size: dict[str, int], frames: int, video_processor: Any) -> dict[str, int]:
        """Qwen3-VL's video processor bounds the pixels of the whole video (frames x height x width);
        our bounds are per frame, so scale them by the frames it will encode (rounded up to its
        temporal patch)."""
        step = int(getattr(video_processor, "temporal_patch_size", 1) or 1)
        return {k: int(v) * (-(-frames // step) * step) for k, v in size.items()}


FAMILY = Qwen3VL(
    name="qwen3_vl",
    model_types=("qwen3_vl",),
    model_class="Qwen3VLForConditionalGeneration",
    config_class="Qwen3VLConfig",
    processor_class="Qwen3VLProcessor",
    lora_modules={
        "language": LANGUAGE,
        "vision": r".*visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.linear_fc\d)",
        "merger": r".*visual\.(merger|deepstack_merger_list\.\d+)\.linear_fc\d",
    },
    patch_factor=32,
    chat_template=QWEN3_VL_TEMPLATE,
    description="Qwen3-VL dense (2B/4B/8B/32B)",
)
