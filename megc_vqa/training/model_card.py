"""The model card (``README.md``, the Hugging Face Hub's model-card format) next to every adapter and merged model.

Written by training (:func:`megc_vqa.training.finetune.train`, in ``output_dir``) and by
``megc-vqa merge-adapter`` (in ``--out``), from what the run left in its folder, so both say the same:

- ``megc_vqa_train.json`` (:mod:`megc_vqa.models.contract`): base model, family, visual and prompt settings,
  label sets, held-out subjects, recipe, project version;
- ``megc_vqa_run.json``: the model/LoRA, data and learning settings the run was started with;
- ``adapter_config.json``: rank, alpha, target modules;
- ``train_metrics.json`` and ``val_metrics.json``: training loss and length, the data counts, and the
  validation scores of the submission scorer.

YAML front matter (``base_model``, ``library_name: peft`` or ``transformers``, ``pipeline_tag``, ``tags``,
``license``), then sections: model, visual inputs, data (with the licence warning: frames and labels of
the licensed datasets are not included), training, validation, how to answer with it.

A ``README.md`` the project did not write is never replaced: training claims the name in the folder's
output marker (:func:`megc_vqa.fileio.claim_outputs`) before the trainer saves (PEFT writes or updates a
``README.md`` of its own there); a user's file is kept and said so in the log. ``merge-adapter`` builds its
folder whole, so its card is its own.
"""

from __future__ import annotations

import contextlib
import logging
import re
import shlex
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from megc_vqa import __version__
from megc_vqa.errors import MegcError, UsageError
from megc_vqa.fileio import (
    atomic_write_bytes,
    atomic_write_text,
    claim_outputs,
    is_regular_file,
    read_json_object,
)
from megc_vqa.models.registry import MODELS

log = logging.getLogger(__name__)

CARD_NAME = "README.md"
VAL_SCORE_KEYS = (
    "uf1_coarse", "uar_coarse", "uf1_fine", "uar_fine", "au_f1", "presence_acc", "side_acc", "joint_exact",
    "bleu", "rouge", "n_rows",
)  # fmt: skip
LICENCE_WARNING = (
    "> **Data licence.** The real micro-expression datasets (CASME II, SAMM, SMIC, CAS(ME)^3) are "
    "licence-only. Their frames and labels are **not included** here and must not be redistributed; ask the "
    "dataset owners for access. Check their licence terms before sharing a model trained on them."
)
# The Hub's default card, which PEFT writes when a folder has none (an earlier run's card, not a user's).
_PEFT_TEMPLATE_LINES = (
    "# Model Card for Model ID",
    "<!-- Provide a quick summary of what the model is/does. -->",
)


def peft_template_card(path: Path) -> bool:
    """Whether ``path`` is the Hub template card PEFT writes beside an adapter (not a user's README)."""
    if not is_regular_file(path):
        return False
    with open(path, "rb") as handle:
        head = handle.read(1 << 16).decode("utf-8", "replace")
    return all(line in head for line in _PEFT_TEMPLATE_LINES)


def claim_card(folder: str | Path, writer: str, what: str = "output_dir") -> bool:
    """Record ``README.md`` of ``folder`` as ``writer``'s before anything writes it; ``False`` (logged)
    when a README.md there is the user's, which is then left as it is."""
    try:
        claim_outputs(folder, writer, [CARD_NAME], what=what, legacy=peft_template_card)
    except UsageError:
        log.warning(
            "%s: not written by megc-vqa; kept as it is, and no model card is written (rename it to get one)",
            Path(folder) / CARD_NAME,
        )
        return False
    return True


@contextlib.contextmanager
def card_guard(folder: str | Path, writer: str) -> Iterator[bool]:
    """Around a save that may write ``README.md`` (PEFT's ``save_pretrained`` writes or updates one):
    yields whether the card is ``writer``'s to write (:func:`claim_card`); a user's README.md comes out of
    the block byte for byte as it went in."""
    path = Path(folder) / CARD_NAME
    ours = claim_card(folder, writer)
    kept = path.read_bytes() if not ours and is_regular_file(path) else None
    try:
        yield ours
    finally:
        if kept is not None and (not is_regular_file(path) or path.read_bytes() != kept):
            atomic_write_bytes(path, kept)


