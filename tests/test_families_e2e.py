"""Every model family through the public commands on its tiny model (issue 23, the remaining gaps):
ME-STR and ME-LVQA (`eval/run_str.py`, `eval/run_lvqa.py`) asking the family's VQA model (base + adapter)
and merge-adapter on every family; run_vqa, the REPL and export with the family's recipe where
``tests/test_families.py`` does not; training with validation on every family (slow); the bad inputs of the
issue through the commands; and "adding a family" (docs/families.md) followed for a sixth family, Qwen2-VL,
defined here.

The fast tests use an untrained LoRA adapter with random A and B (so merging changes the outputs) and a
training record of 56-px frames: every path an adapter takes, without the cost of training five models."""

from __future__ import annotations

import csv
import importlib.util
import json
import logging
import os
import textwrap
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")

import test_families as tf  # noqa: E402  (the family helpers and checks this file runs on more families)
from test_families import COARSE, TINY, make_records, visual_fn  # noqa: E402

from megc_vqa.models import registry, tiny  # noqa: E402
from megc_vqa.models.families.base import ALL_SCOPES  # noqa: E402
from megc_vqa.qa import templates as T  # noqa: E402
from megc_vqa.training.config import load_yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
clip_set = tf.clip_set  # the fixture: four organiser questions and their synth-test frames
FAMILIES = sorted(TINY)
# The families tests/test_families.py does not train from their recipe, answer with, nor export with.
OLD = [f for f in FAMILIES if f not in tf.NEW]
PIXELS = 56 * 56 * 2  # the adapters' training record: 56-px frames, at most two 28-px patches a side


def script(name: str):
    """An ``eval/`` script as a module (its ``main(argv)`` is the command)."""
    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def family_recipe(family: str) -> Path:
    """The family's GPU LoRA recipe: the first ``recipes/<dir>/lora.yaml`` whose model is of the family."""
    for path in sorted((REPO / "recipes").glob("*/lora.yaml")):
        found = registry.family_of_name(str(load_yaml(path)["model_name_or_path"]))
        if path.parent.name != "tiny" and found is not None and found.name == family:
            return path
    raise AssertionError(f"no recipes/*/lora.yaml trains a {family} model")


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in make_records()))
    return path


@pytest.fixture(scope="module")
def validated(request, qa_file, tmp_path_factory):
    """Two LoRA steps of the family's recipe on its tiny model with a validation split: the evaluation loss
    at step 2 and the final validation (answers scored by the submission scorer). ``(family, recipe,
    result)`` as ``test_families.trained``. The recipe's face pipeline is off: the test frames hold no face."""
    from megc_vqa.training.config import parse_config
    from megc_vqa.training.finetune import train

    family = request.param
    out = tmp_path_factory.mktemp(family) / "lora"
    args = ["--config", str(family_recipe(family)), "--model_name_or_path", TINY[family], "--train_file",
            str(qa_file), "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true",
            "--max_steps", "2", "--max_pixels", str(PIXELS), "--image_size", "56",
            "--per_device_train_batch_size", "2", "--per_device_eval_batch_size", "2", "--bf16", "false",
            "--dtype", "float32", "--use_cpu", "true", "--activation_checkpointing", "false", "--lora_dropout", "0",
            "--val_fraction", "0.25", "--eval_strategy", "steps", "--eval_steps", "2", "--final_eval", "true",
            "--save_strategy", "no", "--face", "none", "--register", "false", "--magnify", "1",
            "--visual_cache_dir", str(out.parent / "cache")]  # fmt: skip
    recipe = parse_config(args)
    return family, recipe, train(recipe, visual_fn=visual_fn)


