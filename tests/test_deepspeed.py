"""DeepSpeed ZeRO-2 and ZeRO-3 through the shipped accelerate configs, 2 CPU processes, tiny model (slow).

``accelerate launch --config_file recipes/accelerate/deepspeed_zero{2,3}.yaml`` runs as shipped; only
``--num_processes 2`` and ``--mixed_precision no`` (the tiny model trains in float32; bf16 matmuls on this CPU
would also stop the logits matching a float32 single-process run) are overridden on the command line, and
the tiny recipe's ``use_cpu: true`` keeps it on the CPU. DeepSpeed (0.19.8, ``pip install -e .[deepspeed]``,
``make test-deepspeed``) picks its CPU accelerator, whose communication backend is gloo when Intel's oneCCL
bindings are absent; it JIT-builds its shared-memory all-reduce op (a C++ compiler; without one it stays on
plain gloo). The build goes into a temporary ``TORCH_EXTENSIONS_DIR`` here, not the user's cache.

What is compared: two records with answers of the same length, one per rank (per-device batch 1), against
one process with batch 2: the same global batch and the same mean loss per step, so after 2 AdamW steps both
must leave the same LoRA adapter. Its logits on a fixed batch, loaded in plain transformers + peft, match
to ``atol=1e-5, rtol=1e-4``: float32 with the gradient summed in another order (all-reduce of two
per-rank means against one mean over the batch) differs by rounding only, measured at 2e-7 (ZeRO-2 and
ZeRO-3), while the 2 steps move the logits by 0.2 from the base model. As a control the same steps on
rank 0's record alone (what a run whose gradients were never reduced across ranks would save on rank 0)
must NOT match: AdamW's first steps follow the gradient's sign, which one record alone changes.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parent))
import test_multiprocess as tm  # noqa: E402  (the tiny records, recipe arguments and adapter logits)

ROOT = tm.ROOT
TOLERANCE = {"atol": 1e-5, "rtol": 1e-4}

WORKER = """
import json, sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {tests!r})
import torch
from accelerate.state import AcceleratorState
from test_multiprocess import visual_fn
from megc_vqa.training.config import parse_config
from megc_vqa.training.finetune import train
import transformers
seen = {{}}
step = transformers.Trainer.training_step


def training_step(self, model, *args, **kwargs):
    # between steps: ZeRO-3 leaves each rank an empty local tensor per parameter (full size in ds_numel);
    # the saved model at the end is gathered again, so this is looked at during training
    params = list(model.parameters())
    seen.setdefault("local", sum(p.numel() for p in params))
    seen.setdefault("full", sum(getattr(p, "ds_numel", p.numel()) for p in params))
    seen.setdefault("engine", type(model).__name__)
    return step(self, model, *args, **kwargs)


transformers.Trainer.training_step = training_step
recipe = parse_config(sys.argv[1:])
train(recipe, visual_fn=visual_fn)
state = AcceleratorState()
facts = {{
    **seen,
    "world": recipe.training.world_size,
    "rank": recipe.training.process_index,
    "type": state.distributed_type.value,
    "stage": state.deepspeed_plugin.zero_stage,
    "backend": torch.distributed.get_backend(),
}}
# one file per rank: the ranks' printed lines interleave on the shared pipe
with open({report!r} + f"/rank{{facts['rank']}}.json", "w") as f:
    json.dump(facts, f)
