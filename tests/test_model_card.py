"""The model card (README.md) that training and merge-adapter write next to an adapter / merged model."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import yaml

torch = pytest.importorskip("torch")

from megc_vqa.fileio import OUTPUT_MARKER  # noqa: E402
from megc_vqa.models.contract import ModelContract, VisualContract  # noqa: E402
from megc_vqa.qa import templates as t  # noqa: E402
from megc_vqa.training.model_card import (  # noqa: E402
    CARD_NAME,
    LICENCE_WARNING,
    card_guard,
    claim_card,
    model_card,
)
from tests.helpers import visual_fn  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEFT_TEMPLATE = (  # the Hub template card PEFT writes beside an adapter
    "---\nlibrary_name: peft\n---\n\n# Model Card for Model ID\n\n"
    "<!-- Provide a quick summary of what the model is/does. -->\n"
)
USER_README = "# my notes\n\nDo not lose these.\n"


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    return yaml.safe_load(text.split("---\n")[1])


def section(text: str, title: str) -> str:
    """The body of the ``## title`` section."""
    body = text.split(f"\n## {title}\n", 1)[1]
    return body.split("\n## ", 1)[0]


def run_folder(tmp_path: Path, *, val: dict | None = None) -> Path:
    """A training output folder as finetune leaves it (record, run settings, metrics), without weights."""
    folder = tmp_path / "adapter"
    folder.mkdir()
    ModelContract(
        visual=VisualContract(spec="uniform:8+flow", size=112, face_crop=True),
        model_name_or_path="qwen2.5-vl-3b",
        family="qwen2_5_vl",
        use_peft=True,
        val_subjects=("sub01", "sub02", "006"),
        recipe="recipes/qwen2.5-vl-3b/lora.yaml",
    ).write(folder)
    settings = {
        "model": {"model_name_or_path": "qwen2.5-vl-3b", "load_in_4bit": True},
        "data": {"train_file": {"path": "runs/prep/qa.jsonl", "content": "x"}, "loss_weighting": "answer"},
        "training": {"learning_rate": 2e-4, "per_device_train_batch_size": 4, "gradient_accumulation_steps": 8,
                     "seed": 7, "bf16": True, "lr_scheduler_type": "cosine", "warmup_ratio": 0.03},
    }  # fmt: skip
    (folder / "megc_vqa_run.json").write_text(json.dumps({"settings": settings, "files": []}))
    metrics = {"train_loss": 0.4321, "epoch": 3.0, "data_summary": {"train_rows": 1200, "val_rows": 300,
               "train_by_dataset": {"casme2": 700, "samm": 500}, "train_by_kind": {"coarse": 600, "fine": 600}}}  # fmt: skip
    (folder / "train_metrics.json").write_text(json.dumps(metrics))
    (folder / "adapter_config.json").write_text(
        json.dumps({"r": 16, "lora_alpha": 32, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj"]})
    )
    if val is not None:
        (folder / "val_metrics.json").write_text(json.dumps(val))
    return folder


VAL = {
    "overall": {"uf1_coarse": 0.61234, "uar_coarse": 0.6, "uf1_fine": 0.25, "n_rows": 300, "au_f1": None},
    "samm": {"uf1_coarse": 0.5, "n_rows": 120},
    "casme3": {"uf1_coarse": None, "n_rows": 0},
    "variant": {"bleu_desc": "mean NLTK sentence BLEU-4", "rouge_desc": "ROUGE-1 recall"},
}


def test_adapter_card_front_matter_and_sections(tmp_path):
    folder = run_folder(tmp_path, val=VAL)
    text = model_card(folder)
    meta = front_matter(text)
    assert meta["base_model"] == "Qwen/Qwen2.5-VL-3B-Instruct"  # the registry name resolved to its Hub id
    assert "| base model | qwen2.5-vl-3b (Qwen/Qwen2.5-VL-3B-Instruct) |" in section(text, "Model")
    assert meta["library_name"] == "peft" and meta["license"] == "other"
    assert {"megc-vqa", "micro-expression", "lora", "qwen2_5_vl"} <= set(meta["tags"])
    visual = section(text, "Visual inputs")
    assert (
        "`uniform:8+flow`" in visual
        and "| shorter side (px) | 112 |" in visual
        and "| face pipeline | box |" in visual
    )
    data = section(text, "Data")
    assert LICENCE_WARNING in data and "`runs/prep/qa.jsonl`" in data and "casme2 700, samm 500" in data
    assert "| held-out subjects (whole subjects) | 3 |" in data
    training = section(text, "Training")
    assert "4-bit NF4" in training and "| learning rate | 0.0002 |" in training and "| seed | 7 |" in training
    assert (
        "| final training loss | 0.4321 |" in training and "| batch size x accumulation | 4 x 8 |" in training
    )
    validation = section(text, "Validation")
    assert "| overall | 0.6123 |" in validation and "| samm | 0.5000 |" in validation
    assert "casme3" not in validation  # a split without rows is left out
    usage = section(text, "How to answer with it")
    assert f"--model qwen2.5-vl-3b --adapter {shlex.quote(str(folder))} --out runs/pred" in usage
    assert f"megc-vqa ask --model qwen2.5-vl-3b --adapter {shlex.quote(str(folder))}" in usage


def test_merged_card_points_at_the_merged_folder(tmp_path):
    folder = run_folder(tmp_path)
    merged = tmp_path / "my merged"
    text = model_card(folder, merged_into=merged)
    assert front_matter(text)["library_name"] == "transformers"
    assert "| merged from |" in section(text, "Model")
    usage = section(text, "How to answer with it")
    assert f"--model {shlex.quote(str(merged))} --out" in usage and "--adapter" not in usage
    assert "No validation split was scored" in section(text, "Validation")


def test_a_local_base_model_is_no_hub_id(tmp_path):
    folder = run_folder(tmp_path)
    ModelContract(model_name_or_path=str(tmp_path), use_peft=True).write(folder)
    assert "base_model" not in front_matter(model_card(folder))


def test_claim_card_keeps_a_users_readme_and_takes_its_own_or_peft_s(tmp_path):
    mine, peft, empty = tmp_path / "mine", tmp_path / "peft", tmp_path / "empty"
    for folder in (mine, peft, empty):
        folder.mkdir()
    (mine / CARD_NAME).write_text(USER_README)
    (peft / CARD_NAME).write_text(PEFT_TEMPLATE)
    assert claim_card(mine, "megc-vqa finetune") is False
    assert claim_card(peft, "megc-vqa finetune") and claim_card(empty, "megc-vqa finetune")
    assert CARD_NAME in json.loads((empty / OUTPUT_MARKER).read_text())["owners"]["megc-vqa finetune"]
    with card_guard(mine, "megc-vqa finetune") as ours:  # a save that rewrites it, as PEFT's does
        (mine / CARD_NAME).write_text("---\nlibrary_name: peft\n---\n" + USER_README)
    assert ours is False and (mine / CARD_NAME).read_text() == USER_README


# --- through training and merge-adapter ---------------------------------------------------------------


def records() -> list[dict]:
    rows = []
    for dataset in ("casme2", "samm"):
        for s in range(4):
            subject = f"sub{s:02d}" if dataset == "casme2" else str(s + 6)
            image_id = f"{subject}_EP01"
            for k, (q, a) in enumerate([(t.COARSE_QUESTION, ("negative", "positive")[s % 2])], 1):
                rows.append({"id": f"{dataset}_{image_id}_{k}", "dataset": dataset, "image_id": image_id,
                             "subject": subject, "filename": "EP01", "question": q, "answer": a,
                             "source": f"/frames/{dataset}/{image_id}", "fps": 200.0, "onset": 0, "apex": 4,
                             "offset": 8})  # fmt: skip
    return rows


def tiny_args(qa: Path, out: Path, *extra: str) -> list[str]:
    return ["--config", str(ROOT / "recipes/tiny/lora.yaml"), "--train_file", str(qa), "--output_dir", str(out),
            "--report_to", "none", "--disable_tqdm", "true", "--max_steps", "1", "--save_strategy", "no",
            *extra]  # fmt: skip


@pytest.fixture
def qa(tmp_path) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records()))
    return path


