"""Draws one frame of a synthetic face with OpenCV primitives, AU by AU.

Coordinates are canonical 128-unit positions scaled to the frame size and passed to OpenCV with
fractional bits, so sub-pixel AU motion stays visible and anti-aliased. ``a(au, side)`` gives an AU's
intensity on the subject's ``"L"`` (image right) or ``"R"`` (image left) half.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

CANONICAL = 128.0
BLINK = 45  # FACS blink; drawn like AU43 but never part of an expression
_SHIFT = 4  # fractional bits for cv2 coordinates: sub-pixel motion stays visible
_SCALE = 1 << _SHIFT


def _pts(points, s: float) -> np.ndarray:
    return np.rint(np.asarray(points) * (s * _SCALE)).astype(np.int32).reshape(-1, 1, 2)


_T = np.linspace(0, 1, 7)[:, None]
# Rows: curve points; columns: weights of (p0, p1, p2) for a quadratic through p1 at t = 0.5.
_CURVE_BASIS = np.hstack([(1 - _T) ** 2 - (1 - _T) * _T, 4 * (1 - _T) * _T, _T**2 - (1 - _T) * _T])


def _curve(p0, p1, p2) -> np.ndarray:
    """Points of a quadratic curve from p0 to p2 passing through p1 at its middle."""
    return _CURVE_BASIS @ np.array((p0, p1, p2), dtype=np.float64)


def _mix(a, b, k: float) -> tuple[int, int, int]:
    k = min(max(float(k), 0.0), 1.0)
    return tuple(round(x * (1 - k) + y * k) for x, y in zip(a, b, strict=True))


@dataclass(frozen=True)
class FaceIdentity:
    """One synthetic subject's appearance: colours (BGR) and geometry in canonical 128-unit coordinates."""

    background: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    lips: tuple[int, int, int]
    iris: tuple[int, int, int]
    centre: tuple[float, float]
    face_axes: tuple[float, float]
    eye_y: float
    eye_dx: float
    eye_hw: float
    eye_open: float
    iris_r: float
    brow_gap: float
    brow_hw: float
    brow_thick: float
    nose_y: float
    nose_hw: float
    mouth_y: float
    mouth_hw: float
    upper_lip: float
    lower_lip: float


