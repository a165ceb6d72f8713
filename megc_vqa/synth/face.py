"""A cheap procedural face whose action units move their facial regions by a few pixels.

The face is drawn with OpenCV primitives in a canonical 128-unit frame (scaled to any ``size``) with
sub-pixel, anti-aliased coordinates, so an AU at intensity 1 shifts its landmarks by about 3-7 px at
128 px and a small intensity moves them proportionally. Per-subject appearance comes from
:func:`sample_identity`; per-frame head jitter, blinks and sensor noise from the caller's ``rng``.

Sides follow FACS: ``"L"`` is the subject's left, which a camera facing the subject sees on the
image's right (x > centre). A unilateral AU moves only that half of the face.
"""

from __future__ import annotations

from collections.abc import Mapping

import cv2
import numpy as np

from megc_vqa.synth.motion import au_course as au_course  # re-exported: part of the face API
from megc_vqa.synth.painter import BLINK, CANONICAL, FaceIdentity, FacePainter  # FaceIdentity re-exported

# The facial region each rendered AU moves (tests and readers look there).
# fmt: off
AU_REGIONS: dict[int, str] = {
    1: "brows", 2: "brows", 4: "brows", 5: "eyes", 6: "cheeks", 7: "eyes", 9: "nose", 10: "mouth",
    11: "mouth", 12: "mouth", 14: "mouth", 15: "mouth", 16: "mouth", 17: "chin", 18: "mouth", 20: "mouth",
    23: "mouth", 24: "mouth", 25: "mouth", 26: "mouth", 38: "nose", 39: "nose", 43: "eyes", BLINK: "eyes",
}
# fmt: on
RENDERED_AUS = frozenset(AU_REGIONS) - {BLINK}

_SKINS = ((185, 205, 238), (150, 178, 220), (120, 150, 200), (95, 125, 175), (70, 95, 140), (160, 190, 225))


def sample_identity(rng: np.random.Generator) -> FaceIdentity:
    """Draw a random subject: skin tone, face shape and the geometry of eyes, brows, nose and mouth."""
    u = rng.uniform
    skin = np.clip(np.array(_SKINS[rng.integers(len(_SKINS))]) + rng.integers(-12, 13, 3), 0, 255)
    cx, cy = 64 + u(-3, 3), 66 + u(-3, 3)
    eye_y = cy - u(9, 13)
    mouth_y = cy + u(22, 26)
    return FaceIdentity(
        background=tuple(int(v) for v in rng.integers(40, 220, 3)),
        skin=tuple(int(v) for v in skin),
        hair=tuple(int(v) for v in rng.integers(10, 90, 3)),
        lips=tuple(int(v) for v in np.clip(skin * np.array([0.55, 0.5, 0.85]), 0, 255)),
        iris=tuple(int(v) for v in rng.integers(20, 120, 3)),
        centre=(cx, cy),
        face_axes=(u(38, 44), u(47, 54)),
        eye_y=eye_y,
        eye_dx=u(15, 18),
        eye_hw=u(7.5, 9.5),
        eye_open=u(3.2, 4.2),
        iris_r=u(2.8, 3.4),
        brow_gap=u(7.5, 9.5),
        brow_hw=u(8.5, 10.5),
        brow_thick=u(2.2, 3.2),
        nose_y=cy + u(7, 10),
        nose_hw=u(5, 7),
        mouth_y=mouth_y,
        mouth_hw=u(11, 13.5),
        upper_lip=u(3.0, 4.0),
        lower_lip=u(3.5, 5.0),
    )


def region_box(identity: FaceIdentity, region: str, size: int = 128) -> tuple[int, int, int, int]:
    """Pixel box ``(x0, y0, x1, y1)`` around a facial region (``brows``, ``eyes``, ``nose``, ``cheeks``,
    ``mouth``, ``chin``, ``forehead_top``) of a neutral face, for tests and diagnostics."""
    cx, _ = identity.centre
    w = identity.eye_dx + identity.brow_hw + 3
    ey, my = identity.eye_y, identity.mouth_y
    boxes = {
        "brows": (cx - w, ey - identity.brow_gap - 9, cx + w, ey - identity.brow_gap + 6),
        "eyes": (cx - w, ey - 6, cx + w, ey + 5),
        "nose": (cx - 10, ey + 4, cx + 10, identity.nose_y + 4),
        "cheeks": (cx - w - 2, ey + 5, cx + w + 2, identity.nose_y + 2),
        "mouth": (cx - identity.mouth_hw - 9, my - 10, cx + identity.mouth_hw + 9, my + 12),
        "chin": (cx - 14, my + 5, cx + 14, my + 20),
        "forehead_top": (cx - 12, ey - identity.brow_gap - 24, cx + 12, ey - identity.brow_gap - 14),
    }
    s = size / CANONICAL
    x0, y0, x1, y1 = boxes[region]
    return int(max(x0 * s, 0)), int(max(y0 * s, 0)), int(min(x1 * s, size)), int(min(y1 * s, size))


