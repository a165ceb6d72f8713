"""Emotions expressed through action units, for the synthetic faces.

Each (normalised) fine emotion has alternative AU combinations that define it, drawn from the FACS
prototypes the datasets' coders used (happiness AU6+AU12, surprise AU1+AU2 with AU25/26, disgust
AU9/AU10, anger AU4+AU7, sadness AU15, repression AU17, fear AU20 with AU1/AU4, contempt a unilateral
AU14, ...), plus a few optional extras. Class-defining AUs peak high so that the coarse class is visible
in the onset/apex/offset frames even at micro-expression timing.

Every fine emotion keeps a signature the others lack (sadness AU15, repression AU17 without AU15, fear
AU20, contempt a unilateral AU14, disgust AU9/AU10 without AU43): real coders' labels overlap more, but
a synthetic set whose labels are ambiguous by construction cannot tell a model that learns the fine
classes from one that guesses the commonest, which is what the demo's fine-UF1 bar is there to tell.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from megc_vqa.labels import AU_NAMES
from megc_vqa.records import ActionUnit

# fine emotion -> alternative AU combinations that define it.
RECIPES: dict[str, tuple[tuple[int, ...], ...]] = {
    "happiness": ((6, 12), (12,), (6, 12, 25), (6, 7, 12)),
    "surprise": ((1, 2), (1, 2, 25), (1, 2, 26), (1, 2, 5, 25), (1, 2, 25, 26), (2,)),
    "disgust": ((9,), (10,), (9, 10), (4, 9), (9, 10, 17)),
    "anger": ((4, 7), (4,), (4, 7, 23), (4, 7, 24), (4, 5, 7)),
    "sadness": ((15,), (1, 4, 15), (1, 15), (4, 15)),
    "repression": ((17,), (14, 17), (17, 24), (17, 23)),
    "fear": ((1, 4, 20), (1, 2, 4, 20), (4, 20, 25), (1, 4, 5, 20)),
    "contempt": ((14,),),
    "others": ((5,), (43,), (7,), (24,), (10, 43)),
}
# Extras an emotion may show without changing its class (added now and then).
EXTRAS: dict[str, tuple[int, ...]] = {
    "happiness": (25, 7),
    "surprise": (5,),
    "disgust": (4, 7, 17),
    "anger": (17, 24),
    "sadness": (17, 4),
    "repression": (24, 23),
    "fear": (5, 7),
    "contempt": (24,),
    "others": (),
}
# AUs with a visible left and right half (may be coded L/R); contempt is always unilateral.
LATERAL_AUS = frozenset({1, 2, 4, 6, 7, 9, 10, 12, 14, 15, 20})
ALWAYS_UNILATERAL = {"contempt"}
INTENSITY_LETTERS = "ABCDE"


@dataclass
class Expression:
    """One expression to render: its emotion, AUs (ascending), per-AU side and peak intensity."""

    emotion: str
    aus: tuple[int, ...]
    sides: dict[int, str | None] = field(default_factory=dict)
    peaks: dict[int, float] = field(default_factory=dict)

    @property
    def au_names(self) -> list[str]:
        return [AU_NAMES[n] for n in self.aus]

    def action_units(self, intensity_letters: bool = False) -> tuple[ActionUnit, ...]:
        """As records: ``R12`` style sides, and with ``intensity_letters`` a FACS letter (``12C``)."""
        out = []
        for n in self.aus:
            side = self.sides.get(n)
            letter = (
                INTENSITY_LETTERS[min(max(int((self.peaks[n] - 0.5) / 0.1), 0), 4)]
                if intensity_letters
                else None
            )
            raw = f"{side or ''}{n}{letter or ''}"
            out.append(ActionUnit(number=n, side=side, intensity=letter, raw=raw))
        return tuple(out)

    def au_string(self, intensity_letters: bool = False) -> str:
        """The annotation cell, ``4+L10`` style."""
        return "+".join(au.raw for au in self.action_units(intensity_letters))


def sample_expression(
    emotion: str,
    rng: np.random.Generator,
    *,
    single: bool | None = None,
    lateral_p: float = 0.25,
    extra_p: float = 0.3,
) -> Expression:
    """Draw the AUs of one expression of ``emotion`` (a normalised fine label or ``others``).

    single: ``True`` for exactly one AU, ``False`` for two or more, ``None`` for either.
    lateral_p: chance that one lateral AU is unilateral (contempt always is).
    Raises ``ValueError`` when the emotion has no combination of the requested size.
    """
    if emotion not in RECIPES:
        raise ValueError(f"no AU recipe for emotion {emotion!r}; known: {sorted(RECIPES)}")
    recipes, extras_pool = RECIPES[emotion], EXTRAS[emotion]
    if single:
        options = [r for r in recipes if len(r) == 1]
    elif single is False and not extras_pool:
        options = [r for r in recipes if len(r) > 1]
    else:
        options = list(recipes)
    if not options:
        raise ValueError(f"{emotion} has no combination of {'one AU' if single else 'two or more AUs'}")
    aus = list(options[rng.integers(len(options))])
    core = set(aus)
    extras = [e for e in extras_pool if e not in core]
    if not single and extras and (rng.random() < extra_p or (single is False and len(aus) < 2)):
        aus.append(extras[rng.integers(len(extras))])
    aus = sorted(set(aus))
    sides: dict[int, str | None] = dict.fromkeys(aus)
    lateral = [n for n in aus if n in LATERAL_AUS]
    if lateral and (emotion in ALWAYS_UNILATERAL or rng.random() < lateral_p):
        sides[lateral[rng.integers(len(lateral))]] = "L" if rng.random() < 0.5 else "R"
    peaks = {n: float(rng.uniform(0.85, 1.0) if n in core else rng.uniform(0.55, 0.8)) for n in aus}
    return Expression(emotion=emotion, aus=tuple(aus), sides=sides, peaks=peaks)


def can_express(emotion: str, single: bool | None) -> bool:
    """Whether :func:`sample_expression` can honour ``single`` for ``emotion``."""
    if single is None:
        return emotion in RECIPES
    if single:
        return any(len(r) == 1 for r in RECIPES.get(emotion, ()))
    return any(len(r) > 1 for r in RECIPES.get(emotion, ())) or bool(EXTRAS.get(emotion))
