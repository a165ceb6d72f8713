"""Synthetic micro-expression data: the face renderer, dataset layouts, test sets and long videos."""

from __future__ import annotations

import csv
import itertools
import json
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from megc_vqa.cli import main as cli_main
from megc_vqa.labels import AU_NAMES, AU_NUMBERS, STR_CLASSES, coarse_of
from megc_vqa.qa import templates as T
from megc_vqa.synth import layout
from megc_vqa.synth.datasets import ALL_DATASETS, LONG_DATASETS, MICRO_MAX_S, SPECS, write_datasets
from megc_vqa.synth.emotions import RECIPES, sample_expression
from megc_vqa.synth.face import (
    AU_REGIONS,
    RENDERED_AUS,
    au_course,
    region_box,
    render_frames,
    sample_identity,
)
from megc_vqa.synth.test_set import QuestionFileError, write_long_videos, write_test_set

SHARED = Path(__file__).resolve().parents[1] / "data" / "megc"  # organisers' files, shipped


def local_motion(a: np.ndarray, b: np.ndarray) -> float:
    """Largest 5x5-averaged absolute difference: a moving facial feature, not spread-out sensor noise."""
    d = np.abs(a.astype(np.float32) - b.astype(np.float32))
    return float(cv2.blur(d, (5, 5)).max())


def mean_abs_diff(a: np.ndarray, b: np.ndarray, box: tuple[int, int, int, int] | None = None) -> float:
    if box is not None:
        x0, y0, x1, y1 = box
        a, b = a[y0:y1, x0:x1], b[y0:y1, x0:x1]
    return float(np.abs(a.astype(np.float64) - b).mean())


# ---------------------------------------------------------------------------------------------- face


def test_au_course_rises_to_apex_and_returns_to_zero():
    c = au_course(30, onset=5, apex=12, offset=20)
    assert c.shape == (30,)
    assert np.all(c[:6] == 0) and np.all(c[20:] == 0)
    assert c[12] == pytest.approx(1.0)
    assert np.all(np.diff(c[5:13]) > 0) and np.all(np.diff(c[12:21]) < 0)
    with pytest.raises(ValueError):
        au_course(10, 5, 4, 8)


@pytest.mark.parametrize("seed", [0, 1])
def test_each_au_moves_its_region_and_leaves_distant_regions_at_the_noise_floor(seed):
    rng = np.random.default_rng(seed)
    face = sample_identity(rng)
    neutral = render_frames(face, {1: np.zeros(2)}, {}, rng)
    floor = mean_abs_diff(neutral[0], neutral[1])  # two noisy renders of the same neutral face
    assert 1.0 < floor < 4.0
    for au in sorted(RENDERED_AUS):
        frames = render_frames(face, {au: np.array([0.0, 1.0])}, {}, rng)
        region = AU_REGIONS[au]
        distant = "mouth" if region in ("brows", "eyes", "cheeks") else "chin" if au == 9 else "brows"
        moved = mean_abs_diff(frames[0], frames[1], region_box(face, region))
        still = mean_abs_diff(frames[0], frames[1], region_box(face, distant))
        assert moved > 1.6 * floor, f"AU{au} barely moves its {region}: {moved:.2f} vs floor {floor:.2f}"
        assert still < 1.15 * floor, f"AU{au} moves the {distant}: {still:.2f} vs floor {floor:.2f}"


@pytest.mark.parametrize("au", [2, 12, 14, 15])
def test_unilateral_au_moves_one_half_only(au):
    rng = np.random.default_rng(3)
    face = sample_identity(rng)
    x0, y0, x1, y1 = region_box(face, AU_REGIONS[au])
    mid = round(face.centre[0])
    image_half = {"L": (mid + 2, y0, x1, y1), "R": (x0, y0, mid - 2, y1)}  # subject's left = image right
    for side, other in (("L", "R"), ("R", "L")):
        f = render_frames(face, {au: np.array([0.0, 1.0])}, {au: side}, rng)
        moved = mean_abs_diff(f[0], f[1], image_half[side])
        still = mean_abs_diff(f[0], f[1], image_half[other])
        assert moved > 1.5 * still, f"{side}{au}: {moved:.2f} vs other half {still:.2f}"


