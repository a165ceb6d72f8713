"""Annotation loaders and writers: round trips through the real spreadsheet formats, every injected trap,
and every bad input of issue 2 (missing columns, unreadable files, bad rows, missing frames, escaping paths)."""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import openpyxl
import pytest

from megc_vqa.annotations import (
    DATASETS,
    AnnotationError,
    casme2,
    casme2_long,
    casme3,
    detect_datasets,
    load_all,
    parse_aus,
    samm,
    samm_lv,
    smic,
    summarise_skips,
)
from megc_vqa.records import Clip, Event, FrameSource, LoadResult, LongVideo, Skip

# ------------------------------------------------------------------------------------------------ helpers


def touch_frames(folder: Path, indices: Iterable[int], name, clip_id: str = "") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for index in indices:
        (folder / name(index, clip_id)).write_bytes(b"")


def clip(
    module,
    root: Path,
    subject: str,
    clip_id: str,
    onset: int,
    apex: int | None,
    offset: int,
    aus: str,
    fine: str | None,
    coarse: str | None,
    image_id: str | None = None,
) -> Clip:
    return Clip(
        dataset=module.DATASET,
        subject=subject,
        clip_id=clip_id,
        image_id=image_id or clip_id,
        source=FrameSource("folder", module.clip_dir(root, subject, clip_id)),
        fps=module.FPS,
        onset=onset,
        offset=offset,
        apex=apex,
        aus=parse_aus(aus),
        fine_emotion=fine,
        coarse_emotion=coarse,
    )


def make_frames(module, root: Path, clips: Sequence[Clip], skip_every: int = 0) -> None:
    """Frames onset-2..offset+2 for each clip; with ``skip_every`` drop every n-th frame (CAS(ME)^3)."""
    for c in clips:
        indices = range(c.onset - 2, c.offset + 3)
        if skip_every:
            indices = [i for i in indices if i % skip_every]
        touch_frames(module.clip_dir(root, c.subject, c.clip_id), indices, module.frame_name, c.clip_id)


def release(module, root: Path, clips: Sequence[Clip], skip_every: int = 0) -> Path:
    """A synthetic dataset root in ``module``'s release layout: the clips' frames (:func:`make_frames`),
    then the annotation workbook; returns the workbook's path."""
    make_frames(module, root, clips, skip_every)
    return module.write(clips, root)


def release_videos(module, root: Path, videos: Sequence[LongVideo], frames: range) -> Path:
    """A synthetic long-video root in ``module``'s release layout: the ``frames`` of every video, then the
    annotation workbook; returns the workbook's path."""
    for v in videos:
        touch_frames(v.source.path, frames, module.frame_name, v.video_id)
    return module.write(videos, root)


def comparable(record):
    """Fields that survive a spreadsheet round trip: everything but the row and the AUs' raw text."""
    if isinstance(record, LongVideo):
        return dataclasses.replace(record, events=tuple(comparable(e) for e in record.events))
    aus = tuple(dataclasses.replace(a, raw="") for a in record.aus)
    return dataclasses.replace(record, aus=aus, row=0)


def reasons(skips: Sequence[Skip]) -> Counter[str]:
    return Counter(s.reason for s in skips)


def edit(path: Path, sheet: str, cells: dict[str, object]) -> None:
    workbook = openpyxl.load_workbook(path)
    for reference, value in cells.items():
        workbook[sheet][reference] = value
    workbook.save(path)


def append_row(path: Path, sheet: str, values: list[object]) -> int:
    workbook = openpyxl.load_workbook(path)
    workbook[sheet].append(values)
    row = workbook[sheet].max_row
    workbook.save(path)
    return row


# ------------------------------------------------------------------------------------------------ CASME II


