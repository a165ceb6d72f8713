"""The face pipeline real frames need: one face per clip, a canonical face image, registration to the
onset and optional motion magnification (the switches are :class:`~megc_vqa.visual.face.FaceSettings`).

1. **Face and landmarks** on the onset frame (:func:`~megc_vqa.visual.face.locate_face`: dlib's HOG
   detector on a copy reduced to a 320-px shorter side, the 68 landmarks at full resolution).
2. **Geometry** (:func:`face_geometry`), one per clip, as an inverse affine map from output pixels to source
   pixels: ``crop`` is a square around the landmarks grown by ``margin`` on each side; ``align`` is the
   similarity transform that puts both eye centres level at a fixed inter-ocular distance
   (:data:`ALIGN_IOD` of the side, less with a margin) in a square of ``size`` pixels. A crop that would
   need pixels outside the frame is a skip: the pipeline never pads, stretches or clamps a face silently.
3. **Registration** (``register``): every key frame is brought onto the onset frame by a rigid (Euclidean:
   rotation + translation) transform found with OpenCV's ECC on the parts of the face that do not move in an
   expression (the mask: the nose, the forehead above the brows, the outline at the temples and upper
   cheeks; brows, eyes, mouth, nasolabial folds, cheeks and jaw left out). Why ECC on a masked region
   rather than landmarks tracked per frame: dlib's landmarks jitter by about a pixel from frame to frame,
   as much as a micro-expression moves, so a transform fitted to them would add motion of the size being
   measured; ECC aligns the whole textured rigid region to sub-pixel accuracy, and with the moving
   regions masked out the expression does not pull the fit, so it survives (tested with flow). Phase
   correlation (what the spotter's stabiliser uses) finds translation only; ECC adds the roll of the head.
   Scale change within a clip (under a second) is negligible. The transform is composed with the clip's
   geometry so each frame is resampled once.
4. **Magnification** (``magnify`` = alpha): linear Eulerian against the onset frame, ``I_t + (alpha - 1) *
   G(I_t - I_onset)`` with ``G`` a small Gaussian low-pass: to first order a motion ``d`` becomes
   ``alpha * d`` (Wu et al., SIGGRAPH 2012). The onset frame stays as it is. Sensor noise in the difference
   is amplified too, so alpha is bounded per clip: the noise level (a robust spread of the low-passed
   difference over the face) times ``alpha - 1`` stays under :data:`NOISE_BOUND` grey levels; a factor over
   that is lowered, with a warning naming the clip and both factors.

Every failure is a :class:`~megc_vqa.visual.errors.FaceSkip` naming the clip: no face, two faces, a face cut
by the border, a crop outside the frame, a face that leaves the frame (or stops matching the onset face) at
a key frame, frames of another size or orientation, grey frames mixed with colour ones.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from megc_vqa.visual.face import Box, Face, FaceSettings, FaceSkip, locate_face

logger = logging.getLogger(__name__)

# Canonical face at margin 0: eye centres at x = 0.5 -/+ ALIGN_IOD / 2 of the side, at y = ALIGN_EYE_Y; the
# brows then sit near 0.29 and the chin near 0.83 of the side. A margin shrinks the face toward the centre.
ALIGN_IOD = 0.36
ALIGN_EYE_Y = 0.38
ALIGN_SIDE = 256  # side of the aligned image when no ``size`` is given
# Registration works on a copy whose face region is about this many pixels wide (sub-pixel accurate, fast).
REGISTER_SIDE = 128
# Correlation of tiny copies (24 px) of the onset's face image and a key frame's, after registration (or the
# crop, without it): under this the face left the box or was covered. Head motion and expressions keep it
# above 0.8.
MIN_FACE_MATCH = 0.5
NOISE_BOUND = 2.0  # grey levels of amplified noise a magnified frame may gain


@dataclass(frozen=True)
class FaceGeometry:
    """A clip's face geometry: ``matrix`` (2x3) maps output pixels to onset-frame pixels; ``out_size`` is
    ``(width, height)``; ``mask`` marks the rigid face region in output pixels (registration, checks); ``box``
    is the source region the output covers (apex estimation, ``VisualInputs.face_box``); ``face`` is what
    was found."""

    matrix: np.ndarray
    out_size: tuple[int, int]
    mask: np.ndarray
    box: Box
    face: Face


def _affine3(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def _corners_inside(matrix: np.ndarray, out_size: tuple[int, int], shape: tuple[int, ...]) -> bool:
    width, height = out_size
    corners = np.array([[0, 0, 1], [width - 1, 0, 1], [0, height - 1, 1], [width - 1, height - 1, 1]], float)
    mapped = corners @ matrix.T
    frame_h, frame_w = shape[:2]
    return bool(
        (mapped[:, 0] >= -0.5).all()
        and (mapped[:, 1] >= -0.5).all()
        and (mapped[:, 0] <= frame_w - 0.5).all()
        and (mapped[:, 1] <= frame_h - 0.5).all()
    )


def _source_box(matrix: np.ndarray, out_size: tuple[int, int], shape: tuple[int, ...]) -> Box:
    width, height = out_size
    corners = np.array([[0, 0, 1], [width, 0, 1], [0, height, 1], [width, height, 1]], float) @ matrix.T
    x0, y0 = np.floor(corners.min(axis=0)).astype(int)
    x1, y1 = np.ceil(corners.max(axis=0)).astype(int)
    x0, y0 = max(0, x0), max(0, y0)
    return (int(x0), int(y0), int(min(shape[1], x1) - x0), int(min(shape[0], y1) - y0))


def _rigid_mask(face: Face, to_output: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """The face region that does not move in an expression, in output pixels (uint8 0/255)."""
    width, height = out_size
    mask = np.zeros((height, width), np.uint8)
    if face.landmarks is None:  # Haar: the box's middle band (nose and cheeks), brows and mouth left out
        x, y, w, h = face.box
        points = np.array([[x + 0.1 * w, y + 0.4 * h], [x + 0.9 * w, y + 0.72 * h]], np.float32)
        (ax, ay), (bx, by) = cv2.transform(points[None], to_output)[0]
        cv2.rectangle(mask, (round(ax), round(ay)), (round(bx), round(by)), 255, -1)
        return mask
    points = cv2.transform(face.landmarks[None].astype(np.float32), to_output)[0]
    iod = float(np.linalg.norm(points[36:42].mean(0) - points[42:48].mean(0)))
    # The nose (bridge to tip), the forehead above the brows (a gap left for brow raises) and the face's
    # outline at the temples and upper cheeks: none of them moves in an expression, unlike brows, eyes,
    # mouth, nasolabial folds, cheeks raised by a smile and a dropping jaw.
    nose = cv2.convexHull(points[27:36].astype(np.int32))
    cv2.fillConvexPoly(mask, nose, 255)
    mask = cv2.dilate(
        mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)), iterations=max(1, round(iod * 0.1))
    )
    brows = points[17:27]
    up = (points[36:48].mean(0) - points[27:31].mean(0)) / max(1.0, iod)  # roughly (0, -0.5): eyes above nose
    direction = up / max(1e-6, float(np.linalg.norm(up)))
    low, high = brows + direction * 0.2 * iod, brows + direction * 0.7 * iod
    cv2.fillPoly(mask, [np.vstack([low, high[::-1]]).astype(np.int32)], 255)
    thick = max(2, round(iod * 0.3))
    for side in (points[0:5], points[12:17]):
        cv2.polylines(mask, [side.astype(np.int32)], False, 255, thick)
    # ... inside the face only: background at the outline stays still while the head moves
    inside = np.zeros_like(mask)
    cv2.fillConvexPoly(inside, cv2.convexHull(np.vstack([points[:27], high]).astype(np.int32)), 255)
    inside = cv2.erode(
        inside, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)), iterations=max(1, round(iod * 0.08))
    )
    return cv2.bitwise_and(mask, inside)


def face_geometry(onset: np.ndarray, settings: FaceSettings, size: int | None, label: str) -> FaceGeometry:
    """Find the face on the onset frame and the clip's output geometry (see the module docstring). Raises
    :class:`FaceSkip` (naming ``label``) for every face that cannot be used as it is."""
    face = locate_face(onset, settings.detector, label=label, face=settings.face)
    shape = onset.shape
    height, width = shape[:2]
    margin = settings.margin
    if settings.face == "align":
        side = size or ALIGN_SIDE
        iod = ALIGN_IOD / (1 + 2 * margin) * side
        eye_y = (0.5 + (ALIGN_EYE_Y - 0.5) / (1 + 2 * margin)) * side
        left, right = face.eyes()
        src = np.array([left, right], np.float32)
        dst = np.array([[side / 2 - iod / 2, eye_y], [side / 2 + iod / 2, eye_y]], np.float32)
        to_output = _similarity(src, dst)
        matrix = cv2.invertAffineTransform(to_output)
        out_size = (side, side)
        what = f"the aligned face (margin {margin:g})"
    elif settings.face == "crop":
        x0, y0, x1, y1 = face.extent()
        side = round(max(x1 - x0, y1 - y0) * (1 + 2 * margin))
        left, top = round((x0 + x1) / 2 - side / 2), round((y0 + y1) / 2 - side / 2)
        matrix = np.array([[1.0, 0.0, left], [0.0, 1.0, top]])
        to_output = cv2.invertAffineTransform(matrix)
        out_size = (side, side)
        what = f"the crop with margin {margin:g}"
    else:  # none or box with register/magnify: the whole frame
        matrix = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
        to_output, out_size, what = matrix, (width, height), "the frame"
    if not _corners_inside(matrix, out_size, shape):
        box = _source_box(matrix, out_size, (10**9, 10**9))
        raise FaceSkip(
            f"{label}: skipped: {what} would fall outside the {width}x{height} frame (it needs x "
            f"{box[0]}..{box[0] + box[2]}, y {box[1]}..{box[1] + box[3]}); lower face_margin or use face: none"
        )
    mask = _rigid_mask(face, to_output, out_size)
    return FaceGeometry(matrix, out_size, mask, _source_box(matrix, out_size, shape), face)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2x3 similarity (rotation, uniform scale, translation) taking two points onto two points."""
    (ax, ay), (bx, by) = src
    (cx, cy), (dx, dy) = dst
    s_vec, d_vec = complex(bx - ax, by - ay), complex(dx - cx, dy - cy)
    z = d_vec / s_vec  # scale * e^(i angle)
    t = complex(cx, cy) - z * complex(ax, ay)
    return np.array([[z.real, -z.imag, t.real], [z.imag, z.real, t.imag]])


