"""ME-STR metric: one test per quirk of the public reference scorer (official mode), the textbook strict
mode, hand-computed cases (incl. the MEGC2025 SAMM baseline), property tests and CSV input checks.

The official mode was also compared, during development, with the reference code itself
(genbing99/STRS-Metric strs_metric.py @ eb86468, run on pandas 3 through a DataFrame.append shim) on 400
random cases: every output field equal, NaN where it gives NaN; it crashed exactly on the cases without a
spotting TP. The reference code is not vendored here.
"""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from megc_vqa.metrics.strs import (
    Interval,
    StrInputError,
    canonical_subject,
    iou,
    read_intervals,
    score_str,
    strs,
)

ROOT = Path(__file__).resolve().parents[1]


def iv(subject, video, onset, offset, emotion="negative", **kw) -> Interval:
    return Interval(str(subject), video, onset, offset, emotion, **kw)


# ---- IoU ----
def test_iou_inclusive_frames():
    assert iou(0, 9, 0, 9) == 1.0
    assert iou(0, 9, 10, 19) == 0.0
    assert iou(0, 9, 9, 18) == pytest.approx(1 / 19)
    assert iou(0, 0, 0, 0) == 1.0


# ---- one test per quirk of the reference ----
def test_quirk_one_prediction_claims_two_ground_truth_intervals():
    gts = [iv(1, "v", 0, 9), iv(1, "v", 2, 11)]
    preds = [iv(1, "v", 1, 10)]  # IoU 9/11 with both
    official = strs(preds, gts, "official")
    assert (official["tp_spot"], official["fp_spot"], official["fn_spot"]) == (2, 0, 0)
    strict = strs(preds, gts, "strict")
    assert (strict["tp_spot"], strict["fp_spot"], strict["fn_spot"]) == (1, 0, 1)


def test_quirk_greedy_in_prediction_order():
    gts = [iv(1, "v", 0, 9, "negative"), iv(1, "v", 100, 109, "positive")]
    good = iv(1, "v", 0, 9, "negative")  # IoU 1, right emotion
    early = iv(1, "v", 2, 11, "positive")  # IoU 8/12, wrong emotion
    fp_pos = iv(1, "v", 100, 109, "positive")
    a = strs([early, good, fp_pos], gts, "official")
    b = strs([good, early, fp_pos], gts, "official")
    # The first prediction in file order takes the interval, whatever its IoU.
    assert a["tp_analysis"] == 1 and b["tp_analysis"] == 2
    assert a["fp_spot"] == b["fp_spot"] == 1
    # Strict matching does not depend on the order and keeps the best-overlapping pair.
    sa, sb = strs([early, good, fp_pos], gts, "strict"), strs([good, early, fp_pos], gts, "strict")
    assert sa == sb and sa["tp_analysis"] == 2


def test_quirk_subject_without_predictions_is_not_scored():
    gts = [iv(1, "v", 0, 9), iv(2, "w", 0, 9), iv(2, "w", 50, 59)]
    preds = [iv(1, "v", 0, 9)]
    assert strs(preds, gts, "official")["fn_spot"] == 0
    assert strs(preds, gts, "strict")["fn_spot"] == 2


def test_quirk_predictions_on_video_without_ground_truth_are_not_false_positives():
    gts = [iv(1, "v", 0, 9, "negative"), iv(1, "v", 50, 59, "positive")]
    preds = [
        iv(1, "v", 0, 9, "negative"),
        iv(1, "v", 50, 59, "positive"),
        iv(1, "other", 0, 9),
        iv(7, "x", 0, 9),
    ]
    assert strs(preds, gts, "official")["fp_spot"] == 0
    assert strs(preds, gts, "official")["strs"] == 1.0
    assert strs(preds, gts, "strict")["fp_spot"] == 2


def test_quirk_all_pairs_one_class_and_correct_counts_zero_and_gives_nan():
    gts = [iv(1, "v", 0, 9, "negative"), iv(1, "v", 50, 59, "negative")]
    preds = [iv(1, "v", 0, 9, "negative"), iv(1, "v", 50, 59, "negative")]
    official = strs(preds, gts, "official")
    assert official["precision_analysis"] == 0.0 and official["recall_analysis"] == 0.0
    assert math.isnan(official["f1_analysis"]) and math.isnan(official["strs"])
    # The same with the three MEGC classes: the other two classes are zero anyway.
    assert math.isnan(strs(preds, gts, "official", ["negative", "positive", "surprise"])["strs"])
    assert strs(preds, gts, "strict")["strs"] == 1.0