def make_adapter(family: str, out: Path) -> Path:
    """A LoRA adapter on every scope of the family (its experts too), with random A and B, saved as
    training saves one: PEFT files naming the registry base, and a training record of 56-px frames."""
    from peft import LoraConfig, get_peft_model

    from megc_vqa.models.contract import ModelContract, VisualContract
    from megc_vqa.models.prompting import PromptOptions

    fam = registry.FAMILIES[family]
    torch.manual_seed(0)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=registry.lora_target_regex(fam, "all"),
                        target_parameters=registry.lora_target_parameters(fam, "all") or None,
                        init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
    get_peft_model(registry.load_model(TINY[family], dtype="float32"), config).save_pretrained(out)
    adapter_config = json.loads((out / "adapter_config.json").read_text())
    (out / "adapter_config.json").write_text(
        json.dumps({**adapter_config, "base_model_name_or_path": TINY[family]})
    )
    prompt, visual = PromptOptions(max_pixels=PIXELS), VisualContract(size=56)
    ModelContract(prompt, visual, model_name_or_path=TINY[family], family=family, use_peft=True).write(out)
    return out


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """``adapter(family)``: that family's adapter folder (made once per module)."""
    made: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in made:
            made[family] = make_adapter(family, tmp_path_factory.mktemp(f"adapter-{family}"))
        return made[family]

    return get


# --- training and validation, every family (slow: five trainings with validation) --------------------


@pytest.mark.slow
@pytest.mark.parametrize("validated", FAMILIES, indirect=True)
def test_training_validates_on_the_held_out_subjects(validated):
    family, _, result = validated
    out = result.output_dir
    assert type(result.model.get_base_model()).__name__ == registry.FAMILIES[family].model_class
    assert np.isfinite(result.metrics["train_loss"])  # (the step-2 evaluation loop ran in the fixture)
    truth = [json.loads(line) for line in (out / "val_truth.jsonl").read_text().splitlines()]
    preds = [json.loads(line) for line in (out / "val_predictions.jsonl").read_text().splitlines()]
    held_out = {t["video"].split("_EP")[0] for t in truth}
    records = make_records()
    assert 0 < len(held_out) < len({r["subject"] for r in records})  # whole subjects held out
    assert sorted(t["video_id"] for t in truth) == sorted(
        r["id"] for r in records if r["subject"] in held_out
    )
    assert [p["video_id"] for p in preds] == [t["video_id"] for t in truth]  # every one answered
    assert all(p["answer"] in COARSE for p in preds if p["question"] == T.COARSE_QUESTION)
    scores = json.loads((out / "val_metrics.json").read_text())
    assert {f"val_{k}" for k in scores["overall"]} <= set(result.metrics)