def casme2_clips(root: Path) -> list[Clip]:
    def c(subject, clip_id, onset, apex, offset, aus, fine, coarse):
        return clip(
            casme2, root, subject, clip_id, onset, apex, offset, aus, fine, coarse, f"{subject}_{clip_id}"
        )

    return [
        c("sub01", "EP02_01f", 46, 59, 86, "4+L10", "disgust", "negative"),
        c("sub01", "EP03_02", 131, 139, 161, "R12", "happiness", "positive"),
        c("sub17", "EP01_01", 10, 12, 30, "1+2", "surprise", "surprise"),
        c("sub02", "EP05_01", 20, 25, 40, "4", "others", None),
        c("sub03", "EP09_01", 20, 25, 40, "1+4+15", "fear", None),
        c("sub04", "EP12_01f", 90, 95, 120, "4(B/C)+7B", "repression", "negative"),
    ]


@pytest.fixture
def casme2_root(tmp_path: Path) -> tuple[Path, list[Clip]]:
    root = tmp_path / "CASME2"
    clips = casme2_clips(root)
    release(casme2, root, clips)
    return root, clips


def test_casme2_round_trip_and_traps(casme2_root) -> None:
    root, clips = casme2_root
    path = root / casme2.FILE_NAME
    sheet = openpyxl.load_workbook(path)["Sheet1"]
    assert [c.value for c in sheet[1]] == list(casme2.HEADER)
    assert sheet["A2"].value == 1 and sheet["D2"].value == "/"  # int subject; the '/' apex trap

    result = casme2.load(root)
    expected = [
        dataclasses.replace(comparable(clips[0]), apex=None),  # '/' -> unknown apex
        comparable(clips[1]),
        comparable(clips[2]),
        comparable(clips[5]),
    ]
    assert [comparable(c) for c in result.clips] == expected
    assert [c.row for c in result.clips] == [2, 3, 4, 7]
    assert reasons(result.skips) == {"not in composite: others": 1, "not in composite: fear": 1}
    assert {s.row for s in result.skips} == {5, 6}
    assert all(s.file == str(path) and s.sheet == "Sheet1" for s in result.skips)


def test_casme2_load_accepts_the_xlsx_and_nested_frames(tmp_path: Path) -> None:
    # Real releases keep frames one level down (CASME2_RAW_selected/sub01/...).
    root = tmp_path / "CASME2"
    clips = casme2_clips(root)[:2]
    make_frames(casme2, root / "CASME2_RAW_selected", clips)
    path = casme2.write(clips, root)
    result = casme2.load(path)
    assert [c.source.path for c in result.clips] == [
        root / "CASME2_RAW_selected" / "sub01" / "EP02_01f",
        root / "CASME2_RAW_selected" / "sub01" / "EP03_02",
    ]


def test_casme2_bad_rows_become_skips(casme2_root) -> None:
    root, _ = casme2_root
    path = root / casme2.FILE_NAME
    edit(
        path,
        "Sheet1",
        {
            "C3": 170,  # onset after offset (161)
            "D4": 99,  # apex outside 10..30
            "G7": "angry",  # unknown emotion word
        },
    )
    escape = append_row(path, "Sheet1", [1, "../../../etc", 1, 2, 3, "4", "disgust"])
    garbage_au = append_row(path, "Sheet1", [1, "EP03_02", 131, 139, 161, "4+foo", "disgust"])
    fractional = append_row(path, "Sheet1", [1, "EP03_02", 131.4, 139, 160.6, "12", "happiness"])
    text_frame = append_row(path, "Sheet1", [1, "EP03_02", "about 131", 139, 161, "12", "happiness"])
    no_folder = append_row(path, "Sheet1", [5, "EP01_01", 1, 2, 3, "12", "happiness"])
    out_of_range = append_row(path, "Sheet1", [1, "EP03_02", 1000, 1001, 1002, "12", "happiness"])
    footer = append_row(path, "Sheet1", ["Coded by two FACS coders; reliability 0.846"])

    result = casme2.load(root)
    by_row = {s.row: s for s in result.skips}
    assert by_row[3].reason == "onset after offset"
    assert by_row[4].reason == "apex outside onset..offset"
    assert (by_row[7].reason, by_row[7].detail) == ("unknown emotion", "angry")
    assert by_row[escape].reason == "path escapes dataset root"
    assert by_row[garbage_au].reason == "bad AU string" and "foo" in by_row[garbage_au].detail
    assert by_row[text_frame].reason == "bad frame number"
    assert by_row[no_folder].reason == "missing frame folder"
    assert by_row[out_of_range].reason == "no frames in onset..offset"
    assert by_row[footer].reason == "not a data row"
    rounded = [c for c in result.clips if c.row == fractional]
    assert [(c.onset, c.offset) for c in rounded] == [(131, 161)]
    # every row of the sheet is either a record or a skip
    assert len(result.clips) + len(result.skips) == openpyxl.load_workbook(path)["Sheet1"].max_row - 1


