"""What a model family is: the one object that holds everything family-specific.

A family (Qwen2.5-VL, Qwen3-VL, InternVL, ...) is a :class:`Family`: its transformers classes (by name,
looked up in ``transformers`` only when used), its chat template and special tokens, its pixel rule,
how frames are passed, its LoRA target patterns per scope, its tiny config and tokenizer, its pad and
stop tokens. Each family lives in one module of this package and is listed once in
:mod:`megc_vqa.models.registry`; nothing outside a family module branches on a family or class name
(``tests/test_families.py`` greps for it).

The defaults below are the Qwen-VL conventions (ChatML tokens, ``<|image_pad|>``/``<|video_pad|>``
placeholders, a ``visual`` tower with a ``merger`` projector, ``size = {shortest_edge, longest_edge}`` pixel
bounds, smart-resize to multiples of patch x merge); a family overrides the fields and methods where it
differs. The tiny models every family builds for tests share :data:`TINY_TEXT` (and the Qwen-VL-style
towers :data:`TINY_VISION`), and each family's processor is built by :meth:`Family.build_processor`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from megc_vqa.models.chat_templates import QWEN_SPECIAL_TOKENS

# Every scope a family may offer LoRA on; a family lists the ones it has in ``lora_modules``.
ALL_SCOPES = ("language", "vision", "merger", "experts")

# The tiny text model of every family's tiny config: 2 layers, hidden 64, 4 heads of 16 dims (so a Qwen
# M-RoPE's sections, temporal + height + width, sum to 16 / 2 = 8).
TINY_TEXT: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
}
# The tiny vision tower of the Qwen-VL-style families (Qwen2.5-VL, Qwen3-VL, GLM-4.1V): 2 blocks of hidden
# 32, patch 14 x merge 2, 2 frames per temporal patch; a family adds or overrides its own keys.
TINY_VISION: dict[str, Any] = {
    "depth": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_heads": 2,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "out_hidden_size": 64,
}


def tiny_text(tokenizer: Any, ids: Mapping[str, int]) -> dict[str, Any]:
    """:data:`TINY_TEXT` with the tokenizer's vocabulary and its bos, eos and pad ids."""
    return {
        "vocab_size": len(tokenizer),
        **TINY_TEXT,
        **{k: ids[k] for k in ("bos_token_id", "eos_token_id", "pad_token_id")},
    }


