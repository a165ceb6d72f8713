"""``megc-vqa merge-adapter``: fold a LoRA adapter into its base model and save a plain checkpoint.

    megc-vqa merge-adapter runs/qwen3b-lora --out runs/qwen3b-merged [--dtype bfloat16]

The base model is loaded unquantised (a QLoRA adapter merges into full-precision weights), the adapter
is applied and merged with PEFT's ``merge_and_unload``, and the result is written with
``save_pretrained`` together with the processor and the training metadata, so it loads like any
checkpoint (``from_pretrained`` or ``megc_vqa.models.registry.load_for_inference``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

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
    from megc_vqa.models.registry import load_for_inference
    from megc_vqa.training.finetune import TRAIN_META

    if not (adapter / "adapter_config.json").is_file():
        raise FileNotFoundError(f"{adapter}: no adapter_config.json; point at a LoRA adapter folder")
    model, processor = load_for_inference(adapter, dtype=dtype)
    merged = model.merge_and_unload()
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(out)
    processor.save_pretrained(out)
    meta_path = adapter / TRAIN_META
    if meta_path.is_file():
        from megc_vqa.fileio import atomic_write_text, read_json_object

        meta = read_json_object(meta_path, "training record")
        meta.update(use_peft=False, merged_from=str(adapter))
        atomic_write_text(out / TRAIN_META, json.dumps(meta, indent=2))
    return out


def run(args: argparse.Namespace) -> int:
    from megc_vqa.models.registry import ModelLoadError

    try:
        out = merge_adapter(args.adapter, args.out, args.dtype)
    except (FileNotFoundError, ModelLoadError) as err:
        print(f"merge-adapter: error: {err}", file=sys.stderr)
        return 2
    print(f"merged {args.adapter} into {out}")
    return 0