def _json(path: Path) -> dict[str, Any]:
    try:
        return read_json_object(path) if is_regular_file(path) else {}
    except MegcError as err:
        log.warning("%s: not read for the model card (%s)", path, err)
        return {}


def hub_id(name: str | None) -> str | None:
    """The Hub id of a base model: a registry name's, or the name itself when it looks like ``owner/model``
    and is no local folder; ``None`` for a local or tiny model (the Hub's ``base_model`` takes ids only)."""
    if not name:
        return None

    spec = MODELS.get(name)
    if spec is not None:
        return spec.hub_id
    if re.fullmatch(r"[\w.-]+/[\w.-]+", name) and not Path(name).exists():
        return name
    return None


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _table(rows: list[tuple[str, Any]]) -> list[str]:
    return [
        "| | |",
        "|---|---|",
        *(f"| {k} | {_number(v)} |" for k, v in rows if v not in (None, "", [], {})),
    ]


def _front_matter(contract: Any, merged: bool) -> str:
    base = hub_id(contract.model_name_or_path)
    data: dict[str, Any] = {}
    if base:
        data["base_model"] = base
    data["library_name"] = "transformers" if merged or contract.use_peft is False else "peft"
    data["pipeline_tag"] = "image-text-to-text"
    tags = ["megc-vqa", "micro-expression", "facial-expression-recognition", "visual-question-answering"]
    if contract.family:
        tags.append(str(contract.family))
    if contract.use_peft is not False:
        tags += ["lora", *([] if merged else ["peft"])]
    data["tags"] = tags
    data["license"] = "other"  # the base model's licence, and the data's terms (see the card)
    return "---\n" + yaml.safe_dump(data, sort_keys=False, allow_unicode=True) + "---\n"


def _model_section(contract: Any, adapter: dict[str, Any], merged_from: Path | None) -> list[str]:
    if merged_from is not None:
        kind = "merged model (the LoRA adapter folded into the base weights; loads like any checkpoint)"
    elif contract.use_peft is False:
        kind = "fully fine-tuned model"
    else:
        kind = "LoRA adapter (PEFT format; load it on the base model)"
    return [
        "## Model",
        "",
        *_table(
            [
                ("kind", kind),
                ("base model", _base_text(contract.model_name_or_path)),
                ("family", contract.family),
                ("merged from", str(merged_from) if merged_from else None),
                (
                    "LoRA rank / alpha / dropout",
                    " / ".join(_number(adapter.get(k)) for k in ("r", "lora_alpha", "lora_dropout"))
                    if adapter
                    else None,
                ),
                ("LoRA target modules", _targets(adapter.get("target_modules"))),
                ("recipe", contract.recipe),
                ("trained with", f"megc-vqa {contract.project_version}"),
            ]
        ),
        "",
    ]


def _base_text(name: str | None) -> str | None:
    """``qwen2.5-vl-3b (Qwen/Qwen2.5-VL-3B-Instruct)`` for a registry name; the name itself otherwise."""
    hub = hub_id(name)
    return f"{name} ({hub})" if hub and hub != name else name