def test_quirk_tps_without_a_correct_class_give_nan():
    gts = [iv(1, "v", 0, 9, "negative"), iv(1, "v", 50, 59, "positive")]
    preds = [iv(1, "v", 0, 9, "positive"), iv(1, "v", 50, 59, "surprise")]
    official = strs(preds, gts, "official")
    assert official["tp_spot"] == 2 and math.isnan(official["strs"])
    strict = strs(preds, gts, "strict")
    assert strict["strs"] == 0.0 and strict["f1_analysis"] == 0.0


def test_quirk_uar_is_mean_precision_in_official_mode():
    gts = [iv(1, "v", 0, 9, "negative"), iv(1, "v", 50, 59, "positive"), iv(1, "v", 100, 109, "positive"),
           iv(1, "v", 200, 209, "surprise")]  # fmt: skip
    preds = [iv(1, "v", 0, 9, "negative"), iv(1, "v", 50, 59, "negative"), iv(1, "v", 100, 109, "positive"),
             iv(1, "v", 200, 209, "negative")]  # fmt: skip
    # negative: P 1/3, R 1; positive: P 1, R 1/2; surprise: P 0, R 0.
    official, strict = strs(preds, gts, "official"), strs(preds, gts, "strict")
    assert official["uar_analysis"] == pytest.approx((1 / 3 + 1 + 0) / 3)  # mean precision
    assert strict["uar_analysis"] == pytest.approx((1 + 1 / 2 + 0) / 3)  # mean recall
    assert official["f1_analysis"] == pytest.approx(strict["f1_analysis"])


def test_no_spotting_tp_returns_zero_in_both_modes():
    # The reference crashes here (KeyError on an empty frame); this project returns 0.
    gts = [iv(1, "v", 0, 9)]
    for mode in ("official", "strict"):
        out = strs([iv(1, "v", 500, 509)], gts, mode)
        assert (
            out["strs"] == 0.0 and out["f1_analysis"] == 0.0 and out["fp_spot"] == 1 and out["fn_spot"] == 1
        )
        empty = strs([], gts, mode)
        assert empty["strs"] == 0.0 and empty["tp_spot"] == 0
    assert strs([], gts, "official")["fn_spot"] == 0  # no predicted subject, nothing scored
    assert strs([], gts, "strict")["fn_spot"] == 1


def test_emotions_outside_the_analysis_classes_are_not_analysed():
    gts = [iv(1, "v", 0, 9, "others"), iv(1, "v", 50, 59, "negative"), iv(1, "v", 100, 109, "positive")]
    preds = [iv(1, "v", 0, 9, "negative"), iv(1, "v", 50, 59, "negative"), iv(1, "v", 100, 109, "positive")]
    three = ["negative", "positive", "surprise"]
    for mode in ("official", "strict"):
        out = strs(preds, gts, mode, three)
        assert out["tp_spot"] == 3 and out["n_pairs_analysed"] == 2
        # negative P1 R1, positive P1 R1, surprise 0 0 -> mean P = mean R = 2/3
        assert out["f1_analysis"] == pytest.approx(2 / 3)


# ---- hand-computed: the MEGC2025 SAMM baseline table ----
def test_reproduces_megc2025_samm_baseline_numbers():
    """TP 6, FP 217, FN 202; analysis P 0.1667, R 0.3333, F1 0.2222; STRS 0.0062 (SPEC section 6)."""
    pairs = [("negative", "negative"), ("negative", "positive"), ("positive", "surprise"),
             ("surprise", "positive"), ("positive", "surprise"), ("surprise", "positive")]  # fmt: skip
    gts, preds = [], []
    for k, (pred_e, gt_e) in enumerate(pairs):
        gts.append(iv(1, "v", 1000 * k, 1000 * k + 9, gt_e))
        preds.append(iv(1, "v", 1000 * k, 1000 * k + 9, pred_e))
    gts += [iv(1, "v", 1000 * k + 200, 1000 * k + 209, "negative") for k in range(202)]
    preds += [iv(1, "v", 1000 * k + 500, 1000 * k + 509, "negative") for k in range(217)]
    for mode in ("official", "strict"):
        out = strs(preds, gts, mode)
        assert (out["tp_spot"], out["fp_spot"], out["fn_spot"]) == (6, 217, 202)
        assert out["precision_analysis"] == pytest.approx(1 / 6)
        assert out["recall_analysis"] == pytest.approx(1 / 3)
        assert out["f1_analysis"] == pytest.approx(2 / 9)
        assert round(out["strs"], 4) == 0.0062


