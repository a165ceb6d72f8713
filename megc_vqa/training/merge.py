"""``megc-vqa merge-adapter``: fold a LoRA adapter into its base model and save a plain checkpoint.

    megc-vqa merge-adapter runs/qwen3b-lora --out runs/qwen3b-merged [--dtype bfloat16]

The adapter is checked first, as every command that applies one checks it (``megc_vqa.models.adapters``):
its recorded base model, finite weights, and its tensors' names and shapes against what PEFT expects on
that base; a misfit is refused naming the file and the problem, and nothing is written. The base model is
loaded unquantised (a QLoRA adapter merges into full-precision weights), the adapter
is applied and merged with PEFT's ``merge_and_unload``, and the result is written with
``save_pretrained`` together with the processor, the training metadata and a model card (``README.md``,
:mod:`megc_vqa.training.model_card`), so it loads like any checkpoint (``from_pretrained`` or
``megc_vqa.models.registry.load_for_inference``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from megc_vqa.errors import MegcError
from megc_vqa.fileio import atomic_folder, check_outside, check_replaceable, read_json_object
from megc_vqa.models.adapters import check_adapter_files
from megc_vqa.models.registry import ModelLoadError, load_for_inference

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("adapter", type=Path, help="adapter folder (adapter_config.json) written by training")
    parser.add_argument("--out", type=Path, required=True, help="folder for the merged model")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=["auto", "bfloat16", "float16", "float32"],
        help="dtype to load the base model in and save (default: the checkpoint's)",
    )


def merge_adapter(adapter: Path, out: Path, dtype: str = "auto") -> Path:
    """Merge ``adapter`` into its base model and save it to ``out``; returns ``out``."""
    from dataclasses import replace

    from megc_vqa.models.contract import find_record, read_contract
    from megc_vqa.training.model_card import model_card, write_model_card

    # The adapter check run_vqa's loading does (megc_vqa.models.adapters), the cheap part before the base
    # model loads; load_for_inference applies the rest (tensor names and shapes against the base).
    check_merge_output(adapter, out)  # before the slow load, and before reading the adapter's weights
    check_adapter_files(adapter)
    model, processor = load_for_inference(adapter, dtype=dtype)
    merged = model.merge_and_unload()
    # Built beside --out and moved in whole; only an earlier merge is replaced (save_pretrained would also
    # delete stale weight shards of whatever model was in the folder).
    with atomic_folder(out, WRITER, what="--out", legacy=_earlier_merge) as tmp:
        merged.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if find_record(adapter) is not None:
            replace(read_contract(adapter), use_peft=False, merged_from=str(adapter)).write(tmp)
        write_model_card(tmp, model_card(adapter, merged_into=out))  # the folder is built whole: ours
    return out


WRITER = "megc-vqa merge-adapter"


def _earlier_merge(folder: Path) -> bool:
    """A merged model written before output markers: its training record says what it was merged from."""
    from megc_vqa.models.contract import RECORD_NAME

    try:
        return bool(read_json_object(folder / RECORD_NAME).get("merged_from"))
    except MegcError:
        return False


def check_merge_output(adapter: Path, out: Path) -> None:
    """Refuse an ``--out`` that is or holds the adapter, its local base model or the working folder, or
    that holds anything but an earlier merge (nothing is deleted that merge-adapter did not write)."""
    try:
        base = read_json_object(adapter / "adapter_config.json").get("base_model_name_or_path")
    except MegcError:
        base = None
    inputs = [("the adapter", adapter), ("the current folder", Path.cwd())]
    if isinstance(base, str) and Path(base).is_dir():
        inputs.append(("the base model", Path(base)))
    check_outside(out, inputs, label=f"--out {out}")
    check_replaceable(out, WRITER, what="--out", legacy=_earlier_merge)


def run(args: argparse.Namespace) -> int:
    try:
        out = merge_adapter(args.adapter, args.out, args.dtype)
    except (FileNotFoundError, ModelLoadError, MegcError) as err:
        print(f"merge-adapter: error: {err}", file=sys.stderr)
        return 2
    print(f"merged {args.adapter} into {out}")
    return 0
