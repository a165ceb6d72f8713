"""Recipes, subject splits and short LoRA / QLoRA runs of the tiny model on CPU."""

from __future__ import annotations

import json
import math
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from megc_vqa.fileio import write_jsonl  # noqa: E402
from megc_vqa.qa import templates as t  # noqa: E402
from megc_vqa.training.config import ConfigError, load_yaml, parse_config  # noqa: E402
from megc_vqa.training.split import loso_folds, select_fold, split_by_subject, subject_key  # noqa: E402
from tests.helpers import visual_fn, write_train_worker  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
COARSE = ("negative", "positive", "surprise")


def make_records(n_subjects: int = 6, clips: int = 3, datasets=("casme2", "samm")) -> list[dict]:
    rows = []
    for dataset in datasets:
        for s in range(n_subjects):
            subject = f"sub{s:02d}" if dataset == "casme2" else str(s + 6)
            for c in range(clips):
                coarse = COARSE[(s + c) % 3]
                image_id = f"{subject}_EP{c:02d}"
                for k, (q, a) in enumerate([(t.COARSE_QUESTION, coarse), (t.FINE_QUESTION, "happiness")], 1):
                    rows.append(
                        {
                            "id": f"{dataset}_{image_id}_{k}",
                            "dataset": dataset,
                            "image_id": image_id,
                            "subject": subject,
                            "filename": f"EP{c:02d}",
                            "question": q,
                            "answer": a,
                            "source": f"/frames/{dataset}/{image_id}",
                            "fps": 200.0,
                            "onset": 0,
                            "apex": 4,
                            "offset": 8,
                        }
                    )
    return rows


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("qa") / "qa.jsonl", make_records())


def tiny_args(qa_file: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--config", str(ROOT / "recipes/tiny/lora.yaml"),
        "--train_file", str(qa_file),
        "--output_dir", str(out),
        "--report_to", "none",
        "--disable_tqdm", "true",
        *extra,
    ]  # fmt: skip


# --- recipes -------------------------------------------------------------------------------------


def test_every_recipe_parses(qa_file):
    recipes = sorted(
        p for p in (ROOT / "recipes").rglob("*.yaml") if p.parent.name not in ("accelerate", "spotting")
    )
    # 9, then recipes/internvl, glm4v and qwen3_vl_moe (issue 23) and recipes/tiny/realistic.yaml (issue 22)
    assert len(recipes) == 13, recipes
    for path in recipes:
        header = path.read_text().splitlines()[:12]
        assert any("recipes/finetune.py" in line for line in header if line.startswith("#")), path
        # GPU recipes train in bf16, which TrainingArguments refuses on a machine without a GPU.
        cpu = [] if torch.cuda.is_available() else ["--bf16", "false"]
        recipe = parse_config(["--config", str(path), "--train_file", str(qa_file), *cpu])
        assert recipe.model.model_name_or_path
        assert recipe.training.output_dir.startswith("runs/")
    qlora = load_yaml(ROOT / "recipes/qwen2.5-vl-3b/qlora.yaml")
    assert qlora["load_in_4bit"] and qlora["use_peft"] and qlora["bf16"]


def test_every_accelerate_config_loads():
    from accelerate.commands.config.config_args import ClusterConfig

    configs = sorted((ROOT / "recipes/accelerate").glob("*.yaml"))
    assert [p.stem for p in configs] == ["ddp", "deepspeed_zero2", "deepspeed_zero3", "fsdp", "single_gpu"]
    kinds = {p.stem: ClusterConfig.from_yaml_file(str(p)).distributed_type.value for p in configs}
    assert kinds == {
        "ddp": "MULTI_GPU",
        "deepspeed_zero2": "DEEPSPEED",
        "deepspeed_zero3": "DEEPSPEED",
        "fsdp": "FSDP",
        "single_gpu": "NO",
    }


