"""InternVL3.5 (``InternVLForConditionalGeneration``, the ``-HF`` checkpoints): an InternViT vision tower,
pixel shuffle (downsample 0.5) and an MLP projector onto a Qwen3 language model, 1-D positions.

Images are cut into 448x448 tiles (``crop_to_patches``, at most ``max_patches`` + a thumbnail), each
tile ``image_seq_length`` tokens; a video is its frames, each one tile with a ``FrameN:`` prefix (no
timing: InternVL reads frame order only). So the pixel bounds become tile counts: ``max_pixels``
allows ``max_pixels // tile area`` tiles per image.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from megc_vqa.models.chat_templates import QWEN_SPECIAL_TOKENS, chatml_template
from megc_vqa.models.families.base import Family, tiny_text
from megc_vqa.models.families.qwen2_5_vl import LANGUAGE

IMAGE_TOKENS = {
    "start_image_token": "<img>",
    "end_image_token": "</img>",
    "context_image_token": "<IMG_CONTEXT>",
    "video_token": "<video>",
}
TINY_TILE = 56  # 4x4 patches of 14 -> 2x2 tokens after pixel shuffle


@dataclass(frozen=True)
class InternVL(Family):
    def config_tokens(self) -> dict[str, str]:
        return {}

    def tiny_config(self, tokenizer: Any) -> Any:
        ids = self.token_ids(tokenizer)
        text = {**tiny_text(tokenizer, ids), "model_type": "qwen3", "head_dim": 16}
        vision = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": [TINY_TILE, TINY_TILE],
            "patch_size": [14, 14],
            "use_qk_norm": False,
            "norm_type": "layer_norm",
        }
        return self.transformers_class("config")(
            text_config=text,
            vision_config=vision,
            image_token_id=ids["image_token_id"],
            image_seq_length=(TINY_TILE // 14) ** 2 // 4,
            downsample_ratio=0.5,
            tie_word_embeddings=False,
        )

    def config_from(self, data: dict[str, Any], token_ids: Any) -> Any:
        ids = {"image_token_id": token_ids["image_token_id"]} if "image_token_id" in token_ids else {}
        return self.transformers_class("config")(**data, **ids)

    def tiny_processor(self, tokenizer: Any) -> Any:
        from transformers import GotOcr2ImageProcessor, InternVLVideoProcessor

        tile = {"height": TINY_TILE, "width": TINY_TILE}
        return self.build_processor(
            tokenizer,
            GotOcr2ImageProcessor(size=tile, crop_to_patches=True, max_patches=4),
            InternVLVideoProcessor(size=tile),
            image_seq_length=(TINY_TILE // 14) ** 2 // 4,
        )

    def pixel_kwargs(self, processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"images_kwargs": {}, "videos_kwargs": {}}
        size = getattr(processor.image_processor, "size", None) or {}
        tile = int(size.get("height", 448)) * int(size.get("width", 448))
        if max_pixels is not None:
            kwargs["images_kwargs"].update(crop_to_patches=True, max_patches=max(1, max_pixels // tile))
        return kwargs

    def pixel_bounds(self, processor: Any, kwargs: dict[str, Any] | None = None) -> tuple[int, int]:
        """(one tile's pixels x min tiles, x max tiles) with ``kwargs`` (from :meth:`pixel_kwargs`) over
        the image processor's settings."""
        ip, kwargs = processor.image_processor, kwargs or {}
        tile = int(ip.size["height"]) * int(ip.size["width"])
        lo = int(kwargs.get("min_patches", getattr(ip, "min_patches", 1)) or 1)
        hi = int(kwargs.get("max_patches", getattr(ip, "max_patches", 12)) or 12)
        return tile * lo, tile * hi

    def tiles(self, height: int, width: int, tile: int, min_tiles: int, max_tiles: int) -> int:
        """Tiles of one image: the best grid within the tile bounds, plus a thumbnail when there are
        several (the GotOcr2 image processor's rule)."""
        from transformers.models.got_ocr2.image_processing_got_ocr2 import get_optimal_tiled_canvas

        if max_tiles <= 1:
            return 1
        columns, rows = get_optimal_tiled_canvas((height, width), (tile, tile), min_tiles, max_tiles)
        return 1 + columns * rows if columns * rows > 1 else 1

    def visual_tokens(
        self, height: int, width: int, min_pixels: int, max_pixels: int, frames: int = 1, temporal: int = 2
    ) -> int:
        """Tokens per tile (its 14-px patches after the 2x2 pixel shuffle) times the tiles, with bounds from
        :meth:`pixel_bounds` (the tile is the square root of the lower bound, one tile at least); a video
        frame is one tile."""
        tile = math.isqrt(min_pixels)
        per_tile = (tile // 14) ** 2 // 4
        if frames > 1:
            return frames * per_tile
        return per_tile * self.tiles(height, width, tile, 1, max_pixels // tile**2)

    def video_kwargs(self, metadata: Any) -> dict[str, Any]:
        return {"do_sample_frames": False}

    def placeholder_ids(self, tokenizer: Any) -> list[int]:
        return [int(tokenizer.convert_tokens_to_ids(self.image_token))]

    def token_ids(self, tokenizer: Any) -> dict[str, int]:
        ids = super().token_ids(tokenizer)
        ids["video_token_id"] = ids["image_token_id"]  # frames are expanded into image tokens
        return ids


FAMILY = InternVL(
    name="internvl",
    model_types=("internvl",),
    model_class="InternVLForConditionalGeneration",
    config_class="InternVLConfig",
    processor_class="InternVLProcessor",
    lora_modules={
        "language": LANGUAGE,
        "vision": r".*vision_tower\.encoder\.layer\.\d+\.(attention\.(q|k|v)_proj|attention\.projection_layer"
        r"|mlp\.fc\d)",
        "merger": r".*multi_modal_projector\.linear_\d",
    },
    save_modules={"vision": "vision_tower", "merger": "multi_modal_projector"},
    vision_module=r"(?:^|\.)(?:vision_tower|multi_modal_projector)\.",
    projector_module=r"(?:^|\.)multi_modal_projector\.",
    patch_factor=28,
    chat_template=chatml_template("<IMG_CONTEXT>\n", "<video>\n"),
    special_tokens=QWEN_SPECIAL_TOKENS + tuple(IMAGE_TOKENS.values()),
    image_token="<IMG_CONTEXT>",
    video_token="<video>",
    named_tokens=IMAGE_TOKENS,
    frames_as="frames",
    vision_depth_key="num_hidden_layers",
    quantisation_skip=(r"(?:.*\.)?vision_tower", r"(?:.*\.)?multi_modal_projector", "lm_head"),
    description="InternVL3.5 (1B-38B, the -HF checkpoints)",
)
