"""Submission files: official names, the validator (accepts the organisers' question files filled with
valid answers; rejects each defect with its line), atomic writers, the zip, the report and validate.py."""

from __future__ import annotations

import importlib.util
import json
import os
import zipfile
from pathlib import Path

import pytest

from megc_vqa.metrics.strs import Interval, read_intervals
from megc_vqa.qa.templates import classify_question, is_plural, joint_answer
from megc_vqa.submission.files import (
    STR_PREDICTION_NAME,
    atomic_write_text,
    parse_jsonl,
    prediction_file_name,
    read_jsonl,
)
from megc_vqa.submission.validate import validate_files
from megc_vqa.submission.writer import fill_answers, make_submission_zip, write_predictions, write_str_csv

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT / "data" / "megc"  # the organisers' question files, shipped with the repo
QUESTION_FILES = sorted(SHARED.glob("20*/*_to_answer.jsonl"))

EXPECTED_NAMES = {
    "me_vqa_samm_test_to_answer.jsonl": "me_vqa_samm_test_pred.jsonl",
    "me_vqa_casme3_test_to_answer.jsonl": "me_vqa_casme3_test_pred.jsonl",
    "me_vqa_samm_v2_test_to_answer.jsonl": "me_vqa_samm_v2_test_pred.jsonl",
    "me_vqa_casme3_v2_test_to_answer.jsonl": "me_vqa_casme3_v2_test_pred.jsonl",
    "me_lvqa_samm_test_to_answer.jsonl": "me_lvqa_samm_test_pred.jsonl",
    "me_lvqa_casme3_test_to_answer.jsonl": "me_lvqa_casme3_test_pred.jsonl",
}


def valid_answer(question: str) -> str:
    """An answer in the training format for any organiser question."""
    two = ["brow lowerer", "lip corner depressor"]
    return {
        "coarse": "negative",
        "fine": "disgust",
        "au": ", ".join(two) if is_plural(question) else "brow lowerer",
        "presence": "yes",
        "side": "left",
        "joint": joint_answer(two if is_plural(question) else two[:1], "disgust", "negative"),
        "analysis": "The brows lower briefly and the lip corners depress: a negative micro-expression.",
        "lvqa_count_all": "2",
        "lvqa_count_micro": "1",
        "lvqa_count_macro": "1",
        "lvqa_aus": "brow lowerer, lips part",
        "lvqa_event_type": "micro-expression",
    }[classify_question(question)]


def filled_text(question_path: Path) -> str:
    rows = read_jsonl(question_path)
    return "".join(json.dumps({**r, "answer": valid_answer(r["question"])}) + "\n" for r in rows)


def test_question_files_are_all_known():
    assert {q.name for q in QUESTION_FILES} == set(EXPECTED_NAMES)
    assert all(classify_question(r["question"]) != "unknown" for q in QUESTION_FILES for r in read_jsonl(q))


def test_prediction_file_names():
    for q in QUESTION_FILES:
        assert prediction_file_name(q) == EXPECTED_NAMES[q.name]
    assert prediction_file_name("val/my_questions_to_answer.jsonl") == "my_questions_pred.jsonl"
    assert STR_PREDICTION_NAME == "str_pred.csv"


def test_validator_accepts_every_shared_question_file_filled(tmp_path):
    files = []
    for q in QUESTION_FILES:
        path = tmp_path / prediction_file_name(q)
        path.write_text(filled_text(q))
        files.append(path)
    assert validate_files(files, QUESTION_FILES) == []  # no error and no format warning
    zipped = make_submission_zip(files, tmp_path / "submission.zip")
    assert validate_files([zipped], QUESTION_FILES) == []
    with zipfile.ZipFile(zipped) as zf:
        assert sorted(zf.namelist()) == sorted(p.name for p in files)


def _problems_for(tmp_path, text: str | bytes, question: Path, name: str | None = None) -> list[str]:
    path = tmp_path / (name or prediction_file_name(question))
    path.write_bytes(text if isinstance(text, bytes) else text.encode("utf-8"))
    return [str(p) for p in validate_files([path], [question]) if p.level == "error"]


