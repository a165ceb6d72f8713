"""The shipped multi-GPU accelerate configs, run with 2 CPU processes (gloo) on the tiny model (slow).

``recipes/accelerate/fsdp.yaml`` is launched as shipped; only ``--num_processes 2`` and
``--mixed_precision no`` (the tiny model trains in float32) are overridden on the ``accelerate launch``
command line, and the tiny recipe's ``use_cpu: true`` keeps it on the CPU. accelerate (1.15) applies
FSDP only to GPU-like devices, so on the CPU the two processes train data-parallel over gloo: the test
pins that, so a future accelerate that shards on the CPU shows up here. Two records with answers of the same length make one global batch of 2
per step, so the 2-process run must leave the adapter a single-process run of the same steps leaves:
its logits on a fixed batch are compared after loading both in plain transformers + peft.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from tests.helpers import clip_visual_fn, write_train_worker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

# The worker also reports which distributed type accelerate chose.
WORKER_AFTER = """
from accelerate.state import PartialState
print("TYPE", PartialState().distributed_type.value, flush=True)
"""
visual_fn = clip_visual_fn(fps=50.0)


def qa_rows() -> list[dict]:
    from megc_vqa.qa import templates as t

    return [
        {
            "id": f"casme2_s{s}_EP01_1",
            "dataset": "casme2",
            "subject": f"s{s}",
            "image_id": f"s{s}_EP01",
            "filename": "EP01",
            "question": t.COARSE_QUESTION,
            "answer": "positive",  # same length: the mean of per-rank means is the global mean
            "source": "/nowhere",
            "fps": 200.0,
            "onset": 0,
            "apex": 4,
            "offset": 8,
        }
        for s in range(2)
    ]


def recipe_args(qa: Path, out: Path, batch: int) -> list[str]:
    return [
        "--config", str(ROOT / "recipes/tiny/lora.yaml"), "--train_file", str(qa), "--output_dir", str(out),
        "--max_steps", "2", "--per_device_train_batch_size", str(batch), "--val_fraction", "0",
        "--final_eval", "false", "--report_to", "none", "--save_strategy", "no", "--disable_tqdm", "true",
    ]  # fmt: skip


def adapter_logits(adapter: Path, qa: Path):
    """Logits of a fixed batch from ``adapter`` loaded in plain transformers + peft."""
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from megc_vqa.models.collator import VQACollator
    from megc_vqa.models.registry import resolve
    from megc_vqa.training.data import load_records

    base_path, _ = resolve("tiny-qwen2.5-vl")
    model = PeftModel.from_pretrained(
        AutoModelForImageTextToText.from_pretrained(base_path), str(adapter)
    ).eval()
    processor = AutoProcessor.from_pretrained(base_path)
    batch = VQACollator(processor, visual_fn)(load_records(qa))
    with torch.inference_mode():
        return model(**batch).logits


@pytest.fixture()
def qa(tmp_path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in qa_rows()))
    return path


def run_single(qa: Path, out: Path) -> None:
    from megc_vqa.training.config import parse_config
    from megc_vqa.training.finetune import train

    train(parse_config(recipe_args(qa, out, 2)), visual_fn=visual_fn)


def launch(config: Path, qa: Path, out: Path, tmp_path: Path, port: int, *extra: str):
    worker = write_train_worker(tmp_path / "worker.py", "tests.test_multiprocess:visual_fn", WORKER_AFTER)
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        # no --cpu: with it accelerate quietly starts one process; the recipe's use_cpu keeps it on the CPU
        str(accelerate), "launch", "--config_file", str(config), "--num_processes", "2",
        "--mixed_precision", "no", "--main_process_port", str(port), *extra,
        str(worker), *recipe_args(qa, out, 1),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=ROOT)


@pytest.mark.slow
def test_fsdp_config_two_cpu_processes_match_one(qa, tmp_path):
    single, fsdp = tmp_path / "single", tmp_path / "fsdp"
    run_single(qa, single)
    proc = launch(ROOT / "recipes/accelerate/fsdp.yaml", qa, fsdp, tmp_path, 29541)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    ranks = sorted(line for line in proc.stdout.splitlines() if line.startswith("WORLD"))
    assert ranks == ["WORLD 2 RANK 0", "WORLD 2 RANK 1"]
    # accelerate 1.x turns FSDP on only for GPU-like devices: on the CPU the config's processes train
    # data-parallel over gloo (MULTI_CPU). The sharding itself needs a GPU run (benchmarks/README.md).
    assert {line for line in proc.stdout.splitlines() if line.startswith("TYPE")} == {"TYPE MULTI_CPU"}
    assert (fsdp / "adapter_model.safetensors").is_file()
    expected, got = adapter_logits(single, qa), adapter_logits(fsdp, qa)
    base = adapter_logits_base(qa)
    assert not torch.allclose(expected, base, atol=1e-6)  # the steps did change the model
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def adapter_logits_base(qa: Path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from megc_vqa.models.collator import VQACollator
    from megc_vqa.models.registry import resolve
    from megc_vqa.training.data import load_records

    base_path, _ = resolve("tiny-qwen2.5-vl")
    model = AutoModelForImageTextToText.from_pretrained(base_path).eval()
    batch = VQACollator(AutoProcessor.from_pretrained(base_path), visual_fn)(load_records(qa))
    with torch.inference_mode():
        return model(**batch).logits