# --- ME-STR and ME-LVQA asking the family's VQA model ---------------------------------------------------


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> Path:
    """One 40-frame video of random pixels (the model-free baseline spots two intervals in it at 30 fps)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("long") / "videos"
    folder = root / "s1_v1"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(1, 41):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(folder / f"img{i}.png")
    return root


def spy_on_the_engine(monkeypatch) -> list[tuple[set[str], list[str], list]]:
    """Each ``Engine.answer`` call as (the model's class names, the questions, the answers)."""
    from megc_vqa.answering.engine import Engine

    calls: list[tuple[set[str], list[str], list]] = []
    answer = Engine.answer

    def spy(self, questions, visuals, *args, **kwargs):
        answers = answer(self, questions, visuals, *args, **kwargs)
        calls.append(({type(m).__name__ for m in self.model.modules()}, list(questions), answers))
        return answers

    monkeypatch.setattr(Engine, "answer", spy)
    return calls


def asked_by_the_family(calls, family: str) -> None:
    assert calls, "the VQA model was never asked"
    for classes, _, answers in calls:
        assert {registry.FAMILIES[family].model_class, "LoraModel"} <= classes  # the base with the adapter
        assert all(not a.fallback and a.text for a in answers)  # the model's own answers, no fallback


def vqa_model(family: str, adapter) -> list[str]:
    return ["--model", TINY[family], "--adapter", str(adapter(family))]


@pytest.mark.parametrize("family", FAMILIES)
def test_run_str_asks_the_familys_vqa_model_for_each_interval(
    family, adapter, long_videos, tmp_path, monkeypatch
):
    calls = spy_on_the_engine(monkeypatch)
    out = tmp_path / "str"
    argv = ["--videos-root", str(long_videos), "--out", str(out), "--fps", "30", "--no-plots"]
    assert script("run_str").main([*argv, *vqa_model(family, adapter)]) == 0
    asked_by_the_family(calls, family)
    rows = list(csv.DictReader((out / "str_pred.csv").open()))
    answers = [a.text for _, _, answers in calls for a in answers]
    assert rows and len(answers) == len(rows)  # one question per spotted interval
    assert all(q == T.COARSE_QUESTION for _, questions, _ in calls for q in questions)
    assert [r["emotion"] for r in rows] == answers  # the CSV's emotions are the model's answers
    summary = json.loads((out / "str_summary.json").read_text())
    assert summary["emotion"] == "vqa" and summary["vqa"]["visual"]["size"] == 56  # the adapter's record


@pytest.mark.parametrize("family", FAMILIES)
def test_run_lvqa_takes_the_distinct_aus_from_the_familys_vqa_model(
    family, adapter, long_videos, tmp_path, monkeypatch
):
    from megc_vqa.spotting.lvqa import parse_au_names

    questions = tmp_path / "me_lvqa_synth_test_to_answer.jsonl"
    rows = [{"video_id": f"q{i}", "video": "s1_v1", "question": q, "answer": ""}
            for i, q in enumerate((T.LVQA_COUNT_ALL, T.LVQA_AUS))]  # fmt: skip
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    calls = spy_on_the_engine(monkeypatch)
    out = tmp_path / "lvqa"
    argv = ["--questions", str(questions), "--videos-root", str(long_videos), "--out", str(out), "--fps", "30",
            "--no-plots", *vqa_model(family, adapter)]  # fmt: skip
    assert script("run_lvqa").main(argv) == 0
    asked_by_the_family(calls, family)
    pred = [json.loads(line) for line in (out / "me_lvqa_synth_test_pred.jsonl").read_text().splitlines()]
    count, aus = (r["answer"] for r in pred)
    au_answers = [
        a.text
        for _, qs, answers in calls
        for q, a in zip(qs, answers, strict=True)
        if q == T.AU_QUESTION_PLURAL
    ]
    assert len(au_answers) == int(count) > 0  # the model was asked each spotted event's AUs
    named = {name for text in au_answers for name in parse_au_names(text)}
    assert named and set(aus.split(", ")) == named  # the answer is the union of the model's AUs
    assert json.loads((out / "lvqa_summary.json").read_text())["vqa"]["model"].startswith(TINY[family])


# --- run_vqa, the REPL and merge-adapter with an adapter ----------------------------------------------


@pytest.mark.parametrize("family", OLD)  # test_families.py runs it on the new families' trained adapters
def test_run_vqa_and_the_repl_answer_with_the_adapter(family, adapter, clip_set, tmp_path, monkeypatch):
    from types import SimpleNamespace

    trained = (family, None, SimpleNamespace(output_dir=adapter(family)))  # as test_families' fixture
    tf.test_run_vqa_and_the_repl_answer_with_the_adapter(trained, clip_set, tmp_path, monkeypatch)


@pytest.mark.parametrize("family", FAMILIES)
def test_merge_adapter_gives_the_adapters_outputs(family, adapter, tmp_path):
    from megc_vqa.cli import main as cli
    from megc_vqa.models.collator import VQACollator
    from megc_vqa.models.prompting import PromptOptions

    merged = tmp_path / "merged"
    assert cli(["merge-adapter", str(adapter(family)), "--out", str(merged)]) == 0
    assert not (merged / "adapter_config.json").exists()
    with_adapter, processor = registry.load_for_inference(adapter(family), dtype="float32")
    model, _ = registry.load_for_inference(merged, dtype="float32")
    base, _ = registry.load_for_inference(TINY[family], dtype="float32")
    assert type(model).__name__ == registry.FAMILIES[family].model_class
    batch = VQACollator(processor, visual_fn, PromptOptions(max_pixels=PIXELS))(make_records()[:2])
    with torch.no_grad():
        logits = model.eval()(**batch).logits
        assert torch.allclose(logits, with_adapter.eval()(**batch).logits, atol=1e-4)
        assert not torch.allclose(logits, base.eval()(**batch).logits, atol=1e-2)  # the adapter is in it


@pytest.mark.parametrize("family", OLD)
def test_export_takes_the_family_recipe(family, tmp_path):
    """``megc-vqa export --recipe`` with the family's GPU recipe: rows sampled with its visual settings, or
    for a video recipe (exported rows are images) a refusal. The recipe's face pipeline is turned off in a
    copy (the frames hold no face, and ``--register`` has no command-line off switch)."""
    import yaml
    from PIL import Image

    from megc_vqa.cli import main as cli

    rows = make_records(2, 1)
    for r in rows:
        r["source"] = str(tmp_path / "frames" / r["image_id"])
        Path(r["source"]).mkdir(parents=True, exist_ok=True)
        for i in range(9):
            Image.fromarray(np.full((40, 40, 3), i * 20, np.uint8)).save(Path(r["source"]) / f"img{i}.jpg")
    qa, out, recipe = tmp_path / "qa.jsonl", tmp_path / "export", tmp_path / "recipe.yaml"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    settings = {**load_yaml(family_recipe(family)), "face": "none", "register": False, "magnify": 1.0}
    recipe.write_text(yaml.safe_dump(settings))
    code = cli(["export", "--format", "swift", "--qa", str(qa), "--out", str(out), "--recipe", str(recipe)])
    if settings["visual_mode"] == "video":
        assert code == 2 and not out.exists()
    else:
        exported_rows = [line for f in out.glob("megc_*.jsonl") for line in f.read_text().splitlines()]
        assert code == 0 and len(exported_rows) == len(rows)  # train and validation (the recipe's split)
        exported = json.loads((out / "export.json").read_text())["settings"]
        assert exported["visual_spec"] == settings["visual_spec"]
        assert exported["image_size"] == settings["image_size"]


# --- published configs ------------------------------------------------------------------------------


def test_the_published_internvl_vision_attention_has_biases():
    """InternViT-300M's qkv carries biases (``qkv_bias``, ``attention_bias`` in the -HF conversion): the
    real-size build has them, as the hub checkpoint's weights do."""
    from megc_vqa.models.published import PUBLISHED, model_class, model_config

    hub_id = "OpenGVLab/InternVL3_5-2B-HF"
    with torch.device("meta"):
        model = model_class(PUBLISHED[hub_id].family)._from_config(
            model_config(hub_id, layers=1, vision_layers=1)
        )
    names = {n for n, _ in model.named_parameters()}
    assert {f"model.vision_tower.encoder.layer.0.attention.{x}_proj.bias" for x in "qkv"} <= names


# --- bad input, through the commands -------------------------------------------------------------------


def last_line(text: str) -> str:
    return text.strip().splitlines()[-1]


def test_a_checkpoint_of_an_unsupported_model_type_is_one_line_listing_the_supported(tmp_path, capsys):
    from megc_vqa.cli import main as cli

    model = tmp_path / "llava"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"model_type": "llava_next"}))
    (tmp_path / "clip").mkdir()
    argv = ["ask", "--model", str(model), "--clip", str(tmp_path / "clip"), "--question", T.COARSE_QUESTION]
    assert cli(argv) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model type 'llava_next' is not supported" in err
    assert all(t in err for f in registry.FAMILIES.values() for t in f.model_types)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_recipe_scope_the_family_lacks_stops_training_listing_its_scopes(
    family, qa_file, tmp_path, capsys, monkeypatch
):
    """A recipe file (as recipes/finetune.py reads it) asking for a scope the family lacks: one line listing
    the family's own scopes, before any model loads or output is written."""
    from megc_vqa.training.finetune import main as finetune

    fam = registry.FAMILIES[family]
    lacking = next(s for s in (*ALL_SCOPES, "projector") if s not in fam.scopes)
    monkeypatch.chdir(tmp_path)  # a recipe's paths are taken from the working folder
    (tmp_path / "qa.jsonl").write_bytes(qa_file.read_bytes())
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        f"model_name_or_path: {TINY[family]}\ntrain_file: qa.jsonl\noutput_dir: out\n"
        f"lora_target: language+{lacking}\nuse_cpu: true\n"
    )
    assert finetune(["--config", str(recipe)]) == 2
    err = last_line(capsys.readouterr().err)
    assert f"'{lacking}'" in err and family in err and ", ".join(fam.scopes) in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("template", ["missing", "another"])