class FacePainter:
    """Draws one frame of one identity; ``a(au, side)`` gives the AU's intensity on that side."""

    def __init__(self, identity: FaceIdentity, size: int):
        self.f, self.size, self.s = identity, size, size / CANONICAL
        self.dark = tuple(int(v * 0.45) for v in identity.skin)

    def poly(self, img, points, colour, closed=True, thick=1):
        pts = _pts(points, self.s)
        if closed:
            cv2.fillPoly(img, [pts], colour, cv2.LINE_AA, _SHIFT)
        else:
            t = max(1, round(thick * self.s))
            cv2.polylines(img, [pts], False, colour, t, cv2.LINE_AA, _SHIFT)

    def ellipse(self, img, centre, axes, colour, angle=0.0):
        c = tuple(round(v * self.s * _SCALE) for v in centre)
        ax = tuple(max(1, round(v * self.s * _SCALE)) for v in axes)
        cv2.ellipse(img, c, ax, angle, 0, 360, colour, -1, cv2.LINE_AA, _SHIFT)

    def crease(self, img, points, strength: float, thick=1.0):
        """A wrinkle line that darkens with an AU's intensity (invisible at 0)."""
        if strength > 0.02:
            self.poly(img, points, _mix(self.f.skin, self.dark, 0.85 * strength), closed=False, thick=thick)

    def draw(self, img: np.ndarray, a, fill: bool = True) -> None:
        """Draw the face centred as its identity says (head motion shifts the finished picture); ``fill=False``
        draws over what ``img`` holds (the release preset's scene) instead of the identity's flat background."""
        f = self.f
        cx, cy = f.centre
        if fill:
            img[:] = f.background
        jaw = 7 * max(a(26, "L"), a(26, "R"))
        ax, ay = f.face_axes
        self.ellipse(img, (cx, cy - 0.25 * ay), (ax + 4, 0.88 * ay), f.hair)
        self.poly(
            img,
            [(cx - 14, cy + 30), (cx + 14, cy + 30), (cx + 16, 140), (cx - 16, 140)],
            _mix(f.skin, self.dark, 0.25),
        )
        for sgn in (-1, 1):
            self.ellipse(img, (cx + sgn * ax, f.eye_y + 5), (5, 9), _mix(f.skin, self.dark, 0.15))
        self.ellipse(img, (cx, cy + jaw / 2), (ax, ay + jaw / 2), f.skin)
        forehead = max(a(1, "L"), a(1, "R"), a(2, "L"), a(2, "R"))
        for k in range(3):  # forehead lines appear when the brows rise
            y = f.eye_y - f.brow_gap - 9 - 4 * k
            self.crease(
                img, _curve((cx - 14, y + 1), (cx, y - 1), (cx + 14, y + 1)), forehead * (1 - 0.2 * k)
            )
        for side, sgn in (("L", 1), ("R", -1)):
            self._half(img, a, side, sgn, cx)
        # Frown lines between the brows (AU4) and nose wrinkles (AU9).
        frown = max(a(4, "L"), a(4, "R"))
        brow_y = f.eye_y - f.brow_gap
        for sgn in (-1, 1):
            self.crease(img, [(cx + sgn * 2.5, brow_y - 4), (cx + sgn * 1.5, brow_y + 4)], frown, 1.2)
        wrinkle = max(a(9, "L"), a(9, "R"))
        for k in range(3):
            y = f.eye_y + 4 + 3 * k
            self.crease(img, [(cx - 4, y), (cx, y - 1), (cx + 4, y)], wrinkle, 1.0)
        self._mouth(img, a, cx, jaw)

    def _half(self, img, a, side, sgn, cx) -> None:
        """Brow, eye, cheek, nostril, nasolabial fold and dimple of one side."""
        f = self.f
        ex, ey = cx + sgn * f.eye_dx, f.eye_y
        # Cheek (AU6 lifts it, with crow's feet at the outer eye corner).
        cheek = a(6, side)
        self.ellipse(
            img,
            (ex + sgn * 2, ey + 13 - 6 * cheek),
            (7, 4.5),
            _mix(f.skin, (90, 90, 230), 0.18 + 0.2 * cheek),
        )
        for k in (-1, 0, 1):
            o = (ex + sgn * (f.eye_hw + 2), ey + 2 * k)
            self.crease(img, [o, (o[0] + sgn * 4, o[1] + 1.5 * k)], cheek)
        # Eye: lids from upper/lower curves; AU5 opens, AU7 tightens, AU6 pushes the lower lid, AU43/blink close.
        closure = max(a(43, side), a(BLINK, side))
        lower = f.eye_open * 0.8 - 1.2 * cheek - 2.0 * a(7, side)
        upper = -f.eye_open * (1 + 0.9 * a(5, side) - 0.3 * a(7, side))
        upper = upper * (1 - closure) + lower * closure
        inner, outer = (ex - sgn * f.eye_hw, ey), (ex + sgn * f.eye_hw, ey - 0.5)
        top = _curve(inner, (ex, ey + upper), outer)
        bottom = _curve(outer, (ex, ey + max(lower, upper)), inner)
        self.poly(img, np.vstack([top, bottom]), (235, 238, 240))
        ang = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        ix, iy = ex + f.iris_r * np.cos(ang), ey + 0.3 + f.iris_r * np.sin(ang)
        top_y, bot_y = np.interp(ix, *_sorted_xy(top)), np.interp(ix, *_sorted_xy(bottom))
        iris = np.stack([ix, np.clip(iy, top_y, np.maximum(bot_y, top_y))], axis=1)
        self.poly(img, iris, f.iris)
        self.poly(img, top, (25, 25, 30), closed=False, thick=1.2)
        self.poly(img, bottom, _mix(f.skin, self.dark, 0.6), closed=False, thick=0.8)
        # Brow: AU1 lifts its inner end, AU2 its outer end, AU4 lowers and pulls it in, AU9 drags the inner end.
        by = ey - f.brow_gap
        lift_in, lift_out = 7 * a(1, side), 7 * a(2, side)
        low = 5 * a(4, side)
        brow = [
            (cx + sgn * (f.eye_dx - f.brow_hw + 2 - 3 * a(4, side)), by - lift_in + low + 2 * a(9, side)),
            (ex, by - 2.5 - 0.5 * lift_in - 0.6 * lift_out + 0.7 * low),
            (ex + sgn * f.brow_hw, by - lift_out + 0.3 * low + 1),
        ]
        self.poly(img, _curve(*brow), f.hair, closed=False, thick=f.brow_thick)
        # Nostril (AU9/AU10 lift it, AU38 flares, AU39 narrows) and the nasolabial fold.
        ny = f.nose_y - 3.5 * a(9, side) - 1.5 * a(10, side)
        flare = 1 + 0.6 * a(38, side) - 0.4 * a(39, side)
        self.poly(
            img,
            _curve((cx, f.eye_y + 3), (cx + sgn * 1.5, ny - 6), (cx + sgn * 2.5, ny)),
            self.dark,
            False,
            0.8,
        )
        self.ellipse(img, (cx + sgn * f.nose_hw * 0.5, ny + 0.5), (2.2 * flare, 1.2 * flare), (40, 40, 60))
        fold = 0.25 + 0.6 * max(a(10, side), a(11, side), 0.7 * a(12, side), a(9, side))
        corner = self.corner(a, side, sgn, cx)
        self.crease(
            img,
            _curve(
                (cx + sgn * (f.nose_hw + 1), ny - 2),
                (corner[0] + sgn * 2, (ny + corner[1]) / 2),
                (corner[0] + sgn * 4, corner[1] + 4),
            ),
            fold,
        )
        if a(14, side) > 0.02:  # dimple beside the mouth corner
            self.ellipse(
                img,
                (corner[0] + sgn * 3, corner[1] + 1),
                (1.2, 2.5),
                _mix(f.skin, self.dark, 0.9 * a(14, side)),
            )

    def corner(self, a, side, sgn, cx) -> tuple[float, float]:
        """Mouth corner of one side: AU12 pulls up and out, AU15 down, AU20 sideways, AU14/18/23/24 inwards."""
        f = self.f
        x = (
            f.mouth_hw
            + 5 * a(12, side)
            + 6 * a(20, side)
            - 3 * a(14, side)
            - 5 * a(18, side)
            - 2.5 * a(23, side)
            - 2 * a(24, side)
        )
        y = f.mouth_y - 7 * a(12, side) + 6 * a(15, side) + 1.5 * a(20, side) - 1 * a(14, side)
        return cx + sgn * x, y

    def _mouth(self, img, a, cx, jaw) -> None:
        f = self.f

        def both(au: int) -> float:
            return (a(au, "L") + a(au, "R")) / 2

        left, right = self.corner(a, "L", 1, cx), self.corner(a, "R", -1, cx)
        mid_y = (left[1] + right[1]) / 2
        thin = 1 - 0.55 * max(both(23), both(24))
        seam = f.mouth_y - 4.5 * both(10) - 4 * both(17) + 1.5 * both(24)
        gap = 4.5 * both(25) + jaw + 3.5 * both(16)
        upper_top = seam - f.upper_lip * thin - 0.5
        lower_seam = seam + gap
        lower_bottom = lower_seam + f.lower_lip * thin
        if gap > 0.3:  # open mouth: dark interior with a hint of teeth
            inner = np.vstack([_curve(right, (cx, seam + 0.5), left), _curve(left, (cx, lower_seam), right)])
            self.poly(img, inner, (35, 30, 60))
            if gap > 2.5:
                self.poly(
                    img,
                    _curve((cx - 7, seam + 0.8), (cx, seam + 1.8), (cx + 7, seam + 0.8)),
                    (225, 230, 235),
                    False,
                    1.5,
                )
        upper = np.vstack(
            [_curve(right, (cx, upper_top + 0.3 * (mid_y - seam)), left), _curve(left, (cx, seam), right)]
        )
        lower = np.vstack(
            [
                _curve(left, (cx, lower_seam), right),
                _curve(right, (cx, lower_bottom + 0.3 * (mid_y - seam)), left),
            ]
        )
        self.poly(img, upper, f.lips)
        self.poly(img, lower, _mix(f.lips, (200, 200, 255), 0.15))
        # Chin: AU17 pushes the chin boss up (crease rises and darkens); AU26 drops the jaw.
        chin = max(a(17, "L"), a(17, "R"))
        cy = lower_bottom + 6 - 6 * chin + 0.4 * jaw
        self.crease(img, _curve((cx - 6, cy), (cx, cy + 1.5), (cx + 6, cy)), 0.3 + 0.7 * chin, 1.0)


def _sorted_xy(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(points[:, 0])
    return points[order, 0], points[order, 1]
