"""Fine-tune a video LVLM on MEGC QA records from a YAML recipe.

    accelerate launch recipes/finetune.py --config recipes/qwen2.5-vl-3b/lora.yaml [--key value ...]
    accelerate launch --cpu recipes/finetune.py --config recipes/tiny/lora.yaml --output_dir O --max_steps 2

A recipe's `stage` (sft, grpo, rft) picks what is trained (docs/grpo.md). Every recipe key can be overridden on the command line (``--output_dir``, ``--max_steps``,
``--learning_rate``, ``--resume_from_checkpoint true``, ...); ``--help`` lists them all. The logic lives
in ``megc_vqa.training.finetune``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main() -> int:
    try:
        import megc_vqa  # noqa: F401
    except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from megc_vqa.training.finetune import main as finetune_main

    return finetune_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
