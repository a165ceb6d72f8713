"""The release preset of the synthetic data (issue 22): release geometry, findable faces, subtle motion."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from megc_vqa.cli import main
from megc_vqa.synth import layout
from megc_vqa.synth.calibration import flow_motion, haar_faces, hog_faces, read_grey
from megc_vqa.synth.datasets import write_datasets
from megc_vqa.synth.face import sample_identity
from megc_vqa.synth.jobs import RenderJob, Track, run_job
from megc_vqa.synth.realism import LOOKS, sample_look
from megc_vqa.synth.scene import FrameMaker, build_scene


def _overlap(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / float(aw * ah + bw * bh - w * h)


@pytest.mark.parametrize("dataset", sorted(LOOKS))
def test_release_frames_have_the_release_size_and_colour(dataset, tmp_path):
    rng = np.random.default_rng(1)
    identity, look = sample_identity(rng), sample_look(dataset, rng)
    paths = [str(tmp_path / f"img{k}.jpg") for k in (1, 2, 3)]
    job = RenderJob(identity, 3, paths, [Track(12, None, 0, 1, 2, 1.0, 0.05)], 200.0, (1, 2), look=look)
    assert run_job(job) == 3
    img = cv2.imread(paths[1], cv2.IMREAD_UNCHANGED)
    width, height = LOOKS[dataset].frame
    assert img.shape[:2] == (height, width)
    assert (img.ndim == 2) == LOOKS[dataset].grey  # SAMM and SAMM-LV are greyscale files


@pytest.mark.parametrize("dataset", sorted(set(LOOKS) - {"samm_lv"}))  # SAMM-LV looks as SAMM
def test_both_detectors_find_the_placed_face(dataset):
    """Haar and dlib HOG each find one face where the look put it (one subject per release here; the slow
    test below counts the onset frames of whole clips)."""
    rng = np.random.default_rng(7)
    for _ in range(1):
        identity, look = sample_identity(rng), sample_look(dataset, rng)
        scene = build_scene(identity, look, [])
        frame = FrameMaker(scene, {}, 4).frame({}, {}, np.zeros(3))
        grey = frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        w = look.face_width
        placed = (look.centre[0] - w / 2, look.centre[1] - 0.6 * w, w, 1.2 * w)
        for found in (haar_faces(grey), hog_faces(grey)):
            assert len(found) == 1, (dataset, found)
            assert _overlap(found[0], placed) > 0.4, (dataset, found, placed)
        face_fraction = w / look.frame[0]
        assert face_fraction < 0.5  # a part of the frame, unlike the synthetic preset's frame-filling face


def _onset_apex_motion(root: Path, realism: str):
    records = write_datasets(root, seed=5, subjects=1, clips_per_subject=1, datasets=("casme2",), workers=1,
                             realism=realism)["casme2"]  # fmt: skip
    motions = []
    for clip in records:
        folder = Path(clip.source.path)
        onset = read_grey(layout.frame_path("casme2", folder, clip.clip_id, clip.onset))
        apex = read_grey(layout.frame_path("casme2", folder, clip.clip_id, clip.apex))
        found = hog_faces(onset)
        box = found[0] if found else (0, 0, onset.shape[1], onset.shape[0])
        motions.append((onset.shape, flow_motion(onset, apex, box)))
    return motions


def test_release_micro_expression_moves_a_pixel_or_two_where_synthetic_moves_several(tmp_path):
    release = _onset_apex_motion(tmp_path / "release", "release")
    synthetic = _onset_apex_motion(tmp_path / "synthetic", "synthetic")
    assert all(shape == (480, 640) for shape, _ in release)
    assert all(shape == (128, 128) for shape, _ in synthetic)
    # Release: the expression's own motion (head motion removed) stays near 1 % of the face width (~3 px).
    assert max(m.residual_p99 for _, m in release) < 0.02
    assert min(m.residual_p99 for _, m in synthetic) > 0.03
    assert max(m.residual_p99 for _, m in release) < min(m.residual_p99 for _, m in synthetic) / 2


def _cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("command", ["synth", "synth-test"])
def test_unknown_realism_lists_the_presets(command, tmp_path, capsys):
    extra = ["--long-videos", "1"] if command == "synth-test" else []
    code, text = _cli(capsys, command, "--out", str(tmp_path / "o"), "--realism", "real", *extra)
    assert code != 0
    assert "'real'" in text and "synthetic" in text and "release" in text
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(("command", "option"), [("synth", "--size"), ("synth-test", "--long-size")])
def test_size_with_release_is_refused_with_what_to_change(command, option, tmp_path, capsys):
    extra = ["--long-videos", "1"] if command == "synth-test" else []
    code, text = _cli(
        capsys, command, "--out", str(tmp_path / "o"), "--realism", "release", option, "64", *extra
    )
    assert code != 0
    assert option in text and "release" in text and "drop the size option" in text
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_faces_found_on_99_percent_of_release_onset_frames(tmp_path):
    written = write_datasets(tmp_path, seed=21, subjects=6, clips_per_subject=4,
                             datasets=("casme2", "samm", "smic", "casme3"), realism="release")  # fmt: skip
    total = haar = hog = 0
    for dataset, clips in written.items():
        for clip in clips:
            frame = read_grey(layout.frame_path(dataset, Path(clip.source.path), clip.clip_id, clip.onset))
            total += 1
            haar += len(haar_faces(frame)) == 1
            hog += len(hog_faces(frame)) == 1
    assert total == 96
    assert haar / total >= 0.99 and hog / total >= 0.99, (haar, hog, total)


@pytest.mark.slow
def test_release_synth_test_and_long_videos(tmp_path, capsys):
    questions = sorted(Path("data/megc/2025").glob("*_to_answer.jsonl"))
    code, text = _cli(capsys, "synth-test", "--out", str(tmp_path), "--questions", *map(str, questions),
                      "--long-videos", "2", "--long-events", "2", "--realism", "release")  # fmt: skip
    assert code == 0, text
    samm = sorted((tmp_path / "frames").glob("*SAMM*/img1.jpg")) or sorted(
        (tmp_path / "frames").glob("*/img1.jpg")
    )
    shapes = {cv2.imread(str(p), cv2.IMREAD_UNCHANGED).shape for p in samm}
    assert shapes <= {(1088, 2040), (720, 1280, 3)}
    long_30 = cv2.imread(str(next((tmp_path / "long").glob("*_1/img1.jpg"))), cv2.IMREAD_UNCHANGED)
    assert long_30.shape == (720, 1280, 3)  # 30 fps long videos are drawn as CAS(ME)^3