# ---- property tests ----
EMOTIONS = ["negative", "positive", "surprise"]


@st.composite
def clean_case(draw):
    """GT intervals far apart; each prediction overlaps at most one GT, each GT at most one prediction,
    predictions only on GT videos and every GT subject predicted: no quirk applies except, possibly,
    the analysis ones (filtered below)."""
    gts, preds = [], []
    for subject in ("1", "2"):
        for video in ("a", "b")[: draw(st.integers(1, 2))]:
            for k in range(draw(st.integers(1, 4))):
                base = 1000 * k
                length = draw(st.integers(5, 40))
                gt = iv(subject, video, base, base + length, draw(st.sampled_from(EMOTIONS)))
                gts.append(gt)
                if draw(st.booleans()):
                    shift = draw(st.integers(0, length // 4))
                    preds.append(
                        iv(
                            subject,
                            video,
                            base + shift,
                            base + length + shift,
                            draw(st.sampled_from(EMOTIONS)),
                        )
                    )
                if draw(st.booleans()):
                    preds.append(
                        iv(subject, video, base + 300, base + 300 + draw(st.integers(0, 30)), "negative")
                    )
        preds.append(iv(subject, "a", 900, 950, "positive"))  # every subject has a prediction (an FP)
    return preds, gts


def _analysis_quirk_free(preds, gts) -> bool:
    pairs = strs(preds, gts, "strict")
    if pairs["tp_spot"] == 0 or pairs["tp_analysis"] == 0:
        return False
    # quirk 5: every analysed pair of one class and correct
    matched = [(p.emotion, g.emotion) for p in preds for g in gts
               if p.key == g.key and iou(p.onset, p.offset, g.onset, g.offset) >= 0.5]  # fmt: skip
    return len({e for pair in matched for e in pair}) != 1


@settings(max_examples=60, deadline=None)
@given(clean_case())
def test_official_equals_strict_where_no_quirk_applies(case):
    preds, gts = case
    if not _analysis_quirk_free(preds, gts):
        return
    official, strict = strs(preds, gts, "official"), strs(preds, gts, "strict")
    for key in ("strs", "tp_spot", "fp_spot", "fn_spot", "precision_spot", "recall_spot", "f1_spot",
                "precision_analysis", "recall_analysis", "f1_analysis", "uf1_analysis"):  # fmt: skip
        assert official[key] == pytest.approx(strict[key]), key


@settings(max_examples=40, deadline=None)
@given(clean_case(), st.randoms(use_true_random=False))
def test_strict_scores_bounded_and_row_order_invariant(case, rnd):
    preds, gts = case
    out = strs(preds, gts, "strict")
    for key, value in out.items():
        if isinstance(value, float):
            assert 0.0 <= value <= 1.0, key
    p2, g2 = preds[:], gts[:]
    rnd.shuffle(p2)
    rnd.shuffle(g2)
    assert strs(p2, g2, "strict") == out
    official = strs(preds, gts, "official")
    for key, value in official.items():
        if isinstance(value, float) and not math.isnan(value):
            assert 0.0 <= value <= 1.0, key


@settings(max_examples=30, deadline=None)
@given(clean_case())
def test_perfect_predictions_score_one(case):
    _, gts = case
    assert strs(list(gts), gts, "strict")["strs"] == pytest.approx(1.0)
    official = strs(list(gts), gts, "official")
    if len({g.emotion for g in gts}) > 1:
        assert official["strs"] == pytest.approx(1.0)
    else:
        assert math.isnan(official["strs"])  # quirk 5


# ---- splits ----
def test_per_dataset_and_micro_macro_splits():
    gts = [
        iv(1, "a", 0, 9, "negative", dataset="samm", type="micro"),
        iv(1, "a", 100, 199, "positive", dataset="samm", type="macro"),
        iv("spNO.1", "b", 0, 9, "positive", dataset="casme3", type="micro"),
        iv("spNO.1", "b", 50, 59, "negative", dataset="casme3", type="micro"),
    ]
    preds = [
        iv(1, "a", 0, 9, "negative"),
        iv(1, "a", 100, 199, "positive"),
        iv("spNO.1", "b", 0, 9, "negative"),
    ]
    out = score_str(preds, gts, "strict")
    assert out["overall"]["tp_spot"] == 3 and out["overall"]["fn_spot"] == 1
    assert out["samm"]["tp_spot"] == 2 and out["samm"]["fp_spot"] == 0
    assert out["casme3"]["tp_spot"] == 1 and out["casme3"]["fn_spot"] == 1
    assert out["micro"]["tp_spot"] == 2 and out["micro"]["fp_spot"] == 1  # the macro hit is an FP here
    assert out["macro"]["tp_spot"] == 1 and out["macro"]["fp_spot"] == 2
    typed = [iv(1, "a", 0, 9, "negative", type="micro"), iv(1, "a", 100, 199, "positive", type="macro")]
    out2 = score_str(typed, gts, "strict")
    assert out2["macro"]["fp_spot"] == 0 and out2["macro"]["tp_spot"] == 1


# ---- CSV input ----
def test_read_intervals_and_bad_input_lines(tmp_path):
    good = tmp_path / "good.csv"
    good.write_text("subject,video,onset,offset,emotion,type\n006,006_1,10,20,Negative,Micro - 1/2\n")
    [row] = read_intervals(good)
    assert (row.subject, row.emotion, row.type, row.line) == ("6", "negative", "micro", 2)
    assert canonical_subject("006") == canonical_subject("6")
    cases = {
        "subject,video,onset,emotion\n1,a,1,negative\n": (":1:", "missing column(s) offset"),
        "subject,video,onset,offset,emotion\n1,a,1,5,negative\n1,a,9,5,negative\n": (
            ":3:",
            "onset 9 is after offset 5",
        ),
        "subject,video,onset,offset,emotion\n1,a,1.5,5,negative\n": (":2:", "not an integer"),
        "subject,video,onset,offset,emotion\n1,a,x,5,negative\n": (":2:", "not an integer"),
        "": ("", "empty file"),
    }
    for text, (line, message) in cases.items():
        bad = tmp_path / "bad.csv"
        bad.write_text(text)
        with pytest.raises(StrInputError) as err:
            read_intervals(bad)
        assert message in str(err.value) and f"bad.csv{line}" in str(err.value)


def test_score_cli_str(tmp_path, capsys):
    (tmp_path / "gt.csv").write_text(
        "subject,video,onset,offset,emotion\n1,a,0,9,negative\n1,a,50,59,negative\n"
    )
    (tmp_path / "pred.csv").write_text(
        "subject,video,onset,offset,emotion\n1,a,0,9,negative\n1,a,50,59,negative\n"
    )
    spec = importlib.util.spec_from_file_location("score", ROOT / "eval" / "score.py")
    score = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(score)
    args = ["str", "--pred", str(tmp_path / "pred.csv"), "--gt", str(tmp_path / "gt.csv")]
    assert score.main([*args, "--mode", "official"]) == 0
    official = json.loads(capsys.readouterr().out)
    assert official["mode"] == "official" and official["overall"]["strs"] is None  # NaN, written as JSON null
    assert score.main([*args, "--mode", "strict", "--emotions", "negative,positive,surprise"]) == 0
    strict = json.loads(capsys.readouterr().out)
    for key in ("strs", "tp_spot", "fp_spot", "fn_spot", "precision_spot", "recall_spot", "f1_spot",
                "precision_analysis", "recall_analysis", "f1_analysis", "uf1_analysis", "uar_analysis"):  # fmt: skip
        assert key in strict["overall"]
    # negative P 1 R 1, positive and surprise 0 0 -> mean P = mean R = 1/3; spotting F1 1
    assert strict["overall"]["strs"] == pytest.approx(1 / 3)
    (tmp_path / "pred.csv").write_text("subject,video,onset,offset,emotion\n1,a,9,0,negative\n")
    assert score.main([*args, "--mode", "strict"]) == 2
    assert "onset 9 is after offset 0" in capsys.readouterr().err
