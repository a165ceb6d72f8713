"""ME-VQA and ME-LVQA metrics: hand-computed cases, an independent plain-Python implementation of the
definitions (SPEC section 5), property tests, the evaluate module and the score.py CLI."""

from __future__ import annotations

import doctest
import importlib.util
import json
import math
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megc_vqa.metrics import lvqa, strs, vqa
from megc_vqa.metrics.lvqa import parse_au_set, parse_count, score_lvqa, set_f1
from megc_vqa.metrics.vqa import (
    VqaVariant,
    corpus_bleu,
    extract_label,
    rouge_mean,
    score_vqa,
    sentence_bleu_mean,
    unweighted_f1,
    unweighted_recall,
)
from megc_vqa.qa.templates import COARSE_QUESTION, FINE_QUESTION, JOINT_QUESTION_PLURAL, joint_answer

ROOT = Path(__file__).resolve().parents[1]


# ---- an independent implementation of the definitions, plain Python, no scikit-learn ----
def ref_class_scores(truth: list[str], pred: list[str]) -> tuple[float, float]:
    """UF1 and UAR straight from the definitions: classes = ground-truth answers after strip+lower."""
    t = [x.strip().lower() for x in truth]
    p = [x.strip().lower() for x in pred]
    f1s, recalls = [], []
    for c in set(t):
        tp = sum(1 for a, b in zip(t, p, strict=True) if a == c and b == c)
        fp = sum(1 for a, b in zip(t, p, strict=True) if a != c and b == c)
        fn = sum(1 for a, b in zip(t, p, strict=True) if a == c and b != c)
        f1s.append(2 * tp / (2 * tp + fp + fn))
        recalls.append(tp / (tp + fn))
    return sum(f1s) / len(f1s), sum(recalls) / len(recalls)


LABELS = ["negative", "positive", "surprise"]
PRED_POOL = [*LABELS, "Negative", " positive ", "Negative.", "", "happiness", "others", "I think negative"]


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_class_scores_match_independent_implementation(data):
    n = data.draw(st.integers(1, 30))
    truth = data.draw(st.lists(st.sampled_from([*LABELS, "Surprise"]), min_size=n, max_size=n))
    pred = data.draw(st.lists(st.sampled_from(PRED_POOL), min_size=n, max_size=n))
    uf1, uar = ref_class_scores(truth, pred)
    assert unweighted_f1(truth, pred) == pytest.approx(uf1, abs=1e-6)
    assert unweighted_recall(truth, pred) == pytest.approx(uar, abs=1e-6)


def _rows(prefix: str, truths: list[str], preds: list[str], question: str = COARSE_QUESTION):
    gts = [{"video_id": f"{prefix}_{i}", "question": question, "answer": t} for i, t in enumerate(truths)]
    ps = [{"video_id": f"{prefix}_{i}", "question": question, "answer": p} for i, p in enumerate(preds)]
    return ps, gts


def test_random_pooled_splits_match_independent_implementation():
    rng = random.Random(7)
    for _ in range(30):
        samm_t = [rng.choice(LABELS) for _ in range(rng.randint(1, 12))]
        cas_t = [rng.choice(LABELS[:2]) for _ in range(rng.randint(1, 12))]
        samm_p = [rng.choice(PRED_POOL) for _ in samm_t]
        cas_p = [rng.choice(PRED_POOL) for _ in cas_t]
        p1, g1 = _rows("samm_test_SAMM-1", samm_t, samm_p)
        p2, g2 = _rows("casme3_test_CAS-1", cas_t, cas_p)
        out = score_vqa(p1 + p2, g1 + g2)
        assert out["samm"]["uf1_coarse"] == pytest.approx(ref_class_scores(samm_t, samm_p)[0], abs=1e-6)
        assert out["casme3"]["uar_coarse"] == pytest.approx(ref_class_scores(cas_t, cas_p)[1], abs=1e-6)
        pooled = ref_class_scores(samm_t + cas_t, samm_p + cas_p)  # overall is pooled, not a mean
        assert out["overall"]["uf1_coarse"] == pytest.approx(pooled[0], abs=1e-6)
        assert out["overall"]["uar_coarse"] == pytest.approx(pooled[1], abs=1e-6)


