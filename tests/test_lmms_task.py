"""Issue 25 item 3: the MEGC tasks for lmms-eval (megc_vqa/lmms_tasks, megc_vqa.answering.lmms).

Default suite: the documents, the visual inputs (the project's sampler), the aggregation against score.py,
and a clip without frames. Slow (only when lmms_eval imports): lmms-eval's own CLI on the tiny Qwen2.5-VL,
its scores equal to score.py's on the same predictions."""

from __future__ import annotations

import glob
import importlib.util
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from megc_vqa.answering import lmms
from megc_vqa.cli import main as cli
from megc_vqa.errors import InputError
from megc_vqa.lmms_tasks import ENV_FRAMES, ENV_QA, TASKS, TASKS_DIR
from megc_vqa.qa import templates as T

ROOT = Path(__file__).resolve().parents[1]
SAMM_2025 = "2025/me_vqa_samm_test_to_answer.jsonl"


@pytest.fixture(autouse=True)
def _root_handlers():
    before = list(logging.getLogger().handlers)
    yield
    logging.getLogger().handlers[:] = before


@pytest.fixture(scope="module")
def prep_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("lmms")
    args = [
        "--datasets",
        "casme2",
        "--subjects",
        "2",
        "--clips-per-subject",
        "2",
        "--size",
        "32",
        "--workers",
        "1",
    ]
    assert cli(["synth", "--out", str(root / "data"), *args]) == 0
    assert cli(["prep", "--data-root", str(root / "data"), "--out", str(root / "prep"), "--no-progress"]) == 0
    return root / "prep"