def test_a_checkpoint_template_missing_or_other_than_the_familys_is_said(family, template, tmp_path, caplog):
    import shutil

    model = tmp_path / "m"
    shutil.copytree(registry.resolve(TINY[family])[0], model)
    own = "{% for message in messages %}{{ message['role'] }}: {{ message['content'] }}\n{% endfor %}"
    for name in ("chat_template.jinja", "chat_template.json"):
        (model / name).unlink(missing_ok=True)
    if template == "another":
        (model / "chat_template.jinja").write_text(own)
    config = model / "processor_config.json"
    config.write_text(
        json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "chat_template"})
    )
    with caplog.at_level(logging.WARNING, logger="megc_vqa.models.registry"):
        processor = registry.load_processor(model)
    warning = " ".join(r.getMessage() for r in caplog.records)
    if template == "missing":
        assert processor.chat_template == registry.FAMILIES[family].chat_template
        assert f"no chat template; using the {family} family's" in warning
    else:
        assert processor.chat_template == own
        assert f"differs from the {family} family's; using the processor's own" in warning


@pytest.mark.parametrize("family", FAMILIES)
def test_run_vqa_refuses_an_adapter_of_another_family_before_any_row(
    family, adapter, clip_set, tmp_path, capsys
):
    other = next(name for f, name in TINY.items() if f != family)
    questions, frames = clip_set
    out = tmp_path / "out"
    argv = ["--questions", str(questions), "--frames-root", str(frames), "--model", other, "--adapter",
            str(adapter(family)), "--out", str(out), "--quiet"]  # fmt: skip
    assert script("run_vqa").main(argv) == 2
    err = last_line(capsys.readouterr().err)
    assert f"trained on a {family} model" in err and f"cannot be applied to {other}" in err
    log = out / "answers.jsonl"  # at most the run's fingerprint, no answered row
    assert not log.exists() or all(
        "_fingerprint" in json.loads(line) for line in log.read_text().splitlines()
    )
    assert not list(out.glob("*_pred.jsonl"))


