"""Issue 25, items 1 and 2: `score.py vqa` scores every row of a well-formed file (empty, unparseable and
off-vocabulary answers are wrong and counted), `--strict` keeps the leaderboard's refusal, and every kind is
scored from the registry through the one table of `megc_vqa.metrics.scoring` (a new kind needs no edit
outside `kinds.py` and `templates.py`)."""

from __future__ import annotations

import doctest
import importlib.util
import json
import logging
import random
from pathlib import Path

import pytest

from megc_vqa.metrics import scoring
from megc_vqa.metrics.vqa import score_vqa
from megc_vqa.qa import kinds as K
from megc_vqa.qa import templates as T
from megc_vqa.qa.kinds import QuestionKind

ROOT = Path(__file__).resolve().parents[1]
AU_NAMES = ("brow lowerer", "lid tightener", "lip corner puller", "cheek raiser")


@pytest.fixture(autouse=True)
def _root_handlers():
    """score.py's ``logging.basicConfig`` binds a handler to the captured stderr: drop it after each test."""
    before = list(logging.getLogger().handlers)
    yield
    logging.getLogger().handlers[:] = before


def _score_script():
    spec = importlib.util.spec_from_file_location("score_script", ROOT / "eval" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ---- an independent implementation (plain Python, written from SPEC section 5, no project code) ----
def ref_uf1_uar(truth: list[str], pred: list[str]) -> tuple[float, float]:
    t = [x.strip().lower() for x in truth]
    p = [x.strip().lower() for x in pred]
    f1s, recalls = [], []
    for c in sorted(set(t)):
        tp = sum(a == c and b == c for a, b in zip(t, p, strict=True))
        fp = sum(a != c and b == c for a, b in zip(t, p, strict=True))
        fn = sum(a == c and b != c for a, b in zip(t, p, strict=True))
        f1s.append(2 * tp / (2 * tp + fp + fn))
        recalls.append(tp / (tp + fn))
    return sum(f1s) / len(f1s), sum(recalls) / len(recalls)


def ref_set_f1(truth: str, pred: str) -> float:
    a = {x.strip() for x in truth.lower().rstrip(".").split(",") if x.strip()}
    b = {x.strip() for x in pred.lower().rstrip(".").split(",") if x.strip()}
    return 1.0 if not a and not b else 2 * len(a & b) / (len(a) + len(b))


def ref_invalid(vocabulary: tuple[str, ...], pred: str) -> bool:
    return pred.strip().lower() not in vocabulary


CASES = {  # question -> (ground-truth answers, prediction pool with empty and off-vocabulary answers)
    T.COARSE_QUESTION: (["negative", "positive", "surprise"], ["negative", "positive", "surprise", "Negative",
                        "", "Negative.", "happiness", "I think negative", "neutral"]),
    T.PRESENCE_QUESTION.format(name="brow lowerer"): (["yes", "no"], ["yes", "no", "", "maybe", "Yes"]),
    T.AU_QUESTION_PLURAL: (["brow lowerer, lid tightener", "lip corner puller, cheek raiser"],
                           ["brow lowerer, lid tightener", "lid tightener", "", "brow lowerer, frown",
                            "cheek raiser, lip corner puller"]),
}  # fmt: skip


def test_score_py_matches_an_independent_implementation_with_empty_and_off_vocabulary_answers(
    tmp_path, capsys
):
    """The B-style cross-check: files with empty, null and off-vocabulary answers are scored by score.py
    (not refused) and every figure equals the independent implementation's, invalid counts included."""
    rng = random.Random(25)
    script = _score_script()
    for trial in range(6):
        gts, preds = [], []
        for i in range(40):
            question = rng.choice(list(CASES))
            truths, pool = CASES[question]
            vid = f"{rng.choice(['samm_test_SAMM-1', 'casme3_test_CAS-2'])}_{i}"
            gts.append({"video_id": vid, "video": vid, "question": question, "answer": rng.choice(truths)})
            answer = None if rng.random() < 0.05 else rng.choice(pool)
            preds.append({"video_id": vid, "video": vid, "question": question, "answer": answer})
        gt = _write(tmp_path / f"gt{trial}.jsonl", gts)
        pred = _write(tmp_path / f"pred{trial}.jsonl", preds)
        assert script.main(["vqa", "--pred", str(pred), "--gt", str(gt)]) == 0
        captured = capsys.readouterr()
        out = json.loads(captured.out)
        for split, prefix in (("overall", ""), ("samm", "samm_test"), ("casme3", "casme3_test")):
            rows = [
                (g, p["answer"] or "")
                for g, p in zip(gts, preds, strict=True)
                if g["video_id"].startswith(prefix)
            ]
            coarse = [(g["answer"], a) for g, a in rows if g["question"] == T.COARSE_QUESTION]
            presence = [(g["answer"], a) for g, a in rows if g["question"].startswith("Is the action unit")]
            aus = [(g["answer"], a) for g, a in rows if g["question"] == T.AU_QUESTION_PLURAL]
            got = out[split]
            if coarse:
                uf1, uar = ref_uf1_uar([t for t, _ in coarse], [a for _, a in coarse])
                assert got["uf1_coarse"] == pytest.approx(uf1) and got["uar_coarse"] == pytest.approx(uar)
            if presence:
                acc = sum(t == a.strip().lower() for t, a in presence) / len(presence)
                assert got["presence_acc"] == pytest.approx(acc)
            if aus:
                assert got["au_f1"] == pytest.approx(sum(ref_set_f1(t, a) for t, a in aus) / len(aus))
            invalid = {
                "coarse": sum(ref_invalid(("negative", "positive", "surprise"), a) for _, a in coarse),
                "presence": sum(ref_invalid(("yes", "no"), a) for _, a in presence),
                "au": sum(
                    not a.strip() or not {x.strip() for x in a.split(",")} <= set(AU_NAMES) for _, a in aus
                ),
            }
            assert {k: got[f"n_invalid_{k}"] for k in invalid} == invalid, split
            assert got["n_invalid"] == sum(invalid.values()) and got["n_rows"] == len(rows)
        first = out["invalid_answers"].get("coarse", {}).get("first_ids", [])
        bad = [g["video_id"] for g, p in zip(gts, preds, strict=True)
               if g["question"] == T.COARSE_QUESTION and ref_invalid(CASES[T.COARSE_QUESTION][0], p["answer"] or "")]  # fmt: skip
        assert first == bad[: scoring.INVALID_IDS_SHOWN]
        if bad:
            assert f"coarse: {len(bad)} invalid answer(s)" in captured.err


# ---- score.py: what is scored, what is refused ----
@pytest.fixture
def files(tmp_path):
    gts = [
        {"video_id": f"samm_test_SAMM-1_{i}", "video": "SAMM-1", "question": T.COARSE_QUESTION, "answer": a}
        for i, a in enumerate(["negative", "positive", "surprise", "negative"])
    ]
    return tmp_path, gts, _write(tmp_path / "gt.jsonl", gts)


def _run(script, capsys, *args):
    rc = script.main(["vqa", *map(str, args)])
    captured = capsys.readouterr()
    return rc, (json.loads(captured.out) if rc == 0 else None), captured.err


def test_empty_answer_is_scored_wrong_and_counted_and_strict_refuses(files, capsys):
    tmp, gts, gt = files
    preds = [dict(g) for g in gts]
    preds[1]["answer"] = ""
    pred = _write(tmp / "pred.jsonl", preds)
    script = _score_script()
    rc, out, err = _run(script, capsys, "--pred", pred, "--gt", gt)
    assert rc == 0 and out["overall"]["n_invalid_coarse"] == 1 and out["overall"]["n_rows"] == 4
    assert out["overall"]["uar_coarse"] == pytest.approx((1 + 0 + 1) / 3)
    assert out["invalid_answers"]["coarse"] == {"n_invalid": 1, "first_ids": ["samm_test_SAMM-1_1"],
                                                "reasons": {"empty": 1}}  # fmt: skip
    assert f"the leaderboard would reject this: {pred}:2: empty answer for samm_test_SAMM-1_1" in err
    rc, _, err = _run(script, capsys, "--pred", pred, "--gt", gt, "--strict")
    assert rc == 2 and f"{pred}:2: empty answer for samm_test_SAMM-1_1" in err


def test_subset_is_scored_on_the_subset_with_a_warning_or_refused_with_strict(files, capsys):
    tmp, gts, gt = files
    pred = _write(tmp / "pred.jsonl", gts[:3])
    script = _score_script()
    rc, out, err = _run(script, capsys, "--pred", pred, "--gt", gt)
    assert rc == 0 and out["overall"]["n_rows"] == 3 and out["overall"]["uf1_coarse"] == 1.0
    assert "1 of 4 ground-truth questions have no prediction" in err and "samm_test_SAMM-1_3" in err
    rc, _, err = _run(script, capsys, "--pred", pred, "--gt", gt, "--strict")
    assert rc == 2 and "1 of 4 ground-truth questions have no prediction" in err
    rc, _, err = _run(script, capsys, "--pred", _write(tmp / "other.jsonl", [{**gts[0], "video_id": "x"}]),
                      "--gt", gt)  # fmt: skip
    assert rc == 2 and "no prediction answers any of the 4 ground-truth questions" in err


def test_superset_rows_are_listed_and_ignored(files, capsys):
    tmp, gts, gt = files
    extra = {**gts[0], "video_id": "samm_test_SAMM-9_1", "answer": "positive"}
    pred = _write(tmp / "pred.jsonl", [*gts, extra])
    rc, out, err = _run(_score_script(), capsys, "--pred", pred, "--gt", gt)
    assert rc == 0 and out["overall"]["n_rows"] == 4 and out["overall"]["uf1_coarse"] == 1.0
    assert any(
        "1 prediction(s) with no ground truth ignored: samm_test_SAMM-9_1" in p for p in out["problems"]
    )
    assert "extra video_id samm_test_SAMM-9_1" in err


def test_same_question_answered_twice_is_refused_naming_both_lines(files, capsys):
    tmp, gts, gt = files
    pred = _write(tmp / "pred.jsonl", [*gts[:2], {**gts[0], "answer": "surprise"}, *gts[2:]])
    rc, _, err = _run(_score_script(), capsys, "--pred", pred, "--gt", gt)
    assert rc == 2 and "video_id samm_test_SAMM-1_0 answered twice, on lines 1 and 3" in err
    assert err.count("\n") == 1  # one line


def test_broken_json_and_non_string_answers_are_refused_with_the_line(files, capsys):
    tmp, gts, gt = files
    pred = tmp / "pred.jsonl"
    pred.write_text(json.dumps(gts[0]) + "\n{not json\n" + "".join(json.dumps(g) + "\n" for g in gts[2:]))
    rc, _, err = _run(_score_script(), capsys, "--pred", pred, "--gt", gt)
    assert rc == 2 and f"{pred}:2: not valid JSON" in err
    _write(pred, [gts[0], {**gts[1], "answer": ["negative"]}, *gts[2:]])
    rc, _, err = _run(_score_script(), capsys, "--pred", pred, "--gt", gt)
    assert rc == 2 and f"{pred}:2: answer must be a string, got list" in err


def test_null_answer_is_an_empty_answer(files, capsys):
    tmp, gts, gt = files
    pred = _write(tmp / "pred.jsonl", [{**gts[0], "answer": None}, *gts[1:]])
    rc, out, _ = _run(_score_script(), capsys, "--pred", pred, "--gt", gt)
    assert rc == 0 and out["overall"]["n_invalid"] == 1 and out["overall"]["n_missing"] == 1


# ---- the registry drives scoring, reports, validation and the grammar ----
VALENCE_Q = "Is the expression pleasant or unpleasant?"
AROUSAL_Q = "Is the arousal high or low?"


@pytest.fixture
def new_kinds(monkeypatch):
    """Two kinds that exist only in the registry and the templates (monkeypatched): one scored by UF1/UAR,
    one by accuracy; nothing else is edited."""
    valence = QuestionKind(
        "valence", "label", 8, "unpleasant", ("pleasant", "unpleasant"), ("uf1_uar", "text")
    )
    arousal = QuestionKind("arousal", "label", 8, "low", ("high", "low"), ("accuracy", "text"), key="ar")
    monkeypatch.setitem(K.KINDS, "valence", valence)
    monkeypatch.setitem(K.KINDS, "arousal", arousal)
    monkeypatch.setitem(T._EXACT, VALENCE_Q, "valence")
    monkeypatch.setitem(T._EXACT, AROUSAL_Q, "arousal")
    return valence, arousal


def _valence_rows():
    truths = ["pleasant", "unpleasant", "unpleasant", "pleasant", "unpleasant"]
    answers = ["pleasant", "pleasant", "", "Pleasant", "meh"]
    gts = [
        {"video_id": f"samm_test_S_{i}", "video": "S", "question": VALENCE_Q, "answer": t}
        for i, t in enumerate(truths)
    ]
    preds = [{**g, "answer": a} for g, a in zip(gts, answers, strict=True)]
    gts.append({"video_id": "samm_test_S_9", "video": "S", "question": AROUSAL_Q, "answer": "high"})
    preds.append({**gts[-1], "answer": "high"})
    return gts, preds, truths, answers


def test_a_new_kind_is_scored_reported_and_validated_from_the_registry(new_kinds, tmp_path, capsys):
    gts, preds, truths, answers = _valence_rows()
    out = score_vqa(preds, gts)
    overall = out["overall"]
    uf1, uar = ref_uf1_uar(truths, answers)
    assert overall["uf1_valence"] == pytest.approx(uf1) and overall["uar_valence"] == pytest.approx(uar)
    assert overall["n_valence"] == 5 and overall["n_invalid_valence"] == 2  # "" and "meh"
    assert overall["ar_acc"] == 1.0 and overall["n_arousal"] == 1
    assert out["invalid_answers"]["valence"]["reasons"] == {"empty": 1, "off-vocabulary": 1}
    assert overall["uf1_coarse"] is None  # the other VQA kinds keep their keys

    from megc_vqa.answering.grammar import answer_grammar, fullmatch
    from megc_vqa.answering.postprocess import normalise_answer
    from megc_vqa.metrics.vqa import align
    from megc_vqa.submission.report import write_vqa_report
    from megc_vqa.submission.validate import validate_prediction_bytes

    rows, _ = align(preds, gts)
    written = write_vqa_report(tmp_path / "rep", rows, out)
    assert written["confusion_valence_overall"].read_bytes()[:4] == b"\x89PNG"
    wrong = (tmp_path / "rep" / "wrong_rows.csv").read_text().splitlines()
    assert [line.rsplit(",", 1)[1] for line in wrong[1:]] == ["wrong", "empty", "invalid"]
    data = "".join(json.dumps(p) + "\n" for p in preds).encode()
    problems = validate_prediction_bytes(data, "p.jsonl", [{**g, "answer": ""} for g in gts])
    assert any(
        p.line == 5 and "valence answer 'meh' is not one of pleasant, unpleasant" in p.message
        for p in problems
    )
    grammar = answer_grammar(VALENCE_Q)
    assert fullmatch(grammar, "pleasant") and not fullmatch(grammar, "meh")
    assert normalise_answer(VALENCE_Q, "Unpleasant.") == ("unpleasant", True)


def test_every_kind_names_only_scorings_of_the_table():
    for kind in K.KINDS.values():
        assert kind.scoring and set(kind.scoring) <= set(scoring.SCORINGS), kind.name
    # every split of a VQA and an LVQA table carries each kind of its task
    vqa_keys = scoring.score_kinds([], task="vqa")
    lvqa_keys = scoring.score_kinds([], task="lvqa")
    for kind in K.KINDS.values():
        invalid_key = "n_invalid_" + kind.count_key.removeprefix("n_")
        assert invalid_key in (vqa_keys if kind.task == "vqa" else lvqa_keys), kind.name


def test_doctests_of_the_table():
    result = doctest.testmod(scoring)
    assert result.failed == 0 and result.attempted > 0