def test_missing_column_names_file_sheet_row_and_column(casme2_root) -> None:
    root, _ = casme2_root
    path = root / casme2.FILE_NAME
    edit(path, "Sheet1", {"C1": "Start"})
    with pytest.raises(AnnotationError) as info:
        casme2.load(root)
    error = info.value
    assert (error.sheet, error.row, error.column) == ("Sheet1", 1, "OnsetFrame")
    for part in (casme2.FILE_NAME, "Sheet1", "row 1", "OnsetFrame"):
        assert part in str(error)


@pytest.mark.parametrize("content", [b"", b"not a spreadsheet", b"PK\x03\x04broken zip"])
def test_unreadable_file_is_an_annotation_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / casme2.FILE_NAME
    path.write_bytes(content)
    with pytest.raises(AnnotationError, match=r"not a readable \.xlsx workbook") as info:
        casme2.load(tmp_path)
    assert casme2.FILE_NAME in str(info.value)


def test_root_without_annotation_file(tmp_path: Path) -> None:
    with pytest.raises(AnnotationError, match="no annotation file"):
        casme2.load(tmp_path)


def test_check_frames_false_skips_only_the_frame_range_check(casme2_root) -> None:
    root, clips = casme2_root
    for frame in clips[1].source.path.iterdir():
        frame.unlink()
    assert "no frames in onset..offset" in reasons(casme2.load(root).skips)
    assert "no frames in onset..offset" not in reasons(casme2.load(root, check_frames=False).skips)


# ------------------------------------------------------------------------------------------------ SAMM


def samm_clips(root: Path) -> list[Clip]:
    return [
        clip(samm, root, "6", "006_1_2", 5562, 5588, 5600, "R12B+ref(7)", "happiness", "positive"),
        clip(samm, root, "7", "007_3_1", 100, 110, 150, "4+7", "anger", "negative"),
        clip(samm, root, "6", "006_2_1", 200, 220, 240, "A2", "others", None),
        clip(samm, root, "26", "026_5_4", 2000, 2010, 2050, "14A", "contempt", "negative"),
    ]


def test_samm_round_trip_and_traps(tmp_path: Path) -> None:
    root = tmp_path / "SAMM"
    clips = samm_clips(root)
    make_frames(samm, root, clips)
    assert (root / "006" / "006_1_2" / "006_05562.jpg").is_file()
    path = samm.write(clips, root)

    sheet = openpyxl.load_workbook(path)["MICRO_ONLY"]
    assert [c.value for c in sheet[14]][:2] == ["Subject", "Filename"]  # 13 preamble rows
    assert sheet["A1"].value and sheet["A15"].value == 6 and sheet["J15"].value == "Happiness"
    assert sheet["J17"].value == "Other"

    result = samm.load(root)
    assert [comparable(c) for c in result.clips] == [comparable(clips[i]) for i in (0, 1, 3)]
    assert [c.subject for c in result.clips] == ["6", "7", "26"]
    assert [c.row for c in result.clips] == [15, 16, 18]
    assert [(s.row, s.reason) for s in result.skips] == [(17, "not in composite: others")]


def test_samm_old_column_names(tmp_path: Path) -> None:
    root = tmp_path / "SAMM"
    clips = samm_clips(root)[:1]
    path = release(samm, root, clips)
    edit(path, "MICRO_ONLY", {"D14": "Onset", "E14": "Apex", "F14": "Offset"})
    assert [comparable(c) for c in samm.load(root).clips] == [comparable(clips[0])]


# ------------------------------------------------------------------------------------------------ SMIC