SAMM_2025 = SHARED / "2025" / "me_vqa_samm_test_to_answer.jsonl"


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda lines: lines[:2] + lines[3:], "missing video_id samm_test_SAMM-1_3 (question file line 3)"),
        (lambda lines: [*lines, lines[0].replace("SAMM-1_1", "SAMM-9_1")], ":36: error: extra video_id samm_test_SAMM-9_1"),
        (lambda lines: [*lines[:5], lines[4], *lines[5:]], ":6: error: duplicated video_id samm_test_SAMM-1_5 (first on line 5)"),
        (lambda lines: [*lines[:1], lines[1].replace('"answer"', '"Answer"'), *lines[2:]], ":2: error: missing key(s) answer; unexpected key(s) Answer"),
        (lambda lines: [*lines[:3], "{not json", *lines[4:]], ":4: error: not valid JSON"),
        (lambda lines: [*lines[:6], lines[6].replace('"answer": "disgust"', '"answer": "  "'), *lines[7:]], ":7: error: empty answer"),
        (lambda lines: [*lines[:7], lines[8], lines[7], *lines[9:]], ":8: error: rows out of order"),
        (lambda lines: [*lines[:1], lines[1].replace('"video": "SAMM-1"', '"video": "SAMM-2"'), *lines[2:]], ":2: error: video 'SAMM-2' differs"),
    ],
)  # fmt: skip
def test_validator_rejects_each_defect_with_its_line(tmp_path, mutate, expected):
    lines = filled_text(SAMM_2025).splitlines()
    problems = _problems_for(tmp_path, "\n".join(mutate(lines)) + "\n", SAMM_2025)
    assert any(expected in p for p in problems), problems


def test_validator_rejects_bom_crlf_and_empty_file(tmp_path):
    text = filled_text(SAMM_2025)
    bom = _problems_for(tmp_path, b"\xef\xbb\xbf" + text.encode(), SAMM_2025)
    assert any(":1: error: file starts with a UTF-8 BOM" in p for p in bom)
    crlf = _problems_for(tmp_path, text.replace("\n", "\r\n"), SAMM_2025)
    assert any(":1: error: CRLF line ending" in p for p in crlf)
    empty = _problems_for(tmp_path, "", SAMM_2025)
    assert any("error: empty file" in p for p in empty)


def test_validator_rejects_wrong_file_names(tmp_path):
    loose = _problems_for(tmp_path, filled_text(SAMM_2025), SAMM_2025, name="predictions.jsonl")
    assert loose == [
        f"{tmp_path / 'predictions.jsonl'}: error: wrong file name 'predictions.jsonl': expected 'me_vqa_samm_test_pred.jsonl'"
    ]
    right = tmp_path / "me_vqa_samm_test_pred.jsonl"
    right.write_text(filled_text(SAMM_2025))
    archive = tmp_path / "sub.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(right, "preds/me_vqa_samm_test_pred.jsonl")
        zf.writestr("me_vqa_samm_pred.jsonl", filled_text(SAMM_2025))
    problems = [str(p) for p in validate_files([archive], [SAMM_2025])]
    assert any("sub.zip:preds/me_vqa_samm_test_pred.jsonl: error: file is in a folder" in p for p in problems)
    assert any("wrong file name in zip 'me_vqa_samm_pred.jsonl'" in p for p in problems)


