"""Organiser rows onto the user's clips: the one mapping of an official training file's rows to the clips
the annotation loaders found (matched on dataset + ``image_id``, else dataset + subject + filename), used by
``prep --training-file`` (:mod:`.official`) and by :func:`megc_vqa.qa.io.read_training_file`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from megc_vqa.qa.records import QARecord, clip_location
from megc_vqa.records import Clip

REASON_NO_RELEASE = "no {dataset} release found under the data root"
REASON_NO_CLIP = "the {dataset} release has no clip {image_id} (subject {subject}, filename {filename})"


@dataclass(frozen=True)
class OfficialRow:
    """One organiser row and the line it came from (1-based)."""

    line: int
    record: QARecord


@dataclass(frozen=True)
class Unmatched:
    """An organiser row whose clip is not in the user's folders."""

    file: str
    line: int
    id: str
    dataset: str
    image_id: str
    reason: str
    kind: str = "no_clip"  # no_clip (the release lacks the clip) | no_release (no release of the dataset)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.id}: {self.reason}"


@dataclass
class TrainingMapping:
    """What mapping one training file onto the user's clips gave."""

    path: Path
    rows: int
    records: list[QARecord] = field(default_factory=list)
    unmatched: list[Unmatched] = field(default_factory=list)

    @property
    def unmatched_share(self) -> float:
        return len(self.unmatched) / self.rows if self.rows else 0.0

    @property
    def version(self) -> str:
        """``2026`` when the file has v2 free-form analysis rows, else ``2025``."""
        return "2026" if any(r.question_type == "analysis" for r in self.records) else "2025"


class ClipIndex:
    """The user's clips, found the way organiser rows name them."""

    def __init__(self, clips: Iterable[Clip]) -> None:
        self.clips = list(clips)
        self.by_image = {(c.dataset, c.image_id): c for c in self.clips}
        self.by_name = {(c.dataset, str(c.subject), c.clip_id): c for c in self.clips}
        self.datasets = {c.dataset for c in self.clips}

    def find(self, record: QARecord) -> Clip | None:
        """The clip of a row: by (dataset, image_id), else by (dataset, subject, filename)."""
        return self.by_image.get((record.dataset, record.image_id)) or self.by_name.get(
            (record.dataset, record.subject, record.filename)
        )


def attach_clip(record: QARecord, clip: Clip) -> QARecord:
    """The row with its clip's frame location, fps and key frames; question and answer untouched."""
    return record.with_source(**clip_location(clip))


def map_rows(path: str | Path, rows: Sequence[OfficialRow], clips: Iterable[Clip]) -> TrainingMapping:
    """Attach each row's clip (see :class:`ClipIndex`); rows without one become :class:`Unmatched`."""
    index = ClipIndex(clips)
    result = TrainingMapping(Path(path), len(rows))
    for row in rows:
        record = row.record
        clip = index.find(record)
        if clip is not None:
            result.records.append(attach_clip(record, clip))
            continue
        kind = "no_clip" if record.dataset in index.datasets else "no_release"
        reason = (REASON_NO_CLIP if kind == "no_clip" else REASON_NO_RELEASE).format(
            dataset=record.dataset, image_id=record.image_id, subject=record.subject, filename=record.filename
        )
        result.unmatched.append(
            Unmatched(str(path), row.line, record.id, record.dataset, record.image_id, reason, kind)
        )
    return result
