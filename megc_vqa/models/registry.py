"""Model registry: which checkpoints the toolkit knows, how to load them, and which modules LoRA targets.

A model is named by a registry key (``qwen2.5-vl-3b``, ``tiny-qwen2.5-vl``), a hub id
(``Qwen/Qwen2.5-VL-7B-Instruct``) or a local folder written by ``save_pretrained``. Everything loads
through the standard ``from_pretrained`` of transformers with ``trust_remote_code`` off; tiny models are
built into a local cache on first use (:mod:`megc_vqa.models.tiny`) and then load the same way.

How visual inputs enter is the same for every family here: images and/or one video per question, put
into the chat template by :mod:`megc_vqa.models.prompting` and expanded by the model's own processor.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from megc_vqa.errors import MegcError
from megc_vqa.fileio import read_json_object
from megc_vqa.models.adapters import apply_adapter
from megc_vqa.models.families import glm4v, internvl, qwen2_5_vl, qwen3_vl, qwen3_vl_moe
from megc_vqa.models.families.base import ALL_SCOPES, Family

log = logging.getLogger(__name__)

# The scopes of the original two families; a family's own are ``family.scopes`` (experts for an MoE).
LORA_SCOPES = ("language", "vision", "merger")


class ModelLoadError(MegcError, RuntimeError):
    """A model or processor cannot be loaded; the message says what to change."""


ModelFamily = Family  # the old name of the family type

# One line per family: everything family-specific lives in its module under megc_vqa/models/families/.
FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        qwen2_5_vl.FAMILY,
        qwen3_vl.FAMILY,
        internvl.FAMILY,
        glm4v.FAMILY,
        qwen3_vl_moe.FAMILY,
    )
}


@dataclass(frozen=True)
class ModelSpec:
    """A registry entry: a short name, where its weights come from, and its family."""

    name: str
    family: str
    hub_id: str | None = None
    tiny: bool = False
    description: str = ""


MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            "qwen2.5-vl-3b", "qwen2_5_vl", "Qwen/Qwen2.5-VL-3B-Instruct", description="MEGC2025 baseline"
        ),
        ModelSpec("qwen2.5-vl-7b", "qwen2_5_vl", "Qwen/Qwen2.5-VL-7B-Instruct"),
        ModelSpec("qwen3-vl-2b", "qwen3_vl", "Qwen/Qwen3-VL-2B-Instruct"),
        ModelSpec("qwen3-vl-4b", "qwen3_vl", "Qwen/Qwen3-VL-4B-Instruct"),
        ModelSpec("qwen3-vl-8b", "qwen3_vl", "Qwen/Qwen3-VL-8B-Instruct"),
        ModelSpec("tiny-qwen2.5-vl", "qwen2_5_vl", tiny=True, description="offline tiny model for tests"),
        ModelSpec("tiny-qwen3-vl", "qwen3_vl", tiny=True, description="offline tiny model for tests"),
        ModelSpec("internvl3.5-1b", "internvl", "OpenGVLab/InternVL3_5-1B-HF"),
        ModelSpec("internvl3.5-2b", "internvl", "OpenGVLab/InternVL3_5-2B-HF"),
        ModelSpec("internvl3.5-8b", "internvl", "OpenGVLab/InternVL3_5-8B-HF"),
        ModelSpec("tiny-internvl", "internvl", tiny=True, description="offline tiny model for tests"),
        ModelSpec("glm-4.1v-9b", "glm4v", "zai-org/GLM-4.1V-9B-Thinking"),
        ModelSpec("glm-4.1v-9b-base", "glm4v", "zai-org/GLM-4.1V-9B-Base"),
        ModelSpec("tiny-glm4v", "glm4v", tiny=True, description="offline tiny model for tests"),
        ModelSpec("qwen3-vl-30b-a3b", "qwen3_vl_moe", "Qwen/Qwen3-VL-30B-A3B-Instruct", description="MoE"),
        ModelSpec("tiny-qwen3-vl-moe", "qwen3_vl_moe", tiny=True, description="offline tiny model for tests"),
    )
}
DEFAULT_MODEL = "qwen2.5-vl-3b"


def _family_of_model_type(model_type: str, where: str) -> str:
    for family in FAMILIES.values():
        if model_type in family.model_types:
            return family.name
    known = ", ".join(t for f in FAMILIES.values() for t in f.model_types)
    raise ModelLoadError(f"{where}: model type {model_type!r} is not supported (supported: {known})")


def resolve(name_or_path: str | Path) -> tuple[str, ModelFamily]:
    """``(path or hub id to pass to from_pretrained, family)`` for a registry name, hub id or folder.

    Tiny registry names are built into the cache here on first use.
    """
    key = str(name_or_path)
    spec = MODELS.get(key) or next((s for s in MODELS.values() if s.hub_id == key), None)
    if spec is not None:
        if spec.tiny:
            from megc_vqa.models.tiny import ensure_tiny

            return str(ensure_tiny(spec.name)), FAMILIES[spec.family]
        return str(spec.hub_id), FAMILIES[spec.family]
    path = Path(key).expanduser()
    if path.is_dir():
        config = path / "config.json"
        if (path / "adapter_config.json").is_file():  # a PEFT adapter: the family is its base model's
            base = read_json_object(path / "adapter_config.json", "adapter config").get(
                "base_model_name_or_path"
            )
            return str(path), resolve(base)[1]
        if not config.is_file():
            raise ModelLoadError(
                f"{path}: no config.json; point model_name_or_path at a save_pretrained folder"
            )
        model_type = read_json_object(config, "model config").get("model_type", "")
        return str(path), FAMILIES[_family_of_model_type(model_type, str(config))]
    if re.fullmatch(r"[\w.-]+/[\w.-]+", key):
        from transformers import AutoConfig

        try:
            config = AutoConfig.from_pretrained(key, trust_remote_code=False)
        except OSError as err:
            raise ModelLoadError(_unreachable(key, err)) from None
        return key, FAMILIES[_family_of_model_type(config.model_type, key)]
    names = ", ".join(MODELS)
    raise ModelLoadError(f"{key!r} is not a registry name ({names}), a hub id (org/name) or a model folder")


def _unreachable(key: str, err: Exception) -> str:
    return (
        f"cannot load {key!r}: it is not in the local Hugging Face cache and the hub cannot be reached "
        f"(HF_HUB_OFFLINE or no network). Download it once with `hf download {key}` on a machine with "
        f"network, or set model_name_or_path to a local folder. ({type(err).__name__}: {str(err)[:200]})"
    )


def lora_scopes(family: Family, scopes: str | list[str]) -> list[str]:
    """The scopes of ``"language+merger"``, ``"all"`` or a list, checked against the family's own."""
    parts = scopes.split("+") if isinstance(scopes, str) else list(scopes)
    parts = [p.strip() for p in parts if p.strip()]
    if "all" in parts:
        parts = list(family.scopes)
    bad = [p for p in parts if p not in family.scopes]
    if bad or not parts:
        raise ValueError(
            f"unknown LoRA scope(s) {bad or scopes!r} for the {family.name} family; its scopes are "
            f"{', '.join(family.scopes)}, joined by '+', or 'all'"
        )
    return parts


