"""Every shipped GPU recipe at real model size on the CPU (``make test-realsize``; not in the default suite).

Each recipe runs in its own process (``python -m megc_vqa.training.realsize``: peak memory is that
recipe's, and it is all returned afterwards) on a random-weight build of its checkpoint's published
configuration, cached in ``$MEGC_VQA_CACHE/models`` (built once, in a child process: 1-4 min and
7-9 GB of disk each). Without a GPU the step runs in the recipes' bf16 on a CPU with bf16 instructions
(AVX512-BF16 or AMX) and in float32 elsewhere (bf16 is 47-130x slower on a CPU without them:
``benchmarks/cpu_dtype.py``, and ``TRAIN_LAYERS`` in :mod:`megc_vqa.training.realsize`). Every recipe's
peak resident memory must stay under ``MEMORY_BUDGET_GIB`` (16 GiB, so a 24 GB machine keeps room).
Qwen2.5-VL-3B, LoRA and QLoRA, trains at full depth (36 decoder layers, 32 vision blocks) in bf16; in
float32 (15 GB of weights) 18 of its decoder layers at the real width. Qwen2.5-VL-7B (15.4 GB in bf16) and
Qwen3-VL-4B (8.3 GB in bf16, 18 GB in float32) train 2 decoder layers and 4 vision blocks at the real
width, and their full-depth LoRA targets and trainable parameters are checked on the meta device. The reports
land in ``runs/realsize/*.json``; ``python -m megc_vqa.training.realsize --table runs/realsize/*.json``
prints the table of ``recipes/README.md``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from megc_vqa.training.realsize import MEMORY_BUDGET_GIB, cpu_dtype, merge_tolerance

pytestmark = pytest.mark.realsize
ROOT = Path(__file__).resolve().parents[1]

# recipe -> extra arguments of the check
FULL_DEPTH = ["--layers", "0", "--vision-layers", "0"]
# 3B at full depth is 7 GB of weights in bf16 but 15 GB in float32 (a CPU without bf16 instructions),
# which does not fit the memory budget: there half its decoder layers, each at the real width.
DEPTH_3B = FULL_DEPTH if cpu_dtype() == "bfloat16" else ["--layers", "18", "--vision-layers", "0"]
RECIPES = {
    "qwen2.5-vl-3b/lora.yaml": ["--merge", *DEPTH_3B],
    "qwen2.5-vl-3b/qlora.yaml": DEPTH_3B,
    "qwen2.5-vl-7b/lora.yaml": [],
    "qwen3-vl/lora.yaml": [],
    # issue 23: 2 decoder layers and 4 vision blocks at the real width (the defaults); the MoE's 2 layers
    # hold all 128 experts each (2.4 GB of bf16 weights a layer)
    "internvl/lora.yaml": [],
    "glm4v/lora.yaml": [],
    "qwen3_vl_moe/lora.yaml": [],
    # stage grpo: one GRPO step (a group of 2 answers, see realsize.STAGE_OVERRIDES), from a fresh adapter
    "qwen2.5-vl-3b/grpo.yaml": DEPTH_3B,
    "qwen2.5-vl-7b/grpo.yaml": [],
}


def test_every_shipped_gpu_recipe_is_checked():
    shipped = {
        str(p.relative_to(ROOT / "recipes"))
        for p in (ROOT / "recipes").glob("*/*.yaml")
        if p.parent.name not in ("tiny", "accelerate", "spotting")
    }
    assert shipped == set(RECIPES)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_recipe_at_real_size(recipe: str, tmp_path: Path):
    name = recipe.replace("/", "-").removesuffix(".yaml")
    report_path = ROOT / "runs" / "realsize" / f"{name}.json"
    report_path.unlink(missing_ok=True)
    work = tmp_path / name
    cmd = [
        sys.executable, "-m", "megc_vqa.training.realsize", str(ROOT / "recipes" / recipe),
        "--work", str(work), "--json", str(report_path), *RECIPES[recipe],
    ]  # fmt: skip
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600, cwd=ROOT)
    finally:
        shutil.rmtree(work, ignore_errors=True)  # adapters and a merged 3B model: gigabytes
    assert report_path.is_file(), proc.stderr[-4000:]
    r = json.loads(report_path.read_text())
    print(
        f"\n{recipe}: {r['dtype']}, step {r['step_s']:.0f} s ({r['train_cpu_s'] / r['steps']:.0f} CPU s), "
        f"peak RSS {r['peak_rss_gib']:.1f} GiB, total {r['total_s']:.0f} s ({r['total_cpu_s']:.0f} CPU s)"
    )

    # a 24 GB machine keeps room for everything else (the random build, in a child, too)
    assert r["peak_rss_gib"] < MEMORY_BUDGET_GIB == 16
    assert r.get("build_peak_rss_gib", 0) < MEMORY_BUDGET_GIB

    # the recipe's LoRA scopes exist in the real architecture, and only LoRA weights train
    assert r["lora_modules"] and all(n > 0 for n in r["lora_modules"].values()), r["lora_modules"]
    assert r["lora_wrapped"] == sum(r["lora_modules"].values())
    assert r["stray_trainable"] == []
    assert r["trainable_params"] > 0
    # the processor gave the visual tokens the recipe's pixel bounds promise, within max_pixels
    assert r["visual_tokens"] == r["visual_tokens_promised"] > 0
    # the loss is finite and comes back after save + reload into a fresh base model
    assert math.isfinite(r["train_loss"]) and math.isfinite(r["loss_trained"])
    assert r["loss_reloaded"] == pytest.approx(r["loss_trained"], rel=1e-3, abs=1e-3)
    if "--merge" in RECIPES[recipe]:
        assert r["merge_logits_max_diff"] <= merge_tolerance(r) == r["merge_logits_tolerance"]
        # every LoRA-wrapped weight merge-adapter wrote is the base plus the saved adapter's delta
        merged = r["merged_weights"]
        assert merged["modules"] == r["lora_wrapped"] and merged["missing"] == 0 and merged["changed"] > 0
        assert merged["max_ulp"] <= 1.0
    if RECIPES[recipe][-len(FULL_DEPTH) :] == FULL_DEPTH:  # what was trained is the published architecture
        assert r["layers"] == r["published_layers"] == r["full_depth"]["layers"]
        assert r["lora_modules"] == r["full_depth"]["lora_modules"]
        assert r["trainable_params"] == r["full_depth"]["trainable_params"]
    assert r["failures"] == []
    assert proc.returncode == 0, proc.stderr[-4000:]
