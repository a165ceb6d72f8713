"""Which adapters a serving backend can apply, checked before it loads anything.

vLLM applies LoRA to the language model of a multimodal model only; an adapter with LoRA on the vision
tower or the merger, or with modules trained in full (``modules_to_save``), would be served with those
parts silently missing. :func:`check_servable` refuses such an adapter with the command that merges it
(``megc-vqa merge-adapter``), whose output every backend serves as a plain checkpoint.
"""

from __future__ import annotations

import re
from pathlib import Path

from megc_vqa.errors import MegcError
from megc_vqa.models.families.base import holds_target_parameter
from megc_vqa.models.registry import resolve


class ServingError(MegcError, ValueError):
    """An adapter that the chosen backend would serve wrongly; the message says how to serve it."""


# Where each backend applies a LoRA adapter. vLLM applies LoRA to the language model of a multimodal
# model only: LoRA weights on the vision tower or the merger, and modules_to_save, are not loaded
# (silently, in the versions this project targets), so such an adapter must be merged first.
BACKEND_LORA_SCOPES: dict[str, tuple[str, ...]] = {
    "transformers": ("language", "vision", "merger"),
    "vllm": ("language",),
}


def adapter_scopes(adapter: str | Path) -> dict[str, list[str]]:
    """``{scope: [module names]}`` of the modules an adapter folder changes, from its weight names
    (only the safetensors header is read). ``full`` lists modules_to_save (trained in full)."""
    from safetensors import safe_open

    adapter = Path(adapter)
    weights = adapter / "adapter_model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{adapter}: no adapter_model.safetensors; point at a LoRA adapter folder")
    family = resolve(str(adapter))[1]
    with safe_open(str(weights), framework="pt") as f:
        keys = list(f.keys())
    found: dict[str, set[str]] = {}
    for key in keys:
        name = key.removeprefix("base_model.model.")
        if ".lora_" in name:
            module, scope = name.split(".lora_")[0], "other"
            for s, pattern in family.lora_modules.items():
                if re.fullmatch(pattern, module):
                    scope = s
                    break
            for s, names in family.lora_parameters.items():  # an MoE's fused experts
                if holds_target_parameter(module, names):
                    scope = s
        elif "modules_to_save" in name:
            module, scope = name.split(".modules_to_save")[0], "full"
        else:
            continue
        found.setdefault(scope, set()).add(module)
    return {s: sorted(v) for s, v in found.items()}


def check_servable(adapter: str | Path, backend: str) -> None:
    """Refuse (:class:`ServingError`) an adapter that ``backend`` cannot apply in full, saying how to
    serve it: merge it into the base model (``megc-vqa merge-adapter``) and serve the merged folder."""
    if backend not in BACKEND_LORA_SCOPES:
        raise ServingError(f"unknown backend {backend!r}; known: {', '.join(BACKEND_LORA_SCOPES)}")
    allowed = BACKEND_LORA_SCOPES[backend]
    unserved = {s: mods for s, mods in adapter_scopes(adapter).items() if s not in allowed}
    if unserved:
        what = "; ".join(f"{s}: {len(m)} module(s), e.g. {m[0]}" for s, m in sorted(unserved.items()))
        raise ServingError(
            f"adapter {adapter} changes modules that the {backend} backend does not apply ({what}); it "
            f"applies LoRA to {', '.join(allowed)} only, so it would answer with part of the adapter "
            f"silently missing. Merge it first: megc-vqa merge-adapter {adapter} --out MERGED, then "
            "answer with --model MERGED and no --adapter (or use the transformers backend)."
        )
