"""Issue 27, one definition of each fact: the shared helpers the duplicates were folded into behave as their
consumers relied on (each consumer's own tests run through them as well)."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from megc_vqa.annotations import casme2
from megc_vqa.annotations import common as ann
from megc_vqa.annotations.errors import AnnotationError, location
from megc_vqa.errors import InputError, UsageError
from megc_vqa.fileio import read_yaml_mapping, refuse_non_folder
from megc_vqa.limits import IMAGE_PIXELS, check_image_header, image_header
from megc_vqa.qa.io import QAFileError, read_questions
from megc_vqa.records import Clip, Event, FrameSource
from megc_vqa.spotting.lvqa import answer_file
from megc_vqa.submission.files import OFFICIAL_PREDICTION_NAMES, prediction_file_name
from megc_vqa.timing import interleaved_times
from megc_vqa.visual.frames import FrameError, list_frames


def png(width: int, height: int, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


# --- annotations: the loaders' shared row building --------------------------------------------------------


def test_long_videos_group_by_video_in_first_event_order_and_sort_events(tmp_path):
    late, early = Event(50, 60, row=3), Event(10, 20, row=4)
    other = Event(5, 9, row=5)
    videos = ann.long_videos(
        "samm_lv",
        200.0,
        [("006", "006_1", tmp_path / "a", late), ("007", "007_2", tmp_path / "b", other),
         ("006", "006_1", tmp_path / "a", early)],
    )  # fmt: skip
    assert [(v.subject, v.video_id) for v in videos] == [("006", "006_1"), ("007", "007_2")]
    assert videos[0].events == (early, late)
    assert videos[0].source == FrameSource("folder", tmp_path / "a") and videos[0].fps == 200.0


def test_release_sheet_reads_span_folder_and_builds_the_clip(tmp_path):
    root = tmp_path / "CASME2"
    folder = casme2.clip_dir(root, "sub01", "EP02_01f")
    clips = [
        Clip("casme2", "sub01", "EP02_01f", "sub01_EP02_01f", FrameSource("folder", folder), 200.0, 46, 86, 59,
             fine_emotion="disgust", coarse_emotion="negative")
    ]  # fmt: skip
    folder.mkdir(parents=True)
    for i in (45, 50, 87):
        (folder / casme2.frame_name(i)).write_bytes(b"")
    casme2.write(clips, root)
    sheet = ann.ReleaseSheet.open(
        root,
        casme2.DATASET,
        casme2.FPS,
        casme2.ANNOTATION_PATTERNS,
        casme2.COLUMNS,
        casme2.SHEET,
        casme2.SPAN,
    )
    (number, row), *_ = sheet.table.data_rows()
    span = sheet.span(row)
    assert span == ann.Span(46, 86, None)  # the writer's trap: the first row's apex written '/'
    assert sheet.folder(span, "sub01", "EP02_01f") == folder
    clip = sheet.clip(
        row, span, folder, "sub01", "EP02_01f", "sub01_EP02_01f", emotions=("disgust", "negative")
    )
    assert (clip.dataset, clip.fps, clip.onset, clip.offset, clip.apex, clip.row) == (
        "casme2",
        200.0,
        46,
        86,
        None,
        number,
    )
    with pytest.raises(ann.RowSkip) as skip:  # no frame of 90..95 on disk
        sheet.folder(ann.Span(90, 95), "sub01", "EP02_01f")
    assert skip.value.reason == ann.NO_FRAMES_IN_RANGE
    clips_loaded, skips = sheet.records(lambda r: r.number)
    assert clips_loaded == [number] and skips == []


def test_one_location_format_for_errors_and_rows():
    assert location("f.xlsx", "Sheet1", 3, "AU") == "f.xlsx, sheet 'Sheet1', row 3, column 'AU'"
    assert location(row=3) == "row 3" and location() == ""
    assert str(AnnotationError("bad", file="f.xlsx", row=2)) == "f.xlsx, row 2: bad"
    assert str(AnnotationError("bad")) == "bad"


# --- files and options ------------------------------------------------------------------------------------


def test_refuse_non_folder(tmp_path):
    refuse_non_folder(tmp_path / "new")  # missing: made later by whoever writes
    assert not (tmp_path / "new").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(UsageError, match=r"--out .*f: is a file, not a folder; give a folder"):
        refuse_non_folder(tmp_path / "f")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(UsageError, match=r"--report .*dangling: is a link to nothing"):
        refuse_non_folder(tmp_path / "dangling", "--report")


def test_read_yaml_mapping(tmp_path):
    path = tmp_path / "r.yaml"
    with pytest.raises(InputError, match=r"recipe .*r.yaml does not exist \(hint\)"):
        read_yaml_mapping(path, "recipe", hint=" (hint)")
    path.write_text("a: [1\n")
    with pytest.raises(UsageError, match=r"r.yaml: not a valid YAML recipe \("):
        read_yaml_mapping(path, "recipe", error=UsageError)
    path.write_text("- 1\n")
    with pytest.raises(InputError, match=r"r.yaml: a recipe is a mapping of key: value lines, got list"):
        read_yaml_mapping(path, "recipe")
    path.write_text("")
    assert read_yaml_mapping(path, "recipe") == {}
    path.write_text("a: 1\n")
    assert read_yaml_mapping(path, "recipe") == {"a": 1}


def test_official_prediction_names_follow_the_one_rule():
    assert (
        OFFICIAL_PREDICTION_NAMES["me_vqa_samm_v2_test_to_answer.jsonl"] == "me_vqa_samm_v2_test_pred.jsonl"
    )
    assert all(prediction_file_name(q) == p for q, p in OFFICIAL_PREDICTION_NAMES.items())
    assert len(OFFICIAL_PREDICTION_NAMES) == 6


# --- one reader of image headers, one lister of frame folders ---------------------------------------------


def test_image_header(tmp_path, monkeypatch):
    path = tmp_path / "img1.png"
    path.write_bytes(png(40, 30, "L"))
    assert image_header(path, str(path)) == ((40, 30), "L")
    assert check_image_header(png(20, 10), "x") == (20, 10)
    assert image_header(io.BytesIO(b"not an image"), "x") is None
    monkeypatch.setenv(IMAGE_PIXELS.env, "100")  # the pixel limit is checked from the header alone
    with pytest.raises(
        InputError, match=r"img1.png: image of 40x30 = 1,200 pixels, over the limit image_pixels"
    ):
        image_header(path, str(path))


def test_list_frames_names_duplicates_in_name_order(tmp_path):
    for name in ("img7.jpg", "img07.jpg", "img8.jpg", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    with pytest.raises(FrameError, match=r"files img07.jpg and img7.jpg both give frame number 7; remove"):
        list_frames(tmp_path)
    (tmp_path / "img07.jpg").unlink()
    assert [n for n, _ in list_frames(tmp_path)] == [7, 8]


# --- one reader of question files ---------------------------------------------------------------------------


def test_lvqa_answers_keep_the_rows_keys_and_order(tmp_path):
    questions = tmp_path / "me_lvqa_samm_test_to_answer.jsonl"
    rows = [
        {"video_id": "samm_test_v_1", "video": "v", "question": "How many expression events appear in this video?",
         "answer": "", "note": "kept"},
    ]  # fmt: skip
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = answer_file(questions, {"v": []}, tmp_path / "out")
    (written,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert list(written) == ["video_id", "video", "question", "answer", "note"]
    assert written["answer"] == "0" and written["note"] == "kept"
    assert [r.video for r in read_questions(questions)] == ["v"]
    questions.write_text("")
    with pytest.raises(QAFileError, match="no question rows"):
        answer_file(questions, {}, tmp_path / "out")


# --- benchmarks ---------------------------------------------------------------------------------------------


def test_interleaved_times_runs_each_alternative_in_turn():
    calls: list[str] = []
    times = interleaved_times({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3)
    assert calls == ["a", "b"] * 3
    assert list(times) == ["a", "b"] and all(len(v) == 3 and min(v) >= 0 for v in times.values())