# --- adding a family, as docs/families.md says ---------------------------------------------------------

# Step 1 of docs/families.md: one file, a subclass of a close family overriding what differs.
SIXTH_FAMILY = '''
"""Qwen2-VL (``Qwen2VLForConditionalGeneration``): Qwen2.5-VL's template and pixel rule, an older vision
tower (LayerNorm blocks with an fc1/fc2 MLP)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from megc_vqa.models.families.qwen2_5_vl import FAMILY as QWEN2_5_VL
from megc_vqa.models.families.qwen2_5_vl import Qwen25VL, tiny_text, vision_ids


@dataclass(frozen=True)
class Qwen2VL(Qwen25VL):
    def tiny_config(self, tokenizer: Any) -> Any:
        ids = self.token_ids(tokenizer)
        text = tiny_text(tokenizer, ids)
        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
        vision = {"depth": 2, "embed_dim": 32, "hidden_size": 64, "num_heads": 2, "mlp_ratio": 2,
                  "patch_size": 14, "spatial_merge_size": 2, "temporal_patch_size": 2}
        return self.transformers_class("config")(text_config=text, vision_config=vision, **vision_ids(ids))

    def tiny_processor(self, tokenizer: Any) -> Any:
        from transformers import Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        return self.transformers_class("processor")(
            image_processor=Qwen2VLImageProcessor(), tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(), chat_template=self.chat_template,
        )


FAMILY = replace(
    QWEN2_5_VL,
    name="qwen2_vl",
    model_types=("qwen2_vl",),
    model_class="Qwen2VLForConditionalGeneration",
    config_class="Qwen2VLConfig",
    processor_class="Qwen2VLProcessor",
    lora_modules={**QWEN2_5_VL.lora_modules,
                  "vision": r".*visual\\.blocks\\.\\d+\\.(attn\\.(qkv|proj)|mlp\\.fc\\d)"},
    description="Qwen2-VL (2B/7B/72B)",
)
FAMILY = Qwen2VL(**{f: getattr(FAMILY, f) for f in FAMILY.__dataclass_fields__})
'''


