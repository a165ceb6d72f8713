"""The release preset's renderer: a textured face in a recorded scene, moved by displacement fields.

Per job the static parts are composed once: the background (wall, neck and shoulders) at the release's frame
size, and the neutral face painted by :class:`~megc_vqa.synth.painter.FacePainter` on a canvas around the face,
multiplied by a per-subject skin texture. Every AU is a smooth displacement field over the canvas (Gaussian
bumps at the landmarks the painter moves, with the painter's directions), plus for a few AUs a crease or
mouth-interior overlay painted onto the skin. A frame is then one ``cv2.remap`` of the canvas by the sum of its
AU fields (geometry and texture move together, by the same field), composed with the frame's head pose into
the face's box of the static frame, lit, given sensor noise and JPEG-compressed. Only the face box changes
between frames.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from megc_vqa.synth.face import FaceIdentity
from megc_vqa.synth.motion import au_course, lighting_gain
from megc_vqa.synth.painter import BLINK, CANONICAL, FacePainter, _curve
from megc_vqa.synth.realism import BLINK_SECONDS, SubjectLook

# Landmark motions per AU, mirroring painter.py: (x, y, dx, dy, sigma_x, sigma_y) in canonical units for the
# side with sign ``sgn`` (+1: the subject's left = image right). dx is given towards the face's outside.
Bump = tuple[float, float, float, float, float, float]


def _au_bumps(f: FaceIdentity, au: int, sgn: int) -> list[Bump]:
    cx, _ = f.centre
    ex, ey, eo = cx + sgn * f.eye_dx, f.eye_y, f.eye_open
    by = ey - f.brow_gap
    inner_brow = cx + sgn * (f.eye_dx - f.brow_hw + 2)
    corner_x, my = cx + sgn * f.mouth_hw, f.mouth_y
    nostril = cx + sgn * f.nose_hw * 0.5
    table: dict[int, list[Bump]] = {
        1: [(inner_brow, by, 0, -7, 5, 4), (inner_brow, by - 9, 0, -3, 6, 5)],
        2: [(ex + sgn * f.brow_hw, by, 0, -7, 5, 4), (ex + sgn * f.brow_hw, by - 9, 0, -3, 6, 5)],
        4: [(inner_brow, by, -3, 5, 4.5, 4), (ex, by, 0, 3.5, 5, 4)],
        5: [(ex, ey - eo, 0, -0.9 * eo, f.eye_hw * 0.7, eo)],
        6: [(ex + sgn * 2, ey + 13, 0, -6, 6, 5), (ex, ey + 0.8 * eo, 0, -1.2, f.eye_hw * 0.7, 2)],
        7: [(ex, ey + 0.8 * eo, 0, -2, f.eye_hw * 0.7, 2), (ex, ey - eo, 0, 0.3 * eo, f.eye_hw * 0.7, 2)],
        9: [(nostril, f.nose_y, 0, -3.5, 4, 4), (inner_brow, by, 0, 2, 4, 3)],
        10: [(cx + sgn * 4, my - 2, 0, -4.5, 5, 3), (nostril, f.nose_y, 0, -1.5, 4, 3)],
        12: [(corner_x, my, 5, -7, 5, 5)],
        14: [(corner_x, my, -3, -1, 4, 4)],
        15: [(corner_x, my, 0, 6, 5, 5)],
        16: [(cx + sgn * 4, my + f.lower_lip, 0, 3.5, 5, 3)],
        17: [(cx + sgn * 3, my + 12, 0, -6, 6, 5), (cx + sgn * 3, my + f.lower_lip, 0, -4, 5, 3)],
        18: [(corner_x, my, -5, 0, 4, 4)],
        20: [(corner_x, my, 6, 1.5, 5, 5)],
        23: [(corner_x, my, -2.5, 0, 4, 4), (cx + sgn * 4, my - f.upper_lip, 0, 1.5, 5, 2)],
        24: [(corner_x, my, -2, 0, 4, 4), (cx + sgn * 4, my - f.upper_lip, 0, 1.5, 5, 2),
             (cx + sgn * 4, my + f.lower_lip, 0, -1.5, 5, 2)],
        25: [(cx + sgn * 3, my + 2, 0, 4.5, 6, 3)],
        26: [(cx + sgn * 3, my + 3, 0, 7, 7, 4), (cx + sgn * 10, my + 16, 0, 6, 10, 8)],
        38: [(nostril + sgn * 2, f.nose_y, 1.3, 0, 2.5, 2.5)],
        39: [(nostril + sgn * 2, f.nose_y, -0.9, 0, 2.5, 2.5)],
        43: [(ex, ey - 0.4 * eo, 0, 0.9 * eo, f.eye_hw * 0.8, eo)],
        BLINK: [(ex, ey - 0.4 * eo, 0, 0.9 * eo, f.eye_hw * 0.8, eo)],
    }  # fmt: skip
    return [(x, y, sgn * dx, dy, sx, sy) for x, y, dx, dy, sx, sy in table.get(au, [])]


def au_field(identity: FaceIdentity, au: int, side: str, size: int) -> np.ndarray:
    """The displacement (canvas px, float32 ``(size, size, 2)``) of ``au`` at intensity 1 on one side."""
    s = size / CANONICAL
    field = np.zeros((size, size, 2), np.float32)
    for x, y, dx, dy, sx, sy in _au_bumps(identity, au, 1 if side == "L" else -1):
        x0, x1 = max(int((x - 3 * sx) * s), 0), min(int((x + 3 * sx) * s) + 1, size)
        y0, y1 = max(int((y - 3 * sy) * s), 0), min(int((y + 3 * sy) * s) + 1, size)
        if x0 >= x1 or y0 >= y1:
            continue
        gx = np.exp(-0.5 * ((np.arange(x0, x1) / s - x) / sx) ** 2)
        gy = np.exp(-0.5 * ((np.arange(y0, y1) / s - y) / sy) ** 2)
        weight = (gy[:, None] * gx[None, :]).astype(np.float32)
        field[y0:y1, x0:x1, 0] += weight * dx * s
        field[y0:y1, x0:x1, 1] += weight * dy * s
    return field


def _overlay_painters(painter: FacePainter, f: FaceIdentity) -> dict[int, object]:
    """Skin marks an AU adds beside its motion (wrinkles, mouth interior), painted at full strength."""
    cx, _ = f.centre
    by = f.eye_y - f.brow_gap
    dark = (35, 30, 60)

    def forehead(img):
        for k in range(3):
            y = by - 9 - 4 * k
            painter.crease(img, _curve((cx - 14, y + 1), (cx, y - 1), (cx + 14, y + 1)), 1 - 0.2 * k)

    def frown(img):
        for sgn in (-1, 1):
            painter.crease(img, [(cx + sgn * 2.5, by - 4), (cx + sgn * 1.5, by + 4)], 1.0, 1.2)

    def nose(img):
        for k in range(3):
            y = f.eye_y + 4 + 3 * k
            painter.crease(img, [(cx - 4, y), (cx, y - 1), (cx + 4, y)], 1.0, 1.0)

    def crows_feet(img):
        for sgn in (-1, 1):
            for k in (-1, 0, 1):
                o = (cx + sgn * (f.eye_dx + f.eye_hw + 2), f.eye_y + 2 * k)
                painter.crease(img, [o, (o[0] + sgn * 4, o[1] + 1.5 * k)], 1.0)

    def folds(img):
        for sgn in (-1, 1):
            ny, corner = f.nose_y, (cx + sgn * f.mouth_hw, f.mouth_y)
            pts = _curve((cx + sgn * (f.nose_hw + 1), ny - 2), (corner[0] + sgn * 2, (ny + corner[1]) / 2),
                         (corner[0] + sgn * 4, corner[1] + 4))  # fmt: skip
            painter.crease(img, pts, 0.85)

    def dimples(img):
        for sgn in (-1, 1):
            painter.ellipse(img, (cx + sgn * (f.mouth_hw + 3), f.mouth_y + 1), (1.2, 2.5), painter.dark)

    def chin(img):
        y = f.mouth_y + f.lower_lip + 6
        painter.crease(img, _curve((cx - 6, y), (cx, y + 1.5), (cx + 6, y)), 1.0, 1.0)

    def mouth(gap):
        def draw(img):
            seam = f.mouth_y
            inner = np.vstack([_curve((cx - f.mouth_hw, seam), (cx, seam + 0.5), (cx + f.mouth_hw, seam)),
                               _curve((cx + f.mouth_hw, seam), (cx, seam + gap), (cx - f.mouth_hw, seam))])  # fmt: skip
            painter.poly(img, inner, dark)

        return draw

    return {1: forehead, 2: forehead, 4: frown, 9: nose, 6: crows_feet, 10: folds, 12: folds, 14: dimples,
            17: chin, 25: mouth(4.5), 26: mouth(7), 16: mouth(3.5)}  # fmt: skip


@dataclass
class Scene:
    """The static parts of one job: frame background, neutral face canvas, its alpha, placement."""

    background: np.ndarray  # (H, W) or (H, W, 3) uint8, the frame without the moving face
    canvas: np.ndarray  # (C, C, ch) float32, neutral textured face painted on the background behind it
    alpha: np.ndarray  # (C, C) float32, where the head is (feathered)
    origin: tuple[int, int]  # canvas top-left in the frame (x, y)
    pivot: tuple[float, float]  # face centre in canvas px (head turns about it)
    overlays: dict[int, np.ndarray]  # AU -> (C, C, ch) float32 change of the canvas at full strength
    identity: FaceIdentity
    size: int  # canvas side in px


def _luma(bgr) -> float:
    b, g, r = (float(v) for v in bgr)
    return 0.114 * b + 0.587 * g + 0.299 * r


def _wall(look: SubjectLook, skin: tuple[int, int, int], rng: np.random.Generator) -> np.ndarray:
    """A smooth backdrop; at least 45 grey levels away from the skin (recording labs use plain backdrops that
    set the face off; a face as bright as the wall leaves its outline to the detectors' guess)."""
    w, h = look.frame
    a, b = (np.array(c, np.float32) for c in look.wall)
    gap = _luma(a) - _luma(skin)
    if abs(gap) < 45:
        shift = (45 - abs(gap)) * (1 if (gap >= 0 and _luma(skin) < 180) or _luma(skin) < 75 else -1)
        a, b = np.clip(a + shift, 0, 255), np.clip(b + shift, 0, 255)
    coarse = rng.uniform(0, 1, (6, 8, 1)).astype(np.float32)
    mix = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)[..., None]
    wall = a * (1 - mix) + b * mix
    grain = cv2.GaussianBlur(rng.normal(0, 3, (h, w)).astype(np.float32), (0, 0), 1.5)
    return np.clip(wall + grain[..., None], 0, 255).astype(np.uint8)