def _targets(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return f"`{value}`"
    names = sorted(map(str, value))
    return ", ".join(names[:12]) + (f" and {len(names) - 12} more" if len(names) > 12 else "")


def _visual_section(contract: Any) -> list[str]:
    v, p = contract.visual, contract.prompt
    return [
        "## Visual inputs",
        "",
        "What the model sees of a clip (`megc_vqa.visual.samplers`); `run_vqa`, `megc-vqa ask`, `run_str` and "
        "`run_lvqa` read these settings from `megc_vqa_train.json` in this folder, so a test clip is prepared "
        "as the training clips were.",
        "",
        *_table(
            [
                ("sampler", f"`{v.spec}`"),
                ("shorter side (px)", v.size if v.size is not None else "native"),
                ("face pipeline", v.face),
                ("face margin / detector", f"{v.face_margin} / {v.face_detector}"),
                ("registration to the onset", v.register),
                ("motion magnification", v.magnify),
                ("optical flow", v.flow_method),
                ("apex in training", v.apex_policy),
                ("apex estimator (clips without one, e.g. test clips)", v.apex_method),
                ("prompt visual mode", p.visual_mode),
                ("min / max pixels", f"{_number(p.min_pixels)} / {_number(p.max_pixels)}"),
            ]
        ),
        "",
    ]


def _data_section(contract: Any, settings: dict[str, Any], train: dict[str, Any]) -> list[str]:
    data = settings.get("data") or {}
    train_file = data.get("train_file")
    if isinstance(train_file, Mapping):
        train_file = train_file.get("path")
    counts = train.get("data_summary") or {}
    synthetic = isinstance(train_file, str) and train_file.startswith("synth:")
    rows = [
        ("training file", f"`{train_file}`" if train_file else None),
        ("training rows", counts.get("train_rows")),
        ("training rows per dataset", _inline(counts.get("train_by_dataset"))),
        ("validation rows", counts.get("val_rows")),
        ("held-out subjects (whole subjects)", len(contract.val_subjects) or None),
        ("question kinds", _inline(counts.get("train_by_kind"))),
        ("fine labels", ", ".join(contract.labels.fine)),
    ]
    return [
        "## Data",
        "",
        "Synthetic micro-expression clips made by `megc-vqa synth` (no real faces)."
        if synthetic
        else "MEGC ME-VQA question-answer records made by `megc-vqa prep` from the licensed datasets.",
        "",
        *_table(rows),
        "",
        LICENCE_WARNING,
        "",
    ]


def _inline(mapping: Any) -> str | None:
    if not isinstance(mapping, Mapping) or not mapping:
        return None
    return ", ".join(f"{k} {v}" for k, v in mapping.items())


def _training_section(settings: dict[str, Any], train: dict[str, Any]) -> list[str]:
    learning = settings.get("training") or {}
    model = settings.get("model") or {}
    data = settings.get("data") or {}
    rows = [
        ("quantised base (QLoRA)", "4-bit NF4" if model.get("load_in_4bit") else None),
        ("learning rate", learning.get("learning_rate")),
        ("scheduler / warmup", f"{learning.get('lr_scheduler_type')} / {_number(learning.get('warmup_ratio'))}"
         if learning else None),
        ("batch size x accumulation", f"{learning.get('per_device_train_batch_size')} x "
         f"{learning.get('gradient_accumulation_steps')}" if learning else None),
        ("optimiser", learning.get("optim")),
        ("precision", "bf16" if learning.get("bf16") else ("fp16" if learning.get("fp16") else None)),
        ("seed", learning.get("seed")),
        ("loss weighting", data.get("loss_weighting")),
        ("question mix", data.get("question_mix")),
        ("epochs trained", train.get("epoch")),
        ("final training loss", train.get("train_loss")),
        ("training time (s)", train.get("train_runtime")),
    ]  # fmt: skip
    if not any(v not in (None, "", [], {}) for _, v in rows):
        return ["## Training", "", "No training record (`megc_vqa_run.json`) was found.", ""]
    return ["## Training", "", *_table(rows), ""]


def _validation_section(val: dict[str, Any], folder_text: str) -> list[str]:
    splits = [s for s, v in val.items() if isinstance(v, Mapping) and v.get("n_rows")]
    if not splits:
        return [
            "## Validation",
            "",
            "No validation split was scored (`val_fraction` 0 or `final_eval` false).",
            "",
        ]
    keys = [k for k in VAL_SCORE_KEYS if any(val[s].get(k) is not None for s in splits)]
    variant = val.get("variant") or {}
    return [
        "## Validation",
        "",
        "Held-out subjects answered by the answering engine (as a submission: label grammar, normalisation, "
        "consistency, apex estimated) and scored by the MEGC scorer (`megc_vqa.metrics.vqa`).",
        "",
        "| split | " + " | ".join(keys) + " |",
        "|---" * (len(keys) + 1) + "|",
        *(f"| {s} | " + " | ".join(_number(val[s].get(k)) for k in keys) + " |" for s in splits),
        "",
        f"BLEU: {variant.get('bleu_desc', '?')}; ROUGE: {variant.get('rouge_desc', '?')}. Reproduce with "
        f"`python eval/score.py vqa --pred {folder_text}/val_predictions.jsonl --gt "
        f"{folder_text}/val_truth.jsonl`.",
        "",
    ]


def _usage_section(contract: Any, folder_text: str, merged: bool) -> list[str]:
    model = (
        folder_text if merged or contract.use_peft is False else shlex.quote(str(contract.model_name_or_path))
    )
    adapter = "" if merged or contract.use_peft is False else f" --adapter {folder_text}"
    return [
        "## How to answer with it",
        "",
        "With megc-vqa installed (`pip install -e .[train]` in its checkout), from the checkout:",
        "",
        "```bash",
        "# the organisers' question files -> leaderboard files, submission.zip (and scores with --gt)",
        "python eval/run_vqa.py \\",
        "    --questions data/megc/2025/me_vqa_samm_test_to_answer.jsonl "
        "data/megc/2025/me_vqa_casme3_test_to_answer.jsonl \\",
        f"    --frames-root TEST_FRAMES --model {model}{adapter} --out runs/pred",
        "# one clip, interactively",
        f"megc-vqa ask --model {model}{adapter} --clip CLIP_FOLDER",
        "```",
        "",
        "Python:",
        "",
        "```python",
        "from megc_vqa.answering.engine import Engine",
        "",
        f"engine = Engine.load({model!r}" + (f", {folder_text!r})" if adapter else ")"),
        "```",
        "",
    ]


def model_card(source: str | Path, *, merged_into: str | Path | None = None) -> str:
    """The card of the run in ``source`` (an adapter or model folder written by training); with
    ``merged_into``, the card of the merged model written there from the adapter ``source``."""
    from megc_vqa.models.contract import read_contract
    from megc_vqa.training.finetune import RUN_RECORD, TRAIN_METRICS, VAL_METRICS

    source = Path(source)
    contract = read_contract(source)
    settings = _json(source / RUN_RECORD).get("settings") or {}
    train = _json(source / TRAIN_METRICS)
    val = _json(source / VAL_METRICS)
    adapter = _json(source / "adapter_config.json")
    merged = merged_into is not None
    folder_text = shlex.quote(str(merged_into if merged else source))
    base = contract.model_name_or_path or "the base model"
    kind = "Merged" if merged else "LoRA" if contract.use_peft is not False else "Fine-tuned"
    title = f"{kind} micro-expression VQA model on {base}"
    lines = [
        _front_matter(contract, merged),
        f"# {title}",
        "",
        f"<!-- written by megc-vqa {__version__}; a README.md it did not write is never replaced -->",
        "",
        "Answers the Micro-Expression Grand Challenge (MEGC) ME-VQA questions about a short face clip: coarse "
        "and fine emotion class, action units, their presence and side, and the joint analysis. Trained with "
        "megc-vqa on key frames and an optical-flow image of each clip.",
        "",
        *_model_section(contract, adapter, source if merged else None),
        *_visual_section(contract),
        *_data_section(contract, settings, train),
        *_training_section(settings, train),
        *_validation_section(val, shlex.quote(str(source))),
        *_usage_section(contract, folder_text, merged),
        "## Licence",
        "",
        f"The weights derive from `{_base_text(base)}`; its licence applies to them. The training data has "
        "its own terms (see Data above): frames and labels of the licensed datasets are not included.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(folder: str | Path, text: str) -> Path:
    """Write ``folder/README.md`` (claimed first with :func:`claim_card`)."""
    return atomic_write_text(Path(folder) / CARD_NAME, text)


def data_summary(train_records: Any, val_records: Any) -> dict[str, Any]:
    """Row counts for the card (kept in ``train_metrics.json`` so a merge can say them too)."""
    from megc_vqa.models.prompting import get_field

    def count(records: Any, key: str) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in records:
            name = str(get_field(r, key))
            out[name] = out.get(name, 0) + 1
        return dict(sorted(out.items()))

    return {
        "train_rows": len(train_records),
        "val_rows": len(val_records),
        "train_by_dataset": count(train_records, "dataset"),
        "train_by_kind": count(train_records, "question_type"),
    }