# ---- hand-computed cases ----
def test_all_wrong_scores_zero():
    assert unweighted_f1(["negative", "positive"], ["positive", "surprise"]) == 0.0
    assert unweighted_recall(["negative", "positive"], ["positive", "negative"]) == 0.0


def test_single_class_ground_truth():
    # classes = {negative}; "positive" is not a class, so it is no false positive anywhere.
    truth, pred = ["negative"] * 3, ["negative", "negative", "positive"]
    assert unweighted_recall(truth, pred) == pytest.approx(2 / 3)
    assert unweighted_f1(truth, pred) == pytest.approx(0.8)  # 2*2 / (2*2 + 0 + 1)
    assert unweighted_f1(truth, truth) == 1.0


def test_invalid_answer_is_wrong_for_its_class_and_never_a_class():
    truth = ["negative", "negative", "positive"]
    pred = ["negative", "happy", "positive"]
    assert unweighted_f1(truth, pred) == pytest.approx((2 / 3 + 1) / 2)
    assert unweighted_recall(truth, pred) == pytest.approx(0.75)
    # Answers are compared after strip + lower-case, but punctuation makes it invalid.
    assert unweighted_recall(truth, [" Negative ", "NEGATIVE", "positive."]) == pytest.approx(0.5)


def test_empty_predictions_count_wrong_and_are_listed():
    gts = [
        {"video_id": "samm_test_SAMM-1_1", "question": COARSE_QUESTION, "answer": "negative"},
        {"video_id": "samm_test_SAMM-1_2", "question": FINE_QUESTION, "answer": "disgust"},
    ]
    out = score_vqa([], gts)
    assert out["overall"]["uf1_coarse"] == 0.0 and out["overall"]["uar_fine"] == 0.0
    assert out["overall"]["bleu"] == 0.0 and out["overall"]["rouge"] == 0.0
    assert out["overall"]["n_missing"] == 2 and out["overall"]["n_rows"] == 2
    assert sum("missing prediction" in p for p in out["problems"]) == 2
    assert out["casme3"]["n_rows"] == 0 and out["casme3"]["uf1_coarse"] is None


def test_duplicates_and_extras_are_listed_first_kept():
    ps, gts = _rows("samm_test_SAMM-1", ["negative", "positive"], ["negative", "positive"])
    ps = [ps[0], {**ps[0], "answer": "surprise"}, ps[1], {"video_id": "samm_test_X_9", "answer": "x"}]
    out = score_vqa(ps, gts)
    assert out["overall"]["uf1_coarse"] == 1.0
    assert any("duplicated prediction samm_test_SAMM-1_0" in p for p in out["problems"])
    assert any("samm_test_X_9" in p for p in out["problems"])


def test_ground_truth_without_answer_is_rejected():
    with pytest.raises(ValueError, match="row 1"):
        score_vqa([], [{"video_id": "a", "question": COARSE_QUESTION, "answer": ""}])


def test_dataset_field_wins_over_prefix():
    ps, gts = _rows("x", ["negative"], ["negative"])
    gts[0]["dataset"] = "casme3"
    assert score_vqa(ps, gts)["casme3"]["n_rows"] == 1


