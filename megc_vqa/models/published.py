"""The published configurations of the real checkpoints, as data, and random-weight builds of them.

No weights can be downloaded where the project is tested, but the real architectures can be built from
their published ``config.json`` (and the published processor settings) with random weights. The
real-size check (``tests/test_realsize.py``, ``make test-realsize``) and the GPU suite
(``benchmarks/gpu_suite.py``) build them from here, so both use one transcription of each config.

What differs from the hub checkpoint, on purpose:

- The tokenizer is the tiny models' byte-level BPE (:func:`megc_vqa.models.tiny.train_tokenizer`, the
  real ``Qwen2Tokenizer`` class with the Qwen chat special tokens) because the real vocabulary cannot be
  downloaded; the special-token ids in the config are set to that tokenizer's. The embedding and LM-head
  keep the published vocabulary size, so memory and FLOPs are those of the real model.
- ``num_hidden_layers`` may be lowered (``layers=``) where the full depth does not fit a machine;
  every layer keeps the real width. A build says so in its ``megc_vqa_random.json``.

    path = ensure_random("Qwen/Qwen2.5-VL-3B-Instruct")          # cached, ~1-2 min the first time
    path = ensure_random("Qwen/Qwen2.5-VL-7B-Instruct", layers=8)  # real width, 8 of 28 layers
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megc_vqa.fileio import atomic_cache_folder
from megc_vqa.models.registry import FAMILIES
from megc_vqa.models.tiny import _ids, cache_root, tiny_processor, train_tokenizer

log = logging.getLogger(__name__)

# Bump when a config below or the build changes: cached builds with another version are rebuilt.
# 2: InternVL3.5-2B's vision attention has q/k/v biases (attention_bias), as the hub config says.
RANDOM_VERSION = 2

_QWEN25_VISION = {
    "depth": 32,
    "hidden_act": "silu",
    "hidden_size": 1280,
    "intermediate_size": 3420,
    "num_heads": 16,
    "in_chans": 3,
    "out_hidden_size": 2048,
    "patch_size": 14,
    "spatial_merge_size": 2,
    "temporal_patch_size": 2,
    "window_size": 112,
    "fullatt_block_indexes": [7, 15, 23, 31],
    "tokens_per_second": 2,
}
_QWEN25_TEXT_3B = {
    "vocab_size": 151936,
    "hidden_size": 2048,
    "intermediate_size": 11008,
    "num_hidden_layers": 36,
    "num_attention_heads": 16,
    "num_key_value_heads": 2,
    "hidden_act": "silu",
    "max_position_embeddings": 128000,
    "rms_norm_eps": 1e-6,
    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0, "mrope_section": [16, 24, 24]},
    "tie_word_embeddings": True,
}
# Qwen2.5-VL preprocessor_config.json: 56*56 .. 28*28*1280 pixels, patch 14, merge 2, CLIP mean/std.
_QWEN25_IMAGE = {"min_pixels": 3136, "max_pixels": 12845056, "patch_size": 14, "merge_size": 2}


# preprocessor_config.json / video_preprocessor_config.json of Qwen3-VL-4B-Instruct (and the MoE's)
_QWEN3_IMAGE = {
    "size": {"shortest_edge": 65536, "longest_edge": 16777216},
    "patch_size": 16,
    "merge_size": 2,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
}
_QWEN3_VIDEO = {**_QWEN3_IMAGE, "size": {"shortest_edge": 4096, "longest_edge": 25165824}}


@dataclass(frozen=True)
class PublishedModel:
    """A hub checkpoint's published configuration.

    config: ``config.json`` content that matters for the architecture (without token ids, which
        follow the tokenizer of the random build).
    image_processor, video_processor: keyword arguments of the processor classes, as published in
        ``preprocessor_config.json`` / ``video_preprocessor_config.json``; processor: attributes of the
        processor itself (``processor_config.json``, e.g. InternVL's ``image_seq_length``).
    """

    hub_id: str
    family: str
    config: dict[str, Any]
    image_processor: dict[str, Any] = field(default_factory=dict)
    video_processor: dict[str, Any] = field(default_factory=dict)
    processor: dict[str, Any] = field(default_factory=dict)

    @property
    def num_hidden_layers(self) -> int:
        return int(self.config["text_config"]["num_hidden_layers"])

    @property
    def vision_depth_key(self) -> str:
        return FAMILIES[self.family].vision_depth_key

    @property
    def vision_depth(self) -> int:
        return int(self.config["vision_config"][self.vision_depth_key])


PUBLISHED: dict[str, PublishedModel] = {
    m.hub_id: m
    for m in (
        PublishedModel(
            "Qwen/Qwen2.5-VL-3B-Instruct",
            "qwen2_5_vl",
            {"text_config": _QWEN25_TEXT_3B, "vision_config": _QWEN25_VISION, "tie_word_embeddings": True},
            image_processor=_QWEN25_IMAGE,
            video_processor=_QWEN25_IMAGE,
        ),
        PublishedModel(
            "Qwen/Qwen2.5-VL-7B-Instruct",
            "qwen2_5_vl",
            {
                "text_config": {
                    **_QWEN25_TEXT_3B,
                    "vocab_size": 152064,
                    "hidden_size": 3584,
                    "intermediate_size": 18944,
                    "num_hidden_layers": 28,
                    "num_attention_heads": 28,
                    "num_key_value_heads": 4,
                    "tie_word_embeddings": False,
                },
                "vision_config": {**_QWEN25_VISION, "out_hidden_size": 3584},
                "tie_word_embeddings": False,
            },
            image_processor=_QWEN25_IMAGE,
            video_processor=_QWEN25_IMAGE,
        ),
        PublishedModel(
            "Qwen/Qwen3-VL-4B-Instruct",
            "qwen3_vl",
            {
                "text_config": {
                    "vocab_size": 151936,
                    "hidden_size": 2560,
                    "intermediate_size": 9728,
                    "num_hidden_layers": 36,
                    "num_attention_heads": 32,
                    "num_key_value_heads": 8,
                    "head_dim": 128,
                    "hidden_act": "silu",
                    "max_position_embeddings": 262144,
                    "rms_norm_eps": 1e-6,
                    "attention_bias": False,
                    "rope_parameters": {
                        "rope_type": "default",
                        "rope_theta": 5000000.0,
                        "mrope_section": [24, 20, 20],
                        "mrope_interleaved": True,
                    },
                    "tie_word_embeddings": True,
                },
                "vision_config": {
                    "depth": 24,
                    "hidden_act": "gelu_pytorch_tanh",
                    "hidden_size": 1024,
                    "intermediate_size": 4096,
                    "num_heads": 16,
                    "in_channels": 3,
                    "out_hidden_size": 2560,
                    "patch_size": 16,
                    "spatial_merge_size": 2,
                    "temporal_patch_size": 2,
                    "num_position_embeddings": 2304,
                    "deepstack_visual_indexes": [5, 11, 17],
                },
                "tie_word_embeddings": True,
            },
            image_processor=_QWEN3_IMAGE,
            video_processor=_QWEN3_VIDEO,
        ),
        PublishedModel(
            "OpenGVLab/InternVL3_5-2B-HF",
            "internvl",
            {
                # Qwen3-1.7B under an InternViT-300M (448 px tiles, patch 14, pixel shuffle 0.5)
                "text_config": {
                    "model_type": "qwen3",
                    "vocab_size": 151936,
                    "hidden_size": 2048,
                    "intermediate_size": 6144,
                    "num_hidden_layers": 28,
                    "num_attention_heads": 16,
                    "num_key_value_heads": 8,
                    "head_dim": 128,
                    "hidden_act": "silu",
                    "max_position_embeddings": 40960,
                    "rms_norm_eps": 1e-6,
                    "rope_parameters": {"rope_type": "default", "rope_theta": 1000000.0},
                    "tie_word_embeddings": False,
                },
                "vision_config": {
                    "hidden_size": 1024,
                    "intermediate_size": 4096,
                    "num_hidden_layers": 24,
                    "num_attention_heads": 16,
                    # InternViT-300M's qkv has biases (qkv_bias -> attention_bias in the -HF conversion)
                    "attention_bias": True,
                    "hidden_act": "gelu",
                    "layer_norm_eps": 1e-6,
                    "image_size": [448, 448],
                    "patch_size": [14, 14],
                    "use_qk_norm": False,
                    "norm_type": "layer_norm",
                    "layer_scale_init_value": 0.1,
                },
                "downsample_ratio": 0.5,
                "projector_hidden_act": "gelu",
                "vision_feature_layer": -1,
                "image_seq_length": 256,
                "tie_word_embeddings": False,
            },
            image_processor={
                "size": {"height": 448, "width": 448},
                "crop_to_patches": True,
                "max_patches": 12,
            },
            video_processor={"size": {"height": 448, "width": 448}},
            processor={"image_seq_length": 256},
        ),
        PublishedModel(
            "zai-org/GLM-4.1V-9B-Thinking",
            "glm4v",
            {
                "text_config": {
                    "vocab_size": 151552,
                    "hidden_size": 4096,
                    "intermediate_size": 13696,
                    "num_hidden_layers": 40,
                    "num_attention_heads": 32,
                    "num_key_value_heads": 2,
                    "hidden_act": "silu",
                    "max_position_embeddings": 65536,
                    "rms_norm_eps": 1e-5,
                    "rope_parameters": {
                        "rope_type": "default",
                        "rope_theta": 10000.0,
                        "mrope_section": [8, 12, 12],
                        "partial_rotary_factor": 0.5,
                    },
                },
                "vision_config": {
                    "depth": 24,
                    "hidden_size": 1536,
                    "intermediate_size": 13696,
                    "num_heads": 12,
                    "hidden_act": "silu",
                    "image_size": 336,
                    "patch_size": 14,
                    "spatial_merge_size": 2,
                    "temporal_patch_size": 2,
                    "out_hidden_size": 4096,
                    "rms_norm_eps": 1e-5,
                },
                "tie_word_embeddings": False,
            },
            image_processor={"size": {"shortest_edge": 12544, "longest_edge": 9633792}},
            video_processor={"size": {"shortest_edge": 12544, "longest_edge": 47040000}},
        ),
        PublishedModel(
            "Qwen/Qwen3-VL-30B-A3B-Instruct",
            "qwen3_vl_moe",
            {
                "text_config": {
                    "vocab_size": 151936,
                    "hidden_size": 2048,
                    "intermediate_size": 6144,
                    "num_hidden_layers": 48,
                    "num_attention_heads": 32,
                    "num_key_value_heads": 4,
                    "head_dim": 128,
                    "hidden_act": "silu",
                    "max_position_embeddings": 262144,
                    "rms_norm_eps": 1e-6,
                    "moe_intermediate_size": 768,
                    "num_experts": 128,
                    "num_experts_per_tok": 8,
                    "decoder_sparse_step": 1,
                    "mlp_only_layers": [],
                    "rope_parameters": {
                        "rope_type": "default",
                        "rope_theta": 5000000.0,
                        "mrope_section": [24, 20, 20],
                        "mrope_interleaved": True,
                    },
                    "tie_word_embeddings": False,
                },
                "vision_config": {
                    "depth": 27,
                    "hidden_act": "gelu_pytorch_tanh",
                    "hidden_size": 1152,
                    "intermediate_size": 4304,
                    "num_heads": 16,
                    "in_channels": 3,
                    "out_hidden_size": 2048,
                    "patch_size": 16,
                    "spatial_merge_size": 2,
                    "temporal_patch_size": 2,
                    "num_position_embeddings": 2304,
                    "deepstack_visual_indexes": [8, 16, 24],
                },
                "tie_word_embeddings": False,
            },
            image_processor=_QWEN3_IMAGE,
            video_processor=_QWEN3_VIDEO,
        ),
    )
}


def published(hub_id: str) -> PublishedModel:
    """The published configuration of ``hub_id`` (a key of :data:`PUBLISHED`)."""
    try:
        return PUBLISHED[hub_id]
    except KeyError:
        raise KeyError(f"no published config for {hub_id!r}; known: {', '.join(PUBLISHED)}") from None


def model_config(
    hub_id: str,
    layers: int | None = None,
    token_ids: dict[str, int] | None = None,
    vision_layers: int | None = None,
) -> Any:
    """The transformers config object of ``hub_id``, optionally with ``layers`` decoder layers and
    ``vision_layers`` vision blocks (every layer at the published width)."""
    spec = published(hub_id)
    data = copy.deepcopy(spec.config)
    if layers is not None:
        if not 1 <= layers <= spec.num_hidden_layers:
            raise ValueError(f"layers must be in 1..{spec.num_hidden_layers} for {hub_id}, got {layers}")
        data["text_config"]["num_hidden_layers"] = layers
    vision = data["vision_config"]
    if vision_layers is not None:
        if not 1 <= vision_layers <= spec.vision_depth:
            raise ValueError(
                f"vision_layers must be in 1..{spec.vision_depth} for {hub_id}, got {vision_layers}"
            )
        vision[spec.vision_depth_key] = vision_layers
        # Block indexes past the new depth go; the last block takes the role of a full-attention one.
        for key in ("fullatt_block_indexes", "deepstack_visual_indexes"):
            if key in vision:
                vision[key] = [i for i in vision[key] if i < vision_layers] or [vision_layers - 1]
    ids = dict(token_ids or {})
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if key in ids:
            data["text_config"][key] = ids.pop(key)

    return FAMILIES[spec.family].config_from(data, ids)


def model_class(family: str) -> Any:
    """The transformers model class of ``family``."""
    return FAMILIES[family].transformers_class("model")


def random_processor(hub_id: str) -> Any:
    """The family's processor with the published image/video settings and the tiny tokenizer."""
    spec = published(hub_id)
    processor = tiny_processor(spec.family, train_tokenizer(family=spec.family))
    for attr, settings in (
        ("image_processor", spec.image_processor),
        ("video_processor", spec.video_processor),
    ):
        sub = getattr(processor, attr)
        for key, value in settings.items():
            setattr(sub, key, copy.deepcopy(value))
        if "min_pixels" in settings:  # the 5.x processors read the bounds from ``size``
            sub.size = {"shortest_edge": settings["min_pixels"], "longest_edge": settings["max_pixels"]}
    for key, value in spec.processor.items():
        setattr(processor, key, copy.deepcopy(value))
    return processor


def build_random(
    hub_id: str,
    out_dir: str | Path,
    layers: int | None = None,
    seed: int = 0,
    vision_layers: int | None = None,
) -> Path:
    """Write a bf16 random-weight checkpoint of ``hub_id`` (``save_pretrained``) with its processor."""
    import gc

    import torch

    spec = published(hub_id)
    out = Path(out_dir)
    processor = random_processor(hub_id)
    ids = _ids(processor.tokenizer, spec.family)
    config = model_config(hub_id, layers, ids, vision_layers)
    torch.manual_seed(seed)
    model = model_class(spec.family)._from_config(config, dtype=torch.bfloat16)
    model.generation_config.eos_token_id = ids["eos_token_id"]
    model.generation_config.pad_token_id = ids["pad_token_id"]
    model.generation_config.do_sample = False
    n_params = sum(p.numel() for p in model.parameters())
    model.save_pretrained(out, max_shard_size="2GB")
    del model
    gc.collect()
    processor.save_pretrained(out)
    stamp = {
        "hub_id": hub_id,
        "version": RANDOM_VERSION,
        "layers": layers or spec.num_hidden_layers,
        "published_layers": spec.num_hidden_layers,
        "vision_layers": vision_layers or spec.vision_depth,
        "published_vision_layers": spec.vision_depth,
        "parameters": n_params,
        "weights": f"random (seed {seed}), bf16",
        "tokenizer": "megc_vqa tiny BPE; the published vocabulary size is kept",
    }
    (out / "megc_vqa_random.json").write_text(json.dumps(stamp, indent=2))
    return out


def random_name(hub_id: str, layers: int | None = None, vision_layers: int | None = None) -> str:
    spec = published(hub_id)
    name = f"random-{hub_id.split('/')[-1].lower()}"
    if layers is not None and layers != spec.num_hidden_layers:
        name += f"-{layers}layers"
    if vision_layers is not None and vision_layers != spec.vision_depth:
        name += f"-{vision_layers}vision"
    return name


def ensure_random(
    hub_id: str,
    layers: int | None = None,
    cache_dir: str | Path | None = None,
    vision_layers: int | None = None,
) -> Path:
    """Path of the random build of ``hub_id`` in the cache (``$MEGC_VQA_CACHE/models``), built once."""
    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / random_name(hub_id, layers, vision_layers)
    stamp = target / "megc_vqa_random.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == RANDOM_VERSION:
        return target
    log.info("building random %s (%s layers) into %s", hub_id, layers or "all", target)
    with atomic_cache_folder(target, stamp.name, "random model cache") as tmp:
        build_random(hub_id, tmp, layers, vision_layers=vision_layers)
    return target