def render_frames(
    identity: FaceIdentity,
    activations: Mapping[int, np.ndarray],
    sides: Mapping[int, str | None],
    rng: np.random.Generator,
    size: int = 128,
    grey: bool = False,
    *,
    head: np.ndarray | None = None,
    noise: float = 2.0,
) -> np.ndarray:
    """Render ``T`` frames ``(T, size, size, 3)`` uint8 (BGR; three equal channels when ``grey``).

    activations: AU number -> intensity per frame in [0, 1] (all of length T); :data:`BLINK` for blinks.
    sides: AU number -> ``"L"``/``"R"`` for a unilateral AU, ``None`` (or absent) for both sides.
    head: per-frame head offset (T, 2) in canonical px (see :func:`head_motion`); none when omitted.
    noise: standard deviation of the Gaussian sensor noise in grey levels.
    """
    left = {au: c for au, c in activations.items() if sides.get(au) in (None, "L")}
    right = {au: c for au, c in activations.items() if sides.get(au) in (None, "R")}
    return render_sided(identity, left, right, rng, size, grey, head=head, noise=noise)


def render_sided(
    identity: FaceIdentity,
    left: Mapping[int, np.ndarray],
    right: Mapping[int, np.ndarray],
    rng: np.random.Generator,
    size: int = 128,
    grey: bool = False,
    *,
    head: np.ndarray | None = None,
    noise: float = 2.0,
    gain: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`render_frames` with separate AU curves for the subject's left and right halves; ``gain``: a
    per-frame brightness factor (lighting), applied before the sensor noise."""
    lengths = {len(v) for v in (*left.values(), *right.values())}
    if len(lengths) != 1:
        raise ValueError(f"activations need one common length, got {sorted(lengths)}")
    n = lengths.pop()
    curves = {
        side: {au: np.clip(np.asarray(v, dtype=np.float64), 0, 1) for au, v in src.items()}
        for side, src in (("L", left), ("R", right))
    }
    face = FacePainter(identity, size)
    frames = np.empty((n, size, size, 3), np.uint8)
    stacked = np.array([c for side in curves.values() for c in side.values()]).reshape(-1, n)
    neutral: np.ndarray | None = None  # most frames of a long video are neutral: draw that face once
    for t in range(n):
        if not stacked[:, t].any():
            if neutral is None:
                neutral = np.empty((size, size, 3), np.uint8)
                face.draw(neutral, lambda au, side: 0.0)
            frames[t] = neutral
        else:

            def a(au: int, side: str, t: int = t) -> float:
                curve = curves[side].get(au)
                return 0.0 if curve is None else float(curve[t])

            face.draw(frames[t], a)
        if head is not None:  # head motion: a sub-pixel shift of the whole picture
            shift = np.float32([[1, 0, head[t][0] * face.s], [0, 1, head[t][1] * face.s]])
            frames[t] = cv2.warpAffine(frames[t], shift, (size, size), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REPLICATE)  # fmt: skip
    return _sensor(frames, rng, noise, grey, gain)


def _sensor(
    frames: np.ndarray, rng: np.random.Generator, sigma: float, grey: bool, gain: np.ndarray | None = None
) -> np.ndarray:
    """Greyscale conversion and Gaussian sensor noise, drawn from a small bank at random offsets (fast)."""
    n, h, w, _ = frames.shape
    if grey:
        frames = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in frames])[..., None]
    pad = 16
    bank = np.rint(rng.normal(0, sigma, (4, h + pad, w + pad, frames.shape[3]))).astype(np.int16)
    picks = rng.integers(0, [4, pad, pad], size=(n, 3))
    out = np.empty((n, h, w, 3), np.uint8)
    for t, (k, dy, dx) in enumerate(picks):
        lit = frames[t] if gain is None else np.rint(frames[t] * gain[t])
        noisy = lit.astype(np.int16) + bank[k, dy : dy + h, dx : dx + w]
        out[t] = np.clip(noisy, 0, 255).astype(np.uint8)  # broadcasts grey over three channels
    return out
