"""One check for a LoRA adapter applied to a base model, used by every command that applies one
(``Engine.load`` behind run_vqa, run_str, run_lvqa and ``megc-vqa ask``; ``megc-vqa merge-adapter``).

PEFT loads an adapter whose tensors find no home in the base model with a warning only (the LoRA layers
then keep their initial weights, so the "adapted" model is the base model), and it loads NaN weights
without a word. :func:`apply_adapter` refuses, naming the adapter file and the problem:

- a training record beside the adapter (``megc_vqa_train.json``) that names another base model than the
  adapter's ``adapter_config.json``;
- weights that are not finite (NaN or infinite), checked before anything is applied;
- tensors that do not match, by name and shape, what PEFT saves for this adapter config on this base
  model (``get_peft_model_state_dict``): missing tensors, unexpected ones, other shapes. An adapter made
  for another base model fails here.
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from megc_vqa.errors import InputError
from megc_vqa.fileio import read_json_object

log = logging.getLogger(__name__)

WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


class AdapterError(InputError):
    """An adapter that does not fit its base model, or whose weights are unusable; the message names the
    file and what to change."""


def adapter_config(adapter: str | Path) -> dict[str, Any]:
    """The adapter's PEFT config (``adapter_config.json``), after checking it is one."""
    cfg_path = Path(adapter) / "adapter_config.json"
    if not cfg_path.is_file():
        raise AdapterError(f"{adapter}: no adapter_config.json; point at a PEFT (LoRA) adapter folder")
    return read_json_object(cfg_path, "adapter config")


def weights_file(adapter: str | Path) -> Path:
    for name in WEIGHT_FILES:
        if (Path(adapter) / name).is_file():
            return Path(adapter) / name
    raise AdapterError(f"{adapter}: no adapter weights ({' or '.join(WEIGHT_FILES)}); was training finished?")


def read_weights(adapter: str | Path) -> tuple[Path, dict[str, Any]]:
    """(file, tensors by name) of an adapter's weights; a file that cannot be read is named."""
    import torch

    path = weights_file(adapter)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return path, load_file(str(path))
        return path, torch.load(path, map_location="cpu", weights_only=True)  # data only, never code
    except Exception as err:  # a cut or foreign file: say which, not a library traceback
        raise AdapterError(
            f"{path}: not readable adapter weights ({type(err).__name__}: {str(err)[:200]}); "
            "retrain or copy the adapter again"
        ) from None


def check_finite(path: Path, tensors: dict[str, Any]) -> None:
    """Refuse weights with NaN or infinite values (a diverged run), naming how many tensors and which."""
    import torch

    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise AdapterError(
            f"{path}: {len(bad)} of {len(tensors)} tensor(s) hold NaN or infinite values (e.g. "
            f"{', '.join(bad[:3])}): the training run diverged; use an earlier checkpoint or retrain "
            "(a lower learning rate, fp32 or bf16 instead of fp16)"
        )


def _short(names: list[str]) -> str:
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def check_recorded_base(adapter: Path, config: dict[str, Any]) -> None:
    """The training record beside the adapter and its config must name the same base model."""
    from megc_vqa.models.contract import find_record

    record = find_record(adapter)
    if record is None:
        return
    recorded = read_json_object(record, "training record").get("model_name_or_path")
    base = config.get("base_model_name_or_path")
    if recorded and base and str(recorded) != str(base):
        raise AdapterError(
            f"{adapter / 'adapter_config.json'}: base_model_name_or_path {base!r} is not the base model "
            f"the adapter was trained on ({record.name} records {recorded!r}); set it back to {recorded!r}"
        )


CheckedFiles = tuple[dict[str, Any], Path, dict[str, Any]]


def check_adapter_files(adapter: str | Path) -> CheckedFiles:
    """The checks that need no base model (config, recorded base, finite weights), cheap enough to run
    before a base model loads; returns (config, weights file, tensors) for :func:`apply_adapter`."""
    adapter = Path(adapter)
    config = adapter_config(adapter)
    check_recorded_base(adapter, config)
    path, tensors = read_weights(adapter)
    check_finite(path, tensors)
    return config, path, tensors


def apply_adapter(base: Any, adapter: str | Path, model: str, checked: CheckedFiles | None = None) -> Any:
    """``PeftModel`` of ``base`` (loaded from ``model``) with the adapter, after the checks of the
    module docstring; :class:`AdapterError` otherwise (``base`` may then hold empty LoRA layers).
    ``checked``: what :func:`check_adapter_files` returned for this adapter, when it ran already."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict

    adapter = Path(adapter)
    config, path, tensors = checked or check_adapter_files(adapter)
    recorded = config.get("base_model_name_or_path")

    def mismatch(problem: str) -> AdapterError:
        if recorded and str(recorded) != str(model):
            return AdapterError(
                f"adapter {adapter} does not fit model {model!r}: it was trained on {recorded!r} ({path.name}: "
                f"{problem}). Pass --model {recorded} (or the folder it was trained from), or an adapter "
                "trained on this model."
            )
        return AdapterError(
            f"adapter {adapter} does not fit model {model!r}, the base model its adapter_config.json records "
            f"({path.name}: {problem}): it was made for another base model, or its weights file is "
            "incomplete; use the adapter folder as training wrote it, or set base_model_name_or_path to the "
            "model it was trained on"
        )

    try:
        with warnings.catch_warnings():  # PEFT's own missing-keys warning: said below, in one line
            warnings.simplefilter("ignore")
            peft_model = PeftModel.from_pretrained(base, str(adapter))
    except (RuntimeError, ValueError, KeyError) as err:  # size mismatch, unknown target modules
        raise mismatch(f"{type(err).__name__}: {' '.join(str(err).split())[:300]}") from None
    # What PEFT saves for this config on this base: the LoRA tensors (required) and, when training saved
    # them, whole embedding layers (allowed). Explicit True/False: "auto" would ask the Hub.
    required = set(get_peft_model_state_dict(peft_model, save_embedding_layers=False))
    expected = {
        k: tuple(v.shape)
        for k, v in get_peft_model_state_dict(peft_model, save_embedding_layers=True).items()
    }
    found = {k: tuple(v.shape) for k, v in tensors.items()}
    missing = sorted(required - set(found))
    unexpected = sorted(set(found) - set(expected))
    shapes = [f"{k} {found[k]} (expected {expected[k]})" for k in sorted(set(found) & set(expected))
              if found[k] != expected[k]]  # fmt: skip
    problems = (
        (
            [f"{len(missing)} of the {len(required)} LoRA tensors missing ({_short(missing)})"]
            if missing
            else []
        )
        + ([f"{len(unexpected)} unexpected tensor(s) ({_short(unexpected)})"] if unexpected else [])
        + ([f"{len(shapes)} tensor(s) of another shape ({_short(shapes)})"] if shapes else [])
    )
    if problems:
        raise mismatch("; ".join(problems))
    if recorded and Path(str(recorded)).name != Path(str(model)).name:
        log.warning("adapter %s was trained on %s, loaded onto %s", adapter, recorded, model)
    return peft_model