def warp(frame: np.ndarray, matrix: np.ndarray, out_size: tuple[int, int]) -> np.ndarray:
    """``frame`` resampled through an output->source map (bilinear); a plain integer crop is sliced."""
    if np.allclose(matrix[:, :2], np.eye(2)) and np.allclose(matrix[:, 2], np.round(matrix[:, 2])):
        x, y = round(matrix[0, 2]), round(matrix[1, 2])
        return np.ascontiguousarray(frame[y : y + out_size[1], x : x + out_size[0]])
    return cv2.warpAffine(
        frame,
        matrix,
        out_size,
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_REPLICATE,
    )


def _grey_f32(image: np.ndarray) -> np.ndarray:
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    return grey.astype(np.float32)


def _work_window(geometry: FaceGeometry) -> tuple[int, int, int, int, float]:
    """The region of the output registration looks at (the mask's bounds, padded) and its work scale."""
    ys, xs = np.nonzero(geometry.mask)
    width, height = geometry.out_size
    if xs.size == 0:
        return 0, 0, width, height, min(1.0, REGISTER_SIDE / max(1, min(width, height)))
    pad = max(4, (xs.max() - xs.min()) // 8)
    x0, y0 = max(0, xs.min() - pad), max(0, ys.min() - pad)
    x1, y1 = min(width, xs.max() + pad + 1), min(height, ys.max() + pad + 1)
    return int(x0), int(y0), int(x1), int(y1), min(1.0, REGISTER_SIDE / max(1, x1 - x0))


def _coarse(image: np.ndarray, side: int = 24) -> np.ndarray:
    """A tiny grey copy (shorter side ``side``): a face shifted by head motion still matches itself there,
    while background where the face was does not."""
    grey = _grey_f32(image)
    scale = side / max(1, min(grey.shape))
    return cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def _masked_match(a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> float:
    """Normalised correlation of two grey images over a mask (1: identical up to gain and offset)."""
    sel = mask > 0
    if sel.sum() < 16:
        return 1.0
    x, y = a[sel] - a[sel].mean(), b[sel] - b[sel].mean()
    denom = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / denom) if denom > 0 else 1.0


class Registrar:
    """Brings key frames onto the onset frame through one clip's geometry (see the module docstring)."""

    def __init__(self, geometry: FaceGeometry, onset: np.ndarray, label: str, register: bool) -> None:
        self.geometry, self.label, self.register = geometry, label, register
        x0, y0, x1, y1, _ = _work_window(geometry)
        # Registration sees the face at about REGISTER_SIDE px whatever the output size: resampled from the
        # source frame through the geometry, so a small output (64 px) loses nothing here.
        scale = REGISTER_SIDE / max(1, x1 - x0)
        self.work_size = (max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale)))
        self.work_to_output = np.array([[1 / scale, 0, x0], [0, 1 / scale, y0], [0, 0, 1]], np.float64)
        self.template = self._work(onset, geometry.matrix)
        self.mask = cv2.warpAffine(
            geometry.mask,
            self.work_to_output[:2],
            self.work_size,
            flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP,
        )
        self.coarse = _coarse(warp(onset, geometry.matrix, geometry.out_size))

    def _work(self, frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        """The frame's face region at work scale, through an output->source map, lightly blurred."""
        to_source = (_affine3(matrix) @ self.work_to_output)[:2]
        grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) if frame.ndim == 3 else frame  # uint8: cheap to warp
        part = cv2.warpAffine(
            grey, to_source, self.work_size, flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )  # fmt: skip
        return cv2.GaussianBlur(part.astype(np.float32), (3, 3), 0)

    def __call__(self, frame: np.ndarray, index: int, role: str) -> np.ndarray:
        """The frame in output pixels, registered to the onset when asked; :class:`FaceSkip` when the face
        leaves the frame or no longer matches the onset's."""
        g = self.geometry
        matrix = g.matrix
        if role == "onset":
            return warp(frame, matrix, g.out_size)
        if self.register:
            matrix = self._registered_matrix(frame, index, role)
            if not _corners_inside(matrix, g.out_size, frame.shape):
                raise FaceSkip(
                    f"{self.label}: skipped: the face leaves the frame at frame {index} ({role}) once head "
                    "motion is followed"
                )
        out = warp(frame, matrix, g.out_size)
        match = _masked_match(self.coarse, _coarse(out), np.ones_like(self.coarse, np.uint8))
        if match < MIN_FACE_MATCH:
            raise FaceSkip(
                f"{self.label}: skipped: at frame {index} ({role}) the face no longer matches the onset's "
                f"(correlation {match:.2f} < {MIN_FACE_MATCH}): it left the box or the frame, or was covered"
            )
        return out

    def _registered_matrix(self, frame: np.ndarray, index: int, role: str) -> np.ndarray:
        g = self.geometry
        moving = self._work(frame, g.matrix)
        warp_work = np.eye(2, 3, dtype=np.float32)
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 40, 1e-4)
        # Coarse to fine: ECC on the sparse rigid mask alone has a narrow basin (a head that moved several
        # pixels would pull it elsewhere), so it starts from the translation of the whole window at half
        # scale, then the rigid transform of the whole window (the expression is a small part of it), and
        # ends on the rigid mask, where the expression does not pull.
        half = [
            cv2.resize(x, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA) for x in (self.template, moving)
        ]
        steps = (
            (half, cv2.MOTION_TRANSLATION, None, 2.0),
            ((self.template, moving), cv2.MOTION_EUCLIDEAN, None, 1.0),
            ((self.template, moving), cv2.MOTION_EUCLIDEAN, self.mask, 1.0),
        )
        for (template, image), motion, mask, factor in steps:
            start = warp_work.copy()
            start[:, 2] /= factor
            try:
                _, found = cv2.findTransformECC(template, image, start, motion, criteria, mask, 5)
            except cv2.error:
                if mask is None:
                    continue  # a coarse step that fails leaves the start as it was
                raise FaceSkip(
                    f"{self.label}: skipped: registration of frame {index} ({role}) to the onset did not "
                    "converge (the head moved too far, or the face left the frame)"
                ) from None
            warp_work = found.copy()
            warp_work[:, 2] *= factor
        # out(x) = frame(M T E T^-1 x), T: work pixels -> output pixels
        t = self.work_to_output
        correction = t @ _affine3(warp_work.astype(np.float64)) @ np.linalg.inv(t)
        return (_affine3(g.matrix) @ correction)[:2]