@pytest.fixture
def sixth_family(tmp_path, monkeypatch):
    """The family file written and imported, and the registry lines added (step 2): the family in
    ``FAMILIES``, a hub id and a tiny entry in ``MODELS``. Its tiny model is built in a cache of its own."""
    path = tmp_path / "qwen2_vl.py"
    path.write_text(textwrap.dedent(SIXTH_FAMILY))
    spec = importlib.util.spec_from_file_location("qwen2_vl_family", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    family = module.FAMILY
    monkeypatch.setitem(registry.FAMILIES, family.name, family)
    for spec in (
        registry.ModelSpec("qwen2-vl-2b", family.name, "Qwen/Qwen2-VL-2B-Instruct"),
        registry.ModelSpec(
            "tiny-qwen2-vl", family.name, tiny=True, description="offline tiny model for tests"
        ),
    ):
        monkeypatch.setitem(registry.MODELS, spec.name, spec)
    monkeypatch.setitem(tf.TINY, family.name, "tiny-qwen2-vl")
    monkeypatch.setenv("MEGC_VQA_CACHE", str(tmp_path / "cache"))
    return family


def test_a_sixth_family_added_as_the_docs_say_passes_the_family_checks(
    sixth_family, clip_set, tmp_path, monkeypatch
):
    """Step 3: the family test's checks on the sixth family (real class and template, every scope finds
    its modules, the pixel rule against its processor, the grep knows its names), then an adapter of it
    answering through run_vqa and the REPL, and merged."""
    from types import SimpleNamespace

    name = sixth_family.name
    assert registry.family_of_name("Qwen/Qwen2-VL-2B-Instruct") is sixth_family
    assert tiny.tiny_names()["tiny-qwen2-vl"] == name  # the tiny builder reads the registry line too
    tf.test_tiny_model_is_the_real_class_with_the_familys_template(name)
    for height, width, max_pixels in ((60, 70, 56 * 56 * 2), (120, 50, 56 * 56 * 6)):
        tf.test_the_familys_pixel_rule_promises_the_tokens_its_processor_makes(
            name, height, width, max_pixels
        )
    assert tf.branches_on_a_family(f'    if family.name == "{name}":')
    assert tf.branches_on_a_family("    if isinstance(model, Qwen2VLForConditionalGeneration):")
    tf.test_no_module_outside_a_family_file_branches_on_a_family_or_class_name()
    assert registry.resolve(registry.resolve("tiny-qwen2-vl")[0])[1] is sixth_family  # by its model_type

    folder = make_adapter(name, tmp_path / "adapter")
    trained = (name, None, SimpleNamespace(output_dir=folder))
    tf.test_run_vqa_and_the_repl_answer_with_the_adapter(trained, clip_set, tmp_path / "answers", monkeypatch)
    test_merge_adapter_gives_the_adapters_outputs(name, lambda family: folder, tmp_path)


@pytest.mark.slow
def test_the_sixth_family_trains_every_scope_from_a_recipe(sixth_family, qa_file, tmp_path):
    from megc_vqa.training.config import parse_config
    from megc_vqa.training.finetune import train

    args = ["--config", str(REPO / "recipes/tiny/lora.yaml"), "--model_name_or_path", "tiny-qwen2-vl",
            "--train_file", str(qa_file), "--output_dir", str(tmp_path / "lora"), "--report_to", "none",
            "--disable_tqdm", "true", "--max_steps", "2", "--lora_target", "all", "--per_device_train_batch_size",
            "2", "--final_eval", "false", "--val_fraction", "0"]  # fmt: skip
    recipe = parse_config(args)
    result = train(recipe, visual_fn=visual_fn)
    assert type(result.model.get_base_model()).__name__ == sixth_family.model_class
    lora_b = [p for n, p in result.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # every scope trained
    tf.test_merge_adapter_gives_the_same_outputs((sixth_family.name, recipe, result), tmp_path)