def test_command_line_overrides_the_recipe(qa_file, tmp_path):
    recipe = parse_config(tiny_args(qa_file, tmp_path / "o", "--max_steps", "2", "--learning_rate", "0.5"))
    assert recipe.training.max_steps == 2
    assert recipe.training.learning_rate == 0.5
    assert recipe.training.output_dir == str(tmp_path / "o")
    assert recipe.model.model_name_or_path == "tiny-qwen2.5-vl"  # from the recipe
    assert recipe.training.remove_unused_columns is False


def test_unknown_recipe_key_is_an_error_that_suggests_the_right_one(qa_file, tmp_path):
    bad = tmp_path / "typo.yaml"
    bad.write_text(f"model_name_or_path: tiny-qwen2.5-vl\ntrain_file: {qa_file}\nlearning_rat: 1.0e-4\n")
    with pytest.raises(ConfigError, match=r"typo.yaml.*'learning_rat'.*learning_rate"):
        load_yaml(bad)
    with pytest.raises(ConfigError, match="learning_rate"):
        parse_config(["--config", str(bad)])


def test_unknown_command_line_key_is_an_error(qa_file, tmp_path):
    with pytest.raises(ConfigError, match=r"command line.*'max_step'.*max_steps"):
        parse_config(tiny_args(qa_file, tmp_path, "--max_step", "2"))


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train_file", "/nonexistent/qa.jsonl"], "does not exist"),
        (["--lora_target", "language+decoder"], "unknown LoRA scope"),
        (["--load_in_4bit", "true", "--load_in_8bit", "true"], "one of load_in_4bit"),
        (["--question_types", "coarse", "colour"], "unknown question type"),
        (["--val_subjects", "sub01", "--loso_fold", "0"], "only one of"),
        (["--visual_spec", "oao+flwo"], "visual_spec"),
        (["--balance_classes", "emotion"], "unknown question type"),
        (["--balance_classes", "fine", "--balance_cap", "0"], "balance_cap must be at least 1"),
    ],
)
def test_bad_settings_say_what_to_change(qa_file, tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(tiny_args(qa_file, tmp_path, *extra))


def test_a_recipe_value_outside_its_choices_is_an_error(qa_file, tmp_path):
    """The command line checks choices itself; a YAML value must be checked too."""
    recipe = tmp_path / "r.yaml"
    recipe.write_text((ROOT / "recipes" / "tiny" / "lora.yaml").read_text() + "\nloss_weighting: answers\n")
    with pytest.raises(ConfigError, match="loss_weighting must be one of token, answer"):
        parse_config(["--config", str(recipe), "--train_file", str(qa_file), "--output_dir", str(tmp_path)])


def test_answer_mean_loss_weighs_every_answer_the_same():
    from types import SimpleNamespace

    from megc_vqa.training.losses import answer_mean_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.full((2, 6), -100)
    labels[0, 1:6] = torch.tensor([1, 2, 3, 4, 5])  # a five-token answer
    labels[1, 5] = 7  # a one-token answer
    token = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:], reduction="none")
    mask = labels[:, 1:] != -100
    per_answer = (token * mask).sum(1) / mask.sum(1)
    loss = answer_mean_loss(SimpleNamespace(logits=logits), labels)
    assert loss == pytest.approx(float(per_answer.mean()), rel=1e-6)
    assert loss != pytest.approx(float(token[mask].mean()), rel=1e-3)  # not the token mean
    labels[1] = -100  # a row without an answer does not count
    assert answer_mean_loss(SimpleNamespace(logits=logits), labels) == pytest.approx(float(per_answer[0]))


