"""Checks run before training starts, and the out-of-memory advice, with messages that say what to change.

- :func:`check_lora_targets`: every LoRA scope (or explicit target) of the recipe wraps at least one
  module of the loaded model; otherwise the error lists the Linear modules that exist.
- :func:`promised_visual_tokens` / :func:`visual_token_counts`: what the recipe's pixel bounds promise
  per image and video, and what the processor actually produced (the real-size check compares them).
- :func:`check_token_budget`: one encoded training sample fits ``max_length``, before any step runs.
- :func:`out_of_memory_advice`: which setting to lower when a step runs out of memory.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from megc_vqa.models.families.base import holds_target_parameter, smart_resize_tokens, unwrapped_name
from megc_vqa.models.prompting import _pixel_kwargs, processor_family
from megc_vqa.models.registry import lora_scopes
from megc_vqa.training.config import ConfigError


def linear_module_names(model: Any) -> list[str]:
    """Names of the modules LoRA can wrap (``nn.Linear``, the bitsandbytes Linear4bit/8bit) or has
    wrapped already (a PEFT LoRA layer, named as the Linear it wraps)."""
    import torch

    names = []
    for name, module in model.named_modules():
        if name.endswith(".base_layer"):
            continue
        if (
            isinstance(module, torch.nn.Linear)
            or type(module).__name__ in ("Linear4bit", "Linear8bitLt")
            or hasattr(module, "lora_A")
        ):
            names.append(name)
    return names


def _collapse(names: Sequence[str]) -> list[str]:
    """``model.layers.0.q_proj``, ``model.layers.1.q_proj`` -> ``model.layers.N.q_proj`` (in order)."""
    seen: dict[str, None] = {}
    for name in names:
        seen.setdefault(re.sub(r"\.\d+(?=\.|$)", ".N", name), None)
    return list(seen)


def target_matches(name: str, target: str | Sequence[str]) -> bool:
    """Whether PEFT's ``target_modules`` selects module ``name``: a string is a full-match regex, a list
    holds module names or suffixes (``q_proj`` matches ``...self_attn.q_proj``)."""
    if isinstance(target, str):
        return re.fullmatch(target, name) is not None
    return any(name == t or name.endswith(f".{t}") for t in target)


def parameter_target_names(model: Any, targets: Sequence[str]) -> list[str]:
    """Parameters PEFT's ``target_parameters`` selects (an MoE's fused experts), named as before PEFT;
    each is one LoRA-wrapped (module, parameter) pair once wrapped."""
    return [
        unwrapped_name(n)
        for n, _ in model.named_parameters()
        if ".lora_" not in n and any(unwrapped_name(n).endswith(f".{t}") for t in targets)
    ]


def parameter_scope_counts(model: Any, family: Any, lora_target: str) -> dict[str, int]:
    """``{scope: number of parameters it wraps}`` for the scopes of ``lora_target`` on parameters."""
    return {
        scope: len(parameter_target_names(model, family.lora_parameters[scope]))
        for scope in lora_scopes(family, lora_target)
        if scope in family.lora_parameters
    }


def lora_wrapped_allowed(name: str, module_regex: str, parameter_targets: Sequence[str]) -> bool:
    """Whether trainable ``name`` (``...<module>.lora_A.default.weight``) belongs to a LoRA target: its
    module matches the modules' regex, or holds one of the targeted parameters."""
    if ".lora_" not in name:
        return False
    module = unwrapped_name(name.split(".lora_")[0]).removeprefix("base_model.model.")
    return target_matches(module, module_regex) or holds_target_parameter(module, parameter_targets)


def check_lora_targets(
    model: Any, scopes: dict[str, str | Sequence[str]], where: str = "recipe"
) -> dict[str, int]:
    """``{scope: number of modules it wraps}``; a scope that wraps nothing is a :class:`ConfigError`.

    scopes: a label (``language``, ``merger``, or ``lora_target_modules``) -> PEFT target (regex or names).
    """
    names = linear_module_names(model)
    counts = {scope: sum(target_matches(n, target) for n in names) for scope, target in scopes.items()}
    empty = [scope for scope, n in counts.items() if n == 0]
    if empty:
        listed = _collapse(names)
        shown = ", ".join(listed[:40]) + (f", ... ({len(listed) - 40} more)" if len(listed) > 40 else "")
        raise ConfigError(
            f"{where}: LoRA target(s) {', '.join(f'{s} ({scopes[s]!r})' for s in empty)} match no module of "
            f"{type(model).__name__}. Linear modules that exist (N = a layer number): {shown}. "
            "Fix lora_target / lora_target_modules."
        )
    return counts


