"""Validation splits by subject: no subject's clips on both sides.

A subject is keyed by ``(dataset, subject)``: ``sub01`` of CASME II and ``s01`` of SMIC are different
people, and subject strings of different datasets may collide. Records are anything with ``dataset``
and ``subject`` attributes or keys (``QARecord`` or JSONL rows).
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from megc_vqa.models.prompting import get_field

R = TypeVar("R")
SubjectKey = tuple[str, str]


def subject_key(record: Any) -> SubjectKey:
    return (str(get_field(record, "dataset", "")), str(get_field(record, "subject", "")))


def subjects(records: Sequence[Any]) -> list[SubjectKey]:
    """Distinct subjects, sorted, so splits do not depend on record order."""
    return sorted({subject_key(r) for r in records})


def _matches(key: SubjectKey, name: str) -> bool:
    """``'casme2/sub01'`` matches one subject; a bare ``'sub01'`` matches it in any dataset."""
    if "/" in name:
        dataset, subject = name.split("/", 1)
        return key == (dataset, subject)
    return key[1] == name


def split_by_subject(
    records: Sequence[R],
    val_fraction: float = 0.2,
    seed: int = 0,
    val_subjects: Sequence[str] | None = None,
) -> tuple[list[R], list[R]]:
    """``(train, val)`` with whole subjects held out.

    val_subjects: hold out exactly these (``dataset/subject`` or ``subject``); an unknown name is an error.
    Otherwise ``ceil(val_fraction * n)`` subjects of each dataset with at least two subjects, drawn with
    ``seed``, so every dataset is represented on both sides.
    """
    keys = subjects(records)
    if val_subjects:
        held = {k for k in keys if any(_matches(k, n) for n in val_subjects)}
        missing = [n for n in val_subjects if not any(_matches(k, n) for k in keys)]
        if missing:
            raise ValueError(f"val_subjects {missing} are not in the records (subjects look like {keys[:3]})")
    else:
        held = set()
        if val_fraction > 0:
            rng = random.Random(seed)
            for dataset in sorted({k[0] for k in keys}):
                pool = [k for k in keys if k[0] == dataset]
                if len(pool) < 2:
                    continue
                n = min(len(pool) - 1, max(1, math.ceil(val_fraction * len(pool))))
                held.update(rng.sample(pool, n))
    train = [r for r in records if subject_key(r) not in held]
    val = [r for r in records if subject_key(r) in held]
    assert_subject_disjoint(train, val)
    return train, val


@dataclass(frozen=True)
class Fold:
    """One leave-one-subject-out fold: ``held_out`` is the validation subject."""

    index: int
    held_out: SubjectKey
    train: list
    val: list

    @property
    def name(self) -> str:
        return f"{self.held_out[0]}/{self.held_out[1]}"


def loso_folds(records: Sequence[R]) -> list[Fold]:
    """One fold per subject, in :func:`subjects` order (fold ``i`` holds out subject ``i``)."""
    return [
        Fold(
            i,
            key,
            [r for r in records if subject_key(r) != key],
            [r for r in records if subject_key(r) == key],
        )
        for i, key in enumerate(subjects(records))
    ]


def select_fold(records: Sequence[R], fold: str | int) -> Fold:
    """The fold named by number (``"3"``) or subject (``"casme2/sub01"``, or ``"sub01"`` if unique)."""
    folds = loso_folds(records)
    text = str(fold)
    if text.isdigit():
        i = int(text)
        if not 0 <= i < len(folds):
            raise ValueError(
                f"loso_fold {i} out of range: there are {len(folds)} subjects (0..{len(folds) - 1})"
            )
        return folds[i]
    hits = [f for f in folds if _matches(f.held_out, text)]
    if len(hits) != 1:
        what = "no subject" if not hits else f"{len(hits)} subjects ({', '.join(f.name for f in hits)})"
        raise ValueError(f"loso_fold {text!r} matches {what}; use 'dataset/subject' or a fold number")
    return hits[0]


def assert_subject_disjoint(train: Sequence[Any], val: Sequence[Any]) -> None:
    shared = {subject_key(r) for r in train} & {subject_key(r) for r in val}
    if shared:
        raise ValueError(f"subjects in both train and validation: {sorted(shared)[:5]}")