def check_frames_alike(
    headers: dict[int, tuple[tuple[int, int], str] | None], onset: int, label: str
) -> None:
    """:class:`FaceSkip` when a key frame differs from the onset frame in size, orientation or colour mode
    (the onset's face geometry would not fit it); ``headers`` maps frame index to ``((w, h), mode)``."""
    reference = headers.get(onset)
    if reference is None:
        return
    (ref_w, ref_h), ref_mode = reference
    for index, header in sorted(headers.items()):
        if header is None:
            continue
        (w, h), mode = header
        if (w, h) != (ref_w, ref_h):
            turned = (w > h) != (ref_w > ref_h) and w != h and ref_w != ref_h
            raise FaceSkip(
                f"{label}: skipped: frame {index} is {w}x{h}{' (turned: portrait against landscape)' if turned else ''}"
                f", the onset frame {ref_w}x{ref_h}: one face geometry cannot serve both; check the folder holds "
                "one clip's frames"
            )
        if _is_grey(mode) != _is_grey(ref_mode):
            raise FaceSkip(
                f"{label}: skipped: grey and colour frames mixed (frame {index} is {mode}, the onset frame "
                f"{ref_mode}): registration and magnification compare grey levels across frames"
            )


def _is_grey(mode: str) -> bool:
    return mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F", "P") and mode != "P"