def pixel_bounds(processor: Any, options: Any, kind: str = "image") -> tuple[int, int]:
    """``(min_pixels, max_pixels)`` per image (``kind="image"``) or video frame that the processor gets
    from :mod:`megc_vqa.models.prompting` for ``options`` (the recipe's bounds over the processor's)."""
    key, sub = (
        ("images_kwargs", "image_processor") if kind == "image" else ("videos_kwargs", "video_processor")
    )
    kwargs = _pixel_kwargs(options, processor)[key]
    size = kwargs.get("size") or dict(getattr(getattr(processor, sub), "size", None) or {})
    if size.get("shortest_edge") is None:  # tiles, not a pixel range (InternVL): the family says its bounds
        return processor_family(processor).pixel_bounds(processor, kwargs)
    return int(size["shortest_edge"]), int(size["longest_edge"])


def promised_visual_tokens(
    height: int, width: int, factor: int, min_pixels: int, max_pixels: int, frames: int = 1, temporal: int = 2
) -> int:
    """Visual tokens of one image (``frames=1``) or video of ``frames`` frames of ``height x width``
    after the Qwen-VL resize to multiples of ``factor`` (patch * merge) within the pixel bounds (a family
    with another rule says so in its ``visual_tokens``)."""
    return smart_resize_tokens(height, width, factor, min_pixels, max_pixels, frames, temporal)


def visual_token_counts(processor: Any, input_ids: Any) -> list[int]:
    """Image + video placeholder tokens per row of ``input_ids`` (what the model will embed)."""
    ids = {getattr(processor, "image_token_id", None), getattr(processor, "video_token_id", None)} - {None}
    ids = sorted(ids | set(processor_family(processor).placeholder_ids(processor.tokenizer)))
    return [int(sum((row == i).sum() for i in ids)) for row in input_ids]


def check_token_budget(
    batch: dict[str, Any], processor: Any, max_length: int | None, where: str, settings: str
) -> None:
    """A :class:`ConfigError` when an encoded training sample is longer than ``max_length``.

    settings: the recipe's visual settings in words (for the message), e.g. ``max_pixels=50176``.
    """
    if not max_length:
        return
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    visual = visual_token_counts(processor, batch["input_ids"])
    for n, v in zip(lengths, visual, strict=True):
        if n > max_length:
            raise ConfigError(
                f"{where}: a training sample is {n} tokens ({v} of them visual) but max_length is "
                f"{max_length}. Lower the pixel budget ({settings}: max_pixels, image_size, fewer frames "
                "in visual_spec) or raise max_length."
            )


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA OOM, or the CPU allocator failing (a RuntimeError with its own wording)."""
    import torch

    if isinstance(err, torch.OutOfMemoryError):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and (
        "can't allocate memory" in text or "out of memory" in text or "not enough memory" in text
    )


def out_of_memory_advice(recipe: Any) -> str:
    """The message for an out-of-memory step: the recipe's current memory settings and what to lower."""
    m, d, t = recipe.model, recipe.data, recipe.training
    quant = "4-bit" if m.load_in_4bit else "8-bit" if m.load_in_8bit else f"{m.dtype} (not quantised)"
    return (
        f"out of memory at per_device_train_batch_size={t.per_device_train_batch_size}, "
        f"max_pixels={d.max_pixels}, image_size={d.image_size}, visual_spec={d.visual_spec!r}, "
        f"activation_checkpointing={t.activation_checkpointing}, weights {quant}. Lower, in this order: "
        "per_device_train_batch_size (raise gradient_accumulation_steps to keep the effective batch), "
        "max_pixels / image_size, the number of frames in visual_spec; set activation_checkpointing: true; "
        "or switch to QLoRA (load_in_4bit: true, recipes/qwen2.5-vl-3b/qlora.yaml)."
    )


def lora_scope_targets(family: Any, lora_target: str, lora_target_modules: Any = None) -> dict[str, Any]:
    """``{scope: PEFT target}`` a recipe asks for: one entry per scope of ``lora_target``
    (``language+merger``, ``all``), or one ``lora_target_modules`` entry when that is set."""
    if lora_target_modules:
        return {"lora_target_modules": lora_target_modules}
    # a scope the family lacks: the error lists its scopes; scopes on parameters (experts) have no Linear
    return {p: family.lora_modules[p] for p in lora_scopes(family, lora_target) if p in family.lora_modules}