def lora_target_regex(family: Family, scopes: str | list[str]) -> str:
    """PEFT ``target_modules`` regex for scopes such as ``"language"`` or ``"language+vision+merger"``
    (scopes on parameters, such as an MoE's experts, are in :func:`lora_target_parameters`)."""
    parts = [p for p in lora_scopes(family, scopes) if p in family.lora_modules]
    return "|".join(f"(?:{family.lora_modules[p]})" for p in parts) or r"(?!)"  # (?!) matches nothing


def lora_target_parameters(family: Family, scopes: str | list[str]) -> list[str]:
    """PEFT ``target_parameters`` for the scopes that LoRA wraps as parameters (an MoE's fused experts)."""
    return [n for p in lora_scopes(family, scopes) for n in family.lora_parameters.get(p, ())]


def known_scopes() -> tuple[str, ...]:
    """Scopes any family offers (a recipe is checked against its own family when the model loads)."""
    return tuple(s for s in ALL_SCOPES if any(s in f.scopes for f in FAMILIES.values()))  # experts included


def family_of_name(name: str) -> Family | None:
    """The family of a registry name or hub id without loading or building anything (``None`` for a
    folder or an unknown id)."""
    spec = MODELS.get(name) or next((s for s in MODELS.values() if s.hub_id == name), None)
    return FAMILIES[spec.family] if spec is not None else None