def smic_clips(root: Path) -> list[Clip]:
    return [
        clip(smic, root, "s01", "s01_ne_01", 100, None, 130, "", None, "negative"),
        clip(smic, root, "s02", "s02_po_03", 40, None, 60, "", None, "positive"),
        clip(smic, root, "s20", "s20_sur_02", 5, None, 25, "", None, "surprise"),
    ]


def test_smic_round_trip_and_footer(tmp_path: Path) -> None:
    root = tmp_path / "SMIC"
    clips = smic_clips(root)
    make_frames(smic, root, clips)
    assert (root / "s01" / "s01_ne_01" / "image000100.jpg").is_file()
    smic.write(clips, root)
    result = smic.load(root)
    assert [comparable(c) for c in result.clips] == [comparable(c) for c in clips]
    assert [(s.row, s.reason) for s in result.skips] == [(6, "not a data row"), (7, "not a data row")]
    assert "Note" in result.skips[0].detail


def test_smic_short_emotion_codes_and_unknown_words(tmp_path: Path) -> None:
    root = tmp_path / "SMIC"
    clips = smic_clips(root)
    path = release(smic, root, clips)
    edit(path, "Sheet1", {"E2": "ne", "E3": "Positive", "E4": "happy"})
    result = smic.load(root)
    assert [c.coarse_emotion for c in result.clips] == ["negative", "positive"]
    assert (result.skips[0].row, result.skips[0].reason) == (4, "unknown emotion")


# ------------------------------------------------------------------------------------------------ CAS(ME)^3


def casme3_clips(root: Path) -> list[Clip]:
    def c(subject, clip_id, onset, apex, offset, aus, fine, coarse, image_id):
        return clip(casme3, root, subject, clip_id, onset, apex, offset, aus, fine, coarse, image_id)

    return [
        c("spNO.1", "a", 100, 105, 112, "L10+12", "happiness", "positive", "spNO.1_a_100"),
        c("spNO.1", "a", 300, 304, 310, "4+7", "disgust", "negative", "spNO.1_a_300"),
        c("spNO.1", "b", 50, 52, 60, "15", "sadness", "negative", "spNO.1_b"),
        c("spNO.2", "a", 100, 101, 108, "1+2", "surprise", "surprise", "spNO.2_a"),
        c("spNO.2", "c", 10, 12, 20, "4", "others", None, "spNO.2_c"),
    ]


def test_casme3_round_trip_duplicates_and_dropped_frames(tmp_path: Path) -> None:
    root = tmp_path / "CASME3"
    clips = casme3_clips(root)
    make_frames(casme3, root, clips, skip_every=3)  # dropped frames: every third number missing
    assert (root / "spNO.1" / "a" / "color" / "101.jpg").is_file()
    path = casme3.write(clips, root)
    sheet = openpyxl.load_workbook(path)["Sheet1"]
    assert sheet["F2"].value == "l10 + 12"  # lower-case, spaced AU trap
    assert [sheet[f"H{r}"].value for r in range(2, 5)] == ["happy", "disgust", "sad"]

    result = casme3.load(root)
    assert [comparable(c) for c in result.clips] == [comparable(c) for c in clips[:4]]
    assert [(s.row, s.reason) for s in result.skips] == [(6, "not in composite: others")]
    assert len({c.image_id for c in result.clips}) == len(result.clips)


def test_casme3_same_onset_twice_gets_a_counter(tmp_path: Path) -> None:
    root = tmp_path / "CASME3"
    clips = casme3_clips(root)[:2]
    path = release(casme3, root, clips)
    edit(path, "Sheet1", {"C3": 100, "D3": 104, "E3": 110})
    assert [c.image_id for c in casme3.load(root).clips] == ["spNO.1_a_100", "spNO.1_a_100_2"]
    assert casme3.image_id("spNO.1", "a", 100, 2) == "spNO.1_a_100_2"


# ------------------------------------------------------------------------------------------------ CAS(ME)^2


