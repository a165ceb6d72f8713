"""float32 against bfloat16 on this CPU: real-width Qwen2.5-VL-3B decoder layers, forward and backward.

Why the real-size check (``megc_vqa.training.realsize``) trains in float32 without a GPU: on a CPU
without bf16 instructions (AVX2 only, like this project's test machine) PyTorch's bf16 kernels are far
slower than its float32 ones. Both dtypes run side by side in one process, alternating, and the
medians and their ratio are printed.

    python benchmarks/cpu_dtype.py [--layers 1] [--tokens 64] [--repeats 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--layers", type=int, default=1, help="decoder layers of the real 3B width")
    p.add_argument("--tokens", type=int, default=64, help="sequence length")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per dtype (after one warm-up)")
    p.add_argument("--threads", type=int, default=2, help="torch threads")
    args = p.parse_args(argv)

    import torch
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLTextModel

    from megc_vqa.models.published import model_config

    torch.set_num_threads(args.threads)
    text = model_config("Qwen/Qwen2.5-VL-3B-Instruct").text_config
    text.num_hidden_layers = args.layers
    text._attn_implementation = "sdpa"
    torch.manual_seed(0)
    models = {
        dt: Qwen2_5_VLTextModel(text).to(dt).requires_grad_(False) for dt in (torch.float32, torch.bfloat16)
    }

    def step(dtype: torch.dtype) -> float:
        x = torch.randn(1, args.tokens, text.hidden_size, dtype=dtype, requires_grad=True)
        start = time.perf_counter()
        models[dtype](inputs_embeds=x).last_hidden_state.float().sum().backward()
        return time.perf_counter() - start

    times: dict[torch.dtype, list[float]] = {dt: [] for dt in models}
    for dt in models:
        step(dt)  # warm-up
    for _ in range(args.repeats):
        for dt in models:
            times[dt].append(step(dt))
    fp32, bf16 = (statistics.median(times[dt]) for dt in models)
    result = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "layers": args.layers,
        "tokens": args.tokens,
        "threads": args.threads,
        "float32_s": fp32,
        "bfloat16_s": bf16,
        "bf16_over_fp32": bf16 / fp32,
    }
    print(
        f"{args.layers} real-width 3B layer(s), {args.tokens} tokens, forward+backward, median of "
        f"{args.repeats}: float32 {fp32:.3f} s, bfloat16 {bf16:.3f} s, ratio {bf16 / fp32:.1f}x "
        f"({result['cpu_capability']})"
    )
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
