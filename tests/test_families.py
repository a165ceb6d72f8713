"""Model families (issue 23): one family object each, nothing outside a family module branching on a family
or class name, and every family from recipe to answer on its offline tiny model through the public
commands (training, run_vqa, the REPL, merge-adapter, export)."""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from megc_vqa.fileio import write_jsonl  # noqa: E402
from megc_vqa.models import registry  # noqa: E402
from megc_vqa.qa import templates as T  # noqa: E402
from tests.helpers import KEY_FRAMES, visual_fn  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
FAMILY_DIR = REPO / "megc_vqa" / "models" / "families"
TINY = {s.family: s.name for s in registry.MODELS.values() if s.tiny}
# The families added by issue 23 run end to end in the default suite; the first two have their own tests.
NEW = ["internvl", "glm4v", "qwen3_vl_moe"]
NEW = [f for f in NEW if f in registry.FAMILIES]


# --- one object per family ---------------------------------------------------------------------------


def family_words() -> list[str]:
    """Family keys and the transformers class names of every family."""
    words = set()
    for family in registry.FAMILIES.values():
        words |= {family.name, family.model_class, family.config_class, family.processor_class}
        words |= set(family.model_types)
    return sorted(words, key=len, reverse=True)


BRANCH = re.compile(r"\bif\b|\belif\b|==|!=|\.startswith\(|\.endswith\(|\bin \(|\bin \[|\bin \{|isinstance\(")


def branches_on_a_family(line: str) -> bool:
    code = line.split("#", 1)[0]
    if not BRANCH.search(code):
        return False
    if re.search(r"__name__\s*(==|!=|\.startswith|in\b)", code) and re.search(r"qwen|intern|glm", code, re.I):
        return True
    return any(re.search(rf"[\"']{re.escape(w)}[\"']|\b{re.escape(w)}\b", code) for w in family_words())


def test_no_module_outside_a_family_file_branches_on_a_family_or_class_name():
    offenders = []
    for path in sorted((REPO / "megc_vqa").rglob("*.py")):
        if path.parent == FAMILY_DIR:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if branches_on_a_family(line):
                offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not offenders, "\n".join(offenders)


def test_the_grep_catches_a_branch():
    assert branches_on_a_family('    if family == "qwen2_5_vl":')
    assert branches_on_a_family('    if type(processor).__name__.startswith("Qwen3VL"):')
    assert not branches_on_a_family("    family = FAMILIES[spec.family]  # qwen2_5_vl and others")


def test_every_family_has_one_module_one_registry_line_and_a_tiny_model():
    import sys

    for name, family in registry.FAMILIES.items():
        assert Path(sys.modules[type(family).__module__].__file__).parent == FAMILY_DIR, name
        assert family.scopes[0] == "language" and set(family.save_modules) <= set(family.scopes)
        assert name in TINY, f"family {name} has no tiny registry entry"
        assert any(s.family == name and s.hub_id for s in registry.MODELS.values()), name
        assert family.transformers_class("model").__name__ == family.model_class


@pytest.mark.parametrize("family", sorted(TINY))
def test_tiny_model_is_the_real_class_with_the_familys_template(family):
    model, processor = registry.load_for_inference(TINY[family], dtype="float32")
    fam = registry.FAMILIES[family]
    assert type(model).__name__ == fam.model_class
    # the family whose processor rules apply (Qwen3-VL-MoE shares Qwen3-VL's processor)
    assert registry.family_for_processor(processor).processor_class == fam.processor_class
    assert processor.chat_template == fam.chat_template
    regex = registry.lora_target_regex(fam, "all")
    names = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and re.fullmatch(regex, n)]
    for scope in fam.lora_modules:  # every scope finds Linear layers of its own
        assert any(re.fullmatch(fam.lora_modules[scope], n) for n in names), scope
    params = dict(model.named_parameters())
    for scope in fam.lora_parameters:  # and every parameter scope its parameters
        assert all(any(n.endswith(p) for n in params) for p in fam.lora_parameters[scope]), scope