def test_balance_classes_repeats_the_clips_of_rare_classes_per_dataset():
    from types import SimpleNamespace

    from megc_vqa.training.data import balance_classes

    def clip(dataset, n, fine):
        return [
            SimpleNamespace(dataset=dataset, image_id=f"c{n}", question_type=q, answer=a)
            for q, a in (("fine", fine), ("coarse", "negative"), ("au", "dimpler"))
        ]

    # casme3: 10 happiness, 5 disgust, 1 fear; samm: 2 happiness, 2 contempt (balanced); smic: no fine.
    rows = [r for i in range(10) for r in clip("casme3", i, "happiness")]
    rows += [r for i in range(10, 15) for r in clip("casme3", i, "disgust")] + clip("casme3", 15, "fear")
    rows += clip("samm", 0, "happiness") + clip("samm", 1, "happiness") + clip("samm", 2, "contempt")
    rows += clip("samm", 3, "contempt")
    rows += [SimpleNamespace(dataset="smic", image_id="s0", question_type="coarse", answer="positive")]
    out = balance_classes(rows, "fine", cap=4)
    times = Counter((r.dataset, r.image_id) for r in out)
    assert times[("casme3", "c0")] == 3  # per clip: each question of it
    assert times[("casme3", "c10")] == 6  # 10 / 5 = 2 repeats of 3 questions
    assert times[("casme3", "c15")] == 12  # 10 / 1 = 10, capped at 4
    assert times[("samm", "c0")] == times[("samm", "c2")] == 3  # a balanced dataset is left alone
    assert times[("smic", "s0")] == 1
    fine = Counter(r.answer for r in out if r.question_type == "fine" and r.dataset == "casme3")
    assert fine == {"happiness": 10, "disgust": 10, "fear": 4}
    assert balance_classes(rows, "fine", cap=1) == rows


# --- splits --------------------------------------------------------------------------------------


def test_validation_split_is_subject_disjoint_and_covers_each_dataset():
    records = make_records(n_subjects=10)
    train, val = split_by_subject(records, val_fraction=0.2, seed=3)
    assert {subject_key(r) for r in train}.isdisjoint({subject_key(r) for r in val})
    assert len(train) + len(val) == len(records)
    held = {subject_key(r) for r in val}
    assert {d for d, _ in held} == {"casme2", "samm"}
    assert len(held) == 4  # ceil(0.2 * 10) per dataset
    assert split_by_subject(records, 0.2, seed=3) == (train, val)
    assert split_by_subject(records, 0.2, seed=4)[1] != val


def test_named_validation_subjects_and_their_errors():
    records = make_records()
    _, val = split_by_subject(records, val_subjects=["casme2/sub01", "7"])
    assert {subject_key(r) for r in val} == {("casme2", "sub01"), ("samm", "7")}
    with pytest.raises(ValueError, match="sub99"):
        split_by_subject(records, val_subjects=["sub99"])


def test_leave_one_subject_out_folds():
    records = make_records(n_subjects=4)
    folds = loso_folds(records)
    assert len(folds) == 8
    assert sorted(f.held_out for f in folds) == sorted({subject_key(r) for r in records})
    for fold in folds:
        assert {subject_key(r) for r in fold.val} == {fold.held_out}
        assert fold.held_out not in {subject_key(r) for r in fold.train}
        assert len(fold.train) + len(fold.val) == len(records)
    assert select_fold(records, "samm/7").held_out == ("samm", "7")
    assert select_fold(records, "3") == folds[3]
    with pytest.raises(ValueError, match="out of range"):
        select_fold(records, "8")


# --- two LoRA steps --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lora_run(qa_file, tmp_path_factory):
    from megc_vqa.training.finetune import train

    out = tmp_path_factory.mktemp("lora") / "out"
    recipe = parse_config(
        tiny_args(qa_file, out, "--max_steps", "2", "--save_steps", "1", "--save_total_limit", "3")
    )
    return recipe, train(recipe, visual_fn=visual_fn)


def base_parameters(model) -> dict[str, torch.Tensor]:
    return {
        n.replace("base_model.model.", "").replace(".base_layer", ""): p.detach().clone()
        for n, p in model.named_parameters()
        if "lora_" not in n
    }


