"""Label vocabularies from SPEC section 2: coarse classes, per-dataset emotion maps and AU names."""

from __future__ import annotations

COARSE_CLASSES: tuple[str, ...] = ("negative", "positive", "surprise")
STR_CLASSES: tuple[str, ...] = (*COARSE_CLASSES, "others")

# FACS names used in answers (lower case, no numbers). "nostril dilater" is the organisers' spelling.
AU_NAMES: dict[int, str] = {
    1: "inner brow raiser",
    2: "outer brow raiser",
    4: "brow lowerer",
    5: "upper lid raiser",
    6: "cheek raiser",
    7: "lid tightener",
    9: "nose wrinkler",
    10: "upper lip raiser",
    11: "nasolabial deepener",
    12: "lip corner puller",
    14: "dimpler",
    15: "lip corner depressor",
    16: "lower lip depressor",
    17: "chin raiser",
    18: "lip pucker",
    20: "lip stretcher",
    21: "neck tightener",
    23: "lip tightener",
    24: "lip pressor",
    25: "lips part",
    26: "jaw drop",
    31: "jaw clencher",
    38: "nostril dilater",
    39: "nostril compress",
    43: "eye closure",
    56: "tilt right",
    61: "eyes left",
}
AU_NUMBERS: dict[str, int] = {name: number for number, name in AU_NAMES.items()}

# Spelling normalisation applied to every fine label before mapping (CAS(ME)^3 writes happy/sad).
FINE_SPELLING: dict[str, str] = {"happy": "happiness", "sad": "sadness", "other": "others"}

# Fine (normalised) -> coarse, per dataset. A fine label missing from its map is outside the composite.
COARSE_MAPS: dict[str, dict[str, str]] = {
    "casme2": {
        "disgust": "negative",
        "repression": "negative",
        "happiness": "positive",
        "surprise": "surprise",
    },
    "samm": {
        "anger": "negative",
        "contempt": "negative",
        "disgust": "negative",
        "fear": "negative",
        "sadness": "negative",
        "happiness": "positive",
        "surprise": "surprise",
    },
    "casme3": {
        "disgust": "negative",
        "fear": "negative",
        "anger": "negative",
        "sadness": "negative",
        "happiness": "positive",
        "surprise": "surprise",
    },
    # SMIC codes its three classes directly.
    "smic": {
        "ne": "negative",
        "negative": "negative",
        "po": "positive",
        "positive": "positive",
        "sur": "surprise",
        "surprise": "surprise",
    },
}
# The datasets whose clips carry a fine emotion (SMIC codes only its three coarse classes).
FINE_DATASETS: tuple[str, ...] = ("casme2", "samm", "casme3")
# Fine emotions each dataset knows (normalised), including those outside the composite.
KNOWN_FINE: dict[str, frozenset[str]] = {
    "casme2": frozenset({"disgust", "repression", "happiness", "surprise", "fear", "sadness", "others"}),
    "samm": frozenset({"anger", "contempt", "disgust", "fear", "happiness", "sadness", "surprise", "others"}),
    "casme3": frozenset({"disgust", "fear", "anger", "sadness", "happiness", "surprise", "others"}),
    "smic": frozenset({"ne", "po", "sur", "negative", "positive", "surprise"}),
}


def normalise_fine(word: str) -> str:
    """Lower-case, strip and fix spelling: ``" Happy "`` -> ``"happiness"``.

    >>> normalise_fine("Sad")
    'sadness'
    """
    w = str(word).strip().lower()
    return FINE_SPELLING.get(w, w)


def coarse_of(dataset: str, fine: str) -> str | None:
    """Coarse class of a fine label in a dataset, or ``None`` when the label is outside the composite.

    >>> coarse_of("samm", "Contempt")
    'negative'
    >>> coarse_of("casme2", "fear") is None
    True
    """
    return COARSE_MAPS.get(dataset, {}).get(normalise_fine(fine))


# The answer vocabularies of a model trained on MEGC2025 data (the default of constrained decoding):
# the fine labels of CASME II and SAMM, and every AU name in AU-number order.
TRAINING_FINE_LABELS: tuple[str, ...] = tuple(sorted({*COARSE_MAPS["casme2"], *COARSE_MAPS["samm"]}))
AU_NAMES_IN_ORDER: tuple[str, ...] = tuple(AU_NAMES[n] for n in sorted(AU_NAMES))
