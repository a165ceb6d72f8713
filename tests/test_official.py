"""The organisers' own training files: ``prep --training-file``, ``prep --compare-with``, the writer, and the
release's coded AU order (issue 13, items 1 and 2).

The real files are licence-bound and not shipped; an organiser-format file is written from synthetic
releases by ``megc-vqa synth --training-file`` and read back through the real annotation loaders.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from megc_vqa.cli import main as cli_main
from megc_vqa.qa.io import read_qa_jsonl

ANALYSIS_PROMPTS = {  # SPEC section 4, written out
    "Please analyse the micro-expression shown in this video in detail.",
    "Provide a detailed analysis of the micro-expression observed in this clip.",
    "Provide a comprehensive analysis of the facial micro-expression shown in this clip.",
}
OFFICIAL_KEYS = ["id", "dataset", "image_id", "subject", "filename", "question", "answer"]
MEGC = Path(__file__).resolve().parents[1] / "data" / "megc"


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("official") / "data"
    args = ["--datasets", "casme2,samm,smic", "--subjects", "2", "--clips-per-subject", "3", "--size", "48"]
    assert cli_main(["synth", "--out", str(root), *args, "--workers", "1", "--training-file", "2026"]) == 0
    return root


def v2_file(root: Path) -> Path:
    return root / "me_vqa_samm_casme2_smic_v2.jsonl"


def file_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_synth_writes_an_organiser_format_v2_file(synth_root):
    rows = file_rows(v2_file(synth_root))
    assert rows and all(list(row) == OFFICIAL_KEYS for row in rows)
    assert {r["dataset"] for r in rows} == {"casme2", "samm", "smic"}
    analysis = [r for r in rows if r["question"] in ANALYSIS_PROMPTS]
    assert analysis and all(len(r["answer"].split()) > 10 for r in analysis)  # free-form, not a label
    assert not any(r["dataset"] == "smic" and r["question"] in ANALYSIS_PROMPTS for r in rows)
    # ids are {dataset}_{image_id}_{k}, k = 1.. within a clip
    for row in rows:
        assert row["id"].startswith(f"{row['dataset']}_{row['image_id']}_")
    assert len({r["id"] for r in rows}) == len(rows)


def test_prep_training_file_maps_every_row_questions_and_answers_untouched(synth_root, tmp_path, capsys):
    out = tmp_path / "p"
    argv = [
        "prep",
        "--training-file",
        str(v2_file(synth_root)),
        "--data-root",
        str(synth_root),
        "--out",
        str(out),
    ]
    assert cli_main(argv) == 0
    rows = file_rows(v2_file(synth_root))
    records = read_qa_jsonl(out / "qa.jsonl")
    assert [{k: getattr(r, k) for k in OFFICIAL_KEYS} for r in records] == rows
    assert all(r.source and Path(r.source).is_dir() and r.onset is not None for r in records)
    assert {r.question_type for r in records if r.question in ANALYSIS_PROMPTS} == {"analysis"}
    assert (out / "unmatched.jsonl").read_text() == ""
    assert "2026 schema" in capsys.readouterr().out


def test_written_2025_file_is_the_generator_output_in_official_keys(synth_root):
    from megc_vqa.annotations import load_all
    from megc_vqa.qa.generate import generate_qa
    from megc_vqa.qa.official import official_rows

    clips = load_all(synth_root).clips
    rows = official_rows(clips, "2025")
    assert rows == [{k: getattr(r, k) for k in OFFICIAL_KEYS} for r in generate_qa(clips)]
    assert not any(r["question"] in ANALYSIS_PROMPTS for r in rows)


def test_unmatched_rows_are_listed_and_fail_above_the_allowed_share(synth_root, tmp_path, capsys):
    rows = file_rows(v2_file(synth_root))
    stray = dict(
        rows[0], id="casme2_sub99_EP01_01_1", image_id="sub99_EP01_01", subject="sub99", filename="EP01_01"
    )
    no_release = dict(
        rows[0], id="casme3_spNO.1_a_1", dataset="casme3", image_id="spNO.1_a", subject="spNO.1"
    )
    path = write_rows(tmp_path / "official.jsonl", [*rows, stray, no_release])
    out = tmp_path / "p"
    argv = ["prep", "--training-file", str(path), "--data-root", str(synth_root), "--out", str(out)]
    assert cli_main(argv) == 1
    captured = capsys.readouterr()
    assert "--max-unmatched-share" in captured.err
    assert not (out / "qa.jsonl").exists()  # nothing to train on fewer clips than allowed
    unmatched = file_rows(out / "unmatched.jsonl")
    assert [(u["line"], u["id"], u["kind"]) for u in unmatched] == [
        (len(rows) + 1, stray["id"], "no_clip"),
        (len(rows) + 2, no_release["id"], "no_release"),
    ]
    assert all(u["file"] == str(path) for u in unmatched)
    assert "sub99_EP01_01" in unmatched[0]["reason"] and "casme3" in unmatched[1]["reason"]
    assert f"{path}:{len(rows) + 1}: {stray['id']}" in captured.out

    assert cli_main([*argv, "--max-unmatched-share", "0.1"]) == 0
    assert [r.id for r in read_qa_jsonl(out / "qa.jsonl")] == [r["id"] for r in rows]


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            {"video_id": "samm_test_SAMM-1_1", "video": "SAMM-1", "question": "q", "answer": ""},
            "question file",
        ),
        ({"messages": [], "images": []}, "chat dataset"),
        ({"image": "a.jpg", "text": "q", "label": "x"}, "'image', 'text', 'label'"),
    ],
)
def test_training_file_of_unknown_schema_names_the_keys_found(tmp_path, capsys, row, expected):
    path = write_rows(tmp_path / "f.jsonl", [row])
    argv = ["prep", "--training-file", str(path), "--data-root", str(tmp_path), "--out", str(tmp_path / "p")]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert f"{path}:1" in err and expected in err and "missing:" in err


def test_organiser_question_file_is_refused_as_training_file(tmp_path, capsys):
    path = MEGC / "2025" / "me_vqa_samm_test_to_answer.jsonl"
    argv = ["prep", "--training-file", str(path), "--data-root", str(tmp_path), "--out", str(tmp_path / "p")]
    assert cli_main(argv) == 2
    assert "'video_id'" in capsys.readouterr().err


def test_add_generated_mixes_official_rows_with_generated_clips_once(synth_root, tmp_path):
    rows = [r for r in file_rows(v2_file(synth_root)) if r["dataset"] == "casme2"]
    path = write_rows(tmp_path / "casme2_only.jsonl", rows)
    out = tmp_path / "p"
    argv = ["prep", "--training-file", str(path), "--data-root", str(synth_root), "--out", str(out)]
    assert cli_main([*argv, "--add-generated"]) == 0
    records = read_qa_jsonl(out / "qa.jsonl")
    assert [r.id for r in records[: len(rows)]] == [r["id"] for r in rows]
    generated = records[len(rows) :]
    assert {r.dataset for r in generated} == {"samm", "smic"}
    assert len({r.id for r in records}) == len(records)


def test_compare_with_agrees_then_lists_differences_clip_by_clip(synth_root, tmp_path, capsys):
    prep = ["prep", "--data-root", str(synth_root), "--out", str(tmp_path / "p"), "--no-progress"]
    assert cli_main([*prep, "--compare-with", str(v2_file(synth_root))]) == 0
    assert "0 clips differ" in capsys.readouterr().out

    rows = file_rows(v2_file(synth_root))
    au_row = next(r for r in rows if r["question"] == "What are the action units?")
    names = au_row["answer"].split(", ")
    au_row["answer"] = ", ".join(reversed(names))
    fine_row = next(
        r
        for r in rows
        if r["question"] == "What is the fine-grained expression class?"
        and r["image_id"] != au_row["image_id"]
    )
    fine_row["answer"] = "contempt" if fine_row["answer"] != "contempt" else "anger"
    changed = write_rows(tmp_path / "changed.jsonl", rows)
    assert cli_main([*prep, "--compare-with", str(changed)]) == 1
    out = capsys.readouterr().out
    assert f"{au_row['dataset']}/{au_row['image_id']}: au_order:" in out
    assert f"{fine_row['dataset']}/{fine_row['image_id']}: answer:" in out
    assert "2 clips differ" in out


def test_release_coded_au_order_survives_loader_and_generator(tmp_path):
    """A CASME II cell coded ``4+7+L2`` gives ``brow lowerer, lid tightener, outer brow raiser``."""
    from megc_vqa.annotations import DATASETS, parse_aus
    from megc_vqa.qa.generate import generate_qa
    from megc_vqa.records import Clip, FrameSource

    module = DATASETS["casme2"]
    folder = module.clip_dir(tmp_path, "sub01", "EP02_01f")
    folder.mkdir(parents=True)
    for i in range(100, 121):
        (folder / module.frame_name(i)).touch()
    clip = Clip(
        "casme2", "sub01", "EP02_01f", "sub01_EP02_01f", FrameSource("folder", folder), 200.0, 100, 120, 110,
        parse_aus("4+7+L2"), "disgust", "negative",
    )  # fmt: skip
    module.write([clip], tmp_path)
    loaded = module.load(tmp_path).clips
    assert [a.number for a in loaded[0].aus] == [4, 7, 2]
    records = {r.question_type: r.answer for r in generate_qa(loaded)}
    assert records["au"] == "brow lowerer, lid tightener, outer brow raiser"
    assert records["joint"].startswith(
        "The action units present are: brow lowerer, lid tightener, outer brow"
    )


@pytest.mark.parametrize(
    ("question", "kind"),
    [
        *((q, "analysis") for q in sorted(ANALYSIS_PROMPTS)),
        ("Analyze the facial micro-expression in this clip.", "analysis"),  # another wording: still free-form
        ("What is the coarse expression class?", "coarse"),
        ("What distinct action units appear in this video?", "lvqa_aus"),
        ("Describe the weather.", "unknown"),
    ],
)
def test_analysis_rows_are_their_own_free_form_kind(question, kind):
    from megc_vqa.metrics.vqa import CLASSIFICATION_TYPES
    from megc_vqa.qa.records import QARecord

    row = dict(
        zip(OFFICIAL_KEYS, ["samm_006_1_2_5", "samm", "006_1_2", "6", "006_1_2", question, "a"], strict=True)
    )
    assert QARecord.from_json(row).question_type == kind
    if kind == "analysis":
        assert kind not in CLASSIFICATION_TYPES  # scored by BLEU/ROUGE, never as a label