def family_for_processor(processor: Any) -> Family | None:
    """The family whose processor class ``processor`` is (``None`` for a processor of no family)."""
    return next((f for f in FAMILIES.values() if f.owns_processor(processor)), None)


# Modules left unquantised by default (a family's ``quantisation_skip`` says its own).
QUANTISATION_SKIP = Family.__dataclass_fields__["quantisation_skip"].default


def quantization_config(bits: int | None, compute_dtype: Any = None, skip: tuple[str, ...] = ()) -> Any:
    """A ``BitsAndBytesConfig`` for 4-bit NF4 (QLoRA) or 8-bit loading; ``None`` for full precision.

    The vision tower and the LM head stay unquantised: they are small, and quantising the vision tower
    costs accuracy on fine facial detail.
    """
    if not bits:
        return None
    if bits not in (4, 8):
        raise ValueError(f"quantisation bits must be 4 or 8, not {bits}")
    try:
        import bitsandbytes  # noqa: F401
    except Exception as err:  # ImportError or a broken native library
        raise ModelLoadError(
            f"{bits}-bit loading needs a working bitsandbytes ({type(err).__name__}: {err}). Install it "
            "(`pip install bitsandbytes`) or set load_in_4bit/load_in_8bit to false (plain LoRA)."
        ) from None
    import torch
    from transformers import BitsAndBytesConfig

    # transformers 5 matches each pattern from the start of the module name (or as a suffix), so a bare
    # "visual" skipped nothing: the vision tower ("model.visual....") was quantised too
    skip = list(skip or QUANTISATION_SKIP)
    if bits == 4:
        return BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=compute_dtype or torch.bfloat16,
            llm_int8_skip_modules=skip,
        )
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)


def load_processor(name_or_path: str | Path) -> Any:
    """The model's processor (tokenizer + image/video processors + chat template).

    A processor without a chat template gets its family's (with a warning); one whose template differs
    from the family's keeps its own, with a warning naming which is used.
    """
    from transformers import AutoProcessor

    path, family = resolve(name_or_path)
    try:
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=False)
    except OSError as err:
        raise ModelLoadError(_unreachable(path, err)) from None
    if not hasattr(processor, "image_processor"):
        raise ModelLoadError(
            f"{name_or_path}: the checkpoint has no multimodal processor (preprocessor_config.json); "
            "use a vision-language instruct checkpoint"
        )
    template = getattr(processor, "chat_template", None)
    if not template:
        log.warning(
            "%s: the processor has no chat template; using the %s family's", name_or_path, family.name
        )
        processor.chat_template = family.chat_template
    elif template != family.chat_template:
        log.warning(
            "%s: the processor's chat template differs from the %s family's; using the processor's own",
            name_or_path,
            family.name,
        )
    return processor


def load_model(
    name_or_path: str | Path,
    dtype: str = "auto",
    bits: int | None = None,
    attn_implementation: str | None = None,
    device_map: Any = None,
) -> Any:
    """The model through ``AutoModelForImageTextToText.from_pretrained``, optionally 4/8-bit quantised.

    dtype: ``"auto"`` (the checkpoint's), ``"bfloat16"``, ``"float16"`` or ``"float32"``.
    """
    import torch
    from transformers import AutoModelForImageTextToText

    path, family = resolve(name_or_path)
    torch_dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    compute = torch_dtype if isinstance(torch_dtype, torch.dtype) else None
    kwargs: dict[str, Any] = {"dtype": torch_dtype, "trust_remote_code": False}
    if bits:
        kwargs["quantization_config"] = quantization_config(bits, compute, family.quantisation_skip)
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, **kwargs)
    except OSError as err:
        raise ModelLoadError(_unreachable(path, err)) from None
    if bits == 4:
        keep_generic_cpu_path_where_repacking_fails(model)
    return model