def casme2_long_videos(root: Path) -> list[LongVideo]:
    def video(subject, video_id, events):
        return LongVideo(
            casme2_long.DATASET,
            subject,
            video_id,
            FrameSource("folder", casme2_long.clip_dir(root, subject, video_id)),
            casme2_long.FPS,
            tuple(events),
        )

    return [
        video(
            "s15",
            "15_0101",
            [
                Event(10, 20, 15, parse_aus("4+9"), "disgust", "negative", "micro"),
                Event(40, 70, 55, parse_aus("6+12"), "happiness", "positive", "macro"),
            ],
        ),
        video("s16", "16_0502", [Event(5, 12, 8, parse_aus("R12"), "helpless", "others", "micro")]),
        video("s16", "16_0999", [Event(30, 45, 40, (), "surprise", "surprise", "macro")]),
    ]


def test_casme2_long_round_trip_and_traps(tmp_path: Path) -> None:
    root = tmp_path / "CASME_sq"
    videos = casme2_long_videos(root)
    path = release_videos(casme2_long, root, videos, range(1, 81))
    assert (root / "rawpic" / "s15" / "15_0101disgustingteeth" / "img1.jpg").is_file()

    workbook = openpyxl.load_workbook(path)
    assert workbook.sheetnames == ["CASFEcode_final", "naming rule1", "naming rule2"]
    first = [c.value for c in workbook["CASFEcode_final"][1]]
    assert first == [1, "disgust1_1", 10, 15, 0, "4+9", "negative", "micro-expression", "disgust"]
    assert [c.value for c in workbook["naming rule2"][1]] == [101, "disgust1"]

    result = casme2_long.load(root)
    assert not result.skips and not result.clips
    expected = [comparable(v) for v in videos]
    # the offset-0 trap: the first event loads with its apex as the offset
    first_video = expected[0]
    repaired = dataclasses.replace(first_video.events[0], offset=15)
    expected[0] = dataclasses.replace(first_video, events=(repaired, *first_video.events[1:]))
    assert [comparable(v) for v in result.long_videos] == expected
    assert result.long_videos[2].source.path == root / "rawpic" / "s16" / "16_0999"


def test_casme2_long_bad_rows(tmp_path: Path) -> None:
    root = tmp_path / "CASME_sq"
    videos = casme2_long_videos(root)
    path = release_videos(casme2_long, root, videos, range(1, 81))
    sheet = "CASFEcode_final"
    rows = {
        "unknown subject": append_row(
            path, sheet, [9, "disgust1_3", 1, 2, 3, "4", "negative", "micro-expression", "x"]
        ),
        "unknown clip": append_row(
            path, sheet, [1, "fear7_1", 1, 2, 3, "4", "negative", "micro-expression", "x"]
        ),
        "emotion": append_row(path, sheet, [1, "disgust1_3", 1, 2, 3, "4", "angry", "micro-expression", "x"]),
        "type": append_row(path, sheet, [1, "disgust1_3", 1, 2, 3, "4", "negative", "meso-expression", "x"]),
        "offset": append_row(
            path, sheet, [1, "disgust1_3", 1, 0, 0, "4", "negative", "micro-expression", "x"]
        ),
    }
    by_row = {s.row: s.reason for s in casme2_long.load(root).skips}
    assert by_row == {
        rows["unknown subject"]: "name not in naming sheet",
        rows["unknown clip"]: "name not in naming sheet",
        rows["emotion"]: "unknown emotion",
        rows["type"]: "unknown expression type",
        rows["offset"]: "missing value",
    }


def test_casme2_long_missing_columns(tmp_path: Path) -> None:
    path = tmp_path / casme2_long.FILE_NAME
    workbook = openpyxl.Workbook()
    workbook.active.title = "CASFEcode_final"
    workbook.active.append([1, "disgust1_1", 10, 15, 20, "4", "negative"])
    workbook.save(path)
    with pytest.raises(AnnotationError) as info:
        casme2_long.load(tmp_path)
    assert (info.value.sheet, info.value.column) == ("CASFEcode_final", "type")


# ------------------------------------------------------------------------------------------------ SAMM-LV


