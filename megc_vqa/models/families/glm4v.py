"""GLM-4.1V (``Glm4vForConditionalGeneration``): the GLM chat format (``[gMASK]<sop><|user|>\\n...
<|assistant|>\\n``), patch 14 x merge 2, 3-D rotary positions, a video as per-frame image blocks each
followed by its whole-second timestamp (read from the video metadata).

GLM's image processor bounds the pixels of an image as a 2-frame clip (``temporal_patch_size`` copies)
and its video processor those of the whole video, so the per-frame bounds are scaled accordingly. The
turn has no end token: ``<|endoftext|>`` ends the assistant's answer (and ``<|user|>`` where a
published checkpoint goes on to the next turn).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from megc_vqa.models.chat_templates import DEFAULT_SYSTEM_PROMPT
from megc_vqa.models.families.base import TINY_TEXT, TINY_VISION, Family

SPECIAL_TOKENS = (
    "<|endoftext|>",
    "[gMASK]",
    "<sop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|video|>",
)

# Same message shapes as the ChatML templates (system/user/assistant, images, videos, text), in GLM's
# format, with {% generation %} around the assistant's answer and its end token.
TEMPLATE = (
    "[gMASK]<sop>"
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}<|system|>\n" + DEFAULT_SYSTEM_PROMPT + "{% endif %}"
    "<|{{ message['role'] }}|>\n"
    "{% if message['role'] == 'assistant' %}"
    "{% generation %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for content in message['content'] %}{% if 'text' in content %}{{ content['text'] }}"
    "{% endif %}{% endfor %}{% endif %}"
    "<|endoftext|>{% endgeneration %}"
    "{% elif message['content'] is string %}{{ message['content'] }}"
    "{% else %}"
    "{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|begin_of_image|><|image|><|end_of_image|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "<|begin_of_video|><|video|><|end_of_video|>"
    "{% elif 'text' in content %}{{ content['text'] }}"
    "{% endif %}"
    "{% endfor %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


@dataclass(frozen=True)
class Glm4v(Family):
    def config_tokens(self) -> dict[str, str]:
        return {
            "image_start_token_id": "<|begin_of_image|>",
            "image_end_token_id": "<|end_of_image|>",
            "video_start_token_id": "<|begin_of_video|>",
            "video_end_token_id": "<|end_of_video|>",
        }

    def tiny_config(self, tokenizer: Any) -> Any:
        ids = self.token_ids(tokenizer)
        rope = {
            "rope_type": "default",
            "rope_theta": 1e4,
            "mrope_section": [2, 1, 1],
            "partial_rotary_factor": 0.5,
        }
        # GLM's text config takes the pad id only (bos and eos stay its defaults)
        text = {
            "vocab_size": len(tokenizer),
            **TINY_TEXT,
            "rope_parameters": rope,
            "pad_token_id": ids["pad_token_id"],
        }
        vision = {**TINY_VISION, "image_size": 56}
        keys = ("image_token_id", "video_token_id", *self.config_tokens())
        return self.transformers_class("config")(
            text_config=text, vision_config=vision, **{k: ids[k] for k in keys}
        )

    def tiny_processor(self, tokenizer: Any) -> Any:
        from transformers import Glm4vImageProcessor, Glm4vVideoProcessor

        return self.build_processor(tokenizer, Glm4vImageProcessor(), Glm4vVideoProcessor())

    def pixel_kwargs(self, processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
        kwargs = super().pixel_kwargs(processor, min_pixels, max_pixels)
        size = kwargs["images_kwargs"].get("size")
        if size is not None:  # an image is bounded as a clip of temporal_patch_size copies
            step = int(getattr(processor.image_processor, "temporal_patch_size", 2) or 2)
            kwargs["images_kwargs"]["size"] = {k: int(v) * step for k, v in size.items()}
        return kwargs

    def video_size(self, size: dict[str, int], frames: int, video_processor: Any) -> dict[str, int]:
        step = int(getattr(video_processor, "temporal_patch_size", 2) or 2)
        return {k: int(v) * (-(-frames // step) * step) for k, v in size.items()}

    def visual_tokens(
        self, height: int, width: int, min_pixels: int, max_pixels: int, frames: int = 1, temporal: int = 2
    ) -> int:
        """GLM's resize bounds ``t x h x w`` (an image counts as ``temporal`` frames), to multiples of 28."""
        from transformers.models.glm4v.image_processing_glm4v import smart_resize

        f = self.patch_factor
        t = max(frames, temporal)
        h, w = smart_resize(t, height, width, temporal, f, min_pixels=min_pixels, max_pixels=max_pixels)
        return -(-frames // temporal) * (h // f) * (w // f)

    def video_kwargs(self, metadata: Any) -> dict[str, Any]:
        return {"video_metadata": list(metadata), "do_sample_frames": False, "return_metadata": True}


FAMILY = Glm4v(
    name="glm4v",
    model_types=("glm4v",),
    model_class="Glm4vForConditionalGeneration",
    config_class="Glm4vConfig",
    processor_class="Glm4vProcessor",
    lora_modules={
        "language": r".*language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate_up|down)_proj)",
        "vision": r".*visual\.blocks\.\d+\.(attn\.(qkv|proj)|mlp\.(gate|up|down)_proj)",
        "merger": r".*visual\.merger\.(proj|gate_proj|up_proj|down_proj)",
    },
    patch_factor=28,
    chat_template=TEMPLATE,
    special_tokens=SPECIAL_TOKENS,
    eos_token="<|endoftext|>",
    pad_token="<|endoftext|>",
    image_token="<|image|>",
    video_token="<|video|>",
    stop_tokens=("<|endoftext|>", "<|user|>", "<|observation|>"),
    video_with_images=False,
    description="GLM-4.1V-9B (Thinking / Base)",
)