def magnify(
    frames: dict[int, np.ndarray], onset: int, alpha: float, label: str, mask: np.ndarray | None = None
) -> dict[int, np.ndarray]:
    """Linear Eulerian magnification of every frame's difference from the onset by ``alpha`` (see the module
    docstring); alpha is lowered, with a warning, where it would amplify noise into the whole frame."""
    if alpha == 1.0 or len(frames) < 2:
        return frames
    reference = frames[onset].astype(np.float32)
    sigma = max(0.8, min(reference.shape[:2]) / 200)
    deltas = {
        i: cv2.GaussianBlur(f.astype(np.float32) - reference, (0, 0), sigma)
        for i, f in frames.items()
        if i != onset
    }
    noise = 0.0
    for delta in deltas.values():
        values = np.abs(delta if delta.ndim == 2 else delta.mean(axis=2))
        if mask is not None and mask.shape != values.shape:
            mask = cv2.resize(mask, (values.shape[1], values.shape[0]), interpolation=cv2.INTER_NEAREST)
        if mask is not None and (mask > 0).sum() > 16:
            values = values[mask > 0]
        noise = max(noise, 1.4826 * float(np.median(values)))
    used = alpha
    if noise * (alpha - 1) > NOISE_BOUND:
        used = max(1.0, 1 + NOISE_BOUND / noise)
        logger.warning(
            "%s: magnification x%g would amplify noise of %.1f grey levels into the whole frame; bounded to x%.2f",
            label, alpha, noise, used,
        )  # fmt: skip
    out = {onset: frames[onset]}
    for i, delta in deltas.items():
        out[i] = np.clip(frames[i].astype(np.float32) + (used - 1) * delta, 0, 255).astype(np.uint8)
    return out
