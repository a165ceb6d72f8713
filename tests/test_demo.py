"""The demo: held-out scoring helpers, run fingerprinting (resume / refuse), and (slow) its bars."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from megc_vqa.errors import UsageError
from megc_vqa.metrics.vqa import au_set_f1, score_vqa, set_f1
from megc_vqa.qa import templates as T

REPO = Path(__file__).resolve().parents[1]


def _qa(i: str, question: str, answer: str, dataset: str = "casme2", image: str = "c1") -> dict:
    return {"id": i, "dataset": dataset, "subject": "s1", "image_id": image, "question": question,
            "answer": answer}  # fmt: skip


def test_au_set_f1_and_per_kind_scores():
    assert set_f1({"a"}, set()) == 0.0
    assert au_set_f1(["brow lowerer, lid tightener"], ["Lid tightener, brow lowerer."]) == 1.0
    assert au_set_f1(["brow lowerer"], [None]) == 0.0
    presence = T.PRESENCE_QUESTION.format(name="brow lowerer")
    joint = T.joint_answer(["brow lowerer"], "anger", "negative")
    gt = [
        {"video_id": "1", "question": T.AU_QUESTION_PLURAL, "answer": "brow lowerer, lid tightener"},
        {"video_id": "2", "question": presence, "answer": "yes"},
        {"video_id": "3", "question": presence, "answer": "no"},
        {"video_id": "4", "question": T.JOINT_QUESTION_SINGULAR, "answer": joint},
    ]
    pred = [
        {"video_id": "1", "answer": "brow lowerer"},
        {"video_id": "2", "answer": "yes"},
        {"video_id": "3", "answer": "yes"},
        {"video_id": "4", "answer": joint.upper()},
    ]
    overall = score_vqa(pred, gt)["overall"]
    assert overall["au_f1"] == pytest.approx(2 / 3)
    assert overall["presence_acc"] == 0.5
    assert overall["joint_exact"] == 1.0
    assert overall["side_acc"] is None and overall["n_presence"] == 2


class _Answer:
    def __init__(self, text: str) -> None:
        self.text = text


class _EchoEngine:
    """Answers each question with the visual's name: shows which clip's visual a row was given."""

    class options:  # mimics EngineOptions
        batch_size = 1
        seed = 0
        consistency = True

    def __init__(self) -> None:
        self.calls: list[int] = []
        self.datasets: list[str | None] = []

    def answer_clips_variants(self, clips, consistency, sample_seed=None, datasets=None):
        self.calls.append(sum(len(qs) for _, qs in clips))
        self.datasets += datasets
        return [[([_Answer(visual) for _ in qs], []) for visual, qs in clips] for _ in consistency]


def test_answer_records_shares_one_visual_per_clip_and_scores():
    from megc_vqa.eval_heldout import answer_records, score_heldout

    records = [
        _qa("a1", T.COARSE_QUESTION, "negative", image="a"),
        _qa("a2", T.FINE_QUESTION, "disgust", image="a"),
        _qa("b1", T.COARSE_QUESTION, "positive", image="b"),
        _qa("c1", T.COARSE_QUESTION, "surprise", dataset="smic", image="c"),
    ]
    built: list[str] = []

    def visual_fn(record):
        built.append(record["image_id"])
        return {"a": "negative", "b": "negative", "c": "surprise"}[record["image_id"]]

    engine = _EchoEngine()
    preds = answer_records(engine, records, visual_fn)
    assert built == ["a", "b", "c"]  # one visual per clip
    assert [p["video_id"] for p in preds] == ["a1", "a2", "b1", "c1"]
    assert engine.calls == [2, 2]  # whole clips, at most 2 * batch_size rows, never split
    assert engine.datasets == ["casme2", "casme2", "smic"]  # each clip answered among its dataset's labels
    scores = score_heldout(records, preds)
    assert scores["n_clips"] == 3 and scores["n_rows"] == 4
    assert scores["uf1_coarse"] == pytest.approx((2 / 3 + 0 + 1) / 3)
    assert set(scores["datasets"]) == {"casme2", "smic"}


def _args(tmp_path: Path, seed: int) -> argparse.Namespace:
    from megc_vqa.demo import RECIPE

    return argparse.Namespace(seed=seed, recipe=RECIPE, out=tmp_path)


def test_demo_run_state_resumes_the_same_run_and_refuses_another(tmp_path):
    from megc_vqa.demo import QUESTIONS_DIR, RUN_FILE, RunState, run_fingerprint

    questions = sorted(QUESTIONS_DIR.glob("*_to_answer.jsonl"))
    out = tmp_path / "demo"
    state = RunState(out, run_fingerprint(_args(out, 0), questions), restart=False)
    for step in ("synth", "test"):
        (out / step).mkdir()
        (out / step / "x").write_text(step)
        state.finish(step)
    (out / "prep").mkdir()  # interrupted in prep: the folder is there, the step is not done
    (out / "prep" / "half").write_text("")

    resumed = RunState(out, run_fingerprint(_args(out, 0), questions), restart=False)
    assert resumed.done == ["synth", "test"] and resumed.todo("prep")
    assert (out / "synth" / "x").is_file() and not (out / "prep").exists()

    with pytest.raises(UsageError, match="seed 0, this seed 1"):
        RunState(out, run_fingerprint(_args(out, 1), questions), restart=False)
    assert (out / "synth" / "x").is_file()  # refusing touches nothing

    fresh = RunState(out, run_fingerprint(_args(out, 1), questions), restart=True)
    assert fresh.done == [] and not (out / "synth").exists()
    assert json.loads((out / RUN_FILE).read_text())["fingerprint"]["seed"] == 1

    foreign = tmp_path / "old"
    (foreign / "model").mkdir(parents=True)
    with pytest.raises(UsageError, match=r"no demo_run\.json"):
        RunState(foreign, run_fingerprint(_args(foreign, 0), questions), restart=False)


# -- the bars (slow: about 3-4 minutes of CPU) ------------------------------------------------------------

BARS = {"uf1_coarse": 0.9, "uf1_fine": 0.6, "au_f1": 0.6}


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_demo_learns_every_question_type_and_meets_its_bars(tmp_path, seed):
    import resource
    import time

    def children_cpu() -> float:
        # RUSAGE_CHILDREN adds up every child this process has waited for: the earlier seeds' demos too.
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    cpu_before = children_cpu()
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "megc_vqa.demo", "--out", str(tmp_path / "demo"), "--seed", str(seed)],
        capture_output=True, text=True, cwd=REPO, timeout=1200,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
             "MEGC_VQA_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    cpu = children_cpu() - cpu_before
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "leaderboard files:" in proc.stdout and "submission.zip" in proc.stdout
    scores = json.loads((tmp_path / "demo" / "scores.json").read_text())
    report = json.dumps({k: scores[k] for k in ("heldout", "consistency_off")}, default=str)[:3000]
    for section in (scores, scores["consistency_off"]):
        assert section["overall"]["uf1_coarse"] >= 0.9, report
        held = section["heldout"]
        assert held["n_clips"] >= 150, report
        for key, bar in BARS.items():
            assert held[key] >= bar, (key, report)
        assert {"uar_coarse", "uar_fine", "presence_acc", "joint_exact"} <= set(held)
    # 5 minutes on an idle 2-core machine: the CPU it used must fit in 2 cores x 5 minutes with room.
    assert cpu <= 7 * 60, cpu
    assert elapsed < 1200
