"""The model contract: one training record from training to every answer, validation through the submission
scorer, and train/test parity of the model inputs."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from megc_vqa.models.contract import (  # noqa: E402
    RECORD_NAME,
    ContractError,
    ModelContract,
    VisualContract,
    read_contract,
)
from megc_vqa.models.prompting import PromptOptions  # noqa: E402
from megc_vqa.qa import templates as T  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# -- the record -----------------------------------------------------------------------------------------


def test_record_round_trips_and_checks_its_invariants(tmp_path):
    contract = ModelContract(
        prompt=PromptOptions(visual_mode="video", max_pixels=3136),
        visual=VisualContract("uniform:4+flow", 56, face_crop=True, apex_policy="mix"),
        model_name_or_path="tiny-qwen2.5-vl",
        val_subjects=("casme2/sub01",),
    )
    path = contract.write(tmp_path)
    assert path.name == RECORD_NAME
    loaded = read_contract(tmp_path)
    assert loaded == contract and loaded.source == str(path)
    with pytest.raises(ContractError, match="apex_policy"):
        VisualContract(apex_policy="sometimes")
    with pytest.raises(ContractError, match=r"visual\.spec"):
        VisualContract("oao+flwo")
    with pytest.raises(ContractError, match="min_pixels is above"):
        ModelContract(prompt=PromptOptions(min_pixels=5000, max_pixels=4000))


def test_a_record_from_another_version_names_the_key(tmp_path):
    data = ModelContract().to_json()
    (tmp_path / RECORD_NAME).write_text(json.dumps({**data, "temporal_ids": True}))
    with pytest.raises(ContractError, match=r"megc_vqa_train.json: unknown key 'temporal_ids'"):
        read_contract(tmp_path)
    (tmp_path / RECORD_NAME).write_text(json.dumps({**data, "visual": {**data["visual"], "fps": 5}}))
    with pytest.raises(ContractError, match=r"unknown key 'visual.fps'"):
        read_contract(tmp_path)
    (tmp_path / RECORD_NAME).write_text(json.dumps({**data, "format_version": 99}))
    with pytest.raises(ContractError, match=r"'format_version' is 99.*Upgrade"):
        read_contract(tmp_path)


def test_first_layout_records_still_load(tmp_path):
    """Records written before the contract (no format_version; runtime cache keys in 'visual')."""
    old = {
        "model_name_or_path": "tiny-qwen2.5-vl", "family": "qwen2_5_vl", "use_peft": True,
        "prompt": {"visual_mode": "images", "system_prompt": None, "describe_visuals": True,
                   "min_pixels": None, "max_pixels": 3136},
        "visual": {"spec": "oao+flow", "size": 56, "face_crop": False, "cache_dir": None, "memory_cache": 512},
        "blank_pixels": False, "val_subjects": ["samm/7"], "recipe": "recipes/tiny/lora.yaml",
    }  # fmt: skip
    (tmp_path / RECORD_NAME).write_text(json.dumps(old))
    contract = read_contract(tmp_path)
    assert contract.visual.size == 56 and contract.prompt.max_pixels == 3136
    assert contract.val_subjects == ("samm/7",)


def test_no_record_means_defaults_said_once(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="megc_vqa.models.contract"):
        assert read_contract(tmp_path / "plain") == ModelContract()
        assert read_contract(tmp_path / "plain") == ModelContract()
    said = [r for r in caplog.records if "default prompt and visual settings" in r.getMessage()]
    assert len(said) == 1


def test_an_override_is_used_warned_and_recorded(tmp_path, caplog):
    ModelContract(visual=VisualContract("oao+flow", 56)).write(tmp_path)
    recorded = read_contract(tmp_path)
    with caplog.at_level(logging.WARNING):
        used = recorded.override(spec="oao", size=56, face_crop=None)
    assert used.visual.spec == "oao" and used.visual.size == 56
    assert used.overrides == (("spec", "oao+flow", "oao"),)
    assert used.summary()["overrides"] == [{"key": "spec", "recorded": "oao+flow", "used": "oao"}]
    assert any("overrides 'oao+flow'" in r.getMessage() for r in caplog.records)
    assert recorded.override(size=56) is recorded  # the same value is no override


# -- train/test parity ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory) -> Path:
    from megc_vqa.visual.toyclips import write_toy_clip

    folder = tmp_path_factory.mktemp("clips") / "SAMM-9"
    write_toy_clip(folder, 12, 4)
    return folder


@pytest.fixture(scope="module")
def processor():
    from megc_vqa.models.registry import load_processor

    return load_processor("tiny-qwen2.5-vl")


def _record(folder: Path, apex: int) -> dict:
    from megc_vqa.visual.frames import list_frames

    frames = list_frames(folder)
    return {
        "id": "samm_9_1", "dataset": "samm", "image_id": "9", "subject": "9", "filename": "9",
        "question": T.COARSE_QUESTION, "answer": "negative", "source": str(folder), "source_kind": "folder",
        "fps": 200.0, "onset": frames[0][0], "apex": apex, "offset": frames[-1][0],
    }  # fmt: skip


def test_a_training_example_and_an_answering_prompt_of_one_clip_are_the_same_inputs(clip_folder, processor):
    """Training with apex_policy=estimated (the test-time policy) builds, for a clip, exactly the prompt
    tokens and pixels that answering builds for the same frames; with the annotated apex they differ."""
    from megc_vqa.answering.engine import Engine, EngineOptions
    from megc_vqa.answering.run_vqa import ClipJob, _visual_inputs
    from megc_vqa.models.prompting import IGNORE_INDEX, encode_for_training
    from megc_vqa.qa.records import QARecord
    from megc_vqa.training.data import make_visual_fn

    contract = ModelContract(
        prompt=PromptOptions(max_pixels=3136),
        visual=VisualContract("oao+flow", 56, apex_policy="estimated"),
    )
    record = QARecord.from_json(_record(clip_folder, apex=3))
    train_visual = make_visual_fn(contract.visual)(record)
    batch = encode_for_training(processor, [(record.question, train_visual, record.answer)], contract.prompt)
    prompt_ids = batch["input_ids"][0][batch["labels"][0] == IGNORE_INDEX]

    class Model(torch.nn.Module):  # the engine's encoder needs no weights
        device = torch.device("cpu")

    engine = Engine(Model(), processor, EngineOptions(), contract=contract)
    test_visual = _visual_inputs(ClipJob(Path("q.jsonl"), "SAMM-9", clip_folder, 200.0), contract, None)
    answer_inputs = engine._encode([T.COARSE_QUESTION], [test_visual])
    assert torch.equal(answer_inputs["input_ids"][0], prompt_ids)
    assert torch.equal(answer_inputs["pixel_values"], batch["pixel_values"])
    assert torch.equal(answer_inputs["image_grid_thw"], batch["image_grid_thw"])
    assert "3" not in processor.tokenizer.decode(prompt_ids)  # no frame numbers in the prompt

    annotated = make_visual_fn(VisualContract("oao+flow", 56, apex_policy="annotated"))(record)
    assert annotated.apex == 3 != test_visual.apex  # the toy clip's motion peak is elsewhere
    other = encode_for_training(processor, [(record.question, annotated, record.answer)], contract.prompt)
    assert not torch.equal(other["pixel_values"], answer_inputs["pixel_values"])


def test_mix_policy_estimates_about_half_of_the_clips_stably():
    from megc_vqa.records import Clip, FrameSource
    from megc_vqa.training.data import uses_estimated_apex

    clips = [
        Clip("casme2", "s", f"c{i}", f"c{i}", FrameSource("folder", Path("x")), 200.0, 0, 9, 4)
        for i in range(200)
    ]
    picks = [uses_estimated_apex(c, "mix") for c in clips]
    assert 60 < sum(picks) < 140 and picks == [uses_estimated_apex(c, "mix") for c in clips]
    assert all(uses_estimated_apex(c, "estimated") for c in clips[:5])
    assert not any(uses_estimated_apex(c, "annotated") for c in clips[:5])


# -- validation through the engine and the submission scorer --------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory, clip_folder):
    """Two LoRA steps of the tiny model on a non-default visual spec, with a validation split."""
    from megc_vqa.training.config import parse_config
    from megc_vqa.training.finetune import train

    rows = []
    for dataset in ("casme2", "samm"):
        for s in range(4):
            for k, (q, a) in enumerate(
                [
                    (T.COARSE_QUESTION, ("negative", "positive", "surprise")[s % 3]),
                    (T.FINE_QUESTION, "happiness"),
                ],
                1,
            ):
                rows.append({**_record(clip_folder, 5), "id": f"{dataset}_s{s}_{k}", "dataset": dataset,
                             "subject": f"s{s}", "image_id": f"s{s}", "question": q, "answer": a})  # fmt: skip
    work = tmp_path_factory.mktemp("val")
    qa = work / "qa.jsonl"
    qa.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = work / "out"
    recipe = parse_config([
        "--config", str(ROOT / "recipes/tiny/lora.yaml"), "--train_file", str(qa), "--output_dir", str(out),
        "--report_to", "none", "--disable_tqdm", "true", "--max_steps", "2", "--val_fraction", "0.5",
        "--visual_spec", "oao+diff", "--apex_policy", "mix", "--save_strategy", "no",
    ])  # fmt: skip
    train(recipe)
    return out


def test_validation_metrics_are_the_scorers_and_score_py_reproduces_them(trained):
    metrics = json.loads((trained / "val_metrics.json").read_text())
    truth = [json.loads(line) for line in (trained / "val_truth.jsonl").read_text().splitlines()]
    preds = [json.loads(line) for line in (trained / "val_predictions.jsonl").read_text().splitlines()]
    assert len(truth) == len(preds) == 8 and {r["dataset"] for r in truth} == {"casme2", "samm"}
    assert [p["video_id"] for p in preds] == [t["video_id"] for t in truth]
    # The engine's grammar: every coarse answer is a label.
    assert all(
        p["answer"] in ("negative", "positive", "surprise")
        for p in preds
        if p["question"] == T.COARSE_QUESTION
    )
    assert metrics["variant"] and "uf1_fine" in metrics["overall"] and "bleu" in metrics["samm"]
    assert metrics["settings"]["visual"]["spec"] == "oao+diff"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "eval/score.py"), "vqa", "--pred", str(trained / "val_predictions.jsonl"),
         "--gt", str(trained / "val_truth.jsonl")],
        capture_output=True, text=True, timeout=120, cwd=trained,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    scored = json.loads(proc.stdout)
    assert set(scored) == set(metrics) - {"settings"}

    def close(a, b, where):
        if isinstance(a, dict):
            assert set(a) == set(b), where
            for k in a:
                close(a[k], b[k], f"{where}.{k}")
        elif isinstance(a, float) and isinstance(b, float):
            assert abs(a - b) <= 1e-9 or (a != a and b != b), where
        else:
            assert a == b, where

    close(scored, {k: v for k, v in metrics.items() if k != "settings"}, "scores")


def test_the_record_next_to_the_adapter_drives_str_asking(trained, clip_folder):
    """run_str/run_lvqa's VQA asker samples with the record's non-default spec and reports it."""
    from megc_vqa.records import FrameSource
    from megc_vqa.spotting.pipeline import engine_ask

    record = read_contract(trained)
    assert record.visual.spec == "oao+diff" and record.visual.apex_policy == "mix"
    assert record.model_name_or_path == "tiny-qwen2.5-vl" and record.prompt.max_pixels == 3136
    ask = engine_ask("tiny-qwen2.5-vl", str(trained))
    assert ask.settings["visual"]["spec"] == "oao+diff" and ask.settings["record"].endswith(RECORD_NAME)
    seen = []
    original = ask.contract.sample
    object.__setattr__(ask.contract, "sample", lambda clip, *a: seen.append(v := original(clip, *a)) or v)
    answer = ask(FrameSource("folder", clip_folder), [1, 5, 12], T.COARSE_QUESTION, 200.0)
    assert answer in ("negative", "positive", "surprise")
    assert len(seen[0].images) == 4 and "diff onset->apex" in seen[0].description  # 3 frames + diff
    overridden = engine_ask("tiny-qwen2.5-vl", str(trained), visual_spec="oao")
    assert overridden.settings["overrides"] == [{"key": "spec", "recorded": "oao+diff", "used": "oao"}]


# -- qa.jsonl frame paths --------------------------------------------------------------------------------


def test_relative_sources_resolve_against_the_qa_file(tmp_path, monkeypatch):
    from megc_vqa.qa.io import read_qa_jsonl, write_qa_jsonl
    from megc_vqa.qa.records import QARecord

    frames = tmp_path / "data" / "clip"
    frames.mkdir(parents=True)
    record = QARecord("a_1", "casme2", "1", "s", "f", T.COARSE_QUESTION, "negative", source=str(frames))
    path = write_qa_jsonl([record], tmp_path / "prep" / "qa.jsonl", relative_sources=True)
    assert json.loads(path.read_text())["source"] == "../data/clip"
    monkeypatch.chdir(tmp_path / "data")  # anywhere else
    (loaded,) = read_qa_jsonl(Path("../prep/qa.jsonl"))
    assert loaded.source == str(frames) and Path(loaded.source).is_dir()


def test_repl_info_shows_the_settings_in_use(tmp_path):
    import io

    from megc_vqa.answering.repl import ClipRequest, Session

    used = ModelContract().override(spec="oao")
    out = io.StringIO()
    session = Session(
        answer=lambda visual, q: "negative",
        load_visual=lambda req: None,
        clip=ClipRequest(tmp_path),
        out=out,
        info=used.summary,
    )
    assert session.handle(":info")
    shown = json.loads(out.getvalue())
    assert shown["visual"]["spec"] == "oao" and shown["overrides"][0]["recorded"] == "oao+flow"