def test_render_is_deterministic_and_grey_has_equal_channels():
    def frames(seed):
        rng = np.random.default_rng(seed)
        return render_frames(
            sample_identity(rng), {12: au_course(6, 0, 3, 5)}, {12: "R"}, rng, size=64, grey=True
        )

    a, b = frames(5), frames(5)
    assert a.shape == (6, 64, 64, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, frames(6))
    assert np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2])


def test_emotion_recipes_honour_the_au_count():
    rng = np.random.default_rng(0)
    for _ in range(50):
        assert len(sample_expression("happiness", rng, single=True).aus) == 1
        assert len(sample_expression("surprise", rng, single=False).aus) >= 2
        contempt = sample_expression("contempt", rng)
        assert any(contempt.sides[n] in ("L", "R") for n in contempt.aus)  # contempt is unilateral
    happy = sample_expression("happiness", np.random.default_rng(1), single=False)
    assert 12 in happy.aus
    with pytest.raises(ValueError):
        sample_expression("fear", rng, single=True)  # every fear recipe needs several AUs
    assert all(set(r) <= RENDERED_AUS for recipes in RECIPES.values() for r in recipes)


# ---------------------------------------------------------------------------------------------- datasets


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small_sets(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth")
    kwargs = {"subjects": 2, "clips_per_subject": 3, "size": 48}
    records = write_datasets(base / "a", seed=11, workers=2, **kwargs)
    # Same seed, another pool size and without the slow 200 fps long videos: the common files must match.
    write_datasets(base / "b", seed=11, workers=1, datasets=ALL_DATASETS[:-1], **kwargs)
    write_datasets(base / "c", seed=12, workers=2, datasets=("casme2",), **kwargs)
    return base, records


def test_same_seed_writes_byte_identical_frames(small_sets):
    base, _ = small_sets
    a, b, c = _tree(base / "a"), _tree(base / "b"), _tree(base / "c")
    a = {k: v for k, v in a.items() if not k.startswith("samm_lv")}
    assert a.keys() == b.keys()
    for name in a:
        assert a[name] == b[name], name  # spreadsheets included
    assert any(n.endswith(".xlsx") for n in a)
    jpgs = [n for n in c if n.endswith(".jpg")]
    assert sum(c[n] != a.get(n) for n in jpgs) > len(jpgs) // 2  # another seed, other data


def test_layouts_hold_every_clip_frame_span_and_annotation_file(small_sets):
    base, records = small_sets
    assert set(records) == set(ALL_DATASETS)
    for dataset, recs in records.items():
        root = base / "a" / dataset
        assert list(root.glob("*.xlsx")), f"{dataset}: no annotation file"
        for rec in recs:
            folder = rec.source.path
            assert folder.is_dir() and folder.is_relative_to(root)
            if dataset in LONG_DATASETS:
                n = max(e.offset for e in rec.events) + 1
                assert all(layout.frame_path(dataset, folder, rec.video_id, k).exists() for k in range(1, n))
                continue
            for k in (rec.onset, rec.apex or rec.onset, rec.offset):
                assert layout.frame_path(dataset, folder, rec.clip_id, k).exists(), (rec.image_id, k)
    first = records["casme2"][0]
    names = {p.name for p in first.source.path.iterdir()}
    assert {"img99.jpg", "img100.jpg"} <= names  # the numeric-order trap is exercised
    samm = records["samm"][0]
    img = cv2.imread(str(next(samm.source.path.glob("*.jpg"))), cv2.IMREAD_UNCHANGED)
    assert img.ndim == 2  # SAMM is greyscale
    casme3 = records["casme3"]
    assert casme3[0].source.path.parts[-1] == "color"
    assert len({c.image_id for c in casme3}) == len(casme3)
    assert len({(c.subject, c.clip_id) for c in casme3}) < len(
        casme3
    )  # duplicate file names within a subject


def test_loaders_read_the_generated_datasets_back(small_sets):
    from megc_vqa.annotations import load_all

    base, records = small_sets
    loaded = load_all(base / "a")
    by_id = {(c.dataset, c.image_id): c for c in loaded.clips}
    kept = 0
    for dataset in ("casme2", "samm", "smic", "casme3"):
        for clip in records[dataset]:
            got = by_id.get((dataset, clip.image_id))
            if clip.coarse_emotion is None:
                assert got is None  # outside the composite: a reported skip
                continue
            assert got is not None, (dataset, clip.image_id, loaded.skips)
            assert (got.onset, got.offset, got.coarse_emotion) == (
                clip.onset,
                clip.offset,
                clip.coarse_emotion,
            )
            if dataset != "smic":  # SMIC's sheet has no AU column
                assert [a.number for a in got.aus] == [a.number for a in clip.aus]
            assert got.source.path == clip.source.path
            kept += 1
    assert kept > 10
    assert {s.reason for s in loaded.skips} <= {"not a data row"} | {
        s.reason for s in loaded.skips if s.reason.startswith("not in composite")
    }
    videos = {(v.dataset, v.video_id): v for v in loaded.long_videos}
    for dataset in LONG_DATASETS:
        for video in records[dataset]:
            got = videos[(dataset, video.video_id)]
            assert [e.onset for e in got.events] == [e.onset for e in video.events]
            assert got.source.path == video.source.path


def test_timing_micro_within_500ms_and_macro_longer(small_sets):
    _, records = small_sets
    events = []
    for dataset, recs in records.items():
        fps = SPECS[dataset].fps
        if dataset in LONG_DATASETS:
            events += [(e.onset, e.offset, e.expression_type, fps) for v in recs for e in v.events]
        else:
            events += [(c.onset, c.offset, c.expression_type, fps) for c in recs]
    kinds = {kind for *_, kind, _ in events}
    assert kinds == {"micro", "macro"}
    for onset, offset, kind, fps in events:
        duration = (offset - onset + 1) / fps
        assert (duration <= MICRO_MAX_S) == (kind == "micro"), (onset, offset, kind, fps)


def test_labels_are_consistent_with_dataset_vocabularies(small_sets):
    _, records = small_sets
    for dataset in ("casme2", "samm", "casme3"):
        for clip in records[dataset]:
            assert clip.coarse_emotion == coarse_of(dataset, clip.fine_emotion)
            assert clip.aus and all(a.name for a in clip.aus)
    assert all(c.fine_emotion is None and c.apex is None and c.coarse_emotion for c in records["smic"])


# ---------------------------------------------------------------------------------------------- test sets


def _question_file(path: Path, prefix: str, videos: dict[str, list[str]]) -> Path:
    with path.open("w") as fh:
        for video, questions in videos.items():
            for k, q in enumerate(questions, 1):
                fh.write(
                    json.dumps(
                        {"video_id": f"{prefix}_{video}_{k}", "video": video, "question": q, "answer": ""}
                    )
                    + "\n"
                )
    return path


def _vqa_questions(single: bool, presence: str, fifth: str | None = None) -> list[str]:
    return [
        T.COARSE_QUESTION,
        T.FINE_QUESTION,
        T.AU_QUESTION_SINGULAR if single else T.AU_QUESTION_PLURAL,
        T.PRESENCE_QUESTION.format(name=presence),
        fifth or (T.JOINT_QUESTION_SINGULAR if single else T.JOINT_QUESTION_PLURAL),
    ]


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    base = tmp_path_factory.mktemp("synth_test")
    presences = ["cheek raiser", "lip corner puller", "brow lowerer", "upper lip raiser", "outer brow raiser"]
    samm = {f"SAMM-{i}": _vqa_questions(i % 2 == 0, presences[i % 5]) for i in range(1, 9)}
    samm["SAMM-9"] = [
        *_vqa_questions(False, "lid tightener"),
        T.SIDE_QUESTION.format(name="lip corner puller"),
    ]
    cas = {
        f"CAS-{i}": _vqa_questions(i % 3 == 0, presences[i % 5], T.ANALYSIS_QUESTIONS[i % 3])
        for i in range(1, 7)
    }
    lvqa = {"abc_v1": [T.LVQA_COUNT_ALL, T.LVQA_COUNT_MICRO, T.LVQA_COUNT_MACRO, T.LVQA_AUS,
                       T.LVQA_EVENT_TYPE.format(n=6), T.LVQA_EVENT_TYPE.format(n=1)]}  # fmt: skip
    files = [
        _question_file(base / "me_vqa_samm_test_to_answer.jsonl", "samm_test", samm),
        _question_file(base / "me_vqa_casme3_v2_test_to_answer.jsonl", "casme3_test", cas),
        _question_file(base / "me_lvqa_casme3_test_to_answer.jsonl", "casme3_test", lvqa),
    ]
    out = base / "out"
    return files, out, write_test_set(files, out, seed=3, size=64, long_size=48, workers=2)


def test_synth_test_answers_every_row_consistently(test_set):
    files, out, result = test_set
    truth = {json.loads(line)["video"]: json.loads(line) for line in (out / "gt" / "clips.jsonl").open()}
    for src in files:
        questions = [json.loads(line) for line in src.open()]
        answers = [json.loads(line) for line in (out / "gt" / src.name).open()]
        assert [{**a, "answer": ""} for a in answers] == questions  # same rows, order and keys
        for row in answers:
            answer, q, video = row["answer"], row["question"], row["video"]
            assert answer, row
            kind = T.classify_question(q)
            if kind.startswith("lvqa"):
                continue
            clip = truth[video]
            names = [a["name"] for a in clip["aus"]]
            family = clip["dataset"].removesuffix("_test")
            assert names == sorted(names, key=AU_NUMBERS.get)
            if kind == "coarse":
                assert answer == clip["coarse"] == coarse_of(family, clip["fine"])
            elif kind == "au":
                assert answer == T.au_list_answer(names)
                assert (len(names) == 1) != T.is_plural(q)
            elif kind == "joint":
                assert answer == T.joint_answer(names, clip["fine"], clip["coarse"])
                assert (len(names) == 1) != T.is_plural(q)
            elif kind == "presence":
                assert answer == ("yes" if T.question_au_name(q) in names else "no")
            elif kind == "side":
                side = next(a["side"] for a in clip["aus"] if a["name"] == T.question_au_name(q))
                assert answer == {"L": "left", "R": "right"}[side]
            elif kind == "analysis":
                assert clip["fine"] in answer and all(n in answer for n in names)
    coarse = [c.coarse_emotion for c in result.clips.values() if c.dataset == "samm_test"]
    assert set(coarse) == {"negative", "positive", "surprise"}  # every class appears in a file
    yes_no = [json.loads(line)["answer"] for line in (out / "gt" / files[0].name).open()
              if T.classify_question(json.loads(line)["question"]) == "presence"]  # fmt: skip
    assert set(yes_no) <= {"yes", "no"} and "yes" in yes_no


def test_synth_test_frames_show_the_named_au(test_set):
    _, _, result = test_set
    for video, clip in result.clips.items():
        files = sorted(clip.source.path.glob("img*.jpg"), key=lambda p: int(p.stem[3:]))
        assert [int(p.stem[3:]) for p in files] == list(range(1, len(files) + 1))  # numbered from 1
        onset, apex, first = (
            cv2.imread(str(files[k - 1]), cv2.IMREAD_GRAYSCALE) for k in (clip.onset, clip.apex, 1)
        )
        # The expression moves a feature well beyond the lead-in's noise and head sway.
        assert local_motion(apex, onset) > 2 * local_motion(onset, first), video
        assert clip.apex - clip.onset < clip.fps * MICRO_MAX_S


def test_lvqa_answers_follow_the_long_video(test_set):
    files, out, result = test_set
    (video,) = result.long_videos
    assert len(video.events) >= 6  # the 6-th event is asked about
    answers = {
        json.loads(line)["question"]: json.loads(line)["answer"]
        for line in (out / "gt" / files[2].name).open()
    }
    assert answers[T.LVQA_COUNT_ALL] == str(len(video.events))
    micro = sum(e.expression_type == "micro" for e in video.events)
    assert answers[T.LVQA_COUNT_MICRO] == str(micro)
    assert answers[T.LVQA_COUNT_MACRO] == str(len(video.events) - micro)
    assert answers[T.LVQA_EVENT_TYPE.format(n=6)] == f"{video.events[5].expression_type}-expression"
    distinct = sorted({a.number for e in video.events for a in e.aus})
    assert answers[T.LVQA_AUS] == T.au_list_answer([AU_NAMES[n] for n in distinct])
    assert (out / "long" / "abc_v1" / "img1.jpg").exists()


def test_synth_test_is_deterministic_per_seed(tmp_path):
    questions = _question_file(
        tmp_path / "q.jsonl",
        "samm_test",
        {"V-1": _vqa_questions(True, "cheek raiser"), "V-2": _vqa_questions(False, "brow lowerer")},
    )
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        write_test_set([questions], tmp_path / name, seed=seed, size=32, workers=1)
    a, b, c = (_tree(tmp_path / n) for n in "abc")
    assert a == b and a != c


def test_bad_question_files_get_clear_messages(tmp_path):
    bad = tmp_path / "bad.jsonl"

    def row(k: int, video: str, question: str) -> str:
        return json.dumps({"video_id": f"samm_test_{k}", "video": video, "question": question, "answer": ""})

    bad.write_text(row(1, "A", T.COARSE_QUESTION) + "\n{oops\n")
    with pytest.raises(QuestionFileError, match=r"bad.jsonl:2"):
        write_test_set([bad], tmp_path / "o")
    bad.write_text(row(1, "../escape", T.COARSE_QUESTION) + "\n")
    with pytest.raises(QuestionFileError, match="plain folder name"):
        write_test_set([bad], tmp_path / "o")
    bad.write_text(row(1, ".hidden", T.COARSE_QUESTION) + "\n")
    with pytest.raises(
        QuestionFileError, match=r"bad.jsonl:1: video '.hidden' is not a folder name synth-test"
    ):
        write_test_set([bad], tmp_path / "o")
    bad.write_text(row(1, "A", T.AU_QUESTION_SINGULAR) + "\n" + row(2, "A", T.JOINT_QUESTION_PLURAL) + "\n")
    with pytest.raises(QuestionFileError, match="singular and plural"):
        write_test_set([bad], tmp_path / "o")
    assert cli_main(["synth-test", "--questions", str(bad), "--out", str(tmp_path / "o")]) == 2
    assert cli_main(["synth-test", "--out", str(tmp_path / "o")]) == 2


def test_synth_test_on_the_organiser_files(tmp_path):
    files = sorted((SHARED / "2025").glob("*.jsonl"))
    result = write_test_set(files, tmp_path, seed=0, size=48, workers=2)
    assert sorted(result.clips) == sorted({json.loads(x)["video"] for f in files for x in f.open()})
    for f in files:
        assert len((tmp_path / "gt" / f.name).read_text().splitlines()) == len(f.read_text().splitlines())


# ---------------------------------------------------------------------------------------------- long videos


@pytest.mark.parametrize("fps", [30.0, 200.0])
def test_long_videos_gt_csv_and_events_above_the_floor(tmp_path, fps):
    videos = write_long_videos(tmp_path, 2, seed=4, fps=fps, size=48, workers=2)
    with (tmp_path / "gt" / "str_gt.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["subject", "video", "onset", "offset", "emotion", "type"]
    assert len(rows) == sum(len(v.events) for v in videos)
    lines = [json.loads(x) for x in (tmp_path / "gt" / "long_videos.jsonl").open()]
    for video, meta in zip(videos, lines, strict=True):
        # SAMM-LV naming (megc_vqa.annotations.long_videos): folder 006_1 is subject 006, video 006_1
        assert video.source.path.name == video.video_id and video.video_id.startswith(f"{video.subject}_")
        n = meta["n_frames"]
        assert n == len(list(video.source.path.glob("img*.jpg")))
        mine = [r for r in rows if (r["subject"], r["video"]) == (video.subject, video.video_id)]
        spans = [(int(r["onset"]), int(r["offset"])) for r in mine]
        assert all(1 <= a < b <= n for a, b in spans)
        assert all(b1 + 0.4 * fps < a2 for (_, b1), (a2, _) in itertools.pairwise(spans)), (
            "events must be apart"
        )
        assert {r["type"] for r in mine} == {"micro", "macro"}
        assert all(r["emotion"] in STR_CLASSES for r in mine)
        assert [e["aus"] for e in meta["events"]] == [[a.name for a in e.aus] for e in video.events]
        for e in video.events:
            onset, apex = (_grey(video.source.path / f"img{k}.jpg") for k in (e.onset, e.apex))
            gap = [
                _grey(video.source.path / f"img{k}.jpg")
                for k in (e.offset + 2, e.offset + 2 + e.apex - e.onset)
            ]
            floor = local_motion(*gap) if e.offset + 2 + e.apex - e.onset <= n else 5.0
            assert local_motion(apex, onset) > 2 * floor, (video.video_id, e)


def _grey(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)


def _iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    inter = max(0, min(a[1], b[1]) - max(a[0], b[0]) + 1)
    return inter / ((a[1] - a[0] + 1) + (b[1] - b[0] + 1) - inter)


def test_long_video_events_are_recoverable_from_pixels(tmp_path):
    """The model-free baseline (frames stabilised against sway, drift and lighting, deviation from the
    neutral face, peaks by the fps) finds the events at IoU 0.5: the ground truth is in the pixels, above
    blinks, head motion, flicker and noise (a trained spotter should do better)."""
    from megc_vqa.metrics.strs import Interval, score_str
    from megc_vqa.spotting.infer import MOTION_PEAKS, PeakParams, extract_intervals, motion_score_video

    videos = write_long_videos(tmp_path, 4, seed=3, size=64, workers=2)
    assert {v.fps for v in videos} == {30.0, 200.0}
    preds, gts = [], []
    for video in videos:
        curve = motion_score_video(video.source, video.fps)
        preds += [Interval(video.subject, video.video_id, iv.onset, iv.offset, "x")
                  for iv in extract_intervals(curve, PeakParams.from_dict(MOTION_PEAKS))]  # fmt: skip
        gts += [Interval(video.subject, video.video_id, e.onset, e.offset, "x") for e in video.events]
    spot = score_str(preds, gts, "strict")["overall"]
    print(f"baseline strict spotting F1 {spot['f1_spot']:.3f} (tp {spot['tp_spot']}, fp {spot['fp_spot']})")
    assert spot["f1_spot"] >= 0.7, spot


def test_long_videos_carry_drift_and_flicker_but_events_keep_their_size(tmp_path):
    """What real long videos carry besides expressions: slow head drift and lighting changes (on top of
    sway and blinks); the micro-expression courses (200-450 ms) are untouched by them."""
    from megc_vqa.synth.motion import lighting_gain, slow_drift

    rng = np.random.default_rng(0)
    drift = slow_drift(200 * 60, 200.0, rng, 2.0)
    assert 0.5 < np.abs(drift).max() <= 2.0 + 1e-9 and np.abs(np.diff(drift, axis=0)).max() < 0.01
    gain = lighting_gain(30 * 20, 30.0, rng, 0.02)
    assert 0.005 < gain.std() < 0.03 and abs(gain.mean() - 1) < 0.02
    videos = write_long_videos(tmp_path, 2, seed=5, fps=30.0, size=48, workers=1)
    for video in videos:
        files = sorted(video.source.path.glob("img*.jpg"), key=lambda p: int(p.stem[3:]))
        means = np.array([_grey(p).mean() for p in files])
        assert means.std() > 0.3  # brightness moves (flicker, slow light) even on neutral frames
        micro = [e for e in video.events if e.expression_type == "micro"]
        assert micro and all(0.2 * 30 - 1 <= e.offset - e.onset + 1 <= 0.45 * 30 + 1 for e in micro)


def test_cli_commands(tmp_path):
    assert cli_main(["synth", "--out", str(tmp_path / "d"), "--subjects", "1", "--clips-per-subject", "1",
                     "--datasets", "casme2,smic", "--size", "40", "--workers", "1"]) == 0  # fmt: skip
    assert (tmp_path / "d" / "casme2" / "CASME2-coding-20140508.xlsx").exists()
    assert not (tmp_path / "d" / "samm").exists()
    assert cli_main(["synth", "--out", str(tmp_path / "e"), "--datasets", "casme9"]) == 2
    assert cli_main(["synth-test", "--out", str(tmp_path / "t"), "--long-videos", "1", "--fps", "30",
                     "--long-size", "40", "--workers", "1"]) == 0  # fmt: skip
    assert (tmp_path / "t" / "gt" / "str_gt.csv").exists()


@pytest.mark.slow
def test_default_set_generates_in_under_30_seconds(tmp_path):
    start = time.perf_counter()
    write_datasets(tmp_path)
    elapsed = time.perf_counter() - start
    print(f"default synthetic set: {elapsed:.1f} s")
    assert elapsed < 30


@pytest.mark.slow
def test_coarse_class_is_visible_in_onset_apex_offset_frames_of_held_out_subjects(tmp_path):
    """A linear probe on apex-minus-onset/offset images, trained on one seed's subjects and tested on
    another's, separates the coarse classes: what a small VLM fed OAO frames must learn."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    def features(seed: int, subjects: int) -> tuple[np.ndarray, list[str]]:
        sets = write_datasets(tmp_path / str(seed), seed=seed, subjects=subjects, clips_per_subject=6,
                              datasets=("casme2", "samm", "smic"), size=64)  # fmt: skip
        xs, ys = [], []
        for dataset, clips in sets.items():
            for c in clips:
                if c.coarse_emotion is None:
                    continue
                apex = c.apex if c.apex is not None else (c.onset + c.offset) // 2

                def small(k: int, c=c, dataset=dataset) -> np.ndarray:
                    img = _grey(layout.frame_path(dataset, c.source.path, c.clip_id, k))
                    return cv2.resize(img, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)

                xs.append(
                    np.concatenate(
                        [(small(apex) - small(c.onset)).ravel(), (small(apex) - small(c.offset)).ravel()]
                    )
                )
                ys.append(c.coarse_emotion)
        return np.array(xs), ys

    x_train, y_train = features(1, 10)
    x_test, y_test = features(2, 5)
    probe = LogisticRegression(max_iter=2000, C=0.01).fit(x_train, y_train)
    uf1 = f1_score(y_test, probe.predict(x_test), average="macro")
    print(f"coarse UF1 of a linear probe on held-out subjects: {uf1:.3f} ({len(y_test)} clips)")
    assert uf1 >= 0.9