def cpu_repack_fits(out_features: int, in_features: int, blocksize: int) -> bool:
    """Whether bitsandbytes' AVX512-BF16 repacking of a 4-bit ``out_features x in_features`` weight works.

    The repacking (``bitsandbytes.functional._convert_weight_packed_for_cpu``, run on a 4-bit layer's
    first forward without gradients: evaluation, answering) asserts that the output width is a multiple
    of its ``block_n`` (32 in bitsandbytes 0.50) and the input width even, and reshapes the block scales
    to (out, in / blocksize), which needs the input width to be a multiple of the quantisation block.
    The vision MLP of Qwen2.5-VL (3420 wide) fails the first; narrow test layers fail the last.
    """
    import inspect

    from bitsandbytes import functional

    repack = getattr(functional, "_convert_weight_packed_for_cpu", None)
    if repack is None:  # a bitsandbytes without the repacking: nothing to avoid
        return True
    block_n = inspect.signature(repack).parameters.get("block_n")
    block_n = block_n.default if block_n is not None and isinstance(block_n.default, int) else 32
    return out_features % block_n == 0 and in_features % 2 == 0 and in_features % blocksize == 0


def keep_generic_cpu_path_where_repacking_fails(model: Any) -> int:
    """Turn off bitsandbytes' AVX512-BF16 repacking for every 4-bit layer whose shape it cannot repack
    (:func:`cpu_repack_fits`); returns how many.

    Those layers keep the generic dequantising path, the one every training step takes anyway; the
    others keep the fast fused kernel. Without this, the first evaluation of a 4-bit model on a CPU with
    AVX512-BF16 stops with "N must be divisible by block_n" or "shape '[96, 0]' is invalid".
    """
    count = 0
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if not getattr(module, "support_avx512bf16_for_cpu", False) or state is None:
            continue
        if not cpu_repack_fits(module.out_features, module.in_features, state.blocksize):
            module.support_avx512bf16_for_cpu = False
            count += 1
    if count:
        log.debug("%d 4-bit layer(s) keep bitsandbytes' generic CPU path (shape not repackable)", count)
    return count


def adapter_base(adapter: Path) -> str:
    """The base model an adapter folder records (``base_model_name_or_path``)."""
    base = read_json_object(adapter / "adapter_config.json", "adapter config").get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(
            f"{adapter / 'adapter_config.json'}: no base_model_name_or_path; give the base model"
        )
    return str(base)


def check_adapter_family(adapter: Path, model: str | Path) -> None:
    """Refuse an adapter trained on one family applied to a model of another (before any row)."""
    recorded = adapter_base(adapter)
    try:
        trained = family_of_name(recorded) or resolve(recorded)[1]
    except ModelLoadError:  # the recorded base is not reachable here: the tensor check still runs
        return
    target = family_of_name(str(model)) or resolve(model)[1]
    if trained.name != target.name:
        raise ModelLoadError(
            f"adapter {adapter} was trained on a {trained.name} model ({adapter_base(adapter)}) and cannot "
            f"be applied to {model} ({target.name}); give the adapter's own base model or retrain it"
        )


def load_for_inference(
    path_or_name: str | Path,
    dtype: str = "auto",
    device_map: Any = None,
    adapter: str | Path | None = None,
    checked: Any = None,
) -> tuple[Any, Any]:
    """``(model, processor)`` for a registry name, hub id, full model folder, or a PEFT adapter folder.

    The one loading path of answering, the REPL, merge and export. An adapter folder (given as the model
    or as ``adapter``) loads its base model (the recorded one unless ``path_or_name`` names another of
    the same family) and applies the adapter through the one adapter check
    (:func:`megc_vqa.models.adapters.apply_adapter`; ``checked``: its already-read files); its own
    processor files are used when training saved them there.
    """
    model = str(path_or_name)
    if adapter is None and (Path(model).expanduser() / "adapter_config.json").is_file():
        adapter = Path(model).expanduser()
        model = adapter_base(adapter)
    if adapter is None:
        return load_model(model, dtype=dtype, device_map=device_map), load_processor(model)
    adapter = Path(adapter)
    check_adapter_family(adapter, model)
    # PEFT alone loads a misfit adapter with a warning: apply_adapter makes it an error.
    base = apply_adapter(load_model(model, dtype=dtype, device_map=device_map), adapter, model, checked)
    has_processor = any(
        (adapter / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")
    )
    return base, load_processor(adapter if has_processor else model)