def test_two_lora_steps_train_the_adapter_only(lora_run):
    from megc_vqa.models.registry import load_model

    _, result = lora_run
    assert math.isfinite(result.metrics["train_loss"])
    lora_b = [p for n, p in result.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero
    trained = base_parameters(result.model)
    fresh = dict(load_model("tiny-qwen2.5-vl", dtype="float32").named_parameters())
    assert set(trained) == set(fresh)
    assert all(torch.equal(trained[n], fresh[n]) for n in fresh)


def test_adapter_is_saved_in_peft_format_and_reloads(lora_run):
    from megc_vqa.models.collator import VQACollator
    from megc_vqa.models.registry import load_for_inference
    from megc_vqa.training.finetune import load_training_meta, prompt_options

    recipe, result = lora_run
    out = result.output_dir
    assert (out / "adapter_model.safetensors").is_file()
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["base_model_name_or_path"] == "tiny-qwen2.5-vl"
    assert load_training_meta(out).prompt.max_pixels == 56 * 56
    model, processor = load_for_inference(out, dtype="float32")
    batch = VQACollator(processor, visual_fn, prompt_options(recipe))(make_records()[:2])
    result.model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, result.model(**batch).logits, atol=1e-5)
    assert (out / "val_metrics.json").is_file()  # the final evaluation answered the held-out subjects


