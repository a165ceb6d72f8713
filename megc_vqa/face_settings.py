"""The face pipeline's switches (:class:`FaceSettings`), kept apart from :mod:`megc_vqa.visual` so recipes,
the training record and the command-line parsers can check them without loading OpenCV or dlib. What each
switch does is in :mod:`megc_vqa.visual.facepipe`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FACE_MODES: tuple[str, ...] = ("none", "box", "crop", "align")
FACE_DETECTORS: tuple[str, ...] = ("auto", "dlib", "haar")
# A magnification factor above this is refused: past it even a one-pixel motion breaks the first-order
# (linear Eulerian) approximation on faces of a few hundred pixels (Wu et al. 2012: (1 + alpha) * delta
# must stay under a fraction of the spatial wavelength).
MAX_MAGNIFY = 20.0


@dataclass(frozen=True)
class FaceSettings:
    """The face pipeline's switches (the visual settings ``face``, ``face_margin``, ``face_detector``,
    ``register`` and ``magnify`` of a training record).

    face: ``none`` (full frame); ``box`` (the earlier ``face_crop: true``: the Haar box of the onset frame
        grown by ``margin`` and clamped to the frame, the full frame with a warning when no face is found);
        ``crop`` (a square around the 68 landmarks, or the detector's box, grown by ``margin`` on each side);
        ``align`` (a similarity transform puts the eyes level at a fixed inter-ocular distance in a square
        image; needs the landmarks, so dlib).
    margin: share of the face's size added on each side (``crop``, ``box``), or around the canonical face
        (``align``).
    detector: ``auto`` (dlib when installed, else OpenCV's Haar cascade, said once in the log), ``dlib`` or
        ``haar``. ``box`` always uses Haar (that is what it means).
    register: bring every frame onto the onset frame (a rigid transform found by ECC on the face without
        brows, eyes and mouth) before flow, so head motion is removed and the expression is not.
    magnify: motion magnification factor (linear Eulerian, against the onset); 1 is off. Bounded per clip
        so that sensor noise is never amplified into the whole frame (with a warning).
    """

    face: str = "none"
    margin: float = 0.15
    detector: str = "auto"
    register: bool = False
    magnify: float = 1.0

    def __post_init__(self) -> None:
        if self.face not in FACE_MODES:
            raise ValueError(f"face must be one of {', '.join(FACE_MODES)}, got {self.face!r}")
        if self.detector not in FACE_DETECTORS:
            raise ValueError(
                f"face_detector must be one of {', '.join(FACE_DETECTORS)}, got {self.detector!r}"
            )
        if isinstance(self.margin, bool) or not isinstance(self.margin, (int, float)):
            raise ValueError(f"face_margin must be a number, got {self.margin!r}")
        if not 0.0 <= float(self.margin) <= 1.0:
            raise ValueError(
                f"face_margin must be between 0 and 1 (a share of the face's size), got {self.margin}"
            )
        if not isinstance(self.register, bool):
            raise ValueError(f"register must be true or false, got {self.register!r}")
        if isinstance(self.magnify, bool) or not isinstance(self.magnify, (int, float)):
            raise ValueError(f"magnify must be a number, got {self.magnify!r}")
        if not 1.0 <= float(self.magnify) <= MAX_MAGNIFY:
            raise ValueError(
                f"magnify must be between 1 (off) and {MAX_MAGNIFY:g}, got {self.magnify}: a larger factor "
                "amplifies noise and breaks the linear approximation; use 2-10"
            )
        if self.face == "box" and (self.register or self.magnify != 1.0):
            raise ValueError(
                "face: box is the earlier Haar face crop (face_crop: true) and has no registration or "
                "magnification; use face: crop or align with register/magnify"
            )
        object.__setattr__(self, "margin", float(self.margin))
        object.__setattr__(self, "magnify", float(self.magnify))

    @classmethod
    def legacy(cls, face_crop: bool) -> FaceSettings:
        """What the earlier ``face_crop`` switch meant: ``box`` with the 15% margin, or nothing."""
        return cls(face="box", margin=0.15, detector="haar") if face_crop else cls()

    @classmethod
    def from_keys(cls, keys: Any) -> FaceSettings:
        """From an object with the recipe keys ``face``, ``face_crop`` (the earlier switch), ``face_margin``,
        ``face_detector``, ``register`` and ``magnify`` (a recipe's data arguments, export settings); a key
        it lacks keeps its default. ``face_crop: true`` is ``face: box``; with another ``face`` it is a
        ValueError."""
        face = getattr(keys, "face", None)
        if getattr(keys, "face_crop", False):
            if face not in (None, "none", "box"):
                raise ValueError(
                    f"face_crop: true (the earlier switch, face: box) and face: {face} disagree; keep only face"
                )
            face = "box"
        default = cls()
        return cls(
            face=face or "none",
            margin=getattr(keys, "face_margin", default.margin),
            detector=getattr(keys, "face_detector", default.detector),
            register=getattr(keys, "register", default.register),
            magnify=getattr(keys, "magnify", default.magnify),
        )

    @property
    def pipeline(self) -> bool:
        """Whether the face pipeline (detection with skips, geometry, registration, magnification) runs."""
        return self.face in ("crop", "align") or self.register or self.magnify != 1.0

    def key(self) -> dict[str, Any]:
        """The settings as plain values (cache keys, run summaries)."""
        return {
            "face": self.face,
            "face_margin": self.margin,
            "face_detector": self.detector,
            "register": self.register,
            "magnify": self.magnify,
        }
