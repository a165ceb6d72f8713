"""The realism presets of the synthetic data: what each release looks like, and one subject's look in it.

``synthetic`` (the default) is the original preset: square frames that the face fills, AU motion of 5-8 % of
the face width, flat colour. ``release`` draws each dataset as its release is recorded: the frame size, the
face's size and place in the frame (varying by subject), skin texture, micro-expression amplitude of a pixel
or two, head drift larger than the expression, blinks, lighting flicker, sensor noise and JPEG compression.
Every figure below is either a published one (source named) or a stated assumption (argued); docs/realism.md
holds the calibration table that measures what the generator produces against them.

Sources (short names used below):
    Yan2014     W.-J. Yan et al., "CASME II: an improved spontaneous micro-expression database and the baseline
                evaluation", PLoS ONE 9(1) e86041, 2014: 640x480 at 200 fps, face about 280x340 px, lighting
                without flicker.
    Davison2018 A. K. Davison et al., "SAMM: a spontaneous micro-facial movement dataset", IEEE TAFFC 9(1)
                116-129, 2018: 2040x1088 greyscale at 200 fps, face about 400x400 px, LED lighting.
    Li2013      X. Li et al., "A spontaneous micro-expression database: inducement, collection and baseline",
                FG 2013: SMIC-HS at 100 fps, 640x480, face about 190x230 px.
    Merghani2018 W. Merghani, A. K. Davison, M. H. Yap, "A review on facial micro-expressions analysis:
                datasets, features and metrics", arXiv:1805.02397: the face resolutions of the datasets side by side.
    Qu2018      F. Qu et al., "CAS(ME)^2: a database for spontaneous macro-expression and micro-expression
                spotting and recognition", IEEE TAFFC 2018: 640x480 at 30 fps, face about 200x240 px.
    Li2023      J. Li et al., "CAS(ME)^3: a third generation facial spontaneous micro-expression database with
                depth information and high ecological validity", IEEE TPAMI 2023: 1280x720 at 30 fps.
    Yan2013     W.-J. Yan et al., "How fast are the leaked facial expressions: the duration of
                micro-expressions", J. Nonverbal Behavior 37, 217-230, 2013: total duration under 500 ms, onset
                (onset to apex) under about 260 ms.
    Doughty2001 M. J. Doughty, "Consideration of three types of spontaneous eyeblink activity in normal humans",
                Optom. Vis. Sci. 78(10) 712-725, 2001: primary-gaze blink rate 8-21 per minute.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megc_vqa.errors import UsageError

SYNTHETIC = "synthetic"
RELEASE = "release"
REALISMS = (SYNTHETIC, RELEASE)


def check_realism(option: str, value: str) -> str:
    """``value`` if it names a preset; otherwise a :class:`UsageError` listing the accepted names."""
    if value not in REALISMS:
        raise UsageError(f"{option} {value!r}: unknown realism preset; choose one of {', '.join(REALISMS)}")
    return value


def refuse_size_with_release(realism: str, **sizes: int | None) -> None:
    """``--size``-like options set the square frame of the synthetic preset only: refuse them with release."""
    given = [f"--{name.replace('_', '-')}" for name, value in sizes.items() if value is not None]
    if realism == RELEASE and given:
        raise UsageError(
            f"{' and '.join(given)} cannot be combined with --realism release: the release preset draws every "
            "dataset at its release's frame size (CASME II 640x480, SAMM 2040x1088, SMIC 640x480, CAS(ME)^3 "
            "1280x720, CAS(ME)^2 640x480); drop the size option, or use --realism synthetic for square frames"
        )


@dataclass(frozen=True)
class ReleaseLook:
    """How one release records a face. Lengths in pixels of the release's frame; ranges are (low, high).

    face_width: width of the face (cheek to cheek) per subject; the face is 1.2x as tall (Yan2014: 280x340).
    centre: the face centre as fractions of the frame width and height (off centre, varying by subject).
    me_amplitude / macro_amplitude: peak skin displacement of an expression's strongest AU, as a fraction of
        the face width (drawn per expression).
    head_shift / head_turn: head drift over a short clip (fraction of face width; degrees of in-plane turn);
        long videos drift ``LONG_DRIFT_FACTOR`` times as far.
    blink_per_min: spontaneous blink rate; flicker: depth of the lighting changes (fraction of brightness);
    noise: sensor noise (grey levels, standard deviation); jpeg_quality: the frames' JPEG quality.
    """

    frame: tuple[int, int]  # (width, height)
    face_width: tuple[float, float]
    centre: tuple[tuple[float, float], tuple[float, float]]
    grey: bool = False
    me_amplitude: tuple[float, float] = (0.0035, 0.008)
    macro_amplitude: tuple[float, float] = (0.025, 0.05)
    head_shift: tuple[float, float] = (0.004, 0.012)
    head_turn: tuple[float, float] = (0.1, 0.4)
    blink_per_min: tuple[float, float] = (8.0, 21.0)
    flicker: float = 0.003
    noise: float = 1.5
    jpeg_quality: int = 90


# Why these figures (the calibration table in docs/realism.md measures each):
# - frame, face size: the dataset papers (module docstring); CAS(ME)^3's face size is not published: a face of
#   a third of the frame width's height (assumption, from the 1280x720 frame of a seated subject at the distance
#   CAS(ME)^2 used) gives about 300x360 px.
# - centre: faces sit off centre; the ranges keep the head, hair and a margin for drift inside the frame.
# - me_amplitude: "a pixel or two of skin on a face hundreds of px wide" (issue 22 and SPEC section 1): 0.35-0.8 %
#   of the face width is 1.0-2.2 px on CASME II's 280 px face, 1.4-3.2 px on SAMM's 400 px face.
# - macro_amplitude: a posed/spontaneous macro-expression moves the mouth corners and brows by 2.5-5 % of the
#   face width (7-14 px on CASME II), the synthetic preset's order of magnitude (assumption).
# - head_shift: seated subjects told to keep still drift by a few px within half a second; larger than the ME
#   (the reason registration exists), stated assumption.
# - blinks: Doughty2001 primary gaze 8-21 per minute; each blink 100-300 ms.
# - flicker: CASME II and SAMM were lit to avoid flicker (Yan2014, Davison2018): a residual 0.3 % ripple;
#   SMIC-HS and the 30 fps releases 0.5-1 % (assumption: no flicker control is published for them).
# - noise and JPEG: not published; 1.5-2 grey levels of sensor noise and quality 90 are assumptions that keep
#   the noise below the ME's contrast change yet visible to flow (docs/realism.md shows the measured level).
LOOKS: dict[str, ReleaseLook] = {
    "casme2": ReleaseLook((640, 480), (255, 305), ((0.42, 0.58), (0.46, 0.52))),
    "samm": ReleaseLook((2040, 1088), (370, 430), ((0.38, 0.62), (0.42, 0.55)), grey=True, jpeg_quality=85),
    "smic": ReleaseLook((640, 480), (175, 205), ((0.35, 0.65), (0.38, 0.55)), flicker=0.008, noise=2.0),
    "casme3": ReleaseLook((1280, 720), (280, 320), ((0.38, 0.62), (0.42, 0.52)), flicker=0.005),
    "casme2_long": ReleaseLook((640, 480), (185, 215), ((0.38, 0.62), (0.40, 0.52)), flicker=0.005),
    "samm_lv": ReleaseLook(
        (2040, 1088), (370, 430), ((0.38, 0.62), (0.42, 0.55)), grey=True, jpeg_quality=85
    ),
}
LONG_DRIFT_FACTOR = 4.0  # a long video lets the head wander further than one half-second clip
BLINK_SECONDS = (0.1, 0.3)
# Onset (onset to apex) and whole duration of a micro-expression (Yan2013): whole 200-500 ms, onset phase at
# most 260 ms; the onset phase is shorter than the offset phase (apex at 25-45 % of the course).
ME_SECONDS = (0.2, 0.5)
ME_ONSET_MAX_S = 0.26
ME_APEX_AT = (0.25, 0.45)


def look_for_fps(fps: float, grey: bool) -> str:
    """The release a long video of synth-test is drawn as: SAMM-LV above 60 fps (or grey), else CAS(ME)^3
    (the MEGC spotting test sets are SAMM at 200 fps and CAS(ME)^3 at 30 fps)."""
    return "samm_lv" if fps > 60 or grey else "casme3"


@dataclass(frozen=True)
class SubjectLook:
    """One subject as a release recorded them: where the face sits and how the recording looked."""

    dataset: str
    frame: tuple[int, int]
    face_width: float  # pixels
    centre: tuple[float, float]  # pixels in the frame
    grey: bool
    scene_seed: int  # background, shoulders and skin texture
    blink_per_min: float
    head_shift: float  # pixels
    head_turn: float  # degrees
    flicker: float
    noise: float
    jpeg_quality: int
    shirt: tuple[int, int, int]
    wall: tuple[tuple[int, int, int], tuple[int, int, int]]
    long_video: bool = False


def sample_look(dataset: str, rng: np.random.Generator, *, long_video: bool = False) -> SubjectLook:
    """Draw one subject's look in ``dataset``'s release (face size and place, head drift, blink rate, scene)."""
    spec = LOOKS[dataset]
    u = rng.uniform
    width = u(*spec.face_width)
    (x0, x1), (y0, y1) = spec.centre
    drift = LONG_DRIFT_FACTOR if long_video else 1.0
    wall = rng.integers(60, 200, 3)
    return SubjectLook(
        dataset=dataset,
        frame=spec.frame,
        face_width=width,
        centre=(u(x0, x1) * spec.frame[0], u(y0, y1) * spec.frame[1]),
        grey=spec.grey,
        scene_seed=int(rng.integers(2**31)),
        blink_per_min=u(*spec.blink_per_min),
        head_shift=u(*spec.head_shift) * width * drift,
        head_turn=u(*spec.head_turn) * drift,
        flicker=spec.flicker,
        noise=spec.noise,
        jpeg_quality=spec.jpeg_quality,
        shirt=tuple(int(v) for v in rng.integers(20, 180, 3)),
        wall=(
            tuple(int(v) for v in wall),
            tuple(int(v) for v in np.clip(wall + rng.integers(-40, 41, 3), 0, 255)),
        ),
        long_video=long_video,
    )


def amplitude_scale(
    dataset: str, kind: str, face_axes: tuple[float, float], rng: np.random.Generator
) -> float:
    """Factor on an AU's canonical motion so its strongest point moves the drawn fraction of the face width.

    The canonical motions (painter.py) move a landmark by up to 7 units at intensity 1 on a face
    ``2 * face_axes[0]`` units wide: the factor is independent of the frame's pixel size.
    """
    spec = LOOKS[dataset]
    fraction = rng.uniform(*(spec.me_amplitude if kind == "micro" else spec.macro_amplitude))
    return float(fraction * 2 * face_axes[0] / 7.0)


def release_micro_course(fps: float, rng: np.random.Generator) -> tuple[int, int]:
    """(length in frames, apex position) of a micro-expression as Yan2013 measured them."""
    seconds = rng.uniform(*ME_SECONDS)
    n = max(4, min(round(seconds * fps), int(0.5 * fps)))
    onset_s = min(ME_ONSET_MAX_S, rng.uniform(*ME_APEX_AT) * seconds)
    return n, max(1, min(n - 2, round(onset_s * fps)))