@pytest.mark.parametrize("family", sorted(TINY))
@pytest.mark.parametrize(
    ("height", "width", "max_pixels"), [(60, 70, 56 * 56 * 2), (120, 50, 56 * 56 * 6), (64, 64, None)]
)
def test_the_familys_pixel_rule_promises_the_tokens_its_processor_makes(family, height, width, max_pixels):
    """The real-size check compares the visual tokens of a sample with what the pixel bounds promise."""
    from megc_vqa.models.prompting import PromptOptions, build_messages, encode_prompts, render_prompt
    from megc_vqa.training.preflight import pixel_bounds, visual_token_counts
    from megc_vqa.visual.samplers import VisualInputs

    processor = registry.load_processor(TINY[family])
    one_image = (np.zeros((height, width, 3), np.uint8),)
    visual = VisualInputs(one_image, None, (0, 4, 8), 100.0, KEY_FRAMES)
    options = PromptOptions(max_pixels=max_pixels)
    prompt = render_prompt(processor, build_messages("q", visual, None, options))
    batch = encode_prompts(processor, [prompt], [visual], options)
    lo, hi = pixel_bounds(processor, options, "image")
    promised = registry.FAMILIES[family].visual_tokens(height, width, lo, hi)
    assert visual_token_counts(processor, batch["input_ids"]) == [promised] and promised > 0


@pytest.mark.parametrize(
    ("hub_id", "billions"),
    # parameters on the model cards, to their one decimal (InternVL3.5-2B: 0.3B vision + 2.0B language)
    [
        ("OpenGVLab/InternVL3_5-2B-HF", 2.3),
        ("zai-org/GLM-4.1V-9B-Thinking", 10.3),
        ("Qwen/Qwen3-VL-30B-A3B-Instruct", 31.1),
    ],
)
def test_published_configs_of_the_new_families_have_the_published_sizes(hub_id, billions):
    from megc_vqa.models.published import PUBLISHED, model_class, model_config

    with torch.device("meta"):
        model = model_class(PUBLISHED[hub_id].family)._from_config(model_config(hub_id))
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, abs=0.06)
    assert model_config(hub_id, layers=2, vision_layers=4).get_text_config().num_hidden_layers == 2


def test_every_family_recipe_names_a_published_config():
    from megc_vqa.models.published import PUBLISHED
    from megc_vqa.training.config import load_yaml

    for family in NEW:
        assert load_yaml(recipe_path(family))["model_name_or_path"] in PUBLISHED, family


# --- bad input -------------------------------------------------------------------------------------


def test_unsupported_model_type_lists_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava_next"}))
    with pytest.raises(registry.ModelLoadError) as err:
        registry.resolve(tmp_path)
    message = str(err.value)
    assert "'llava_next' is not supported" in message
    assert all(t in message for f in registry.FAMILIES.values() for t in f.model_types)


@pytest.mark.parametrize("family", NEW)
def test_a_scope_the_family_lacks_lists_its_scopes(family, tmp_path):
    from megc_vqa.training.config import ConfigError, parse_config

    fam = registry.FAMILIES[family]
    lacking = next((s for s in ("experts", "merger", "vision") if s not in fam.scopes), "projector")
    args = ["--model_name_or_path", TINY[family], "--train_file", str(tmp_path / "qa.jsonl")]
    with pytest.raises(
        ConfigError, match=rf"lora_target: unknown LoRA scope.*{fam.name}.*{', '.join(fam.scopes)}"
    ):
        parse_config([*args, "--lora_target", f"language+{lacking}"])