def test_training_and_merge_write_their_cards(qa, tmp_path):
    from megc_vqa.cli import main as cli
    from megc_vqa.training.config import parse_config
    from megc_vqa.training.finetune import train

    out = tmp_path / "lora"
    train(parse_config(tiny_args(qa, out, "--val_fraction", "0.25")), visual_fn=visual_fn)
    text = (out / CARD_NAME).read_text()
    assert front_matter(text)["library_name"] == "peft" and "# LoRA micro-expression VQA model" in text
    val = json.loads((out / "val_metrics.json").read_text())
    assert val["overall"]["n_rows"] > 0
    assert f"| overall | {val['overall']['uf1_coarse']:.4f} |" in section(text, "Validation")
    assert "| training rows | 6 |" in section(text, "Data") and f"--adapter {out}" in text

    merged = tmp_path / "merged"
    assert cli(["merge-adapter", str(out), "--out", str(merged)]) == 0
    merged_text = (merged / CARD_NAME).read_text()
    assert front_matter(merged_text)["library_name"] == "transformers"
    assert f"--model {merged} --out" in merged_text
    assert section(merged_text, "Validation") == section(text, "Validation")


def test_training_keeps_a_users_readme_byte_for_byte(qa, tmp_path):
    """A run folder holding the user's README.md (and an earlier run's record): PEFT's save would edit the
    README; it comes out as it was, and no card replaces it."""
    from megc_vqa.training.config import parse_config
    from megc_vqa.training.finetune import train

    out = tmp_path / "lora"
    out.mkdir()
    (out / CARD_NAME).write_text(USER_README)
    ModelContract().write(out)  # an earlier training run's folder: training may write there
    recipe = parse_config(tiny_args(qa, out, "--val_fraction", "0"))
    recipe.overwrite_output_dir = True  # --overwrite_output_dir: replacing the earlier run is asked for
    train(recipe, visual_fn=visual_fn)
    assert (out / "adapter_model.safetensors").is_file() and (out / CARD_NAME).read_text() == USER_README
