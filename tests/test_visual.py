"""Visual inputs: frame order and decoding, samplers, flow/diff, apex estimation, cache, face crop, bad input."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest

from megc_vqa.records import Clip, FrameSource
from megc_vqa.visual import face as face_mod
from megc_vqa.visual import frames as frames_mod
from megc_vqa.visual.apex import estimate_apex
from megc_vqa.visual.flow import diff_image, flow_image, optical_flow
from megc_vqa.visual.frames import FrameError, FrameReader, clip_from_folder, list_frames, read_frames
from megc_vqa.visual.samplers import parse_sampler, sample
from megc_vqa.visual.toyclips import toy_face, toy_frames, toy_shifts, write_toy_clip

N_FRAMES, APEX_POS, FIRST = 40, 14, 101


def _touch_image(path: Path, value: int = 100, grey: bool = False) -> None:
    shape = (12, 16) if grey else (12, 16, 3)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))


def _clip(
    folder: Path, onset: int, offset: int, apex: int | None = None, kind: str = "folder", first: int = 0
) -> Clip:
    return Clip(
        dataset="casme2",
        subject="sub01",
        clip_id=folder.name,
        image_id=f"sub01_{folder.name}",
        source=FrameSource(kind, folder, first),  # type: ignore[arg-type]
        fps=200.0,
        onset=onset,
        offset=offset,
        apex=apex,
    )


@pytest.fixture(scope="module")
def toy_clip_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("toy") / "sub01" / "EP01_01"
    write_toy_clip(folder, N_FRAMES, APEX_POS, first=FIRST)
    return folder


@pytest.fixture(scope="module")
def true_apexes() -> set[int]:
    shifts = toy_shifts(N_FRAMES, APEX_POS, 12)
    return {FIRST + t for t, dx in enumerate(shifts) if dx == max(shifts)}


# ---------------------------------------------------------------- frame listing and decoding


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["img100.jpg", "img46.jpg", "img9.jpg", "img47.jpg"], [9, 46, 47, 100]),
        (["reg_img100.jpg", "reg_img46.jpg"], [46, 100]),
        (["006_05562.jpg", "006_05561.jpg", "006_10000.jpg"], [5561, 5562, 10000]),
        (["123.jpg", "2.jpg", "45.jpg"], [2, 45, 123]),
        (["image000012.jpg", "image000002.jpg", "image000100.jpg"], [2, 12, 100]),
    ],
)
def test_list_frames_sorts_by_number_not_string(
    tmp_path: Path, names: list[str], expected: list[int]
) -> None:
    for name in names:
        _touch_image(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not a frame")
    (tmp_path / "cover.jpg").write_bytes(b"")  # an image without a number is not a frame
    listing = list_frames(tmp_path)
    assert [index for index, _ in listing] == expected
    assert all(frames_mod.frame_number(path.name) == index for index, path in listing)


def test_list_frames_rejects_two_files_with_one_number(tmp_path: Path) -> None:
    _touch_image(tmp_path / "img7.jpg")
    _touch_image(tmp_path / "img07.jpg")
    with pytest.raises(FrameError, match="both give frame number 7"):
        list_frames(tmp_path)


def test_read_frames_decodes_only_requested_and_greyscale_becomes_rgb(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for index in range(1, 21):
        _touch_image(tmp_path / f"{index:03d}.jpg", value=10 * index, grey=True)
    opened: list[str] = []
    real_imread = frames_mod._imread
    monkeypatch.setattr(
        frames_mod, "_imread", lambda path, flags: opened.append(path.name) or real_imread(path, flags)
    )
    frames = read_frames(FrameSource("folder", tmp_path), [5, 12, 5])
    assert frames.shape == (3, 12, 16, 3) and frames.dtype == np.uint8
    assert sorted(opened) == ["005.jpg", "012.jpg"]  # a repeated index is decoded once
    assert np.array_equal(frames[0], frames[2])
    assert np.all(frames[..., 0] == frames[..., 1]) and np.all(frames[..., 1] == frames[..., 2])
    assert abs(int(frames[1].mean()) - 120) <= 2


def test_dropped_frames_use_nearest_with_a_note(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    written = write_toy_clip(tmp_path, 12, 5, first=1, drop=[4, 5, 6])
    assert 5 not in written
    source = FrameSource("folder", tmp_path)
    with caplog.at_level(logging.INFO, logger="megc_vqa.visual.frames"):
        with FrameReader(source) as reader:
            assert reader.resolve([4, 5, 6, 20]) == [3, 3, 7, 12]  # ties go to the earlier frame
        frames = read_frames(source, [6, 7])
    assert np.array_equal(frames[0], frames[1])
    assert "6->7" in caplog.text and str(tmp_path) in caplog.text
    with pytest.raises(FrameError, match=r"frames not found: 5"):
        read_frames(source, [5], nearest=False)


def test_clip_from_folder_spans_all_frames_without_apex(tmp_path: Path) -> None:
    folder = tmp_path / "SAMM" / "SAMM-3"
    write_toy_clip(folder, 8, 3, first=7, pattern="{:05d}.jpg")
    clip = clip_from_folder(folder, fps=200, dataset="samm_test")
    assert (clip.onset, clip.offset, clip.apex) == (7, 14, None)
    assert (clip.image_id, clip.subject, clip.dataset, clip.fps) == ("SAMM-3", "SAMM", "samm_test", 200.0)


# ---------------------------------------------------------------- bad input


def test_corrupt_jpeg_names_the_file(tmp_path: Path) -> None:
    write_toy_clip(tmp_path, 5, 2)
    (tmp_path / "img3.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a jpeg")
    with pytest.raises(FrameError, match=r"img3\.jpg.*cannot decode"):
        read_frames(FrameSource("folder", tmp_path), [1, 3])
    with pytest.raises(FrameError, match=r"img3\.jpg"):
        sample(_clip(tmp_path, 1, 5, apex=3), "oao", size=None)
    whole = (tmp_path / "img4.jpg").read_bytes()
    (tmp_path / "img4.jpg").write_bytes(whole[: len(whole) // 2])  # an interrupted copy
    with pytest.raises(FrameError, match=r"img4\.jpg.*truncated JPEG"):
        read_frames(FrameSource("folder", tmp_path), [4])
    (tmp_path / "img5.jpg").write_bytes(b"")
    with pytest.raises(FrameError, match=r"img5\.jpg.*cannot decode"):
        read_frames(FrameSource("folder", tmp_path), [5])


def test_missing_folder_and_video_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(FrameError, match=r"nowhere.*not found"):
        read_frames(FrameSource("folder", tmp_path / "nowhere"), [1])
    with pytest.raises(FrameError, match=r"nowhere"):
        sample(_clip(tmp_path / "nowhere", 1, 5), "oao+flow")
    with pytest.raises(FrameError, match=r"gone\.mp4.*not found"):
        read_frames(FrameSource("video", tmp_path / "gone.mp4"), [0])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FrameError, match=r"empty: no numbered image files"):
        read_frames(FrameSource("folder", empty), [1])


def test_path_outside_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "data"
    outside = tmp_path / "elsewhere"
    write_toy_clip(outside, 4, 1)
    escaping = root / ".." / "elsewhere"
    with pytest.raises(FrameError, match="outside the dataset root"):
        read_frames(FrameSource("folder", escaping), [1], root=root)
    with pytest.raises(FrameError, match="outside the dataset root"):
        sample(_clip(escaping, 1, 4), "oao", root=root)
    assert read_frames(FrameSource("folder", outside), [1]).shape[0] == 1  # fine without a root


def test_unreadable_video_names_the_file(tmp_path: Path) -> None:
    pytest.importorskip("decord", reason="decord is not installed")
    bogus = tmp_path / "broken.mp4"
    bogus.write_bytes(b"\x00\x00\x00\x18ftypmp42 definitely not a video" * 10)
    with pytest.raises(FrameError, match=r"broken\.mp4"):
        read_frames(FrameSource("video", bogus), [0])


# ---------------------------------------------------------------- sampler specs


@pytest.mark.parametrize(
    ("spec", "frames", "n", "flow", "diff"),
    [
        ("oao", "oao", 3, False, False),
        ("uniform:8", "uniform", 8, False, False),
        ("flow", None, 0, True, False),
        ("diff", None, 0, False, True),
        ("oao+flow", "oao", 3, True, False),
        ("uniform:8+flow", "uniform", 8, True, False),
        (" OAO + diff + flow ", "oao", 3, True, True),
    ],
)
def test_parse_sampler_accepts_the_grammar(
    spec: str, frames: str | None, n: int, flow: bool, diff: bool
) -> None:
    parsed = parse_sampler(spec)
    assert (parsed.frames, parsed.n_frames, parsed.flow, parsed.diff) == (frames, n, flow, diff)
    assert parse_sampler(str(parsed)) == parsed


@pytest.mark.parametrize(
    "spec", ["", "oao+", "uniform", "uniform:0", "uniform:x", "oao+uniform:4", "flow+flow", "opt"]
)
def test_parse_sampler_rejects_bad_specs_with_the_grammar(spec: str) -> None:
    with pytest.raises(ValueError, match=r"invalid sampler spec.*Accepted: .*oao \| uniform:N"):
        parse_sampler(spec)


# ---------------------------------------------------------------- samplers


def test_oao_gives_onset_apex_offset_frames(toy_clip_dir: Path) -> None:
    clip = _clip(toy_clip_dir, FIRST + 2, FIRST + 30, apex=FIRST + 12)
    out = sample(clip, "oao", size=None)
    assert out.frame_indices == (FIRST + 2, FIRST + 12, FIRST + 30)
    assert len(out.images) == 3 and out.video is not None and out.video.shape == (3, 160, 192, 3)
    expected = read_frames(clip.source, list(out.frame_indices))
    assert all(np.array_equal(a, b) for a, b in zip(out.images, expected, strict=True))
    assert out.apex == FIRST + 12 and not out.apex_estimated
    # The prompt's description names the images, never frame numbers (train/test parity).
    assert out.description.startswith("onset, apex and offset frames") and "103" not in out.description
    assert out.fps == pytest.approx(2 / (28 / 200))


def test_resize_keeps_aspect_with_shorter_side_at_size(toy_clip_dir: Path) -> None:
    out = sample(_clip(toy_clip_dir, FIRST, FIRST + 10, apex=FIRST + 5), "oao+flow+diff", size=80)
    assert [image.shape for image in out.images] == [(80, 96, 3)] * 5  # 160x192 -> 80x96


def test_uniform_sampler_spreads_frames_over_the_clip(
    toy_clip_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import megc_vqa.visual.samplers as samplers_mod

    monkeypatch.setattr(
        samplers_mod, "estimate_apex", lambda *a, **k: pytest.fail("uniform alone needs no apex")
    )
    clip = _clip(toy_clip_dir, FIRST, FIRST + 35)
    out = sample(clip, "uniform:6", size=64)
    assert out.frame_indices == (FIRST, FIRST + 7, FIRST + 14, FIRST + 21, FIRST + 28, FIRST + 35)
    assert out.video is not None and out.video.shape[0] == 6 and len(out.images) == 6
    assert out.apex is None and out.fps == pytest.approx(5 / (35 / 200))
    short = sample(_clip(toy_clip_dir, FIRST, FIRST + 2), "uniform:5", size=64)
    assert len(short.frame_indices) == 5 and set(short.frame_indices) == {FIRST, FIRST + 1, FIRST + 2}


def test_uniform_plus_flow_adds_one_flow_image(toy_clip_dir: Path, true_apexes: set[int]) -> None:
    out = sample(_clip(toy_clip_dir, FIRST, FIRST + N_FRAMES - 1), "uniform:4+flow", size=96)
    assert len(out.images) == 5 and out.video is not None and out.video.shape[0] == 4
    assert out.apex in true_apexes and out.apex_estimated
    assert "estimated" not in out.description and "4 frames evenly spaced" in out.description
    assert "farneback flow" in out.description


def test_flow_and_diff_show_motion_and_stay_dark_when_still(tmp_path: Path) -> None:
    moving = toy_frames(20, 10, shift=8, noise=1.0)
    still = toy_frames(20, 10, moving=False, noise=1.0, seed=0)
    for make in (flow_image, diff_image):
        assert make(moving[0], moving[10]).mean() > 3 * make(still[0], still[10]).mean() + 1
        assert make(still[0], still[10]).mean() < 1
        assert make(moving[0], moving[0]).mean() < 0.5  # identical frames
    flow = optical_flow(moving[0], moving[10])
    assert flow[..., 0].max() > 4  # the square moved right by 8 px
    with pytest.raises(ValueError, match="unknown optical flow method"):
        flow_image(moving[0], moving[1], "magic")


def test_flow_sampler_image_differs_between_moving_and_static_clips(tmp_path: Path) -> None:
    moving_dir, still_dir = tmp_path / "moving", tmp_path / "still"
    write_toy_clip(moving_dir, 20, 9, noise=1.0)
    write_toy_clip(still_dir, 20, 9, noise=1.0, moving=False)
    moving = sample(_clip(moving_dir, 1, 20, apex=10), "flow", size=None)
    still = sample(_clip(still_dir, 1, 20, apex=10), "flow", size=None)
    assert len(moving.images) == 1 and moving.video is None and moving.frame_indices == ()
    assert moving.images[0].mean() > 3 and still.images[0].mean() < 1.5


def test_tvl1_without_contrib_is_a_clear_error() -> None:
    if hasattr(cv2, "optflow"):
        pytest.skip("opencv-contrib is installed: TV-L1 is available")
    frames = toy_frames(3, 1)
    with pytest.raises(RuntimeError, match="opencv-contrib"):
        flow_image(frames[0], frames[1], "tvl1")


# ---------------------------------------------------------------- apex estimation


@pytest.mark.parametrize(("stride", "chunk"), [(1, 32), (1, 5), (2, 7)])
def test_estimate_apex_finds_the_largest_motion(
    toy_clip_dir: Path, true_apexes: set[int], stride: int, chunk: int
) -> None:
    clip = _clip(toy_clip_dir, FIRST, FIRST + N_FRAMES - 1)
    apex = estimate_apex(clip, stride=stride, chunk=chunk)
    assert apex in true_apexes or (stride > 1 and min(abs(apex - a) for a in true_apexes) < stride)


def test_estimate_apex_is_not_fooled_by_drift_and_lighting_that_grow_over_the_clip(tmp_path: Path) -> None:
    """A faint movement peaking mid-clip while the whole face drifts 5 px and brightens 15%: the last
    frame differs most from the onset, yet the apex is the frame that differs most from both ends."""
    n, apex_pos = 40, 15
    frames = toy_frames(n, apex_pos, shift=3, noise=1.0)
    for t in range(n):
        drifted = np.roll(frames[t], round(5 * t / (n - 1)), axis=1).astype(np.float32)
        frames[t] = np.clip(drifted * (1 + 0.15 * t / (n - 1)), 0, 255).astype(np.uint8)
    folder = tmp_path / "drift"
    folder.mkdir()
    for t, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"img{t + 1}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    grey = frames.mean(axis=3)
    from_onset = np.abs(grey - grey[0]).mean(axis=(1, 2))
    assert from_onset[-1] > from_onset[apex_pos]  # the onset-only rule would pick the end of the clip
    apex = estimate_apex(_clip(folder, 1, n))
    assert abs(apex - (1 + apex_pos)) <= 2, apex


def test_estimate_apex_reads_frames_in_chunks(toy_clip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    batch_sizes: list[int] = []
    real = FrameReader.read_grey

    def spy(self: FrameReader, indices: list[int], **kw: object) -> np.ndarray:
        batch_sizes.append(len(indices))
        return real(self, indices, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(FrameReader, "read_grey", spy)
    estimate_apex(_clip(toy_clip_dir, FIRST, FIRST + N_FRAMES - 1), chunk=8, reduce=2)
    assert max(batch_sizes) == 8 and sum(batch_sizes) == 2 + N_FRAMES  # the two ends, then every frame


def test_oao_without_apex_uses_the_estimate_or_the_midpoint(
    toy_clip_dir: Path, true_apexes: set[int]
) -> None:
    clip = _clip(toy_clip_dir, FIRST, FIRST + N_FRAMES - 1)
    out = sample(clip, "oao+flow", size=64)
    assert out.frame_indices[1] in true_apexes and out.apex_estimated
    assert out.frame_indices[0] == FIRST and out.frame_indices[2] == FIRST + N_FRAMES - 1
    mid = sample(clip, "oao", size=64, apex_method="midpoint")
    assert mid.frame_indices[1] == FIRST + (N_FRAMES - 1) // 2
    assert mid.description == out.description.split(" + ")[0] + " [shorter side 64px]"
    with pytest.raises(ValueError, match="unknown apex method"):
        sample(clip, "oao", apex_method="peak")


# ---------------------------------------------------------------- cache


def test_cache_hit_returns_identical_arrays_without_decoding(
    toy_clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clip = _clip(toy_clip_dir, FIRST, FIRST + N_FRAMES - 1)
    first = sample(clip, "oao+flow+diff", size=64, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("*.npz"))) == 1

    def no_decoding(*args: object, **kwargs: object) -> None:
        raise AssertionError("cache hit must not decode frames")

    monkeypatch.setattr(frames_mod, "_imread", no_decoding)
    second = sample(clip, "oao+flow+diff", size=64, cache_dir=tmp_path)
    assert len(second.images) == len(first.images) == 5
    assert all(np.array_equal(a, b) for a, b in zip(first.images, second.images, strict=True))
    assert second.video is not None and np.array_equal(first.video, second.video)
    assert (second.frame_indices, second.description, second.fps, second.apex, second.apex_estimated) == (
        first.frame_indices,
        first.description,
        first.fps,
        first.apex,
        first.apex_estimated,
    )
    with pytest.raises(AssertionError, match="must not decode"):  # other settings are a different key
        sample(clip, "oao+flow+diff", size=32, cache_dir=tmp_path)


def test_cache_is_invalidated_when_frames_change_and_survives_a_corrupt_file(tmp_path: Path) -> None:
    folder = tmp_path / "clip"
    write_toy_clip(folder, 10, 4)
    cache = tmp_path / "cache"
    clip = _clip(folder, 1, 10, apex=5)
    sample(clip, "oao", size=None, cache_dir=cache)
    (cache_file,) = cache.glob("*.npz")
    cache_file.write_bytes(b"garbage")
    assert len(sample(clip, "oao", size=None, cache_dir=cache).images) == 3  # recomputed, no crash
    (folder / "img10.jpg").unlink()  # changes the folder's mtime
    out = sample(clip, "oao", size=None, cache_dir=cache)
    assert out.frame_indices == (1, 5, 9) and len(list(cache.glob("*.npz"))) == 2


def test_cache_key_misses_on_every_input_that_changes_the_output(tmp_path: Path) -> None:
    """A frame rewritten in place (same name), another fps, any sampler setting or code version: a miss."""
    import os

    import megc_vqa.visual.samplers as samplers_mod

    folder = tmp_path / "clip"
    write_toy_clip(folder, 10, 4)
    clip = _clip(folder, 1, 10, apex=5)
    base = {"size": 32, "face_crop": False, "flow_method": "farneback", "apex_method": "motion"}
    spec = samplers_mod.parse_sampler("oao+flow")
    key = samplers_mod.cache_key(clip, spec, **base)
    assert samplers_mod.cache_key(clip, spec, **base) == key  # stable
    frame = folder / "img5.jpg"
    stat = frame.stat()
    frame.write_bytes(frame.read_bytes())  # rewritten in place: same name and size, new mtime
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    os.utime(folder, ns=(folder.stat().st_atime_ns, folder.stat().st_mtime_ns))  # folder mtime unchanged
    rewritten = samplers_mod.cache_key(clip, spec, **base)
    assert rewritten != key
    others = {
        "fps": samplers_mod.cache_key(dataclasses.replace(clip, fps=30.0), spec, **base),
        "spec": samplers_mod.cache_key(clip, samplers_mod.parse_sampler("oao+diff"), **base),
        **{
            name: samplers_mod.cache_key(clip, spec, **{**base, name: value})
            for name, value in (("size", 64), ("flow_method", "tvl1"), ("apex_method", "midpoint"))
        },
    }
    assert len({rewritten, *others.values()}) == 1 + len(others), others
    samplers_mod.code_version.cache_clear()
    try:
        import unittest.mock

        with unittest.mock.patch.object(samplers_mod, "CACHE_VERSION", 99):
            assert samplers_mod.cache_key(clip, spec, **base) != rewritten
    finally:
        samplers_mod.code_version.cache_clear()
    # And through sample(): the rewritten frame is decoded again, not served from the cache.
    cache = tmp_path / "cache"
    sample(clip, "oao", size=None, cache_dir=cache)
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    sample(clip, "oao", size=None, cache_dir=cache)
    assert len(list(cache.glob("*.npz"))) == 2


# ---------------------------------------------------------------- video files


def test_video_file_via_decord(tmp_path: Path, true_apexes: set[int]) -> None:
    pytest.importorskip("decord", reason="decord is not installed")
    frames = toy_frames(N_FRAMES, APEX_POS, noise=0.0)
    path = tmp_path / "clip.mp4"
    writer = cv2.VideoWriter(
        str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30, (frames.shape[2], frames.shape[1])
    )
    assert writer.isOpened()
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()

    source = FrameSource("video", path, first_frame=FIRST)
    decoded = read_frames(source, [FIRST + 3, FIRST + APEX_POS])
    assert decoded.shape == (2, *frames.shape[1:])
    error_right = np.abs(decoded.astype(int) - frames[[3, APEX_POS]].astype(int)).mean()
    error_wrong = np.abs(decoded[0].astype(int) - frames[APEX_POS].astype(int)).mean()
    assert error_right < 6 and error_right < error_wrong  # lossy codec, but the right frames

    clip = _clip(path, FIRST, FIRST + N_FRAMES - 1, kind="video", first=FIRST)
    out = sample(clip, "oao+flow", size=None)
    assert out.frame_indices[0] == FIRST and out.frame_indices[2] == FIRST + N_FRAMES - 1
    assert out.frame_indices[1] in true_apexes
    assert len(out.images) == 4 and out.images[3].mean() > 1


# ---------------------------------------------------------------- face crop


def test_face_crop_applies_one_box_to_all_frames(toy_clip_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[int, ...]] = []

    def fake_detect(image: np.ndarray) -> tuple[int, int, int, int]:
        seen.append(image.shape)
        return (40, 30, 100, 100)

    monkeypatch.setattr(face_mod, "detect_face", fake_detect)
    out = sample(
        _clip(toy_clip_dir, FIRST, FIRST + 20, apex=FIRST + 10), "oao+flow", size=None, face_crop=True
    )
    assert seen == [(160, 192, 3)]  # detected once, on the onset frame
    assert out.face_box == (25, 15, 130, 130)  # 15% margin each side, clamped
    assert all(image.shape == (130, 130, 3) for image in out.images)
    full = read_frames(FrameSource("folder", toy_clip_dir), [FIRST + 10])[0]
    assert np.array_equal(out.images[1], full[15:145, 25:155])


def test_no_face_falls_back_to_full_frame_with_warning(
    toy_clip_dir: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(face_mod, "detect_face", lambda image: None)
    with caplog.at_level(logging.WARNING):
        out = sample(
            _clip(toy_clip_dir, FIRST, FIRST + 20, apex=FIRST + 10), "oao", size=None, face_crop=True
        )
    assert out.face_box is None and out.images[0].shape == (160, 192, 3)
    assert "no face found" in caplog.text and "sub01_EP01_01" in caplog.text
    assert "full frame (no face found)" in out.description


@pytest.mark.skipif(
    not face_mod.face_detector_available(),
    reason=f"OpenCV {cv2.__version__} ships no Haar cascade (OpenCV 5 moved it out; opencv-python-headless<5 has it)",
)
def test_haar_cascade_finds_a_drawn_face() -> None:
    image = np.full((300, 300, 3), 60, np.uint8)
    image[30:270, 50:250] = toy_face(240, 200)
    box = face_mod.detect_face(image)
    assert box is not None
    x, y, w, h = box
    assert abs(x + w / 2 - 150) < 25 and abs(y + h / 2 - 150) < 30 and w > 100  # the face is centred


@pytest.mark.skipif(
    not face_mod.face_detector_available(),
    reason=f"OpenCV {cv2.__version__} ships no Haar cascade (OpenCV 5 moved it out; opencv-python-headless<5 has it)",
)
def test_face_crop_end_to_end_with_the_cascade(tmp_path: Path) -> None:
    frame = np.full((320, 400, 3), 70, np.uint8)
    frame[40:280, 100:300] = toy_face(240, 200)
    for index in range(1, 6):
        cv2.imwrite(str(tmp_path / f"img{index}.jpg"), cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    out = sample(_clip(tmp_path, 1, 5, apex=3), "oao", size=None, face_crop=True)
    assert out.face_box is not None and "face crop" in out.description
    x, y, w, h = out.face_box
    assert all(image.shape == (h, w, 3) for image in out.images) and w < 400 and h < 320
    assert abs(x + w / 2 - 200) < 30 and abs(y + h / 2 - 160) < 40


@pytest.mark.skipif(face_mod.face_detector_available(), reason="this OpenCV has the Haar cascade")
def test_missing_haar_cascade_is_a_clear_error() -> None:
    with pytest.raises(face_mod.FaceDetectorUnavailable, match="opencv-python-headless<5"):
        face_mod.detect_face(toy_face())