def samm_lv_videos(root: Path) -> list[LongVideo]:
    def video(video_id, events):
        return LongVideo(
            samm_lv.DATASET,
            video_id.split("_")[0],
            video_id,
            FrameSource("folder", samm_lv.clip_dir(root, "", video_id)),
            samm_lv.FPS,
            tuple(events),
        )

    return [
        video(
            "006_1",
            [
                Event(100, 140, 120, parse_aus("R12"), expression_type="micro"),
                Event(500, 700, 600, parse_aus("4+7"), expression_type="macro"),
            ],
        ),
        video("007_2", [Event(30, 50, 40, parse_aus("L2 or R2"), expression_type="micro")]),
    ]


def test_samm_lv_round_trip_and_traps(tmp_path: Path) -> None:
    root = tmp_path / "SAMM_LV"
    videos = samm_lv_videos(root)
    path = release_videos(samm_lv, root, videos, range(1, 720, 7))
    assert (root / "006_1" / "006_1_0001.jpg").is_file()

    formulas = openpyxl.load_workbook(path)["FACS_Movement_Only"]
    cached = openpyxl.load_workbook(path, data_only=True)["FACS_Movement_Only"]
    assert (
        formulas["A10"].value == "Subject"
        and formulas["B11"].value == "006_1_1"
        and formulas["A11"].value == 6
    )
    assert str(formulas["F11"].value).startswith("=") and cached["F11"].value == 140  # formula + cached value
    assert str(formulas["G12"].value).startswith("=") and cached["G12"].value == pytest.approx(200.75)
    assert formulas["D12"].value == 500.25  # fractional onset
    assert [formulas[f"H{r}"].value for r in (11, 12, 13)] == ["Micro - 1/2", "Macro", "Micro - 1/2"]

    result = samm_lv.load(root)
    assert not result.skips
    assert [comparable(v) for v in result.long_videos] == [comparable(v) for v in videos]
    assert [v.subject for v in result.long_videos] == ["006", "007"]


def test_samm_lv_formula_without_cached_value_is_a_reported_skip(tmp_path: Path) -> None:
    # A file re-saved by a tool that drops cached values: the formula cell reads as blank.
    root = tmp_path / "SAMM_LV"
    videos = samm_lv_videos(root)
    path = release_videos(samm_lv, root, videos, range(1, 720))
    workbook = openpyxl.load_workbook(path)
    workbook.save(path)
    result = samm_lv.load(root)
    assert [(s.row, s.reason, s.detail) for s in result.skips] == [(11, "missing value", "Offset")]


def test_samm_lv_unknown_type(tmp_path: Path) -> None:
    root = tmp_path / "SAMM_LV"
    videos = samm_lv_videos(root)
    path = release_videos(samm_lv, root, videos, range(1, 720))
    # openpyxl drops cached formula values on save, so the offset formula of row 11 is replaced by its value
    edit(path, "FACS_Movement_Only", {"H13": "Blink", "F11": 140})
    assert [(s.row, s.reason) for s in samm_lv.load(root).skips] == [(13, "unknown expression type")]


# ------------------------------------------------------------------------------------------------ all


def write_everything(data_root: Path) -> dict[str, Path]:
    roots = {
        "casme2": data_root / "CASME2",
        "samm": data_root / "SAMM" / "release_v2",
        "smic": data_root / "SMIC",
        "casme3": data_root / "cas3" / "part_A" / "labels",
        "casme2_long": data_root / "CASME_sq",
        "samm_lv": data_root / "SAMM_LV",
    }
    for key, make in (
        ("casme2", casme2_clips),
        ("samm", samm_clips),
        ("smic", smic_clips),
        ("casme3", casme3_clips),
    ):
        module = DATASETS[key]
        clips = make(roots[key])
        release(module, roots[key], clips)
    for key, make in (("casme2_long", casme2_long_videos), ("samm_lv", samm_lv_videos)):
        module = DATASETS[key]
        videos = make(roots[key])
        release_videos(module, roots[key], videos, range(1, 720))
    return roots