"""


def deepspeed_skip_reason() -> str | None:
    try:
        import deepspeed  # noqa: F401
    except Exception as err:
        return (
            f"deepspeed is not importable ({type(err).__name__}: {err}); `pip install -e .[deepspeed]` "
            "or `make test-deepspeed` installs it"
        )
    return None


@pytest.fixture(scope="module")
def qa(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ds-qa") / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in tm.qa_rows()))
    return path


@pytest.fixture(scope="module")
def single_logits(qa, tmp_path_factory):
    """Logits of the single-process adapter (global batch 2) and of the base model."""
    out = tmp_path_factory.mktemp("ds-single") / "single"
    tm.run_single(qa, out)
    return tm.adapter_logits(out, qa), tm.adapter_logits_base(qa)


@pytest.fixture(scope="module")
def extensions_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("torch-extensions")


def launch(stage: str, qa: Path, out: Path, tmp_path: Path, extensions: Path, port: int):
    worker, report = tmp_path / "worker.py", tmp_path / "ranks"
    report.mkdir()
    worker.write_text(WORKER.format(root=str(ROOT), tests=str(ROOT / "tests"), report=str(report)))
    accelerate = Path(sys.executable).with_name("accelerate")
    cmd = [
        # no --cpu: with it accelerate quietly starts one process; the recipe's use_cpu keeps it on the CPU
        str(accelerate), "launch", "--config_file", str(ROOT / f"recipes/accelerate/{stage}.yaml"),
        "--num_processes", "2", "--mixed_precision", "no", "--main_process_port", str(port),
        str(worker), *tm.recipe_args(qa, out, 1),
    ]  # fmt: skip
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "TORCH_EXTENSIONS_DIR": str(extensions),
    }
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=1500, cwd=ROOT)


@pytest.mark.slow
@pytest.mark.parametrize("stage", ["deepspeed_zero2", "deepspeed_zero3"])
def test_zero_two_cpu_processes_match_one(stage, qa, single_logits, extensions_dir, tmp_path):
    reason = deepspeed_skip_reason()
    if reason:
        pytest.skip(reason)
    out = tmp_path / stage
    port = 29552 + int(stage[-1])
    proc = launch(stage, qa, out, tmp_path, extensions_dir, port)
    assert proc.returncode == 0, (proc.stdout[-2000:], proc.stderr[-4000:])
    ranks = [json.loads((tmp_path / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    for rank, facts in enumerate(ranks):
        assert facts["world"] == 2 and facts["rank"] == rank, facts
        assert facts["type"] == "DEEPSPEED" and facts["stage"] == int(stage[-1]), facts
        assert facts["backend"] == "gloo", facts  # DeepSpeed's CPU accelerator without oneCCL
        assert facts["engine"] == "DeepSpeedEngine", facts
        # ZeRO-3 shards the parameters themselves (none left whole on a rank); ZeRO-2 keeps them whole
        sharded = facts["local"] < facts["full"] / 2
        assert sharded if stage.endswith("3") else facts["local"] == facts["full"], facts
    assert (out / "adapter_model.safetensors").is_file()

    expected, base = single_logits
    assert not torch.allclose(expected, base, atol=0.01)  # the 2 steps did move the model
    got = tm.adapter_logits(out, qa)
    torch.testing.assert_close(got, expected, **TOLERANCE)


@pytest.mark.slow
def test_rank_zero_alone_does_not_match(qa, single_logits, tmp_path):
    """The control the tolerance must separate: rank 0's record alone, batch 1, the same 2 steps."""
    first = tmp_path / "first.jsonl"
    first.write_text(qa.read_text().splitlines(keepends=True)[0])
    out = tmp_path / "alone"
    from megc_vqa.training.config import parse_config
    from megc_vqa.training.finetune import train

    train(parse_config(tm.recipe_args(first, out, 1)), visual_fn=tm.visual_fn)
    expected, _ = single_logits
    got = tm.adapter_logits(out, qa)
    assert not torch.allclose(got, expected, **TOLERANCE)


# -- vLLM tensor parallelism for answering (run_vqa --tensor-parallel-size), fast ---------------------------


@pytest.mark.parametrize(
    ("size", "backend", "message"),
    [
        (0, "vllm", "whole number of GPUs, 1 or more"),
        (-2, "vllm", "whole number of GPUs, 1 or more"),
        (True, "vllm", "whole number of GPUs, 1 or more"),
        (2, "transformers", "not --backend transformers; add --backend vllm"),
    ],
)
def test_tensor_parallel_size_is_refused_where_it_cannot_apply(size, backend, message, tmp_path):
    from megc_vqa.answering.run_vqa import RunError, run_vqa

    with pytest.raises(RunError, match=f"--tensor-parallel-size {size!r}.*{message}"):
        run_vqa(
            [tmp_path / "none.jsonl"],
            tmp_path,
            "m",
            tmp_path / "o",
            backend=backend,
            tensor_parallel_size=size,
        )


def test_tensor_parallel_size_is_refused_with_a_loaded_engine(tmp_path):
    from megc_vqa.answering.run_vqa import RunError, check_tensor_parallel

    check_tensor_parallel(1, "transformers")
    check_tensor_parallel(4, "vllm")
    with pytest.raises(RunError, match="an engine that is already loaded"):
        check_tensor_parallel(2, "vllm", engine=object())


def test_eval_script_passes_tensor_parallel_size_to_vllm(monkeypatch, tmp_path):
    """``eval/run_vqa.py --backend vllm --tensor-parallel-size 4`` reaches ``vllm.LLM`` through VllmEngine."""
    import importlib.util

    import megc_vqa.answering.vllm_backend as vb

    questions = tmp_path / "me_vqa_samm_test_to_answer.jsonl"
    row = {
        "video_id": "samm_test_SAMM-1_1",
        "video": "SAMM-1",
        "question": "What is the coarse expression class?",
    }
    questions.write_text(json.dumps({**row, "answer": ""}) + "\n")
    (tmp_path / "frames" / "SAMM-1").mkdir(parents=True)
    seen: dict = {}

    class Started(Exception):
        pass

    def fake_engine(model, adapter=None, options=None, contract=None, **llm_kwargs):
        seen.update(llm_kwargs)
        raise Started

    monkeypatch.setattr(vb, "vllm_available", lambda: True)
    monkeypatch.setattr(vb, "VllmEngine", fake_engine)
    spec = importlib.util.spec_from_file_location("eval_run_vqa_tp", ROOT / "eval" / "run_vqa.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--questions", str(questions), "--frames-root", str(tmp_path / "frames"), "--model", "tiny-qwen2.5-vl",
            "--out", str(tmp_path / "o"), "--backend", "vllm", "--tensor-parallel-size", "4", "--quiet"]  # fmt: skip
    assert script.main(args) != 0  # the fake engine stops the run where vLLM would start
    assert seen == {"tensor_parallel_size": 4}
