"""QA records: SPEC section 3 generation, the MEGC file readers/writers and ``megc-vqa prep``.

Expected question strings are written out literally from SPEC sections 3-4, not imported from the code.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from megc_vqa import annotations
from megc_vqa.cli import main as cli_main
from megc_vqa.labels import AU_NAMES
from megc_vqa.qa.generate import clip_rng, generate_qa, questions_for_clip
from megc_vqa.qa.io import (
    QAFileError,
    read_qa_jsonl,
    read_questions,
    read_training_file,
    save_as_dataset,
    write_qa_jsonl,
)
from megc_vqa.qa.records import QARecord, QuestionRow
from megc_vqa.records import ActionUnit, Clip, FrameSource, LoadResult, Skip

MEGC = Path(__file__).resolve().parents[1] / "data" / "megc"  # organisers' files, shipped
# The leading columns of a QA row, in the order the organisers distribute them.
OFFICIAL_COLUMNS = ["id", "dataset", "image_id", "subject", "filename", "question", "answer"]

Q_COARSE = "What is the coarse expression class?"
Q_FINE = "What is the fine-grained expression class?"
Q_AU_ONE = "What is the action unit?"
Q_AU_MANY = "What are the action units?"
Q_JOINT_ONE = (
    "What is the action unit present, and based on it, what is the fine-grained expression and the coarse "
    "expression class?"
)
Q_JOINT_MANY = (
    "What are the action units present, and based on them, what is the fine-grained expression and the coarse "
    "expression class?"
)


def q_side(name):
    return f"Is the action unit {name} located on the left or right face?"


def q_shown(name):
    return f"Is the action unit {name} shown on the face?"


def au(token: str) -> ActionUnit:
    """A tiny AU-token parser for tests: optional L/R prefix, number, optional intensity letter."""
    side = token[0] if token[0] in "LR" else None
    body = token[1:] if side else token
    intensity = body[-1] if body[-1].isalpha() else None
    number = int(body[:-1] if intensity else body)
    return ActionUnit(number, side=side, intensity=intensity, raw=token)


def make_clip(
    aus="4+L10", dataset="casme2", subject="sub01", clip_id="EP02_01f", image_id=None, **kw
) -> Clip:
    base = dict(
        dataset=dataset,
        subject=subject,
        clip_id=clip_id,
        image_id=image_id or (f"{subject}_{clip_id}" if dataset == "casme2" else clip_id),
        source=FrameSource("folder", Path(f"/data/{dataset}/{subject}/{clip_id}")),
        fps=200.0,
        onset=10,
        offset=40,
        apex=20,
        aus=tuple(au(tok) for tok in aus.split("+")) if aus else (),
        fine_emotion="disgust",
        coarse_emotion="negative",
    )
    base.update(kw)
    return Clip(**base)


def split_presence(records):
    presence = [r for r in records if r.question.endswith(" shown on the face?")]
    yes = [r for r in presence if r.answer == "yes"]
    no = [r for r in presence if r.answer == "no"]
    name = lambda r: r.question[len("Is the action unit ") : -len(" shown on the face?")]  # noqa: E731
    return [name(r) for r in yes], [name(r) for r in no], presence


# ---------------------------------------------------------------- generation


def test_plural_clip_is_byte_exact_in_official_order():
    clip = make_clip("4+L10")
    records = questions_for_clip(clip, random.Random(1))
    yes, no, _ = split_presence(records)
    assert yes[0] in ("brow lowerer", "upper lip raiser")
    expected = [
        (Q_COARSE, "negative"),
        (Q_FINE, "disgust"),
        (Q_AU_MANY, "brow lowerer, upper lip raiser"),
        (q_side("upper lip raiser"), "left"),
        (q_shown(yes[0]), "yes"),
        (q_shown(no[0]), "no"),
        (
            Q_JOINT_MANY,
            "The action units present are: brow lowerer, upper lip raiser. Therefore, the fine-grained "
            "expression class is disgust, and the coarse expression class is negative.",
        ),
    ]
    assert [(r.question, r.answer) for r in records] == expected
    assert [r.id for r in records] == [f"casme2_sub01_EP02_01f_{k}" for k in range(1, 8)]
    assert [r.question_type for r in records] == [
        "coarse",
        "fine",
        "au",
        "side",
        "presence",
        "presence",
        "joint",
    ]
    first = records[0]
    assert (first.dataset, first.image_id, first.subject, first.filename) == (
        "casme2",
        "sub01_EP02_01f",
        "sub01",
        "EP02_01f",
    )
    assert (first.source, first.fps, first.onset, first.apex, first.offset) == (
        "/data/casme2/sub01/EP02_01f",
        200.0,
        10,
        20,
        40,
    )


def test_singular_wording_for_exactly_one_au():
    clip = make_clip(
        "12",
        dataset="samm",
        subject="6",
        clip_id="006_1_2",
        fine_emotion="happiness",
        coarse_emotion="positive",
    )
    records = generate_qa([clip])
    assert [r.id for r in records] == [f"samm_006_1_2_{k}" for k in range(1, 7)]
    assert records[0].subject == "6"
    assert [(r.question, r.answer) for r in records if r.question_type in ("au", "joint")] == [
        (Q_AU_ONE, "lip corner puller"),
        (
            Q_JOINT_ONE,
            "The action unit present is: lip corner puller. Therefore, the fine-grained expression class is "
            "happiness, and the coarse expression class is positive.",
        ),
    ]
    yes, _, _ = split_presence(records)
    assert yes == ["lip corner puller"]
    assert not any("left or right" in r.question for r in records)


def test_au_names_in_coded_order_and_deduplicated():
    """SPEC section 2: the organisers keep the release's coded order (not ascending AU number)."""
    clip = make_clip("12+L4+4C+1+R12")
    records = generate_qa([clip])
    au_answer = next(r.answer for r in records if r.question_type == "au")
    assert au_answer == "lip corner puller, brow lowerer, inner brow raiser"
    joint = next(r.answer for r in records if r.question_type == "joint")
    assert joint.startswith(
        "The action units present are: lip corner puller, brow lowerer, inner brow raiser."
    )