@dataclass(frozen=True)
class Family:
    """Everything the toolkit needs to know about one architecture.

    name: the family key (``qwen2_5_vl``); model_types: ``config.model_type`` values it serves.
    model_class, config_class, processor_class: class names in ``transformers``.
    lora_modules: per scope a regex that full-matches the Linear layers LoRA may wrap.
    lora_parameters: per scope the parameter names (suffixes) LoRA wraps where the weights are not
        Linear layers (PEFT ``target_parameters``: the fused experts of a mixture of experts).
    save_modules: per scope the module name PEFT's ``modules_to_save`` uses to train a scope fully.
    vision_module: regex (searched in a parameter or module name) of the vision tower and projector:
        kept unquantised, frozen with ``freeze_vision_tower``; projector_module: the projector's
        (``freeze_vision_tower`` leaves it trainable).
    patch_factor: patch size times spatial merge: image sides are resized to multiples of it.
    chat_template: the template tiny models are built with (and the one a checkpoint's should match).
    special_tokens, eos_token, pad_token, named_tokens: the tokenizer's chat and vision tokens;
        ``named_tokens`` are the attribute names a processor reads from its tokenizer.
    image_token, video_token: the placeholders the processor expands (counted by the preflight).
    stop_tokens: tokens that end an answer besides the tokenizer's eos.
    frames_as: ``"video"`` when the family's processor takes key frames as a video with timing
        metadata, ``"frames"`` when it encodes a video as separate frames (no timing).
    moe: whether the language model is a mixture of experts (router kept frozen, experts a scope).
    video_with_images: whether one prompt may hold a video and images (GLM-4.1V's model counts video
        frames as image tokens, so it may not).
    """

    name: str
    model_types: tuple[str, ...]
    model_class: str
    config_class: str
    processor_class: str
    lora_modules: Mapping[str, str]
    patch_factor: int
    chat_template: str
    # Qwen-VL conventions from here on (see the module doc): a family sets only where it differs.
    save_modules: Mapping[str, str] = field(default_factory=lambda: {"vision": "visual", "merger": "merger"})
    vision_module: str = r"(?:^|\.)visual\."
    projector_module: str = r"\.merger\."
    special_tokens: tuple[str, ...] = QWEN_SPECIAL_TOKENS
    eos_token: str = "<|im_end|>"
    pad_token: str = "<|endoftext|>"
    image_token: str = "<|image_pad|>"
    video_token: str = "<|video_pad|>"
    named_tokens: Mapping[str, str] = field(default_factory=dict)
    lora_parameters: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    stop_tokens: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")
    frames_as: str = "video"
    moe: bool = False
    video_with_images: bool = True
    vision_depth_key: str = "depth"  # the vision config's number of blocks (InternVL: num_hidden_layers)
    # Patterns of transformers' ``should_convert_module`` left unquantised: the vision tower with its
    # projector(s), at any depth of the module tree, and the LM head.
    quantisation_skip: tuple[str, ...] = (r"(?:.*\.)?visual", "lm_head")
    description: str = ""

    # -- classes ----------------------------------------------------------------------------------

    def transformers_class(self, which: str) -> Any:
        """``"model"``, ``"config"`` or ``"processor"``: the class from ``transformers``."""
        import transformers

        return getattr(
            transformers,
            {"model": self.model_class, "config": self.config_class}.get(which, self.processor_class),
        )

    def is_frozen_vision(self, name: str) -> bool:
        """Whether parameter ``name`` is in the vision tower proper (not its projector)."""
        return bool(re.search(self.vision_module, name)) and not re.search(self.projector_module, name)

    def owns_processor(self, processor: Any) -> bool:
        return isinstance(processor, self.transformers_class("processor"))

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(s for s in ALL_SCOPES if s in self.lora_modules or s in self.lora_parameters)

    # -- configs ----------------------------------------------------------------------------------

    def tiny_config(self, tokenizer: Any) -> Any:  # pragma: no cover - every family overrides it
        raise NotImplementedError(f"family {self.name} has no tiny config")

    def config_from(self, data: dict[str, Any], token_ids: Mapping[str, int]) -> Any:
        """The family config from published ``config.json`` data and the tokenizer's special ids."""
        return self.transformers_class("config")(**data, **token_ids)

    def token_ids(self, tokenizer: Any) -> dict[str, int]:
        """The special-token ids a config of this family needs, from ``tokenizer``."""

        def tid(tok: str) -> int:
            i = tokenizer.convert_tokens_to_ids(tok)
            if not isinstance(i, int) or i == tokenizer.unk_token_id:
                raise ValueError(f"family {self.name}: the tokenizer has no {tok!r} token")
            return i

        return {
            "bos_token_id": tid(self.pad_token),
            "eos_token_id": tid(self.eos_token),
            "pad_token_id": tid(self.pad_token),
            "image_token_id": tid(self.image_token),
            "video_token_id": tid(self.video_token),
            **{key: tid(tok) for key, tok in self.config_tokens().items()},
        }

    def config_tokens(self) -> dict[str, str]:
        """Further ``<key>_token_id`` entries of the config (Qwen: vision start and end)."""
        return {"vision_start_token_id": "<|vision_start|>", "vision_end_token_id": "<|vision_end|>"}

    # -- processor --------------------------------------------------------------------------------

    def tiny_processor(self, tokenizer: Any) -> Any:  # pragma: no cover - every family overrides it
        raise NotImplementedError(f"family {self.name} has no tiny processor")

    def build_processor(
        self, tokenizer: Any, image_processor: Any, video_processor: Any, **kwargs: Any
    ) -> Any:
        """The family's processor over these parts, with the family's chat template."""
        return self.transformers_class("processor")(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=video_processor,
            chat_template=self.chat_template,
            **kwargs,
        )

    def fix_prompt(self, text: str) -> str:
        """The rendered prompt as the processor expects it (a family may normalise placeholders)."""
        return text

    def pixel_kwargs(self, processor: Any, min_pixels: int | None, max_pixels: int | None) -> dict[str, Any]:
        """Processor keyword arguments that bound each image and video frame to the pixel range."""
        kwargs: dict[str, Any] = {"images_kwargs": {}, "videos_kwargs": {}}
        video_processor = getattr(processor, "video_processor", None)
        if video_processor is not None and hasattr(video_processor, "cap_pixels_per_frame"):
            # Our min/max pixels are per frame; say so explicitly (and silence the 5.2x default warning).
            kwargs["videos_kwargs"]["cap_pixels_per_frame"] = False
        if min_pixels is None and max_pixels is None:
            return kwargs
        for key, sub in (("images_kwargs", "image_processor"), ("videos_kwargs", "video_processor")):
            size = dict(getattr(getattr(processor, sub, None), "size", None) or {})
            if max_pixels is not None:
                size["longest_edge"] = max_pixels
                # Video processors default to a large minimum; a maximum below it must win.
                size["shortest_edge"] = min(size.get("shortest_edge", max_pixels), max_pixels)
            if min_pixels is not None:
                size["shortest_edge"] = min_pixels
            kwargs[key]["size"] = size
        return kwargs

    def video_size(self, size: dict[str, int], frames: int, video_processor: Any) -> dict[str, int]:
        """The video processor's ``size`` for per-frame bounds ``size`` and ``frames`` frames."""
        return size

    def video_kwargs(self, metadata: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Keyword arguments that tell the video processor the true timing of pre-sampled frames."""
        return {"video_metadata": list(metadata), "do_sample_frames": False}

    def pixel_bounds(self, processor: Any, kwargs: dict[str, Any] | None = None) -> tuple[int, int]:
        """The processor's (min, max) pixels per image (``kwargs``: the images' processor arguments)."""
        size = getattr(processor.image_processor, "size", None) or {}
        return int(size["shortest_edge"]), int(size["longest_edge"])

    def visual_tokens(
        self, height: int, width: int, min_pixels: int, max_pixels: int, frames: int = 1, temporal: int = 2
    ) -> int:
        """Visual tokens of one image (``frames=1``) or a video of ``frames`` frames of ``height x width``
        after the resize to multiples of ``patch_factor`` within the pixel bounds."""
        return smart_resize_tokens(height, width, self.patch_factor, min_pixels, max_pixels, frames, temporal)

    def placeholder_ids(self, tokenizer: Any) -> list[int]:
        """Ids of the tokens that stand for visual features in a prompt."""
        return [int(tokenizer.convert_tokens_to_ids(t)) for t in (self.image_token, self.video_token)]

    # -- tokenizer --------------------------------------------------------------------------------

    def tokenizer_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the tiny tokenizer (eos, pad, named tokens)."""
        kwargs: dict[str, Any] = {"eos_token": self.eos_token, "pad_token": self.pad_token}
        if self.named_tokens:
            kwargs["extra_special_tokens"] = dict(self.named_tokens)
        return kwargs


def unwrapped_name(name: str) -> str:
    """A module or parameter name as before PEFT: its ``.base_layer`` wrappers removed (PEFT nests one per
    targeted parameter of a module)."""
    return name.replace(".base_layer", "")


def holds_target_parameter(module: str, targets: Sequence[str]) -> bool:
    """Whether PEFT-wrapped ``module`` is the module of one of ``targets`` (``target_parameters`` names,
    such as an MoE's ``mlp.experts.gate_up_proj``)."""
    plain = unwrapped_name(module)
    return any(plain.endswith(f".{t.rsplit('.', 1)[0]}") for t in targets)


def smart_resize_tokens(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int, frames: int = 1, temporal: int = 2
) -> int:
    """Visual tokens after the Qwen-VL "smart resize" (sides to multiples of ``factor`` within the pixel
    bounds), ``ceil(frames / temporal)`` temporal patches for a video."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    h, w = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
    grid_t = 1 if frames == 1 else math.ceil(frames / temporal)
    return grid_t * (h // factor) * (w // factor)
