"""The MEGC ME-VQA tasks for lmms-eval: this folder is lmms-eval's ``--include_path`` (``megc-vqa
lmms-tasks`` prints it). The YAML files and ``utils.py`` are thin; the pieces live in
``megc_vqa.answering.lmms``. This module holds only what the light ``megc-vqa lmms-tasks`` command needs.

    lmms-eval --model qwen2_5_vl --model_args pretrained=Qwen/Qwen2.5-VL-3B-Instruct \\
        --tasks megc_vqa_prep --include_path "$(megc-vqa lmms-tasks)" --log_samples --output_path runs/lmms
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

TASKS_DIR = Path(__file__).resolve().parent
ENV_FRAMES = "MEGC_VQA_FRAMES_ROOT"  # the organisers' clips' frames (as run_vqa's --frames-root)
ENV_QUESTIONS = "MEGC_VQA_QUESTIONS_DIR"  # the folder of 2025/ and 2026/ question files (default data/megc)
ENV_QA = "MEGC_VQA_QA"  # a `megc-vqa prep` output (qa.jsonl or its folder), for megc_vqa_prep
ENV_MODEL = "MEGC_VQA_MODEL_DIR"  # an adapter or merged model folder whose training record sets the visuals
TASKS: tuple[str, ...] = (
    "megc_vqa_prep", "megc_vqa_2025", "megc_vqa_2025_samm", "megc_vqa_2025_casme3",
    "megc_vqa_2026", "megc_vqa_2026_samm", "megc_vqa_2026_casme3",
)  # fmt: skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help=f"also read the documents of the tasks whose variables are set ({ENV_QA}, {ENV_FRAMES}), so a "
        "clip without frames is reported before lmms-eval loads a model",
    )


def run(args: argparse.Namespace) -> int:
    """Print the tasks folder (``lmms-eval --include_path "$(megc-vqa lmms-tasks)"``)."""
    if args.check:
        from megc_vqa.answering import lmms

        if os.environ.get(ENV_QA):
            log.info("megc_vqa_prep: %d documents", len(lmms.prep_docs()))
        if os.environ.get(ENV_FRAMES):
            for source in lmms.QUESTION_SOURCES.values():
                log.info("%s: %d documents", source, len(lmms.question_docs(source)))
    print(TASKS_DIR)
    return 0