def test_coded_order_changes_only_the_au_lists():
    """Reordering a cell changes the AU list and joint answers, never which AU the other questions ask."""
    ascending = generate_qa([make_clip("2+4+L7")], seed=3)
    coded = generate_qa([make_clip("4+L7+2")], seed=3)
    differ = [(a.question_type, b.answer) for a, b in zip(ascending, coded, strict=True) if a != b]
    assert [q for q, _ in differ] == ["au", "joint"]
    assert differ[0][1] == "brow lowerer, lid tightener, outer brow raiser"


@pytest.mark.parametrize(
    ("aus", "expected"),
    [
        ("R12", (q_side("lip corner puller"), "right")),
        ("4+L10", (q_side("upper lip raiser"), "left")),
        ("R14+L2", (q_side("outer brow raiser"), "left")),  # lowest AU number first
        ("L12+R12+R14", (q_side("dimpler"), "right")),  # 12 is on both sides: no single answer
        ("1+2", None),
        ("L12+R12", None),
        ("12+L12", None),
    ],
)
def test_left_right_question_only_for_unilateral_aus(aus, expected):
    records = generate_qa([make_clip(aus)])
    side = [(r.question, r.answer) for r in records if "left or right" in r.question]
    assert side == ([expected] if expected else [])


def test_one_yes_one_no_and_the_no_au_is_absent():
    rng = random.Random(7)
    for i in range(200):
        numbers = rng.sample(sorted(AU_NAMES), rng.randint(1, 5))
        clip = make_clip("+".join(map(str, numbers)), clip_id=f"EP{i:03d}")
        yes, no, presence = split_presence(generate_qa([clip], seed=i))
        assert len(yes) == 1 and len(no) == 1 and len(presence) == 2
        assert yes[0] in {AU_NAMES[n] for n in numbers}
        assert no[0] in AU_NAMES.values() and no[0] not in {AU_NAMES[n] for n in numbers}