def test_detect_and_load_all(tmp_path: Path) -> None:
    roots = write_everything(tmp_path)
    (tmp_path / "deep" / "a" / "b" / "c").mkdir(parents=True)  # depth 4: beyond the search
    casme2.write(casme2_clips(tmp_path)[:1], tmp_path / "deep" / "a" / "b" / "c")
    found = detect_datasets(tmp_path)
    assert sorted(found) == sorted(roots.items())

    result = load_all(tmp_path)
    per_dataset = Counter(c.dataset for c in result.clips)
    assert per_dataset == {"casme2": 4, "samm": 3, "smic": 3, "casme3": 4}
    assert Counter(v.dataset for v in result.long_videos) == {"casme2_long": 3, "samm_lv": 2}

    lines = summarise_skips(result.skips)
    assert "casme2: 1 row skipped: not in composite: fear (CASME2-coding-20140508.xlsx row 6)" in lines
    assert "smic: 2 rows skipped: not a data row (SMIC-HS-E_annotation.xlsx rows 6, 7)" in lines
    assert len(lines) == len({(s.dataset, s.reason) for s in result.skips}) == 5


def test_summarise_skips_counts_and_truncates() -> None:
    skips = [Skip("samm", "/d/x.xlsx", row, "missing value", "Onset") for row in range(10, 17)]
    skips.append(Skip("samm", "/d/x.xlsx", 3, "bad AU string"))
    assert summarise_skips(skips, max_rows=3) == [
        "samm: 7 rows skipped: missing value (x.xlsx rows 10, 11, 12, ...)",
        "samm: 1 row skipped: bad AU string (x.xlsx row 3)",
    ]
    assert summarise_skips([]) == []


def test_every_module_has_the_api() -> None:
    for key, module in DATASETS.items():
        assert key == module.DATASET
        assert module.ANNOTATION_PATTERNS and all(p.endswith(".xlsx") for p in module.ANNOTATION_PATTERNS)
        assert callable(module.load) and callable(module.write)
        assert module.frame_name(46, "006_1_2").endswith(".jpg")


def test_loading_result_type(casme2_root) -> None:
    root, _ = casme2_root
    assert isinstance(casme2.load(root), LoadResult)


# ------------------------------------------------------------------------------------------------ common pieces


def test_frame_numbers_are_numeric_not_string_sorted(tmp_path: Path) -> None:
    from megc_vqa.annotations.common import FrameIndex, RowSkip

    folder = tmp_path / "EP02_01f"
    touch_frames(folder, [46, 100, 9], casme2.frame_name)
    (folder / "reg_img47.jpg").write_bytes(b"")  # cropped-release names carry the number the same way
    (folder / "Thumbs.db").write_bytes(b"")
    index = FrameIndex()
    assert index.numbers(folder) == [9, 46, 47, 100]
    index.check_range(folder, 90, 110)
    with pytest.raises(RowSkip, match=r"no frames in onset\.\.offset"):
        index.check_range(folder, 48, 99)


@pytest.mark.parametrize("subject", ["/etc", "..", "spNO.1/../../x", "C:evil"])
def test_subjects_escaping_the_root_are_skipped(tmp_path: Path, subject: str) -> None:
    root = tmp_path / "CASME3"
    clips = casme3_clips(root)[2:3]
    path = release(casme3, root, clips)
    edit(path, "Sheet1", {"A2": subject})
    result = casme3.load(root)
    assert [(s.row, s.reason) for s in result.skips] == [(2, "path escapes dataset root")]


def test_header_is_found_in_any_sheet(tmp_path: Path) -> None:
    root = tmp_path / "SAMM"
    clips = samm_clips(root)[:2]
    path = release(samm, root, clips)
    workbook = openpyxl.load_workbook(path)
    workbook["MICRO_ONLY"].title = "Sheet1"
    workbook.create_sheet("README", 0).append(["About this file"])
    workbook.save(path)
    result = samm.load(root)
    assert [c.clip_id for c in result.clips] == ["006_1_2", "007_3_1"]
    assert {s.sheet for s in result.skips} <= {"Sheet1"}


def test_relative_dot_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clips = smic_clips(tmp_path)
    release(smic, tmp_path, clips)
    monkeypatch.chdir(tmp_path)
    result = smic.load(Path("."))
    assert [c.image_id for c in result.clips] == [c.image_id for c in clips]
    assert reasons(result.skips) == {"not a data row": 2}