def test_validator_warns_on_answers_off_the_training_format(tmp_path):
    lines = filled_text(SAMM_2025).splitlines()
    lines[0] = lines[0].replace('"answer": "negative"', '"answer": "Negative."')
    path = tmp_path / "me_vqa_samm_test_pred.jsonl"
    path.write_text("\n".join(lines) + "\n")
    problems = validate_files([path], [SAMM_2025])
    assert [p.level for p in problems] == ["warning"] and problems[0].line == 1


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("subject,video,onset,emotion\n1,a,1,negative\n", ":1: error: missing column(s) offset"),
        ("subject,video,onset,offset,emotion\n1,a,1,5,negative\n1,a,9,5,negative\n", ":3: error: onset 9 is after offset 5"),
        ("subject,video,onset,offset,emotion\n1,a,1.0,5,negative\n", ":2: error: onset '1.0' is not an integer"),
        ("subject,video,onset,offset,emotion\n1,a,1,5,angry\n", ":2: error: emotion 'angry' is not one of"),
        ("", "error: empty file"),
    ],
)  # fmt: skip
def test_str_csv_defects(tmp_path, text, expected):
    path = tmp_path / STR_PREDICTION_NAME
    path.write_text(text)
    problems = [str(p) for p in validate_files([path], [])]
    assert any(expected in p for p in problems), problems


# ---- writers ----
def test_write_predictions_and_fill_answers(tmp_path):
    rows = read_jsonl(SAMM_2025)
    answers = {r["video_id"]: valid_answer(r["question"]) for r in rows}
    out = write_predictions(SAMM_2025, answers, tmp_path)
    assert out.name == "me_vqa_samm_test_pred.jsonl"
    assert validate_files([out], [SAMM_2025]) == []
    assert [list(r) for r in read_jsonl(out)] == [list(r) for r in rows]  # same keys, same order
    del answers[rows[3]["video_id"]]
    with pytest.raises(ValueError, match="1 question"):
        fill_answers(rows, answers)
    partial = fill_answers(rows, answers, allow_missing=True)
    assert partial[3]["answer"] == "" and len(partial) == len(rows)
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "f.jsonl"
    atomic_write_text(target, "old\n")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["f.jsonl"]


def test_write_str_csv_round_trip(tmp_path):
    intervals = [Interval("6", "006_1", 10, 20, "negative"), Interval("spNO.1", "a", 5, 9, "surprise")]
    path = write_str_csv([*intervals, {"subject": "7", "video": "x", "onset": 1, "offset": 2, "emotion": "Others"}],
                         tmp_path / STR_PREDICTION_NAME)  # fmt: skip
    back = read_intervals(path)
    assert back[:2] == intervals and back[2].emotion == "others"
    assert validate_files([path], []) == []
    with pytest.raises(ValueError, match="onset 9 after offset 5"):
        write_str_csv([Interval("1", "a", 9, 5, "negative")], tmp_path / "bad.csv")
    assert not (tmp_path / "bad.csv").exists()


def test_zip_refuses_two_files_with_one_name(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for d in ("a", "b"):
        (tmp_path / d / "x.jsonl").write_text("{}\n")
    with pytest.raises(ValueError, match="share the name"):
        make_submission_zip([tmp_path / "a" / "x.jsonl", tmp_path / "b" / "x.jsonl"])


def test_parse_jsonl_keeps_line_numbers():
    rows, problems = parse_jsonl(b'{"a": 1}\n\n[1]\n{"b": 2}\n', "f")
    assert [r.line for r in rows] == [1, 4]
    assert [(p.line, p.message.split(":")[0]) for p in problems] == [
        (2, "blank line"),
        (3, "expected a JSON object, got list"),
    ]


# ---- eval/validate.py ----
def test_validate_script_exit_codes(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("validate_script", ROOT / "eval" / "validate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    good = tmp_path / "me_vqa_samm_test_pred.jsonl"
    good.write_text(filled_text(SAMM_2025))
    # --questions swallows the prediction file too; the script tells them apart by content.
    assert script.main(["--questions", str(SAMM_2025), str(good)]) == 0
    good.write_text(filled_text(SAMM_2025).replace('"answer": "negative"', '"answer": ""', 1))
    assert script.main(["--questions", str(SAMM_2025), "--", str(good)]) == 1
    assert "me_vqa_samm_test_pred.jsonl:1: error: empty answer" in capsys.readouterr().out