def test_no_au_varies_with_seed_and_is_never_coded_on_either_side():
    clip = make_clip("L12+R4")
    nos = {split_presence(generate_qa([clip], seed=s))[1][0] for s in range(40)}
    assert len(nos) > 5
    assert not nos & {"lip corner puller", "brow lowerer"}


def test_determinism_across_runs_and_clip_order():
    clips = [make_clip("1+2+L12", clip_id=f"EP{i:02d}") for i in range(12)] + [
        make_clip("4+7", dataset="samm", subject=str(i), clip_id=f"{i:03d}_1_1", fine_emotion="anger")
        for i in range(12)
    ]
    first = generate_qa(clips, seed=3)
    assert generate_qa(clips, seed=3) == first
    shuffled = clips[:]
    random.Random(0).shuffle(shuffled)
    assert sorted(generate_qa(shuffled, seed=3), key=lambda r: r.id) == sorted(first, key=lambda r: r.id)
    # a clip's questions do not depend on the other clips present
    alone = generate_qa([clips[5]], seed=3)
    assert alone == [r for r in first if r.image_id == clips[5].image_id]
    assert generate_qa(clips, seed=4) != first
    assert clip_rng(clips[0], 3).random() == clip_rng(clips[0], 3).random()


def test_smic_gets_only_the_coarse_question():
    clip = make_clip("", dataset="smic", subject="s01", clip_id="s01_ne_01", fine_emotion=None, apex=None)
    records = generate_qa([clip])
    assert [(r.id, r.question, r.answer) for r in records] == [("smic_s01_ne_01_1", Q_COARSE, "negative")]
    assert records[0].apex is None


def test_smic_with_aus_still_gets_only_the_coarse_question():
    clip = make_clip("12", dataset="smic", subject="s02", clip_id="s02_po_01", coarse_emotion="positive")
    assert [r.question for r in generate_qa([clip])] == [Q_COARSE]


def test_unknown_au_is_left_out_and_noted():
    skips: list[Skip] = []
    records = generate_qa([make_clip("4+99")], skips=skips)
    assert next(r.answer for r in records if r.question_type == "au") == "brow lowerer"
    assert next(r.question for r in records if r.question_type == "au") == Q_AU_ONE
    assert any("99" in s.detail and "FACS name" in s.reason for s in skips)


def test_clip_without_named_aus_gets_no_au_questions():
    skips: list[Skip] = []
    records = generate_qa([make_clip("")], skips=skips)
    assert [r.question for r in records] == [Q_COARSE, Q_FINE]
    assert len(skips) == 1 and skips[0].dataset == "casme2"


def test_clip_without_coarse_or_duplicated_is_reported_not_turned_into_qa():
    skips: list[Skip] = []
    clips = [
        make_clip(coarse_emotion=None, clip_id="EP01"),
        make_clip(clip_id="EP02"),
        make_clip(clip_id="EP02"),
    ]
    records = generate_qa(clips, skips=skips)
    assert {r.image_id for r in records} == {"sub01_EP02"}
    assert len(records) == 7  # the duplicate did not add a second set of ids
    assert len(skips) == 2
    assert "coarse" in skips[0].reason and "duplicate" in skips[1].reason


# ---------------------------------------------------------------- files


def test_qa_jsonl_round_trip_and_official_key_order(tmp_path):
    records = generate_qa(
        [make_clip("L12", fine_emotion="happiness", coarse_emotion="positive")]
    ) + generate_qa(
        [
            make_clip(
                "", dataset="smic", subject="s01", clip_id="s01_sur_01", apex=None, coarse_emotion="surprise"
            )
        ]
    )
    records.append(records[0].with_source(answer="é ü", id="casme2_x_1"))
    path = write_qa_jsonl(records, tmp_path / "qa.jsonl")
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == len(records)
    assert lines[0].startswith(
        '{"id":"casme2_sub01_EP02_01f_1","dataset":"casme2","image_id":"sub01_EP02_01f",'
    )
    assert ", " not in lines[0].split('"question"')[0] and '": ' not in lines[0]  # compact, as distributed
    assert list(json.loads(lines[0]))[:7] == OFFICIAL_COLUMNS
    assert "é ü" in lines[-1]
    assert read_qa_jsonl(path) == records
    assert [p.name for p in tmp_path.iterdir()] == ["qa.jsonl"]  # no temp file left behind