def test_parsed_variant_reads_free_answers():
    truth = ["negative", "positive", "surprise"]
    pred = ["The coarse expression class is Negative.", "Positive.", "maybe positive or surprise"]
    ps, gts = _rows("samm_test_S", truth, pred)
    out = score_vqa(ps, gts)["overall"]
    assert out["uar_coarse"] == 0.0
    assert out["uar_coarse_parsed"] == pytest.approx(2 / 3)  # the third one is ambiguous: invalid
    joint = joint_answer(["brow lowerer", "lip corner depressor"], "sadness", "negative")
    assert extract_label(joint, "coarse") == "negative"
    assert extract_label(joint, "fine") == "sadness"
    assert extract_label("Sad.", "fine") == "sadness"
    ps, gts = _rows("casme3_test_C", ["happy", "sadness"], ["Happiness.", "sad"], FINE_QUESTION)
    fine = score_vqa(ps, gts)["overall"]
    assert fine["uar_fine"] == 0.0 and fine["uar_fine_parsed"] == 1.0


def test_default_bleu_is_the_nltk_definition():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    refs = ["The action units present are: brow lowerer, lips part.", "negative", "yes"]
    hyps = ["the action unit present is: brow lowerer.", "Negative", ""]
    expected = sum(
        sentence_bleu([r.lower().split()], h.lower().split(), weights=(0.25,) * 4,
                      smoothing_function=SmoothingFunction().method1) if h else 0.0
        for r, h in zip(refs, hyps, strict=True)
    ) / 3  # fmt: skip
    assert sentence_bleu_mean(refs, hyps) == pytest.approx(expected, abs=1e-12)
    # A one-word perfect answer: p1 = 1, p2..p4 smoothed to 0.1 -> 0.1 ** 0.75 (the default penalises it).
    assert sentence_bleu_mean(["negative"], ["negative"]) == pytest.approx(0.1**0.75)


def test_rouge_variants_hand_computed():
    # "the lips parted" vs "lips part": stemmed unigrams {the, lip, part} vs {lip, part}.
    assert rouge_mean(["lips part"], ["the lips parted"]) == pytest.approx(1.0)
    assert rouge_mean(["lips part"], ["the lips parted"], "rouge1_f1") == pytest.approx(0.8)
    assert rouge_mean(["lips part now"], ["now lips part"], "rougeL_f1") == pytest.approx(2 / 3)
    assert rouge_mean(["lips part"], [""]) == 0.0


def test_corpus_bleu_and_open_rows():
    assert corpus_bleu(["a b c d e"], ["a b c d e"]) == pytest.approx(1.0)
    assert corpus_bleu(["a b c d e"], ["x y"]) == 0.0
    ps, gts = _rows("samm_test_S", ["negative"], ["negative"])
    ps.append({"video_id": "samm_test_S_9", "answer": "The lips part a little."})
    gts.append(
        {
            "video_id": "samm_test_S_9",
            "question": "What are the action units?",
            "answer": "The lips part a little.",
        }
    )
    out = score_vqa(ps, gts, VqaVariant(bleu="corpus", rows="open"))["overall"]
    assert (
        out["n_text_rows"] == 1 and out["bleu"] == pytest.approx(1.0) and out["rouge"] == pytest.approx(1.0)
    )
    with pytest.raises(ValueError, match="unknown variant"):
        VqaVariant(bleu="sacre")


# ---- property tests ----
ROW_POOL = [
    (COARSE_QUESTION, LABELS),
    (FINE_QUESTION, ["disgust", "happiness", "surprise", "anger"]),
    (JOINT_QUESTION_PLURAL, [joint_answer(["brow lowerer", "lips part"], "disgust", "negative"),
                             joint_answer(["cheek raiser", "lip corner puller"], "happiness", "positive")]),
]  # fmt: skip


@st.composite
def vqa_case(draw):
    n = draw(st.integers(1, 15))
    gts, ps = [], []
    for i in range(n):
        question, answers = draw(st.sampled_from(ROW_POOL))
        prefix = draw(st.sampled_from(["samm_test_SAMM-1", "casme3_test_CAS-2"]))
        gts.append(
            {"video_id": f"{prefix}_{i}", "question": question, "answer": draw(st.sampled_from(answers))}
        )
        ps.append({"video_id": f"{prefix}_{i}", "answer": draw(st.sampled_from([*answers, "", "Negative."]))})
    return ps, gts