def test_a_processor_without_a_template_gets_the_familys_with_a_warning(tmp_path, caplog):
    import shutil

    src = registry.resolve("tiny-qwen3-vl")[0]
    shutil.copytree(src, tmp_path / "m")
    for name in ("chat_template.jinja", "chat_template.json"):
        (tmp_path / "m" / name).unlink(missing_ok=True)
    config = tmp_path / "m" / "processor_config.json"
    data = json.loads(config.read_text())
    data.pop("chat_template", None)
    config.write_text(json.dumps(data))
    with caplog.at_level("WARNING"):
        processor = registry.load_processor(tmp_path / "m")
    assert processor.chat_template == registry.FAMILIES["qwen3_vl"].chat_template
    assert "no chat template; using the qwen3_vl family's" in caplog.text


# --- from recipe to answer -------------------------------------------------------------------------

COARSE = ("negative", "positive", "surprise")


def make_records(n_subjects: int = 4, clips: int = 3) -> list[dict]:
    rows = []
    for s in range(n_subjects):
        for c in range(clips):
            image_id = f"sub{s:02d}_EP{c:02d}"
            for k, (q, a) in enumerate(
                [(T.COARSE_QUESTION, COARSE[(s + c) % 3]), (T.FINE_QUESTION, "happiness")]
            ):
                rows.append(
                    {"id": f"casme2_{image_id}_{k}", "dataset": "casme2", "image_id": image_id,
                     "subject": f"sub{s:02d}", "filename": f"EP{c:02d}", "question": q, "answer": a,
                     "source": f"/frames/{image_id}", "fps": 200.0, "onset": 0, "apex": 4, "offset": 8}
                )  # fmt: skip
    return rows


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("qa") / "qa.jsonl", make_records())


@pytest.fixture(scope="module")
def clip_set(tmp_path_factory) -> tuple[Path, Path]:
    """A four-row question file and its ``megc-vqa synth-test`` frames."""
    from megc_vqa.cli import main as cli

    root = tmp_path_factory.mktemp("testset")
    questions = root / "me_vqa_samm_test_to_answer.jsonl"
    lines = (REPO / "data/megc/2025/me_vqa_samm_test_to_answer.jsonl").read_text().splitlines()[:4]
    questions.write_text("\n".join(lines) + "\n")
    args = [
        "synth-test",
        "--questions",
        str(questions),
        "--out",
        str(root / "set"),
        "--size",
        "64",
        "--workers",
        "1",
    ]
    assert cli(args) == 0
    return questions, root / "set"


def recipe_path(family: str) -> Path:
    return REPO / "recipes" / family / "lora.yaml"


@pytest.fixture(scope="module", params=NEW)
def trained(request, qa_file, tmp_path_factory):
    """Two LoRA steps of the family's recipe (every scope it has) on its tiny model."""
    from megc_vqa.training.config import parse_config
    from megc_vqa.training.finetune import train

    family = request.param
    out = tmp_path_factory.mktemp(family) / "lora"
    args = ["--config", str(recipe_path(family)), "--model_name_or_path", TINY[family], "--train_file",
            str(qa_file), "--output_dir", str(out), "--report_to", "none", "--disable_tqdm", "true",
            "--max_steps", "2", "--lora_target", "all", "--max_pixels", str(56 * 56 * 2), "--image_size", "56",
            "--per_device_train_batch_size", "2", "--final_eval", "false", "--bf16", "false", "--dtype", "float32",
            "--use_cpu", "true", "--activation_checkpointing", "false", "--lora_dropout", "0", "--eval_strategy", "no",
            "--visual_cache_dir", str(out.parent / "cache")]  # fmt: skip
    recipe = parse_config(args)
    return family, recipe, train(recipe, visual_fn=visual_fn)