def samm_training_row(answer: str) -> dict:
    """A row of the organisers' training file as distributed (no extras): SAMM clip 006_1_2, coarse class."""
    return {
        "id": "samm_006_1_2_1",
        "dataset": "samm",
        "image_id": "006_1_2",
        "subject": "6",
        "filename": "006_1_2",
        "question": Q_COARSE,
        "answer": answer,
    }


def test_official_training_rows_read_without_extras(tmp_path):
    path = tmp_path / "me_vqa_samm_casme2_smic.jsonl"
    path.write_text(json.dumps(samm_training_row("negative")) + "\n", encoding="utf-8")
    (record,) = read_qa_jsonl(path)
    assert record.question_type == "coarse" and record.source is None and record.frame_source() is None


QUESTION_FILES = {
    "2025/me_vqa_samm_test_to_answer.jsonl": 35,
    "2025/me_vqa_casme3_test_to_answer.jsonl": 85,
    "2026/me_vqa_samm_v2_test_to_answer.jsonl": 35,
    "2026/me_vqa_casme3_v2_test_to_answer.jsonl": 85,
    "2026/me_lvqa_samm_test_to_answer.jsonl": 60,
    "2026/me_lvqa_casme3_test_to_answer.jsonl": 120,
}


@pytest.mark.parametrize(("name", "count"), QUESTION_FILES.items())
def test_read_questions_on_organiser_files(name, count):
    path = MEGC / name
    rows = read_questions(path)
    assert len(rows) == count
    originals = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert [row.to_json() for row in rows] == originals
    assert [list(row.to_json()) for row in rows] == [list(o) for o in originals]
    assert all(row.answer == "" for row in rows)
    assert all(row.question_type != "unknown" for row in rows)
    assert rows[0].line == 1 and rows[-1].line == count
    if "lvqa" not in name:
        assert len({row.video for row in rows}) == count // 5


def test_question_row_keeps_extra_keys_and_order(tmp_path):
    path = tmp_path / "q.jsonl"
    path.write_bytes(
        b'\xef\xbb\xbf{"question":"What is the action unit?","video_id":"samm_test_SAMM-1_3",'
        b'"note":1,"video":"SAMM-1","answer":""}\r\n\r\n'
    )
    (row,) = read_questions(path)
    filled = row.with_answer("cheek raiser").to_json()
    assert list(filled) == ["question", "video_id", "note", "video", "answer"]
    assert filled["answer"] == "cheek raiser" and filled["note"] == 1
    assert QuestionRow.from_json(filled).to_json() == filled


@pytest.mark.parametrize(
    ("third_line", "message"),
    [
        ("{not json", ":3: not valid JSON"),
        ('["a list"]', ":3: expected a JSON object"),
        ('{"video_id":"x_3","video":"X","question":"q"}', ":3: missing key(s) answer"),
        (
            '{"video_id":"x_3","video":"X","question":5,"answer":""}',
            ":3: key 'question' must be a string",
        ),
        (
            '{"video_id":"x_1","video":"X","question":"q","answer":""}',
            ":3: video_id 'x_1' already used on line 1",
        ),
        (
            '{"video_id":"x_3","video":"../X","question":"q","answer":""}',
            ":3: video '../X' is not a plain",
        ),
    ],
)
def test_read_questions_names_the_bad_line(tmp_path, third_line, message):
    good = ['{"video_id":"x_1","video":"X","question":"q","answer":""}', ""]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join([*good, third_line]) + "\n", encoding="utf-8")
    with pytest.raises(QAFileError) as err:
        read_questions(path)
    assert f"{path}{message}" in str(err.value)