@settings(max_examples=15, deadline=None)
@given(vqa_case(), st.randoms(use_true_random=False), st.sampled_from(["sentence", "corpus"]))
def test_scores_bounded_and_row_order_invariant(case, rnd, bleu):
    ps, gts = case
    variant = VqaVariant(bleu=bleu)
    out = score_vqa(ps, gts, variant)
    for split in ("overall", "samm", "casme3"):
        for key, value in out[split].items():
            if isinstance(value, float):
                assert 0.0 <= value <= 1.0, (split, key, value)
    ps2, gts2 = ps[:], gts[:]
    rnd.shuffle(ps2)
    rnd.shuffle(gts2)
    out2 = score_vqa(ps2, gts2, variant)
    for split in ("overall", "samm", "casme3"):
        for key, value in out[split].items():
            assert out2[split][key] == pytest.approx(value, abs=1e-9), (split, key)


@settings(max_examples=15, deadline=None)
@given(vqa_case())
def test_perfect_predictions_score_one(case):
    _, gts = case
    out = score_vqa([dict(g) for g in gts], gts)["overall"]
    for key in ("uf1_coarse", "uar_coarse", "uf1_fine", "uar_fine", "rouge"):
        assert out[key] in (None, 1.0), key
    long_rows = [g for g in gts if len(g["answer"].split()) >= 4]
    if long_rows:  # BLEU-4 reaches 1 only where a 4-gram exists (one-word answers: 0.1 ** 0.75)
        assert score_vqa(long_rows, long_rows)["overall"]["bleu"] == pytest.approx(1.0)


# ---- ME-LVQA (as a 2026 team's evaluation code describes it) ----
def test_lvqa_hand_computed():
    q = {
        "all": "How many expression events appear in this video?",
        "micro": "How many micro-expression events appear in this video?",
        "macro": "How many macro-expression events appear in this video?",
        "aus": "What distinct action units appear in this video?",
        "type": "What is the expression type of the 1-th expression event in this video?",
    }
    gts = [
        {"video_id": "samm_test_1_1", "question": q["all"], "answer": "3"},
        {"video_id": "samm_test_1_2", "question": q["micro"], "answer": "1"},
        {
            "video_id": "samm_test_1_3",
            "question": q["aus"],
            "answer": "brow lowerer, upper lip raiser, dimpler",
        },
        {"video_id": "samm_test_1_4", "question": q["type"], "answer": "micro-expression"},
        {"video_id": "samm_test_2_1", "question": q["all"], "answer": "2"},
        {"video_id": "samm_test_2_3", "question": q["macro"], "answer": "4"},
        {"video_id": "samm_test_2_4", "question": q["type"], "answer": "macro-expression"},
        {"video_id": "samm_test_2_5", "question": q["type"], "answer": "macro-expression"},
    ]
    ps = [
        {"video_id": "samm_test_1_1", "answer": "three"},
        {"video_id": "samm_test_1_2", "answer": "none"},  # no number: counts as 0
        {"video_id": "samm_test_1_3", "answer": "I see a dimpler and the brow lowerer, also lips part."},
        {"video_id": "samm_test_1_4", "answer": "Micro."},
        {"video_id": "samm_test_2_1", "answer": "5"},
        {"video_id": "samm_test_2_3", "answer": "2"},
        {"video_id": "samm_test_2_4", "answer": "micro-expression"},
        {"video_id": "samm_test_2_5", "answer": "both"},  # neither class: wrong
    ]
    out = score_lvqa(ps, gts)
    assert out["official_scorer_published"] is False and "2026 team" in out["note"]
    s = out["overall"]
    assert s["count_total_mae"] == 1.5 and s["count_total_rmse"] == pytest.approx((9 / 2) ** 0.5)
    assert s["count_micro_mae"] == 1.0 and s["count_macro_mae"] == 2.0 and s["count_macro_rmse"] == 2.0
    assert s["au_f1"] == pytest.approx(2 * 2 / (3 + 3)) and s["au_jaccard"] == pytest.approx(2 / 4)
    # type: truth micro, macro, macro; predicted micro, micro, invalid -> micro F1 2/3, macro F1 0
    assert s["type_uf1"] == pytest.approx((2 / 3 + 0) / 2) and s["type_uar"] == pytest.approx((1 + 0) / 2)
    assert (
        s["n_count_invalid"] == 1 and out["samm"]["n_rows"] == 8 and out["casme3"]["count_total_mae"] is None
    )
    assert parse_count("12 events") == 12 and parse_au_set("") == frozenset() and set_f1([], []) == 1.0