def test_the_family_trains_from_its_recipe(trained):
    family, _, result = trained
    assert math.isfinite(result.metrics["train_loss"])
    trainable = [n for n, p in result.model.named_parameters() if p.requires_grad]
    assert all("lora_" in n for n in trainable)  # the router and every base weight stay frozen
    if registry.FAMILIES[family].moe:  # LoRA on the fused experts, never on the router
        assert any(".experts." in n for n in trainable) and not any("mlp.gate." in n for n in trainable)
    assert type(result.model.get_base_model()).__name__ == registry.FAMILIES[family].model_class
    lora_b = [p for n, p in result.model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # B starts at zero: every scope trained
    assert (result.output_dir / "adapter_model.safetensors").is_file()


def test_run_vqa_and_the_repl_answer_with_the_adapter(trained, clip_set, tmp_path, monkeypatch):
    from megc_vqa.answering.run_vqa import run_vqa
    from megc_vqa.cli import main as cli

    _, _, result = trained
    questions, frames = clip_set
    run = run_vqa([questions], frames, str(result.output_dir), tmp_path / "out", progress=False)
    rows = [json.loads(line) for line in run.prediction_files[0].read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["answer"] in COARSE
    clip = next(p for p in frames.rglob("*") if p.is_dir() and any(p.glob("*.jpg")))
    script = f"{T.COARSE_QUESTION}\n:save {tmp_path / 't.jsonl'}\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(script))
    argv = ["ask", "--model", str(result.output_dir), "--clip", str(clip), "--sheet", str(tmp_path / "s.png")]
    assert cli(argv) == 0
    transcript = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert transcript[0]["answer"] in COARSE


@pytest.mark.slow
def test_merge_adapter_gives_the_same_outputs(trained, tmp_path):
    from megc_vqa.cli import main as cli
    from megc_vqa.models.collator import VQACollator
    from megc_vqa.training.finetune import prompt_options

    _, recipe, result = trained
    merged = tmp_path / "merged"
    assert cli(["merge-adapter", str(result.output_dir), "--out", str(merged)]) == 0
    model, processor = registry.load_for_inference(merged, dtype="float32")
    batch = VQACollator(processor, visual_fn, prompt_options(recipe))(make_records()[:2])
    with torch.no_grad():
        assert torch.allclose(model.eval()(**batch).logits, result.model.eval()(**batch).logits, atol=1e-4)


def test_an_adapter_of_one_family_is_refused_on_another(trained):
    from megc_vqa.answering.engine import Engine, EngineError

    family, _, result = trained
    other = next(name for f, name in TINY.items() if f != family)
    with pytest.raises(EngineError, match=rf"trained on a {family} model.*cannot be applied to {other}"):
        Engine.load(other, result.output_dir)


@pytest.mark.slow
@pytest.mark.parametrize("family", sorted(p.name for p in (REPO / "recipes").iterdir() if p.name in TINY))
def test_export_takes_the_family_recipe(family, qa_file, tmp_path):
    from megc_vqa.cli import main as cli

    frames = tmp_path / "frames"
    for r in make_records(2, 1):
        folder = frames / r["image_id"]
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(9):
            import PIL.Image

            PIL.Image.fromarray(np.full((40, 40, 3), i * 20, np.uint8)).save(folder / f"img{i}.jpg")
    rows = [dict(r, source=str(frames / r["image_id"])) for r in make_records(2, 1)]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "export"
    recipe = recipe_path(family)
    code = cli(["export", "--format", "swift", "--qa", str(qa), "--out", str(out), "--recipe", str(recipe)])
    if "visual_mode: video" in recipe.read_text():  # exported rows are images: a video recipe is refused
        assert code == 2 and not out.exists()
    else:
        assert code == 0 and (out / "megc_train.jsonl").is_file()


def test_a_local_model_path_accepts_every_familys_scopes_including_experts():
    """A built or downloaded folder names no family before it loads: its recipe is checked against the
    scopes any family has (the MoE's ``experts`` included), and an unknown one is still refused."""
    from megc_vqa.training.config import ConfigError, check_scopes

    check_scopes("r.yaml", "/models/local-moe", "language+experts", None)
    with pytest.raises(ConfigError, match="bogus"):
        check_scopes("r.yaml", "/models/local-moe", "language+bogus", None)
