"""Qwen3-VL-MoE (``Qwen3VLMoeForConditionalGeneration``, Qwen3-VL-30B-A3B / 235B-A22B): Qwen3-VL's vision
tower, template and processor over a mixture-of-experts language model.

The experts are fused parameters (``mlp.experts.gate_up_proj`` / ``down_proj``, one tensor for all
experts), not Linear layers: LoRA reaches them through PEFT's ``target_parameters`` (scope ``experts``).
The router (``mlp.gate``, a plain parameter) is never a target and stays frozen; the ``language`` scope
wraps the attention projections (and the dense MLP of ``mlp_only_layers``, where there are any).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from megc_vqa.models.families.qwen3_vl import FAMILY as QWEN3_VL
from megc_vqa.models.families.qwen3_vl import Qwen3VL


@dataclass(frozen=True)
class Qwen3VLMoe(Qwen3VL):
    def tiny_text_config(self, tokenizer: Any, ids: dict[str, int]) -> dict[str, Any]:
        """Qwen3-VL's tiny text config with 4 experts, 2 per token, in every layer."""
        return {
            **super().tiny_text_config(tokenizer, ids),
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "decoder_sparse_step": 1,
        }


FAMILY = replace(
    QWEN3_VL,
    name="qwen3_vl_moe",
    model_types=("qwen3_vl_moe",),
    model_class="Qwen3VLMoeForConditionalGeneration",
    config_class="Qwen3VLMoeConfig",
    lora_parameters={"experts": ("mlp.experts.gate_up_proj", "mlp.experts.down_proj")},
    moe=True,
    description="Qwen3-VL mixture of experts (30B-A3B, 235B-A22B)",
)
FAMILY = Qwen3VLMoe(**{f: getattr(FAMILY, f) for f in FAMILY.__dataclass_fields__})