def test_read_questions_empty_or_missing_file(tmp_path):
    (tmp_path / "empty.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(QAFileError, match="no question rows"):
        read_questions(tmp_path / "empty.jsonl")
    with pytest.raises(QAFileError, match="no such file"):
        read_questions(tmp_path / "absent.jsonl")
    (tmp_path / "latin1.jsonl").write_bytes(
        b'{"video_id":"x_1","video":"X","question":"q","answer":""}\n"\xe9"\n'
    )
    with pytest.raises(QAFileError, match=r"latin1.jsonl:2: not valid UTF-8"):
        read_questions(tmp_path / "latin1.jsonl")


def hand_built_clips() -> list[Clip]:
    return [
        make_clip("4+L10", clip_id="EP02_01f"),
        make_clip("12", clip_id="EP03_02", fine_emotion="happiness", coarse_emotion="positive"),
        make_clip(
            "6+12",
            dataset="samm",
            subject="6",
            clip_id="006_1_2",
            fine_emotion="happiness",
            coarse_emotion="positive",
        ),
        make_clip(
            "", dataset="smic", subject="s01", clip_id="s01_ne_01", fine_emotion=None, apex=None, fps=100.0
        ),
    ]


@pytest.fixture
def fake_loaders(monkeypatch):
    """Stand-ins for megc_vqa.annotations (same API), returning hand-built clips."""
    from megc_vqa.qa import frame_check

    class FakeAnnotationError(Exception):
        pass

    state = {"clips": hand_built_clips(), "error": None, "found": ["casme2", "samm", "smic"]}

    def load_all(root):
        if state["error"]:
            raise FakeAnnotationError(state["error"])
        skips = [Skip("casme2", "CASME2-coding-20140508.xlsx", 7, "emotion outside the composite", "fear")]
        return LoadResult(clips=list(state["clips"]), skips=skips)

    monkeypatch.setattr(annotations, "AnnotationError", FakeAnnotationError, raising=False)
    monkeypatch.setattr(annotations, "load_all", load_all, raising=False)
    monkeypatch.setattr(annotations, "detect_datasets", lambda root: state["found"], raising=False)
    # the hand-built clips point at no frames: the frame check (tested in test_bad_inputs.py) lets them pass
    monkeypatch.setattr(frame_check, "check_clip_frames", lambda clips: (list(clips), []))
    monkeypatch.setattr(
        annotations,
        "summarise_skips",
        lambda skips: [f"{s.dataset}: {s.reason}: 1" for s in skips],
        raising=False,
    )
    return state


def test_read_training_file_maps_rows_onto_clips_and_keeps_unmatched(tmp_path, fake_loaders, caplog):
    rows = [
        samm_training_row("positive"),
        {
            "id": "casme2_sub01_EP03_02_1",
            "dataset": "casme2",
            "image_id": "other_id",
            "subject": "sub01",
            "filename": "EP03_02",
            "question": Q_COARSE,
            "answer": "positive",
        },
        {
            "id": "casme2_sub26_EP18_50_1",
            "dataset": "casme2",
            "image_id": "sub26_EP18_50",
            "subject": "sub26",
            "filename": "EP18_50",
            "question": Q_COARSE,
            "answer": "negative",
        },
    ]
    path = tmp_path / "me_vqa_samm_casme2_smic.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    unmatched: list[QARecord] = []
    records = read_training_file(path, tmp_path, unmatched=unmatched)
    assert [r.id for r in records] == [r["id"] for r in rows]
    assert records[0].source == "/data/samm/6/006_1_2" and records[0].onset == 10
    assert records[1].source == "/data/casme2/sub01/EP03_02"  # matched on subject + filename
    assert records[2].source is None and [r.id for r in unmatched] == ["casme2_sub26_EP18_50_1"]
    assert "1 of 3 rows" in caplog.text


def test_save_as_dataset(tmp_path):
    from datasets import load_from_disk

    records = generate_qa(hand_built_clips())
    save_as_dataset(records, tmp_path / "dataset")
    loaded = load_from_disk(str(tmp_path / "dataset"))
    assert loaded.column_names[:7] == OFFICIAL_COLUMNS
    assert [QARecord.from_json(row) for row in loaded] == records


# ---------------------------------------------------------------- prep command


TYPE_ORDER = ["coarse", "fine", "au", "side", "presence", "presence", "joint"]


def assert_follows_spec_section_3(records: list[QARecord], clips: list[Clip]) -> None:
    """Every rule of SPEC section 3 that can be checked from the records and their source clips."""
    by_id = {(c.dataset, c.image_id): c for c in clips}
    groups: dict[tuple[str, str], list[QARecord]] = {}
    for r in records:
        groups.setdefault((r.dataset, r.image_id), []).append(r)
    assert set(groups) <= set(by_id)
    for key, group in groups.items():
        clip = by_id[key]
        assert [r.id for r in group] == [f"{key[0]}_{key[1]}_{k}" for k in range(1, len(group) + 1)]
        assert all((r.subject, r.filename) == (clip.subject, clip.clip_id) for r in group)
        questions = [r.question for r in group]
        if clip.dataset == "smic":
            assert [(r.question, r.answer) for r in group] == [(Q_COARSE, clip.coarse_emotion)]
            continue
        names = [AU_NAMES[n] for n in sorted({a.number for a in clip.aus if a.number in AU_NAMES})]
        plural = len(names) > 1
        has_side = any(a.side for a in clip.aus)
        expected_types = [t for t in TYPE_ORDER if t != "side" or has_side]
        assert [r.question_type for r in group] == expected_types
        assert questions[:3] == [Q_COARSE, Q_FINE, Q_AU_MANY if plural else Q_AU_ONE]
        assert [r.answer for r in group[:3]] == [clip.coarse_emotion, clip.fine_emotion, ", ".join(names)]
        yes, no, _ = split_presence(group)
        assert len(yes) == 1 and yes[0] in names and len(no) == 1 and no[0] not in names
        assert questions[-1] == (Q_JOINT_MANY if plural else Q_JOINT_ONE)
        word = "units present are" if plural else "unit present is"
        assert group[-1].answer == (
            f"The action {word}: {', '.join(names)}. Therefore, the fine-grained expression class is "
            f"{clip.fine_emotion}, and the coarse expression class is {clip.coarse_emotion}."
        )


def test_prep_on_release_format_spreadsheets(tmp_path, capsys):
    """The real loaders on spreadsheets written in the release formats (with their traps) by the
    annotation writers; frame files are one tiny JPEG (prep opens every frame a record uses)."""
    import io

    from PIL import Image

    from megc_vqa.annotations import DATASETS, parse_aus

    buffer = io.BytesIO()
    Image.new("L", (16, 16), 128).save(buffer, "JPEG")
    jpeg = buffer.getvalue()

    specs = {
        "casme2": [
            ("sub01", "EP02_01f", "sub01_EP02_01f", "4+L10", "disgust", "negative"),
            ("sub02", "EP03_02", "sub02_EP03_02", "6+12", "happiness", "positive"),
            ("sub02", "EP05_01", "sub02_EP05_01", "R12", "happiness", "positive"),
        ],
        "samm": [
            ("6", "006_1_2", "006_1_2", "4+7", "anger", "negative"),
            ("7", "007_3_1", "007_3_1", "1+2+25", "surprise", "surprise"),
        ],
        "smic": [
            ("s01", "s01_ne_01", "s01_ne_01", "", None, "negative"),
            ("s02", "s02_po_02", "s02_po_02", "", None, "positive"),
        ],
    }
    written: list[Clip] = []
    for key, rows in specs.items():
        module, clips = DATASETS[key], []
        for subject, clip_id, image_id, aus, fine, coarse in rows:
            folder = module.clip_dir(tmp_path / key, subject, clip_id)
            folder.mkdir(parents=True)
            for i in range(100, 131):
                (folder / module.frame_name(i, clip_id)).write_bytes(jpeg)
            clips.append(
                Clip(
                    key,
                    subject,
                    clip_id,
                    image_id,
                    FrameSource("folder", folder),
                    module.FPS,
                    100,
                    130,
                    None if key == "smic" else 110,
                    parse_aus(aus),
                    fine,
                    coarse,
                )
            )
        module.write(clips, tmp_path / key)
        written.extend(clips)

    out = tmp_path / "out"
    assert cli_main(["prep", "--data-root", str(tmp_path), "--out", str(out), "--no-progress"]) == 0
    records = read_qa_jsonl(out / "qa.jsonl")
    assert {(r.dataset, r.image_id) for r in records} == {(c.dataset, c.image_id) for c in written}
    assert_follows_spec_section_3(records, written)
    assert sum(r.question_type == "side" for r in records) == 2
    assert all(Path(r.source).is_dir() for r in records)
    assert "casme2" in capsys.readouterr().out


def test_prep_writes_records_dataset_and_skips(tmp_path, fake_loaders, capsys):
    out = tmp_path / "out"
    assert cli_main(["prep", "--data-root", str(tmp_path), "--out", str(out), "--seed", "5"]) == 0
    records = read_qa_jsonl(out / "qa.jsonl")
    assert records == generate_qa(hand_built_clips(), seed=5)
    assert_follows_spec_section_3(records, hand_built_clips())
    assert {r.dataset for r in records} == {"casme2", "samm", "smic"}
    skips = [json.loads(line) for line in (out / "skips.jsonl").read_text().splitlines()]
    # the AU-less SMIC clip is coarse-only by design, so it adds no note
    assert [(s["stage"], s["dataset"], s["row"], s["reason"]) for s in skips] == [
        ("load", "casme2", 7, "emotion outside the composite")
    ]
    assert (out / "dataset" / "dataset_info.json").exists()
    printed = capsys.readouterr().out
    for word in ("casme2", "samm", "smic", "coarse", "presence", "emotion outside the composite"):
        assert word in printed


def test_prep_dataset_filter(tmp_path, fake_loaders):
    out = tmp_path / "out"
    assert cli_main(["prep", "--data-root", str(tmp_path), "--out", str(out), "--datasets", "samm"]) == 0
    assert {r.dataset for r in read_qa_jsonl(out / "qa.jsonl")} == {"samm"}
    assert (out / "skips.jsonl").read_text() == ""  # the CASME II skip belongs to a dataset not asked for
    assert cli_main(["prep", "--data-root", str(tmp_path), "--out", str(out), "--datasets", "casme3"]) == 2


def test_prep_bad_input_is_one_line_and_exit_2(tmp_path, fake_loaders, capsys):
    fake_loaders["error"] = "CASME2-coding.xlsx, sheet Sheet1, row 4, column OnsetFrame: not a number: 'x'"
    assert cli_main(["prep", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == f"megc-vqa prep: error: {fake_loaders['error']}"
    fake_loaders["found"] = []
    assert cli_main(["prep", "--data-root", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "no dataset found under" in capsys.readouterr().err
    assert cli_main(["prep", "--data-root", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_prep_with_no_usable_clip_exits_1(tmp_path, fake_loaders):
    fake_loaders["clips"] = [make_clip(coarse_emotion=None)]
    out = tmp_path / "out"
    assert cli_main(["prep", "--data-root", str(tmp_path), "--out", str(out)]) == 1
    assert (out / "qa.jsonl").read_text() == ""
    assert "no coarse emotion" in (out / "skips.jsonl").read_text()


def test_data_prep_script_calls_the_same_command(tmp_path, fake_loaders):
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "data_prep_prep", Path(__file__).parents[1] / "data_prep/prep.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.main(["--data-root", str(tmp_path), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    assert read_qa_jsonl(tmp_path / "o" / "qa.jsonl") == generate_qa(hand_built_clips())


@pytest.mark.slow
def test_synth_then_prep_follows_spec_section_3(tmp_path):
    """The issue's "done when": ``megc-vqa synth --out D && megc-vqa prep --data-root D --out P``."""
    from megc_vqa.annotations import load_all

    data = tmp_path / "data"
    synth_args = ["--datasets", "casme2,samm,smic", "--subjects", "2", "--clips-per-subject", "3"]
    assert cli_main(["synth", "--out", str(data), *synth_args]) == 0
    assert cli_main(["prep", "--data-root", str(data), "--out", str(tmp_path / "p"), "--no-progress"]) == 0
    records = read_qa_jsonl(tmp_path / "p" / "qa.jsonl")
    assert {r.dataset for r in records} == {"casme2", "samm", "smic"}
    assert_follows_spec_section_3(records, load_all(data).clips)
