"""LoRA bf16 vs QLoRA training throughput on the real Qwen2.5-VL-3B architecture (GPU; no download).

The model is randomly initialised from the published Qwen2.5-VL-3B-Instruct configuration
(``megc_vqa.models.published``), so nothing is fetched. Inputs are built by hand at the default recipe's visual load
(``recipes/qwen2.5-vl-3b/lora.yaml``: onset, apex, offset + flow = 4 images of 224x224 px -> 64 visual
tokens each) plus a question/answer of typical length, with ``mm_token_type_ids`` so M-RoPE is 3-D.

For each variant it runs warm-up steps, then timed steps of forward + backward + AdamW on the LoRA
weights (activation checkpointing on, as in the recipes) and reports the median step time, samples/s,
tokens/s, peak GPU memory and model-FLOPs utilisation. MFU counts 2*N FLOPs per token forward for the
language model plus 2*N backward (its weights are frozen, so no weight gradients) and 2*N forward for
the frozen vision tower per patch; attention FLOPs and LoRA's own are left out. ``--with-7b`` adds the
peak memory of 7B QLoRA. QLoRA needs the weights quantised at load time, so the random model is saved
once to ``--workdir`` and loaded back with a bitsandbytes config.

    python benchmarks/train_gpu.py                    # H100: ~5 min
    python benchmarks/train_gpu.py --with-7b --out runs/bench/train_gpu.json
    python benchmarks/train_gpu.py --scale tiny --device cpu --steps 2   # smoke test of the script

Last line: ``ratio=<LoRA bf16 samples/s / QLoRA samples/s>``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(REPO))

HUB_IDS = {"3b": "Qwen/Qwen2.5-VL-3B-Instruct", "7b": "Qwen/Qwen2.5-VL-7B-Instruct"}


def suite_config(scale: str):
    """The transformers config of ``scale``: the published one (``megc_vqa.models.published``) or tiny."""
    from transformers import Qwen2_5_VLConfig

    from megc_vqa.models.families.base import TINY_TEXT
    from megc_vqa.models.families.qwen2_5_vl import TINY_QWEN2_5_VISION, TINY_ROPE
    from megc_vqa.models.published import model_config, published

    if scale in HUB_IDS:
        return model_config(HUB_IDS[scale])
    # A CPU smoke test of the script: the 3B configuration shrunk to the family's tiny model (2 layers,
    # hidden 64), with the published token ids.
    data = published(HUB_IDS["3b"]).config
    return Qwen2_5_VLConfig(
        text_config={**data["text_config"], **TINY_TEXT, "rope_parameters": dict(TINY_ROPE)},
        vision_config={**data["vision_config"], **TINY_QWEN2_5_VISION},
        tie_word_embeddings=True,
    )


IMAGE_TOKEN, VISION_START, VISION_END = 151655, 151652, 151653


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--scale", choices=["3b", "tiny"], default="3b", help="tiny: a CPU smoke test of the script"
    )
    p.add_argument("--device", default="cuda")
    p.add_argument("--batch-size", type=int, default=4, help="per-device batch (recipe default 4)")
    p.add_argument("--images", type=int, default=4, help="images per sample (oao+flow = 4)")
    p.add_argument("--image-px", type=int, default=224, help="image side in pixels (max_pixels = side^2)")
    p.add_argument("--text-tokens", type=int, default=60, help="chat template + question tokens")
    p.add_argument("--answer-tokens", type=int, default=12, help="labelled answer tokens")
    p.add_argument("--steps", type=int, default=10, help="timed steps per variant")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU (H100 SXM)")
    p.add_argument("--with-7b", action="store_true", help="also measure 7B QLoRA peak memory")
    p.add_argument("--workdir", type=Path, default=None, help="where the random checkpoints are saved")
    p.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    return p.parse_args(argv)


def make_batch(args, config, device):
    """Hand-built model inputs: [text][vision_start, image_pad*64, vision_end]*images[text][answer]."""
    import torch

    patch, merge = config.vision_config.patch_size, config.vision_config.spatial_merge_size
    grid = args.image_px // patch
    tokens_per_image = (grid // merge) ** 2
    g = torch.Generator().manual_seed(0)
    vocab = min(config.text_config.vocab_size, 150000)
    rows, types = [], []
    for _ in range(args.batch_size):
        ids, kinds = [], []
        for _ in range(args.images):
            ids += [VISION_START] + [IMAGE_TOKEN] * tokens_per_image + [VISION_END]
            kinds += [0] + [1] * tokens_per_image + [0]
        text = torch.randint(0, vocab, (args.text_tokens + args.answer_tokens,), generator=g).tolist()
        ids, kinds = (
            text[: args.text_tokens // 2] + ids + text[args.text_tokens // 2 :],
            [0] * (args.text_tokens // 2) + kinds + [0] * (len(text) - args.text_tokens // 2),
        )
        rows.append(ids)
        types.append(kinds)
    input_ids = torch.tensor(rows)
    labels = torch.full_like(input_ids, -100)
    labels[:, -args.answer_tokens :] = input_ids[:, -args.answer_tokens :]
    n_images = args.batch_size * args.images
    patch_dim = 3 * config.vision_config.temporal_patch_size * patch * patch
    batch = {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": torch.tensor(types),
        "labels": labels,
        "pixel_values": torch.randn(n_images * grid * grid, patch_dim, generator=g),
        "image_grid_thw": torch.tensor([[1, grid, grid]] * n_images),
    }
    return {k: v.to(device) for k, v in batch.items()}, n_images * grid * grid


def build(scale: str, bits: int | None, workdir: Path, device: str, lora_r: int):
    """A random model of ``scale`` (saved once, reloaded 4-bit for QLoRA) wrapped with LoRA."""
    import torch
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import Qwen2_5_VLForConditionalGeneration

    from megc_vqa.models.registry import FAMILIES, lora_target_regex, quantization_config

    config = suite_config(scale)
    dtype = torch.bfloat16 if device != "cpu" else torch.float32
    if bits is None:
        torch.manual_seed(0)
        with torch.device(device):
            model = Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype)
    else:
        path = workdir / f"qwen2.5-vl-{scale}-random"
        if not (path / "config.json").is_file():
            torch.manual_seed(0)
            Qwen2_5_VLForConditionalGeneration._from_config(config, dtype=dtype).save_pretrained(path)
        quant = quantization_config(4, dtype)  # the recipes' QLoRA settings
        model = Qwen2_5_VLForConditionalGeneration.from_pretrained(
            path, dtype=dtype, quantization_config=quant, device_map={"": device}
        )
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=True)
    model.config.use_cache = False
    model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    lora = LoraConfig(
        r=lora_r,
        lora_alpha=2 * lora_r,
        lora_dropout=0.05,
        target_modules=lora_target_regex(FAMILIES["qwen2_5_vl"], "language"),
    )
    return get_peft_model(model, lora), config


def run_variant(name: str, args, workdir: Path, scale: str, bits: int | None, timed: bool = True) -> dict:
    import torch

    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    model, config = build(scale, bits, workdir, args.device, args.lora_r)
    model.train()
    batch, n_patches = make_batch(args, config, args.device)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    times = []
    for step in range(args.warmup + (args.steps if timed else 1)):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    step_s = statistics.median(times)
    tokens = batch["input_ids"].numel()
    base = model.get_base_model()
    n_vision = sum(p.numel() for p in base.model.visual.parameters())
    n_lm = sum(p.numel() for n, p in base.named_parameters() if "visual" not in n and "lora_" not in n)
    if bits:  # 4-bit weights are stored two per byte
        n_lm = sum(
            (p.numel() * 2 if p.dtype == torch.uint8 else p.numel())
            for n, p in base.named_parameters()
            if "visual" not in n and "lora_" not in n
        )
    flops = 4 * n_lm * tokens + 2 * n_vision * n_patches
    result = {
        "variant": name,
        "step_s": step_s,
        "samples_per_s": args.batch_size / step_s,
        "tokens_per_s": tokens / step_s,
        "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
        "mfu": flops / step_s / (args.peak_tflops * 1e12),
        "loss": float(loss.detach()),
        "tokens_per_sample": tokens // args.batch_size,
    }
    del model, optimizer, batch
    if cuda:
        torch.cuda.empty_cache()
    return result


def main(argv: list[str] | None = None) -> int:
    import torch

    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(
            "no CUDA device: run on a GPU machine, or --scale tiny --device cpu for a smoke test",
            file=sys.stderr,
        )
        return 2
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="megc-train-gpu-"))
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(f"device: {device_name}; Qwen2.5-VL-{args.scale} random init; batch {args.batch_size} x "
          f"{args.images} images of {args.image_px}px; {args.steps} timed steps after {args.warmup} warm-up")  # fmt: skip
    results = [
        run_variant("lora-bf16", args, workdir, args.scale, None),
        run_variant("qlora-nf4", args, workdir, args.scale, 4),
    ]
    if args.with_7b and args.scale == "3b":
        results.append(run_variant("7b-qlora-nf4", args, workdir, "7b", 4, timed=False))
    print(f"{'variant':<14}{'step s':>9}{'samples/s':>11}{'tokens/s':>10}{'peak GiB':>10}{'MFU':>7}")
    for r in results:
        print(f"{r['variant']:<14}{r['step_s']:>9.3f}{r['samples_per_s']:>11.2f}{r['tokens_per_s']:>10.0f}"
              f"{r['peak_mem_gib']:>10.1f}{r['mfu']:>7.1%}")  # fmt: skip
    ratio = results[0]["samples_per_s"] / results[1]["samples_per_s"]
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"device": device_name, "args": vars(args), "results": results}, indent=2,
                                       default=str))  # fmt: skip
    print(f"ratio={ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