# ---- the evaluate module and the CLI ----
def test_evaluate_module_loads_offline_and_gives_same_numbers(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import evaluate

    from megc_vqa.metrics.hf_megc_vqa import HF_MODULE_PATH

    rng = random.Random(3)
    ps, gts = [], []
    for i in range(20):
        question, answers = rng.choice(ROW_POOL)
        vid = f"{rng.choice(['samm_test_S', 'casme3_test_C'])}_{i}"
        gts.append({"video_id": vid, "question": question, "answer": rng.choice(answers)})
        ps.append({"video_id": vid, "answer": rng.choice([*answers, "", "Negative."])})
    metric = evaluate.load(HF_MODULE_PATH)
    got = metric.compute(
        predictions=[p["answer"] for p in ps], references=[g["answer"] for g in gts],
        questions=[g["question"] for g in gts], video_ids=[g["video_id"] for g in gts], rouge="rouge1_f1",
    )  # fmt: skip
    want = score_vqa(ps, gts, VqaVariant(rouge="rouge1_f1"))
    for split in ("overall", "samm", "casme3"):
        for key, value in want[split].items():
            assert got[split][key] == (pytest.approx(value) if value is not None else None), (split, key)


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "eval" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_score_cli_vqa_json_and_report(tmp_path, capsys):
    ps, gts = _rows("samm_test_SAMM-1", ["negative", "positive"], ["negative", "Negative."])
    (tmp_path / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ps))
    (tmp_path / "g.jsonl").write_text("".join(json.dumps(r) + "\n" for r in gts))
    score = _load_script("score")
    rc = score.main(["vqa", "--pred", str(tmp_path / "p.jsonl"), "--gt", str(tmp_path / "g.jsonl"),
                     "--report", str(tmp_path / "rep")])  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and set(out) >= {"overall", "samm", "casme3", "variant"}
    for key in ("uf1_coarse", "uar_coarse", "uf1_fine", "uar_fine", "bleu", "rouge", "n_rows"):
        assert key in out["samm"]
    assert out["samm"]["uar_coarse"] == 0.5 and out["variant"]["bleu"] == "sentence"
    assert (tmp_path / "rep" / "confusion_coarse_overall.png").read_bytes()[:4] == b"\x89PNG"
    wrong = (tmp_path / "rep" / "wrong_rows.csv").read_text().splitlines()
    assert len(wrong) == 2 and "Negative." in wrong[1] and wrong[1].endswith("invalid")
    assert "sentence BLEU" in (tmp_path / "rep" / "report.md").read_text()
    assert score.main(["vqa", "--pred", str(tmp_path / "nope.jsonl"), "--gt", str(tmp_path / "g.jsonl")]) == 2


def test_doctests():
    for module in (vqa, lvqa, strs):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0, module.__name__


def test_nan_is_not_silently_produced_by_vqa():
    out = score_vqa(*reversed(_rows("samm_test_S", ["negative"], ["x"])))
    assert not any(isinstance(v, float) and math.isnan(v) for v in out["overall"].values())
