"""Real-size check of a shipped GPU recipe on the CPU: the recipe's own YAML, a random-weight build of
its real checkpoint (:mod:`megc_vqa.models.published`), synthetic clips through the real visual layer,
collator, processor settings and trainer, for a step or two.

    python -m megc_vqa.training.realsize recipes/qwen2.5-vl-3b/lora.yaml --work runs/realsize/3b-lora \\
        [--layers 8] [--steps 1] [--merge] --json runs/realsize/3b-lora.json

The recipe is used unchanged apart from :func:`overrides` (model path, step count, the data/output
paths, and what cannot run or is pointless on a CPU: validation by generation, TensorBoard, gradient
accumulation; each is listed in the report). It reports, and :func:`check` raises on a failure of:

- the recipe's LoRA scopes each wrap modules of the real architecture, and only LoRA weights train;
- the visual tokens per sample equal what the recipe's pixel bounds promise for the sampled frames;
- the training loss is finite; the loss of a fixed batch is the same after the adapter is saved and
  loaded back into a fresh base model (QLoRA: quantised again);
- with ``merge``: ``megc-vqa merge-adapter`` output loads in plain transformers and gives the adapter's
  logits.

Peak memory (max RSS of this process; the random build runs in a child process, reported apart) and
step time go into the JSON report; ``--table`` prints the Markdown table of ``recipes/README.md`` from
such reports. Each recipe runs in its own process so the peak memory is that recipe's and the memory is
returned to the machine afterwards. What one phase no longer needs (the trained model, the reloaded
one) is freed and given back to the system before the next loads, so the peak is the largest phase's,
not their sum; it must stay under :data:`MEMORY_BUDGET_GIB`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import json
import logging
import math
import re
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from megc_vqa.fileio import atomic_write_text
from megc_vqa.labels import COARSE_CLASSES
from megc_vqa.models.published import model_class, model_config, published
from megc_vqa.models.registry import FAMILIES, load_model, lora_target_parameters, lora_target_regex
from megc_vqa.qa import templates as t
from megc_vqa.training.merge import merge_adapter

log = logging.getLogger(__name__)

N_CLIPS = 2
# Peak resident memory a recipe's check may reach: a 24 GB machine keeps 8 GB for everything else.
MEMORY_BUDGET_GIB = 16.0
# Without a GPU the check runs in the recipe's bf16 where the CPU has bf16 instructions (AVX512-BF16 or
# AMX: two real-width 3B decoder layers forward and backward over 300 tokens took 0.18 s in bf16 and
# 0.73 s in float32 on a 2-core Xeon with both), else in float32: a CPU with only AVX2 took 2.3 s in
# float32 and 298 s in bf16 (``benchmarks/cpu_dtype.py`` measures it). Qwen2.5-VL-3B fits the budget
# at full depth in bf16 (7 GB of weights; ``--layers 0 --vision-layers 0``), not in float32 (15 GB);
# 7B (15.4 GB in bf16) and Qwen3-VL-4B (8.3 GB in bf16, 18 GB in float32) do not fit beside the rest,
# so by default the check trains this many decoder layers / vision blocks at the real width, and the
# full-depth facts (LoRA targets, trainable parameters, weight memory) come from the full architecture
# built on the meta device (:func:`full_depth_facts`).
TRAIN_LAYERS = 2
TRAIN_VISION_LAYERS = 4
FRAME_SIZE = (240, 320)  # height, width: 4:3 like CASME II, so the resize to the pixel budget is not trivial
CLIP_FPS = 200.0


def rss_gib() -> float:
    """Peak resident memory of this process so far (GiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def current_rss_gib() -> float:
    """Resident memory of this process now (GiB; 0 where /proc is missing)."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0
    return pages * resource.getpagesize() / 2**30


def return_large_blocks_at_once() -> None:
    """Make glibc serve every allocation of 1 MiB or more from its own mapping, returned to the system
    when freed. By default glibc raises that threshold up to 32 MiB after such frees, and the bf16 layer
    weights transformers reads (several MiB each, in several threads) then stay in its heap after
    quantisation or casting, adding gigabytes to the peak of a 4-bit load."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: its own policy
        ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD; fixing it ends the raising


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the system (glibc keeps it otherwise, and the
    next model would load on top of it)."""
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def cpu_dtype() -> str:
    """The dtype the check trains in without a GPU: ``bfloat16`` (the recipes' own) where the CPU has
    bf16 instructions (AVX512-BF16 or AMX), else ``float32`` (see :data:`TRAIN_LAYERS`)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for probe in probes:  # private but stable since torch 2.3; a torch without them: float32
        try:
            if getattr(torch.cpu, probe)():
                return "bfloat16"
        except (AttributeError, RuntimeError):
            continue
    return "float32"


def build_in_child(hub_id: str, layers: int | None, vision_layers: int | None) -> tuple[Path, float]:
    """``ensure_random`` in a child process, so the build's memory never adds to the check's peak;
    returns the build's path and the child's peak resident memory (GiB)."""
    code = (
        "import sys; from megc_vqa.models.published import ensure_random; "
        "print(ensure_random(sys.argv[1], int(sys.argv[2]) or None, vision_layers=int(sys.argv[3]) or None))"
    )
    argv = [sys.executable, "-c", code, hub_id, str(layers or 0), str(vision_layers or 0)]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building the random {hub_id} failed:\n{proc.stderr[-4000:]}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return Path(proc.stdout.strip().splitlines()[-1]), peak


def cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def write_synthetic_qa(folder: Path, n_clips: int = N_CLIPS) -> Path:
    """``n_clips`` toy clips at 200 fps (one subject each) and a coarse question per clip -> qa.jsonl."""
    from megc_vqa.visual.toyclips import write_toy_clip

    rows = []
    for c in range(n_clips):
        clip = folder / "frames" / f"sub{c:02d}" / "EP01"
        written = write_toy_clip(clip, 40, 14 + c, first=1, size=FRAME_SIZE, seed=c)
        rows.append(
            {
                "id": f"casme2_sub{c:02d}_EP01_1",
                "dataset": "casme2",
                "subject": f"sub{c:02d}",
                "image_id": f"sub{c:02d}_EP01",
                "filename": "EP01",
                "question": t.COARSE_QUESTION,
                "question_type": "coarse",
                "answer": COARSE_CLASSES[c % len(COARSE_CLASSES)],
                "source": str(clip),
                "source_kind": "folder",
                "first_frame": written[0],
                "fps": CLIP_FPS,
                "onset": written[0],
                "apex": written[0] + 14 + c,
                "offset": written[-1],
            }
        )
    path = folder / "qa.jsonl"
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return path


# What a stage after SFT changes on top of :func:`overrides`: GRPO samples a group of 2 answers per question
# (the smallest group; the recipes' 8 multiply the generation time, not the memory of the step) without
# vLLM (not installed on the CPU), from a fresh adapter (no SFT run at real size here). A random model's
# answers all score 0 on the recipe's rewards, so every advantage is 0 and the step cannot move the
# adapter, which is what the check verifies: the graded ``brevity`` reward is added to them, and it tells
# two answers of different lengths apart.
STAGE_OVERRIDES: dict[str, list[str]] = {
    "grpo": [
        "--num_generations", "2", "--per_device_train_batch_size", "2", "--use_vllm", "false",
        "--rewards", "answer", "format", "brevity", "--reward_weights", "1.0", "0.25", "0.25",
    ],
}  # fmt: skip


def overrides(model_path: str, qa: Path, out: Path, steps: int) -> list[str]:
    """The command-line keys the check sets over the recipe (everything else is the recipe's)."""
    return [
        "--model_name_or_path", model_path,
        "--max_steps", str(steps),
        "--train_file", str(qa),
        "--output_dir", str(out),
        "--visual_cache_dir", str(out.parent / "visual-cache"),
        # the toy clips are drawn shapes, no face a detector finds: the recipes' face pipeline (issue 22's
        # chosen row) would skip every clip; it runs on the CPU before the model and changes no model size
        "--face", "none", "--register", "false", "--magnify", "1",
        # 1 micro-batch per optimiser step: the memory of a step is the recipe's, the time is not x4
        "--gradient_accumulation_steps", "1",
        # no held-out subjects: validation answers by generation, minutes per answer at real size on a CPU
        "--val_fraction", "0", "--eval_strategy", "no", "--final_eval", "false",
        "--save_strategy", "no", "--report_to", "none", "--logging_steps", "1",
        # TrainingArguments refuses bf16: true without a GPU unless told to train on the CPU
        "--use_cpu", "true",
    ]  # fmt: skip


def _fixed_batch(collator: Any, records: list[dict]) -> dict:
    return collator(records[:1])


def _loss_and_logits(model: Any, batch: dict, bf16: bool) -> tuple[float, Any]:
    """Loss and label-position logits of ``batch``; with ``bf16`` under the CPU bf16 autocast that mixed
    precision training runs in (accelerate leaves the trained model's forward wrapped in it, so every
    model compared with it must run the same way)."""
    import torch

    model.eval()
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        out = model(**batch)
    labels = batch["labels"][0] != -100
    return float(out.loss), out.logits[0][labels].float().clone()


def _tensor_files(folder: Path) -> dict[str, Path]:
    from safetensors import safe_open

    files = {}
    for f in sorted(folder.glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as st:
            files.update(dict.fromkeys(st.keys(), f))
    return files


def merged_weights_facts(base: Path, adapter: Path, merged: Path, scaling: float) -> dict[str, Any]:
    """Compare every LoRA-wrapped weight ``merge-adapter`` wrote with the base weight plus the saved
    adapter's delta (``scaling * B @ A`` added in float32, rounded to the weight's dtype: PEFT's merge),
    one tensor at a time from the files."""
    import torch
    from safetensors import safe_open

    base_files, merged_files = _tensor_files(base), _tensor_files(merged)
    modules = changed = missing = 0
    worst_ulp = 0.0
    with safe_open(str(adapter / "adapter_model.safetensors"), framework="pt") as ad:
        for key in ad.keys():  # noqa: SIM118 (safe_open is not iterable)
            if not key.endswith(".lora_A.weight"):
                continue
            name = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight") + ".weight"
            # saved checkpoints keep the hub's names (model.layers..., visual...), the model's differ
            for prefix, saved in (("model.language_model.", "model."), ("model.visual.", "visual.")):
                if name.startswith(prefix) and name not in base_files:
                    name = saved + name.removeprefix(prefix)
            if name not in base_files or name not in merged_files:
                missing += 1
                continue
            modules += 1
            a = ad.get_tensor(key).float()
            b = ad.get_tensor(key.replace(".lora_A.", ".lora_B.")).float()
            with safe_open(str(base_files[name]), framework="pt") as f:
                w = f.get_tensor(name)
            with safe_open(str(merged_files[name]), framework="pt") as f:
                got = f.get_tensor(name)
            w = w.to(got.dtype)  # merge-adapter loads the base in the merge dtype first
            expected = (w.float() + (b @ a) * scaling).to(got.dtype)
            changed += bool((got != w).any())
            ulp = torch.finfo(got.dtype).eps * expected.float().abs().clamp_min(torch.finfo(got.dtype).tiny)
            worst_ulp = max(worst_ulp, float(((got.float() - expected.float()).abs() / ulp).max()))
    return {"modules": modules, "missing": missing, "changed": changed, "max_ulp": worst_ulp}


def _expected_visual_tokens(processor: Any, family: Any, options: Any, visual: Any) -> int:
    """What the recipe's pixel bounds promise for one sample's images and video."""
    from megc_vqa.models.prompting import model_visuals
    from megc_vqa.training.preflight import pixel_bounds

    images, video = model_visuals(visual, options.visual_mode)
    lo, hi = pixel_bounds(processor, options, "image")
    total = sum(family.visual_tokens(im.shape[0], im.shape[1], lo, hi) for im in images)
    if video is not None:
        lo, hi = pixel_bounds(processor, options, "video")
        temporal = int(getattr(processor.video_processor, "temporal_patch_size", 1) or 1)
        total += family.visual_tokens(
            video.shape[1], video.shape[2], lo, hi, frames=len(video), temporal=temporal
        )
    return total


def full_depth_facts(hub_id: str, recipe: Any) -> dict[str, Any]:
    """LoRA targets, trainable parameters and weight memory of the full published architecture, built
    on the meta device (no memory, no weights) and wrapped as the recipe wraps it."""
    import torch
    from peft import LoraConfig, get_peft_model

    from megc_vqa.training.preflight import check_lora_targets, lora_scope_targets, parameter_scope_counts

    m = recipe.model
    family = FAMILIES[published(hub_id).family]
    with torch.device("meta"):
        model = model_class(family.name)._from_config(model_config(hub_id), dtype=torch.bfloat16)
        scopes = lora_scope_targets(family, m.lora_target, m.lora_target_modules)
        counts = check_lora_targets(model, scopes, str(recipe.config_path))
        counts |= parameter_scope_counts(model, family, m.lora_target)  # an MoE's experts
        total = sum(p.numel() for p in model.parameters())
        regex = lora_target_regex(family, m.lora_target)
        quantised = sum(
            mod.weight.numel()
            for n, mod in model.named_modules()
            if isinstance(mod, torch.nn.Linear)
            and not re.search(family.vision_module, n)
            and not n.endswith("lm_head")
        )
        peft = get_peft_model(
            model,
            LoraConfig(
                r=m.lora_r,
                lora_alpha=m.lora_alpha,
                target_modules=regex,
                target_parameters=lora_target_parameters(family, m.lora_target) or None,
                task_type="CAUSAL_LM",
            ),
        )
        trainable = sum(p.numel() for p in peft.parameters() if p.requires_grad)
        stray = [n for n, p in peft.named_parameters() if p.requires_grad and "lora_" not in n]
    bits = 4 if m.load_in_4bit else 8 if m.load_in_8bit else 16
    weight_bytes = (total - quantised) * 2 + quantised * bits / 8
    return {
        "layers": published(hub_id).num_hidden_layers,
        "parameters": total,
        "lora_modules": counts,
        "trainable_params": trainable,
        "stray_trainable": stray[:10],
        "weights_gib": weight_bytes / 2**30,
    }


def check(
    recipe_path: str | Path,
    work: str | Path,
    layers: int | None = TRAIN_LAYERS,
    vision_layers: int | None = TRAIN_VISION_LAYERS,
    steps: int = 2,
    merge: bool = False,
    batch_size: int | None = 1,
    model_path: str | Path | None = None,
    dtype: str = "auto",
) -> dict[str, Any]:
    """Run the real-size check of one recipe (see the module docstring); returns the report.

    batch_size: per-device batch; ``None`` keeps the recipe's (4 samples of ~330 tokens through a 3B
    model is ~10 CPU-minutes per step without bf16 instructions). model_path: check this checkpoint
    instead of the random build of the recipe's (the fast test of this module uses a tiny model).
    dtype: without a GPU, ``auto`` is :func:`cpu_dtype`; ``bfloat16`` or ``float32`` force one (with a
    GPU the recipe's is kept).
    """
    import torch

    from megc_vqa.models.collator import VQACollator
    from megc_vqa.training.config import load_yaml, parse_config
    from megc_vqa.training.data import load_records, make_visual_fn
    from megc_vqa.training.finetune import prompt_options, run_stage, visual_contract
    from megc_vqa.training.preflight import (
        linear_module_names,
        lora_scope_targets,
        lora_wrapped_allowed,
        parameter_scope_counts,
        target_matches,
        visual_token_counts,
    )

    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    return_large_blocks_at_once()
    raw = load_yaml(recipe_path)
    hub_id = raw["model_name_or_path"]
    report: dict[str, Any] = {"recipe": str(recipe_path), "hub_id": hub_id, "steps": steps}
    start = time.perf_counter()
    if model_path is None:
        model_path, report["build_peak_rss_gib"] = build_in_child(hub_id, layers, vision_layers)
        stamp = json.loads((model_path / "megc_vqa_random.json").read_text())
    else:
        model_path = Path(model_path)
        stamp = {"layers": None, "published_layers": None, "parameters": None, "vision_layers": None}
    report.update(
        layers=stamp["layers"],
        published_layers=stamp["published_layers"],
        vision_layers=stamp.get("vision_layers"),
        parameters=stamp["parameters"],
    )
    report["build_s"] = time.perf_counter() - start
    qa = write_synthetic_qa(work / "data", N_CLIPS if batch_size is None else max(N_CLIPS, batch_size))
    out = work / "adapter"
    argv = ["--config", str(recipe_path), *overrides(str(model_path), qa, out, steps)]
    if batch_size is not None:
        argv += ["--per_device_train_batch_size", str(batch_size)]
    # after the batch size: a GRPO step needs a whole group (its batch is the group's answers)
    argv += STAGE_OVERRIDES.get(str(raw.get("stage", "sft")), [])
    if (
        not torch.cuda.is_available()
    ):  # see TRAIN_LAYERS: bf16 matmuls crawl on CPUs without bf16 instructions
        dtype = cpu_dtype() if dtype == "auto" else dtype
        argv += ["--dtype", dtype, "--bf16", str(dtype == "bfloat16").lower()]
    report["overrides"] = argv[2:]
    recipe = parse_config(argv)
    m, d = recipe.model, recipe.data
    report["batch_size"] = recipe.training.per_device_train_batch_size
    report["dtype"] = m.dtype
    if hub_id in __import__("megc_vqa.models.published", fromlist=["PUBLISHED"]).PUBLISHED:
        report["full_depth"] = full_depth_facts(hub_id, recipe)
    if recipe.training.optim.startswith("paged_") and not torch.cuda.is_available():
        report["note"] = f"optim {recipe.training.optim} kept as in the recipe"

    # --- train through the project's trainer; the step time is the trainer's own runtime
    gc.collect()
    rss_before, cpu_before, t0 = rss_gib(), cpu_s(), time.perf_counter()
    result = run_stage(recipe)
    report["train_s"] = time.perf_counter() - t0
    report["step_s"] = float(result.metrics.get("train_runtime", report["train_s"])) / steps
    report["train_cpu_s"] = cpu_s() - cpu_before
    report["train_loss"] = float(result.metrics["train_loss"])
    report["rss_before_train_gib"] = rss_before
    model, processor = result.model, result.processor
    family = __import__("megc_vqa.models.registry", fromlist=["resolve"]).resolve(str(model_path))[1]

    # --- LoRA targets and what trains
    scopes = lora_scope_targets(family, m.lora_target, m.lora_target_modules)
    base = model.get_base_model()
    names = linear_module_names(base)
    report["lora_modules"] = {s: sum(target_matches(n, t) for n in names) for s, t in scopes.items()}
    if not m.lora_target_modules:  # scopes on parameters (an MoE's experts): one wrap per parameter
        report["lora_modules"] |= parameter_scope_counts(base, family, m.lora_target)
    regex = lora_target_regex(family, m.lora_target)
    parameters = [] if m.lora_target_modules else lora_target_parameters(family, m.lora_target)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    report["trainable_params"] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    report["stray_trainable"] = [n for n in trainable if not lora_wrapped_allowed(n, regex, parameters)][:10]
    wrapped = {n.split(".lora_")[0] for n in trainable}
    report["lora_wrapped"] = len(wrapped)

    # --- visual tokens: what the processor made vs what the pixel bounds promise
    options = prompt_options(recipe)
    visual_fn = make_visual_fn(visual_contract(recipe))
    records = load_records(qa)
    collator = VQACollator(processor, visual_fn, options)
    batch = _fixed_batch(collator, records)
    report["visual_tokens"] = visual_token_counts(processor, batch["input_ids"])[0]
    report["visual_tokens_promised"] = _expected_visual_tokens(
        processor, family, options, visual_fn(records[0])
    )
    report["sample_tokens"] = int(batch["input_ids"].shape[1])
    report["pixel_bounds"] = {
        "min_pixels": d.min_pixels,
        "max_pixels": d.max_pixels,
        "image_size": d.image_size,
    }

    # --- loss of a fixed batch now, and after save + reload into a fresh base
    mixed = bool(recipe.training.bf16) and not torch.cuda.is_available()
    loss_trained, logits_trained = _loss_and_logits(model, batch, mixed)
    report["loss_trained"] = loss_trained
    with model.disable_adapter():
        report["loss_without_adapter"], logits_base = _loss_and_logits(model, batch, mixed)
    # how far the adapter moved the logits: what a merge that lost the adapter would be off by
    report["adapter_logits_effect"] = float((logits_trained - logits_base).abs().max())
    del logits_base
    trained = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
    del model, result, base
    release_memory()
    report["rss_after_train_gib"] = current_rss_gib()
    report["peak_rss_train_gib"] = rss_gib()
    from peft import PeftModel

    bits = 4 if m.load_in_4bit else 8 if m.load_in_8bit else None
    fresh = load_model(str(model_path), dtype=m.dtype, bits=bits)
    if bits:
        # Training cast what stays unquantised (embeddings, norms, the vision tower) from bf16 to float32
        # (build_model: peft's prepare_model_for_kbit_training): the fresh base is prepared the same way,
        # so the two models differ in the adapter alone.
        from peft import prepare_model_for_kbit_training

        fresh = prepare_model_for_kbit_training(fresh, use_gradient_checkpointing=False)
    reloaded = PeftModel.from_pretrained(fresh, str(out))
    del fresh
    loss_reloaded, logits_reloaded = _loss_and_logits(reloaded, batch, mixed)
    report["loss_reloaded"] = loss_reloaded
    report["reload_logits_max_diff"] = float((logits_reloaded - logits_trained).abs().max())
    again = {n: p for n, p in reloaded.named_parameters() if "lora_" in n}
    report["adapter_weights_reloaded_equal"] = trained.keys() == again.keys() and all(
        torch.equal(trained[n], again[n].to(trained[n].dtype)) for n in trained
    )
    report["adapter_weights_changed"] = any(
        "lora_B" in n and bool(t.abs().max() > 0) for n, t in trained.items()
    )  # LoRA B starts at zero: non-zero means the optimiser step reached the adapter
    del trained, again
    del reloaded
    release_memory()
    report["peak_rss_reload_gib"] = rss_gib()

    if merge:
        from transformers import AutoModelForImageTextToText

        merged_dir = merge_adapter(out, work / "merged", dtype=m.dtype)
        release_memory()  # the base and adapter merge_adapter loaded
        report["peak_rss_merge_gib"] = rss_gib()
        merged = AutoModelForImageTextToText.from_pretrained(merged_dir, dtype=getattr(torch, m.dtype))
        _, logits_merged = _loss_and_logits(merged, batch, mixed)
        report["merge_logits_max_diff"] = float((logits_merged - logits_reloaded).abs().max())
        report["logits_scale"] = float(logits_reloaded.abs().max())
        report["merge_logits_tolerance"] = merge_tolerance(report)
        report["merged_weights"] = merged_weights_facts(
            Path(model_path), out, merged_dir, m.lora_alpha / m.lora_r
        )
        del merged
        release_memory()
    report["peak_rss_gib"] = rss_gib()
    report["memory_budget_gib"] = MEMORY_BUDGET_GIB
    report["total_s"] = time.perf_counter() - start
    report["total_cpu_s"] = cpu_s()
    report["failures"] = failures(report)
    return report


def merge_tolerance(report: dict[str, Any]) -> float:
    """How far the merged model's logits may be from the adapter's.

    float32: 5% of the logit scale. bf16 (the recipes' dtype): the merge rounds every weight plus its
    small LoRA delta to bf16, which loses much of a 2-step adapter (3B: the adapter moved the logits
    by 0.74 at most, the merged model was 0.33 from it at a scale of 4.5), so there the logits only
    have to be closer to the adapter's than the base's are, and the merge itself is checked weight by
    weight (:func:`merged_weights_facts`, within one bf16 rounding step).
    """
    fp32 = 0.05 * max(1.0, report["logits_scale"])
    if report.get("dtype") != "bfloat16":
        return fp32
    return max(fp32, report.get("adapter_logits_effect", 0.0))


def failures(report: dict[str, Any]) -> list[str]:
    """What the report shows to be wrong (empty when the recipe passes)."""
    bad = []
    full = report.get("full_depth") or {}
    empty = [s for s, n in {**report["lora_modules"], **full.get("lora_modules", {})}.items() if n == 0]
    if full.get("stray_trainable"):
        bad.append(f"at full depth, parameters outside LoRA train: {full['stray_trainable']}")
    if empty:
        bad.append(f"LoRA scope(s) {empty} wrap no module")
    if report["lora_wrapped"] != sum(report["lora_modules"].values()):
        bad.append(f"{report['lora_wrapped']} modules carry LoRA, the scopes select {report['lora_modules']}")
    if report["stray_trainable"]:
        bad.append(f"parameters outside the LoRA targets train: {report['stray_trainable']}")
    if report["visual_tokens"] != report["visual_tokens_promised"]:
        bad.append(
            f"{report['visual_tokens']} visual tokens per sample, the pixel bounds promise {report['visual_tokens_promised']}"
        )
    for key in ("train_loss", "loss_trained", "loss_reloaded"):
        if not math.isfinite(report[key]):
            bad.append(f"{key} is {report[key]}")
    if not report["adapter_weights_changed"]:
        bad.append("the optimiser step left every LoRA B matrix at zero")
    if not report["adapter_weights_reloaded_equal"]:
        bad.append("the reloaded adapter's weights differ from the trained ones")
    if not math.isclose(report["loss_trained"], report["loss_reloaded"], rel_tol=1e-3, abs_tol=1e-3):
        bad.append(
            f"loss {report['loss_trained']} after training, {report['loss_reloaded']} after save + reload"
        )
    if report.get("peak_rss_gib", 0) >= report.get("memory_budget_gib", math.inf):
        bad.append(
            f"peak resident memory {report['peak_rss_gib']:.1f} GiB, over the {report['memory_budget_gib']:.0f} GiB "
            "budget (a 24 GB machine must keep room for the rest)"
        )
    merged = report.get("merged_weights")
    if merged and (merged["missing"] or not merged["changed"] or merged["max_ulp"] > 1.0):
        bad.append(
            f"merge-adapter output: {merged['missing']} LoRA weight(s) missing, {merged['changed']} of "
            f"{merged['modules']} changed by the merge, up to {merged['max_ulp']:.1f} rounding steps from "
            "base + adapter delta"
        )
    if "merge_logits_max_diff" in report and report["merge_logits_max_diff"] > merge_tolerance(report):
        bad.append(f"merged model's logits differ from the adapter's by {report['merge_logits_max_diff']}")
    return bad


def table(reports: list[dict[str, Any]]) -> str:
    """The Markdown table of ``recipes/README.md``."""
    lines = [
        "| recipe | full depth: LoRA modules, trainable, weights | trained here (real width) | tokens/sample (visual) "
        "| step s (CPU s) | peak RSS GiB | loss after 2 steps | save+reload | merged model |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in reports:
        full = r.get("full_depth") or {}
        mods = "+".join(f"{n} {s}" for s, n in full.get("lora_modules", {}).items())
        depth = f"{full.get('parameters', 0) / 1e9:.2f}B, {mods}, {full.get('trainable_params', 0) / 1e6:.1f}M, {full.get('weights_gib', 0):.1f} GiB"
        here = (
            f"{r['layers']} of {r['published_layers']} layers, {r['vision_layers']} vision blocks, "
            f"{r['dtype']}, batch {r['batch_size']}"
        )
        merged = f"max diff {r['merge_logits_max_diff']:.2g}" if "merge_logits_max_diff" in r else "-"
        if "adapter_logits_effect" in r and "merge_logits_max_diff" in r:
            merged += f" (adapter moved them {r['adapter_logits_effect']:.2g})"
        if "merged_weights" in r:
            merged += f"; weights = base + delta ({r['merged_weights']['max_ulp']:.0f} rounding steps off)"
        lines.append(
            f"| `{Path(r['recipe']).parent.name}/{Path(r['recipe']).name}` | {depth} | {here} "
            f"| {r['sample_tokens']} ({r['visual_tokens']} = promised {r['visual_tokens_promised']}) "
            f"| {r['step_s']:.0f} ({r['train_cpu_s'] / r['steps']:.0f}) | {r['peak_rss_gib']:.1f} "
            f"| {r['loss_trained']:.4f} | {'same loss, same weights' if r['adapter_weights_reloaded_equal'] and not r['failures'] else 'FAILED'} "
            f"| {merged} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("recipe", nargs="*", help="recipe YAML (or, with --table, report JSON files)")
    p.add_argument("--work", type=Path, default=Path("runs/realsize/work"))
    p.add_argument(
        "--layers", type=int, default=TRAIN_LAYERS, help="decoder layers trained (real width); 0: all"
    )
    p.add_argument("--vision-layers", type=int, default=TRAIN_VISION_LAYERS, help="vision blocks; 0: all")
    p.add_argument(
        "--steps", type=int, default=2, help="optimiser steps (the recipes warm up: step 1 has lr 0)"
    )
    p.add_argument("--batch-size", type=int, default=1, help="per-device batch; 0: the recipe's")
    p.add_argument("--model", default=None, help="checkpoint to use instead of the random build")
    p.add_argument("--merge", action="store_true", help="also check megc-vqa merge-adapter output")
    p.add_argument(
        "--dtype",
        choices=("auto", "bfloat16", "float32"),
        default="auto",
        help="without a GPU: auto = bfloat16 where the CPU has bf16 instructions, else float32",
    )
    p.add_argument("--json", type=Path, default=None, help="write the report here")
    p.add_argument("--table", action="store_true", help="print the Markdown table of the given report JSONs")
    args = p.parse_args(argv)
    if args.table:
        print(table([json.loads(Path(f).read_text()) for f in args.recipe]))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if len(args.recipe) != 1:
        p.error("give one recipe")
    report = check(
        args.recipe[0],
        args.work,
        args.layers or None,
        args.vision_layers or None,
        args.steps,
        args.merge,
        args.batch_size or None,
        args.model,
        args.dtype,
    )
    text = json.dumps(report, indent=2, default=str)
    if args.json:
        atomic_write_text(args.json, text)
    print(text)
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