def _score_script():
    spec = importlib.util.spec_from_file_location("score_script", ROOT / "eval" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _score_py(tmp: Path, items: list[dict], capsys) -> dict:
    """score.py vqa on the predictions and ground truth of ``process_results`` items."""
    pred = tmp / "pred.jsonl"
    gt = tmp / "gt.jsonl"
    pred.write_text(
        "".join(json.dumps({"video_id": r["video_id"], "answer": r["prediction"]}) + "\n" for r in items)
    )
    gt.write_text("".join(json.dumps({"video_id": r["video_id"], "question": r["question"], "answer": r["reference"],
                                      "dataset": r["dataset"]}) + "\n" for r in items))  # fmt: skip
    assert _score_script().main(["vqa", "--pred", str(pred), "--gt", str(gt)]) == 0
    return json.loads(capsys.readouterr().out)["overall"]


def test_the_command_prints_the_folder_of_the_tasks(capsys):
    assert cli(["lmms-tasks"]) == 0
    folder = Path(capsys.readouterr().out.strip())
    assert folder == TASKS_DIR and (folder / "utils.py").is_file()
    names = set()
    for path in folder.glob("*.yaml"):
        text = path.read_text()
        names |= {
            line.split(":", 1)[1].strip()
            for line in text.splitlines()
            if line.startswith(("task:", "group:"))
        }
        for line in text.splitlines():
            if "megc_source:" in line and "prep" not in line:
                assert lmms.question_file(line.split(":", 1)[1].strip()).is_file()
    assert set(TASKS) <= names


def test_aggregation_is_the_project_scorer(prep_dir, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(ENV_QA, str(prep_dir))
    docs = lmms.prep_docs()
    rng = np.random.default_rng(3)
    pool = ["negative", "positive", "surprise", "disgust", "happiness", "", "Negative.", "brow lowerer"]
    items = []
    for doc in docs:
        answer = doc["answer"] if rng.random() < 0.5 else str(rng.choice(pool))
        items.append(lmms.process_results(doc, [answer])["uf1_coarse"])
    want = _score_py(tmp_path, items, capsys)
    got = {key: fn(items) for key, fn in lmms.AGGREGATIONS.items()}
    for key in (*lmms.SCORED_METRICS, "n_invalid", "n_rows"):
        assert got[key] == pytest.approx(want[key]), key
    assert 0 < got["uf1_coarse"] < 1 and got["n_invalid"] > 0


def test_visual_inputs_are_the_project_sampler_s(prep_dir, monkeypatch):
    from megc_vqa.qa.io import read_qa_jsonl
    from megc_vqa.training.data import make_visual_fn

    monkeypatch.setenv(ENV_QA, str(prep_dir / "qa.jsonl"))
    doc = lmms.prep_docs()[0]
    record = read_qa_jsonl(prep_dir / "qa.jsonl")[0]
    images = lmms.doc_to_visual(doc)
    expected = make_visual_fn(apex_policy="estimated")(record)
    assert len(images) == len(expected.images) >= 2
    for image, array in zip(images, expected.images, strict=True):
        assert np.array_equal(np.asarray(image), array)
    text = lmms.doc_to_text(doc)
    assert text.endswith(doc["question"]) and expected.description in text


def test_a_clip_without_frames_is_one_line_naming_the_first(monkeypatch, tmp_path):
    from megc_vqa.qa.io import read_questions

    videos = list(dict.fromkeys(r.video for r in read_questions(lmms.question_file(SAMM_2025))))
    frames = tmp_path / "frames"
    (frames / videos[0]).mkdir(parents=True)
    (frames / videos[0] / "img1.jpg").write_bytes(b"x")
    (frames / videos[1]).mkdir()  # a folder without frames
    monkeypatch.setenv(ENV_FRAMES, str(frames))
    with pytest.raises(InputError) as err:
        lmms.question_docs(SAMM_2025)
    message = str(err.value)
    assert f"no frames for clip {videos[1]} " in message and "\n" not in message
    for video in videos[1:]:
        (frames / video).mkdir(exist_ok=True)
        (frames / video / "img1.jpg").write_bytes(b"x")
    docs = lmms.question_docs(SAMM_2025)
    assert {d["video"] for d in docs} == set(videos) and all(d["dataset"] == "samm" for d in docs)
    monkeypatch.setenv(ENV_QA, str(tmp_path / "nowhere"))
    with pytest.raises(InputError, match="no such file"):
        lmms.prep_docs()


def test_a_prep_record_without_frames_names_its_clip(prep_dir, monkeypatch, tmp_path):
    rows = [json.loads(line) for line in (prep_dir / "qa.jsonl").read_text().splitlines()]
    rows[3]["source"] = str(tmp_path / "gone")
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setenv(ENV_QA, str(tmp_path))
    with pytest.raises(InputError, match=f"no frames for clip casme2/{rows[3]['image_id']}"):
        lmms.prep_docs()


@pytest.mark.slow
def test_lmms_eval_cli_on_the_tiny_model_scores_as_score_py(prep_dir, tmp_path, capsys):
    pytest.importorskip("lmms_eval")
    from megc_vqa.models.tiny import ensure_tiny

    tiny = ensure_tiny("tiny-qwen2.5-vl")
    env = {**os.environ, ENV_QA: str(prep_dir), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    out = tmp_path / "lmms"
    command = [
        sys.executable, "-m", "lmms_eval", "eval", "--model", "qwen2_5_vl",
        "--model_args", f"pretrained={tiny},device=cpu,device_map=cpu,min_pixels=3136,max_pixels=12544",
        "--tasks", "megc_vqa_prep", "--include_path", str(TASKS_DIR), "--limit", "12", "--batch_size", "4",
        "--gen_kwargs", "max_new_tokens=12", "--log_samples", "--output_path", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1500)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(Path(glob.glob(str(out / "*" / "*_results.json"))[0]).read_text())
    got = results["results"]["megc_vqa_prep"]
    samples = [
        json.loads(line)
        for line in Path(glob.glob(str(out / "*" / "*_samples_*.jsonl"))[0]).read_text().splitlines()
    ]
    items = [s["uf1_coarse"] for s in samples]
    assert len(items) == 12 and any(i["prediction"].strip() for i in items)
    assert {i["question"] for i in items} >= {T.COARSE_QUESTION}
    want = _score_py(tmp_path, items, capsys)
    for key in (*lmms.SCORED_METRICS, "n_invalid", "n_rows"):
        assert got[f"{key},none"] == pytest.approx(want[key]), key

    # the same run pointed at frames that are not there: one line naming the first missing clip
    bad = prep_dir.parent / "bad"
    bad.mkdir(exist_ok=True)
    rows = (prep_dir / "qa.jsonl").read_text().splitlines()
    first = json.loads(rows[0])
    (bad / "qa.jsonl").write_text(
        "\n".join([json.dumps({**first, "source": str(bad / "gone")}), *rows[1:]]) + "\n"
    )
    done = subprocess.run([*command[:-2], "--output_path", str(tmp_path / "bad_out")],
                          env={**env, ENV_QA: str(bad)}, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 2
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"no frames for clip casme2/{first['image_id']}" in errors[0]