def test_resume_continues_from_the_last_checkpoint(lora_run, qa_file, tmp_path):
    import shutil

    from megc_vqa.training.finetune import train

    _, result = lora_run
    assert (result.output_dir / "checkpoint-2").is_dir()
    out = tmp_path / "resumed"  # a copy, so the other tests keep the 2-step adapter
    shutil.copytree(result.output_dir, out)
    args = tiny_args(
        qa_file, out, "--max_steps", "3", "--save_steps", "1", "--resume_from_checkpoint", "true"
    )
    train(parse_config([*args, "--final_eval", "false"]), visual_fn=visual_fn)
    state = json.loads((out / "checkpoint-3" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    logged = [e["step"] for e in state["log_history"] if "loss" in e]
    assert logged == [1, 2, 3]  # steps 1-2 come from the checkpoint, only step 3 was run again


def test_resume_skips_an_incomplete_newest_checkpoint(lora_run, qa_file, tmp_path, caplog):
    """A run killed while saving leaves checkpoint-N without its state: resume takes the one before."""
    import shutil

    from megc_vqa.training.finetune import train

    _, result = lora_run
    out = tmp_path / "resumed"
    shutil.copytree(result.output_dir, out)
    (out / "checkpoint-2" / "trainer_state.json").unlink()  # the newest is half written
    args = tiny_args(
        qa_file, out, "--max_steps", "2", "--save_steps", "1", "--resume_from_checkpoint", "true"
    )
    with caplog.at_level("WARNING"):
        train(parse_config([*args, "--final_eval", "false"]), visual_fn=visual_fn)
    assert "checkpoint-2 is incomplete (no trainer_state.json" in caplog.text
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert [e["step"] for e in state["log_history"] if "loss" in e] == [1, 2]  # step 2 run again from step 1


def test_resuming_a_finished_run_does_nothing_and_says_so(lora_run, qa_file, tmp_path, caplog):
    import shutil

    from megc_vqa.training.finetune import train

    _, result = lora_run
    out = tmp_path / "finished"
    shutil.copytree(result.output_dir, out)
    adapter = (out / "adapter_model.safetensors").read_bytes()
    args = tiny_args(
        qa_file, out, "--max_steps", "2", "--save_steps", "1", "--resume_from_checkpoint", "true"
    )
    with caplog.at_level("WARNING"):
        again = train(parse_config(args), visual_fn=visual_fn)
    assert (
        again.metrics["already_finished"]
        and "already finished (max_steps 2 reached at step 2)" in caplog.text
    )
    assert not (out / "checkpoint-3").exists() and (out / "adapter_model.safetensors").read_bytes() == adapter


def test_merge_adapter_command_gives_the_same_outputs(lora_run, tmp_path):
    from megc_vqa.cli import main
    from megc_vqa.models.collator import VQACollator
    from megc_vqa.models.registry import load_for_inference
    from megc_vqa.training.finetune import prompt_options

    recipe, result = lora_run
    merged = tmp_path / "merged"
    assert main(["merge-adapter", str(result.output_dir), "--out", str(merged)]) == 0
    assert not (merged / "adapter_config.json").exists()
    model, processor = load_for_inference(merged, dtype="float32")
    batch = VQACollator(processor, visual_fn, prompt_options(recipe))(make_records()[:2])
    with torch.no_grad():
        assert torch.allclose(model(**batch).logits, result.model(**batch).logits, atol=1e-4)


def test_qlora_trains_on_a_4bit_base(qa_file, tmp_path):
    pytest.importorskip("bitsandbytes")
    from megc_vqa.training.finetune import train

    recipe = parse_config(
        tiny_args(
            qa_file, tmp_path / "q", "--load_in_4bit", "true", "--max_steps", "1", "--final_eval", "false"
        )
    )
    result = train(recipe, visual_fn=visual_fn)
    assert math.isfinite(result.metrics["train_loss"])
    kinds = {type(m).__name__ for m in result.model.modules()}
    assert "Linear4bit" in kinds
    assert any(p.abs().sum() > 0 for n, p in result.model.named_parameters() if "lora_B" in n)
    assert (tmp_path / "q" / "adapter_model.safetensors").is_file()


# --- multi-process -------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_process_cpu_ddp_run(qa_file, tmp_path):
    """torchrun with 2 CPU processes (gloo): both ranks train, rank 0 saves one adapter."""
    import subprocess
    import sys

    worker = write_train_worker(tmp_path / "worker.py")
    out = tmp_path / "ddp"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533",
        str(worker), *tiny_args(qa_file, out, "--max_steps", "2", "--per_device_train_batch_size", "2",
                                "--final_eval", "false"),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert sorted(line for line in proc.stdout.splitlines() if line.startswith("WORLD")) == [
        "WORLD 2 RANK 0",
        "WORLD 2 RANK 1",
    ]
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert state["train_batch_size"] == 2
    assert (out / "adapter_model.safetensors").is_file()
    args = json.loads((out / "megc_vqa_train.json").read_text())
    assert args["model_name_or_path"] == "tiny-qwen2.5-vl"


@pytest.mark.slow
def test_learning_bar_tiny_demo_learns_from_pixels(tmp_path):
    """Issue 11: synth -> prep -> tiny demo recipe from scratch on every question type; each type's
    held-out score beats its blanked-pixels control by at least 0.25, and coarse UF1 >= 0.9."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from learning_bar import main as learning_bar

    rc = learning_bar(["--work", str(tmp_path)])
    results = json.loads((tmp_path / "learning_bar.json").read_text())
    assert rc == 0 and results["failing"] == [], results
    assert results["pixels"]["coarse"] >= 0.9, results
    assert results["pixels"]["train_s"] <= 300, results


def test_make_visual_fn_reads_a_records_frames(tmp_path):
    """The default visual path: a prep-style record -> the visual layer's sampler -> VisualInputs."""
    import cv2

    from megc_vqa.models.contract import VisualContract
    from megc_vqa.training.data import make_visual_fn

    folder = tmp_path / "sub01" / "EP01"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 10):
        cv2.imwrite(str(folder / f"img{i}.jpg"), rng.integers(0, 256, (80, 64, 3), dtype=np.uint8))
    record = {
        **make_records()[0],
        "source": str(folder),
        "source_kind": "folder",
        "onset": 1,
        "apex": 5,
        "offset": 9,
    }
    visual = make_visual_fn(VisualContract("oao+flow", size=56))(record)
    assert len(visual.images) == 4 and visual.video.shape[0] == 3
    assert tuple(visual.frame_indices) == (1, 5, 9)
    assert min(visual.images[0].shape[:2]) == 56


def test_qwen3_vl_trains_with_the_key_frames_as_a_video(qa_file, tmp_path):
    from megc_vqa.training.finetune import train

    args = tiny_args(
        qa_file, tmp_path / "q3", "--model_name_or_path", "tiny-qwen3-vl", "--visual_mode", "video",
        "--max_pixels", str(64 * 64), "--max_steps", "1", "--final_eval", "false",
    )  # fmt: skip
    result = train(parse_config(args), visual_fn=visual_fn)
    assert math.isfinite(result.metrics["train_loss"])
    assert type(result.model.get_base_model()).__name__ == "Qwen3VLForConditionalGeneration"
    assert (tmp_path / "q3" / "adapter_model.safetensors").is_file()