def _texture(size: int, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative skin texture (pores, blotches, broad shading), about 5 % deep, float32 ``(size, size)``."""
    gain = np.ones((size, size), np.float32)
    for sigma, depth in ((0.8, 0.03), (3.0, 0.015), (12.0, 0.02)):
        noise = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), sigma)
        gain += depth * noise / max(float(noise.std()), 1e-6)
    return gain


def build_scene(identity: FaceIdentity, look: SubjectLook, aus: Sequence[int]) -> Scene:
    """Compose the static frame and the neutral face canvas of one subject (``aus``: the overlays needed)."""
    rng = np.random.default_rng(look.scene_seed)
    identity = _with_dark_brows(identity)
    s = look.face_width / (2 * identity.face_axes[0])
    size = round(CANONICAL * s)
    fx, fy = look.centre
    origin = (round(fx - identity.centre[0] * s), round(fy - identity.centre[1] * s))
    frame = _wall(look, identity.skin, rng)
    neck = tuple(int(v) for v in np.array(identity.skin) * 0.8)
    fw = look.face_width
    cv2.rectangle(
        frame, (int(fx - 0.17 * fw), int(fy + 0.3 * fw)), (int(fx + 0.17 * fw), int(fy + 1.2 * fw)), neck, -1
    )
    cv2.ellipse(frame, (int(fx), int(fy + 1.55 * fw)), (int(1.3 * fw), int(0.75 * fw)), 0, 0, 360, look.shirt, -1,
                cv2.LINE_AA)  # fmt: skip
    behind = _crop(frame, origin, size)
    painted = behind.copy()
    painter = FacePainter(identity, size)
    painter.draw(painted, lambda au, side: 0.0, fill=False)
    mask = (np.abs(painted.astype(np.int16) - behind).sum(-1) > 0).astype(np.uint8)
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, np.ones((5, 5), np.uint8))
    alpha = cv2.GaussianBlur(mask.astype(np.float32), (0, 0), max(1.0, s * 0.4))
    texture = _texture(size, rng)
    # Light from one side, and the face's roundness: it darkens towards its outline.
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32) / s
    ax, ay = identity.face_axes
    r2 = ((xs - identity.centre[0]) / ax) ** 2 + ((ys - identity.centre[1]) / ay) ** 2
    shade = (1 + 0.06 * np.clip((xs - identity.centre[0]) / 40, -1, 1)) * (1 - 0.18 * np.clip(r2, 0, 1) ** 2)
    for sgn in (-1, 1):  # eye sockets sit deeper than cheeks and forehead: a darker band over the eyes
        ex = identity.centre[0] + sgn * identity.eye_dx
        shade *= 1 - 0.12 * np.exp(-0.5 * (((xs - ex) / 9) ** 2 + ((ys - identity.eye_y + 2) / 5) ** 2))
    gain = (1 + (texture * shade - 1) * mask)[..., None]
    overlays = {}
    drawers = _overlay_painters(painter, identity)
    for au in sorted({a for a in aus if a in drawers or a in (BLINK, 43)}):
        marked = behind.copy() if au in (BLINK, 43) else painted.copy()
        if au in (BLINK, 43):  # the closed lid, faded in over the open eye while the field pulls the lid down
            painter.draw(marked, lambda a, side, au=au: 1.0 if a == au else 0.0, fill=False)
        else:
            drawers[au](marked)
        overlays[au] = (marked.astype(np.float32) - painted) * gain
    canvas = (
        painted.astype(np.float32) * gain
    )  # the head on the scene behind it; ``alpha`` says where the head is
    if look.grey:
        frame = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
        canvas = cv2.cvtColor(canvas, cv2.COLOR_BGR2GRAY)[..., None]
        overlays = {au: cv2.cvtColor(o, cv2.COLOR_BGR2GRAY)[..., None] for au, o in overlays.items()}
    pivot = (identity.centre[0] * s, identity.centre[1] * s)
    return Scene(frame, canvas, alpha, origin, pivot, overlays, identity, size)


def _with_dark_brows(identity: FaceIdentity) -> FaceIdentity:
    """Hair and brows at least 60 grey levels darker than the skin (or the darkest possible): dark skin with
    equally dark brows leaves the cascade detectors no brow line to find."""
    from dataclasses import replace

    room = _luma(identity.skin) - _luma(identity.hair)
    if room >= 60:
        return identity
    k = max(0.0, (_luma(identity.skin) - 60) / max(_luma(identity.hair), 1.0))
    return replace(identity, hair=tuple(int(v * min(k, 1.0)) for v in identity.hair))


def _crop(frame: np.ndarray, origin: tuple[int, int], size: int) -> np.ndarray:
    """``frame[oy:oy+size, ox:ox+size]`` with the frame's edge pixels repeated where the box leaves it."""
    ox, oy = origin
    h, w = frame.shape[:2]
    ys = np.clip(np.arange(oy, oy + size), 0, h - 1)
    xs = np.clip(np.arange(ox, ox + size), 0, w - 1)
    return frame[ys[:, None], xs[None, :]]


def head_pose(
    n: int, fps: float, rng: np.random.Generator, shift: float, turn: float, long_video: bool
) -> np.ndarray:
    """Per-frame head pose ``(T, 3)``: x and y shift (px) and in-plane turn (degrees).

    Short clips: a smooth drift whose range over the clip is ``shift`` px and ``turn`` degrees; long videos:
    slow sways (periods 3-20 s) of that amplitude. Both with a small tremor (2 % of the range).
    """
    t = np.arange(n) / fps
    pose = np.zeros((n, 3))
    periods = (3.0, 20.0) if long_video else (1.5, 6.0)
    for axis, amp in enumerate((shift, shift, turn)):
        for _ in range(2):
            pose[:, axis] += np.sin(2 * np.pi * t / rng.uniform(*periods) + rng.uniform(0, 2 * np.pi))
        if not long_video:
            span = np.ptp(pose[:, axis])
            pose[:, axis] *= 1.0 / span if span > 1e-9 else 0.0
        else:
            pose[:, axis] *= 0.5
        pose[:, axis] = amp * (pose[:, axis] - pose[0, axis] * (not long_video))
        pose[:, axis] += rng.normal(0, 0.02 * amp, n)
    if not long_video:  # the drift direction is random, its range is the drawn one
        pose[:, :2] = pose[:, :2] @ _rotation(rng.uniform(0, 2 * np.pi))
    return pose


def _rotation(angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    return np.array([[c, -s], [s, c]])


def blink_curve(n: int, fps: float, rng: np.random.Generator, per_min: float, busy: np.ndarray) -> np.ndarray:
    """Blinks at ``per_min`` a minute, each 100-300 ms, closed at a third of their course, away from ``busy``."""
    course = np.zeros(n)
    for start in np.flatnonzero(rng.random(n) < per_min / 60 / fps):
        length = max(3, round(rng.uniform(*BLINK_SECONDS) * fps))
        end = start + length
        if end >= n or busy[max(start - length, 0) : end + length].any():
            continue
        course = np.maximum(course, au_course(n, start, start + length // 3, end))
    return course


class FrameMaker:
    """Renders frames of one scene: ``frame(coefficients, overlay weights, pose)`` -> the whole frame (uint8)."""

    def __init__(self, scene: Scene, fields: Mapping[tuple[int, str], np.ndarray], margin: int):
        self.scene = scene
        h, w = scene.background.shape[:2]
        ox, oy = scene.origin
        # The output box: the canvas plus room for head motion, inside the frame.
        self.box = (max(ox - margin, 0), max(oy - margin, 0), min(ox + scene.size + margin, w),
                    min(oy + scene.size + margin, h))  # fmt: skip
        x0, y0, x1, y1 = self.box
        gx, gy = np.meshgrid(
            np.arange(x0, x1, dtype=np.float32) - ox, np.arange(y0, y1, dtype=np.float32) - oy
        )
        self.grid = (gx, gy)
        # Fields over the output box, as x and y planes: a frame's displacement is their weighted sum.
        self.fields = {
            key: _box_planes(f, (x0 - ox, y0 - oy), (x1 - x0, y1 - y0)) for key, f in fields.items()
        }
        self.canvas = np.clip(scene.canvas, 0, 255).astype(np.uint8)
        self.alpha = scene.alpha.astype(np.float32)
        self.out = scene.background.copy()  # only the box is rewritten frame after frame

    def _source(self, overlay: Mapping[int, float]) -> np.ndarray:
        marks = [(self.scene.overlays[au], min(w, 1.0)) for au, w in overlay.items()
                 if w > 1e-3 and au in self.scene.overlays]  # fmt: skip
        if not marks:
            return self.canvas
        canvas = self.scene.canvas.copy()
        for img, w in marks:
            cv2.scaleAdd(img, w, canvas, dst=canvas)
        return np.clip(canvas, 0, 255).astype(np.uint8)

    def _maps(
        self, coefficients: Mapping[tuple[int, str], float], pose: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Where in the canvas each output pixel comes from: the inverse head pose, minus the skin's displacement
        (taken at the output point: the fields are smooth and the head moves by a few px)."""
        gx, gy = self.grid
        px, py = self.scene.pivot
        c, s = float(np.cos(np.radians(pose[2]))), float(np.sin(np.radians(pose[2])))
        dx, dy = px + float(pose[0]), py + float(pose[1])
        mx = cv2.addWeighted(gx, c, gy, s, px - c * dx - s * dy)
        my = cv2.addWeighted(gx, -s, gy, c, py + s * dx - c * dy)
        for key, weight in coefficients.items():
            if weight > 1e-4:
                fx, fy = self.fields[key]
                cv2.scaleAdd(fx, -weight, mx, dst=mx)
                cv2.scaleAdd(fy, -weight, my, dst=my)
        return mx, my

    def frame(self, coefficients: Mapping[tuple[int, str], float], overlay: Mapping[int, float],
              pose: np.ndarray) -> np.ndarray:  # fmt: skip
        mx, my = self._maps(coefficients, pose)
        warped = cv2.remap(self._source(overlay), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        a = cv2.remap(self.alpha, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        x0, y0, x1, y1 = self.box
        region = self.scene.background[y0:y1, x0:x1]
        self.out[y0:y1, x0:x1] = cv2.blendLinear(warped, region, a, 1.0 - a)
        return self.out


def _box_planes(
    field: np.ndarray, offset: tuple[int, int], shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """``field`` (canvas coordinates) over a box at ``offset`` of ``shape`` (w, h), zero outside the canvas,
    as contiguous x and y planes."""
    ox, oy = offset
    w, h = shape
    out = np.zeros((2, h, w), np.float32)
    size = field.shape[0]
    sx0, sy0 = max(ox, 0), max(oy, 0)
    sx1, sy1 = min(ox + w, size), min(oy + h, size)
    if sx0 < sx1 and sy0 < sy1:
        out[:, sy0 - oy : sy1 - oy, sx0 - ox : sx1 - ox] = np.moveaxis(field[sy0:sy1, sx0:sx1], -1, 0)
    return out[0], out[1]


def run_release_job(job) -> int:  # job: megc_vqa.synth.jobs.RenderJob (jobs imports this module lazily)
    """Render and write one job of the release preset; returns the number of files written."""
    look: SubjectLook = job.look
    rng = np.random.default_rng(np.random.SeedSequence(list(job.seed)))
    n = job.n_frames
    coeff: dict[tuple[int, str], np.ndarray] = {}
    for tr in job.tracks:
        curve = tr.peak * tr.scale * au_course(n, tr.onset, tr.apex, tr.offset)
        for side in ("L", "R"):
            if tr.side in (None, side):
                coeff[(tr.au, side)] = coeff.get((tr.au, side), 0) + curve
    busy = np.zeros(n, bool)
    for curve in coeff.values():
        busy |= curve > 0
    blinks = blink_curve(n, job.fps, rng, look.blink_per_min, busy)
    if blinks.any():
        coeff[(BLINK, "L")] = coeff[(BLINK, "R")] = blinks
    pose = head_pose(n, job.fps, rng, look.head_shift, look.head_turn, look.long_video)
    gain = lighting_gain(n, job.fps, rng, look.flicker)
    scene = build_scene(job.identity, look, sorted({au for au, _ in coeff}))
    fields = {key: au_field(job.identity, key[0], key[1], scene.size) for key in coeff}
    reach = np.abs(pose[:, :2]).max() + np.radians(np.abs(pose[:, 2]).max()) * scene.size
    maker = FrameMaker(scene, fields, int(np.ceil(reach)) + 3)
    by_au: dict[int, list[np.ndarray]] = {}
    for (au, _), curve in coeff.items():
        by_au.setdefault(au, []).append(curve)
    marks = {au: sum(curves) / 2 for au, curves in by_au.items() if au in scene.overlays}
    noise = _NoiseBank(scene.background.shape, look.noise, rng)
    params = [cv2.IMWRITE_JPEG_QUALITY, look.jpeg_quality]
    written = 0
    for t, path in enumerate(job.paths):
        if path is None:
            continue
        img = maker.frame({k: float(c[t]) for k, c in coeff.items()}, {au: float(m[t]) for au, m in marks.items()},
                          pose[t])  # fmt: skip
        img = noise.apply(cv2.convertScaleAbs(img, alpha=float(gain[t])), t)
        if not cv2.imwrite(path, img, params):
            raise OSError(f"could not write frame {path}")
        written += 1
    return written


class _NoiseBank:
    """Gaussian sensor noise from a small bank at random offsets, added and subtracted with saturation (fast)."""

    PAD = 16

    def __init__(self, shape: tuple[int, ...], sigma: float, rng: np.random.Generator):
        h, w = shape[:2]
        full = (4, h + self.PAD, w + self.PAD, *shape[2:])
        noise = np.rint(rng.normal(0, sigma, full))
        self.up = np.clip(noise, 0, 255).astype(np.uint8)
        self.down = np.clip(-noise, 0, 255).astype(np.uint8)
        self.shape = (h, w)
        self.rng = rng

    def apply(self, img: np.ndarray, t: int) -> np.ndarray:
        h, w = self.shape
        k, dy, dx = (int(v) for v in self.rng.integers(0, [4, self.PAD, self.PAD]))
        up, down = self.up[k, dy : dy + h, dx : dx + w], self.down[k, dy : dy + h, dx : dx + w]
        return cv2.subtract(cv2.add(img, up), down)  # row-strided views: OpenCV reads them in place
