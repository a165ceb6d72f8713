"""QA rows as the MEGC files hold them.

``QARecord`` is one training question-answer pair in the official schema of
``me_vqa_samm_casme2_smic.jsonl`` (``id, dataset, image_id, subject, filename, question, answer``), plus
fields the project adds so training can find the visual input without the annotation files: the
question type, the frame source and the onset/apex/offset frames. ``to_json`` always writes the official
keys first, in the official order, so a file the project writes is a superset of the organisers' one.

``QuestionRow`` is one row of an organiser question file (``*_to_answer.jsonl``). A submission must keep
the rows, their order and their keys, so the row remembers its original key order and any extra keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from megc_vqa.qa.templates import QuestionType, classify_question
from megc_vqa.records import FrameSource

OFFICIAL_KEYS: tuple[str, ...] = ("id", "dataset", "image_id", "subject", "filename", "question", "answer")
EXTRA_KEYS: tuple[str, ...] = (
    "question_type",
    "source",
    "source_kind",
    "first_frame",
    "fps",
    "onset",
    "apex",
    "offset",
)
QUESTION_KEYS: tuple[str, ...] = ("video_id", "video", "question", "answer")


@dataclass(frozen=True)
class QARecord:
    """One MEGC ME-VQA training row.

    id: ``{dataset}_{image_id}_{k}``, k = 1.. within a clip.
    dataset, image_id, subject, filename: as the official file writes them (``samm``, ``006_1_2``, ``"6"``,
        ``006_1_2``).
    question, answer: the exact template strings.
    question_type: what ``templates.classify_question`` says about ``question``.
    source: the clip's frame folder or video file as a string; ``None`` when the clip is not on disk
        (an official row whose clip was not found under the user's data root).
    source_kind: ``"folder"`` or ``"video"`` (``None`` with ``source``).
    first_frame: absolute index of the first decoded frame for video sources (0 for folders).
    fps, onset, apex, offset: the clip's frame rate and absolute key frames; ``apex`` is ``None`` when
        the annotation has none (SMIC).
    """

    id: str
    dataset: str
    image_id: str
    subject: str
    filename: str
    question: str
    answer: str
    question_type: QuestionType = "unknown"
    source: str | None = None
    source_kind: str | None = None
    first_frame: int = 0
    fps: float | None = None
    onset: int | None = None
    apex: int | None = None
    offset: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A dict with the official keys first, in the official order, then the project's extras."""
        return {key: getattr(self, key) for key in (*OFFICIAL_KEYS, *EXTRA_KEYS)}

    @classmethod
    def from_json(cls, row: dict[str, Any]) -> QARecord:
        """Build from an official or project row; raises ``KeyError``/``TypeError`` naming the bad key.

        Missing extras take their defaults; a missing ``question_type`` is classified from the question.
        Unknown keys are ignored.
        """
        missing = [key for key in OFFICIAL_KEYS if key not in row]
        if missing:
            raise KeyError(f"missing key(s) {', '.join(missing)}")
        values: dict[str, Any] = {}
        for key in OFFICIAL_KEYS:
            value = row[key]
            # The official file writes SAMM subjects as strings; tolerate ints from hand-made files.
            if isinstance(value, int) and not isinstance(value, bool) and key in ("subject", "image_id"):
                value = str(value)
            if not isinstance(value, str):
                raise TypeError(f"key {key!r} must be a string, got {type(value).__name__}")
            values[key] = value
        for key in EXTRA_KEYS:
            if row.get(key) is not None:
                values[key] = row[key]
        if "question_type" not in values:
            values["question_type"] = classify_question(values["question"])
        return cls(**values)

    def frame_source(self) -> FrameSource | None:
        """The clip's frames as the visual samplers take them, or ``None`` when not on disk."""
        if self.source is None:
            return None
        kind = self.source_kind or ("video" if Path(self.source).is_file() else "folder")
        return FrameSource(kind, Path(self.source), self.first_frame)  # type: ignore[arg-type]

    def with_source(self, **fields: Any) -> QARecord:
        """A copy with some extras (source, fps, onset, ...) replaced."""
        return replace(self, **fields)


def clip_location(clip: Any) -> dict[str, Any]:
    """A clip's frame location, fps and key frames as QA record fields (generated and official rows alike)."""
    return {
        "source": str(clip.source.path),
        "source_kind": clip.source.kind,
        "first_frame": clip.source.first_frame,
        "fps": clip.fps,
        "onset": clip.onset,
        "apex": clip.apex,
        "offset": clip.offset,
    }


@dataclass(frozen=True)
class QuestionRow:
    """One row of an organiser ``*_to_answer.jsonl`` file.

    video_id: ``{samm_test|casme3_test}_{video}_{k}``.
    video: the clip (or long video) folder name, e.g. ``SAMM-1``.
    question, answer: the question and its answer (``""`` until answered).
    extra: any further keys of the row, in file order.
    key_order: the row's keys in file order, which ``to_json`` reproduces.
    line: 1-based line number in the source file (0 when built by hand), for messages.
    question_type: the question's kind, classified once from ``question``.
    """

    video_id: str
    video: str
    question: str
    answer: str = ""
    extra: tuple[tuple[str, Any], ...] = ()
    key_order: tuple[str, ...] = QUESTION_KEYS
    line: int = field(default=0, compare=False)
    # The question's kind (``megc_vqa.qa.kinds``), classified once when the row is built.
    question_type: QuestionType = field(init=False, compare=False, default="unknown")

    def __post_init__(self) -> None:
        object.__setattr__(self, "question_type", classify_question(self.question))

    def with_answer(self, answer: str) -> QuestionRow:
        """The same row with ``answer`` filled, keys and order unchanged."""
        return replace(self, answer=answer)

    def to_json(self) -> dict[str, Any]:
        """The row as a dict in its original key order (extra keys included)."""
        values = {**dict(self.extra), **{key: getattr(self, key) for key in QUESTION_KEYS}}
        ordered = {key: values[key] for key in self.key_order if key in values}
        ordered.update({key: value for key, value in values.items() if key not in ordered})
        return ordered

    @classmethod
    def from_json(cls, row: dict[str, Any], line: int = 0) -> QuestionRow:
        """Build from a parsed row; raises ``KeyError``/``TypeError`` naming the bad key."""
        missing = [key for key in QUESTION_KEYS if key not in row]
        if missing:
            raise KeyError(f"missing key(s) {', '.join(missing)}")
        for key in QUESTION_KEYS:
            if not isinstance(row[key], str):
                raise TypeError(f"key {key!r} must be a string, got {type(row[key]).__name__}")
        return cls(
            video_id=row["video_id"],
            video=row["video"],
            question=row["question"],
            answer=row["answer"],
            extra=tuple((key, value) for key, value in row.items() if key not in QUESTION_KEYS),
            key_order=tuple(row),
            line=line,
        )
