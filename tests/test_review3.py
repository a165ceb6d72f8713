"""Regression tests of the third review (bugs found reading the diff since 70c001b)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from megc_vqa.records import FrameSource


# -- visual/face.py: dlib's upsampled detections are already in the input's pixels ------------------------
def test_dlib_small_face_box_found_by_upsampling_lies_on_the_face():
    pytest.importorskip("dlib")
    from megc_vqa.synth.face import sample_identity
    from megc_vqa.synth.painter import FacePainter
    from megc_vqa.visual import face as F

    if not F.dlib_available():
        pytest.skip("dlib's 68-landmark model is not installed")
    side, (x0, y0) = 70, (70, 90)  # under dlib's 80 px window: found only on the upsampled level
    painted = np.zeros((side, side, 3), np.uint8)
    FacePainter(sample_identity(np.random.default_rng(0)), side).draw(painted, lambda au, s: 0.0)
    image = np.full((240, 240, 3), 128, np.uint8)
    image[y0 : y0 + side, x0 : x0 + side] = painted
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    assert len(F._dlib_models()[0](grey, 0)) == 0  # the case under test: no hit without upsampling
    boxes, shrink = F._detections(grey, "dlib")
    assert shrink == 1.0 and len(boxes) == 1
    x, y, w, h = boxes[0]
    cx, cy = x + w / 2, y + h / 2
    assert x0 < cx < x0 + side and y0 < cy < y0 + side, boxes[0]
    assert w > side / 3  # not halved


# -- spotting/data.py: face: align decodes the frame at the canvas's resolution, not the whole frame's ------
def test_align_crop_chunks_keep_the_face_resolution(tmp_path):
    from megc_vqa.spotting.data import VideoFrames, iter_crop_chunks

    rng = np.random.default_rng(0)
    folder = tmp_path / "video"
    folder.mkdir()
    frame = rng.integers(0, 256, (960, 1280), dtype=np.uint8)  # pixel-level texture: a reduction blurs it
    for k in (1, 2):
        cv2.imwrite(str(folder / f"img{k}.jpg"), frame, [cv2.IMWRITE_JPEG_QUALITY, 100])
    size, scale = 64, 1.5  # the aligned canvas covers 96x96 source pixels of a 1280x960 frame
    matrix = np.array([[scale, 0.0, 600.0], [0.0, scale, 400.0]])
    frames = VideoFrames.open(FrameSource("folder", folder))
    out = next(iter_crop_chunks(frames, [1], size, matrix=matrix))[0]
    decoded = cv2.imread(str(folder / "img1.jpg"), cv2.IMREAD_GRAYSCALE)
    full = cv2.warpAffine(
        decoded,
        matrix,
        (size, size),
        flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )
    assert np.abs(out.astype(int) - full).mean() < 2.0


# -- ablation.py: make realistic's recipe row is keyed by the recipe's own visual settings -----------------
def test_recipe_row_result_is_not_reused_after_the_recipes_visual_settings_change(tmp_path):
    from megc_vqa import ablation

    def recipe(face: str, size: int):
        path = tmp_path / f"{face}{size}.yaml"
        path.write_text(f"model_name_or_path: tiny-qwen2.5-vl\nface: {face}\nimage_size: {size}\n")
        return path

    a, b, c = recipe("align", 112), recipe("crop", 112), recipe("align", 56)
    # make realistic: no overrides, the recipe's visual keys are what is measured
    s = ablation._settings(3, a, ["--blank_pixels", "false"])
    assert s["recipe_keys"] != ablation._settings(3, b, ["--blank_pixels", "false"])["recipe_keys"]
    assert s["recipe_keys"] != ablation._settings(3, c, ["--blank_pixels", "true"])["recipe_keys"]
    # an ablation row sets every visual key: the recipe's own values stay out of its settings
    row = [*ablation.ROWS[0].args(), "--blank_pixels", "false"]
    assert ablation._settings(3, a, row)["recipe_keys"] == ablation._settings(3, c, row)["recipe_keys"]


def test_spotting_figures_are_not_reused_after_the_spotting_recipe_changes(tmp_path, monkeypatch):
    from megc_vqa import ablation

    trained = []

    def fake_cli(args):
        if args[0] == "spot-train":
            trained.append(args)
            out = Path(args[args.index("--out") + 1])
            out.mkdir(parents=True, exist_ok=True)
            (out / "spotter.pt").write_bytes(b"weights")

    monkeypatch.setattr(ablation, "_cli", fake_cli)
    monkeypatch.setattr(ablation, "long_videos", lambda work, name, *a, **k: work / "long" / name)
    monkeypatch.setattr(ablation, "_run_str", lambda videos, out, spotter: 0.5 if spotter else 0.1)
    recipe = tmp_path / "spot.yaml"
    recipe.write_text("model: {size: 64}\n")
    ablation.run_spotting(tmp_path, 3, 4, recipe=recipe)
    recipe.write_text("model: {size: 32}\n")
    ablation.run_spotting(tmp_path, 3, 4, recipe=recipe)
    assert len(trained) == 2  # the edited recipe trains its own spotter
