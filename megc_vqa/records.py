"""The data contract: plain, frozen records that every stage of the pipeline passes around.

Loaders turn dataset annotations into these records; QA generation, visual sampling, training,
answering and spotting read them. Nothing here knows about models, processors or file formats,
which is what lets each stage be tested on hand-built records.

Frame numbers are always the *absolute* frame indices of the dataset's file names (``img46.jpg`` is
frame 46), never offsets from the clip start.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from megc_vqa.labels import AU_NAMES

Side = Literal["L", "R"]
ExpressionType = Literal["micro", "macro"]
DatasetName = Literal["casme2", "samm", "smic", "casme3", "casme2_long", "samm_lv"]
SourceKind = Literal["folder", "video"]


@dataclass(frozen=True)
class ActionUnit:
    """One coded FACS action unit, as parsed from an annotation string such as ``L10B``.

    number: FACS number (``10``).
    side: ``"L"``/``"R"`` for a unilateral AU (prefix ``L``/``R``); ``None`` when bilateral or unknown.
    intensity: FACS intensity letter ``A``-``E`` when coded (``24A`` -> ``"A"``); ``None`` otherwise.
        Bracketed alternatives such as ``4(B/C)`` keep the first letter.
    asymmetric: ``True`` for an ``A`` prefix (``A2``): asymmetric but not unilateral.
    uncertain: ``True`` when the coder marked it as one of alternatives (``L2 or R2``) or a reference
        (``ref(7)``); such AUs are kept but callers may choose to skip them.
    raw: the token exactly as written in the annotation, for error messages and audits.
    """

    number: int
    side: Side | None = None
    intensity: str | None = None
    asymmetric: bool = False
    uncertain: bool = False
    raw: str = ""

    @property
    def name(self) -> str | None:
        """Lower-case FACS name (``"upper lip raiser"``), or ``None`` for a number outside the SPEC table."""
        return AU_NAMES.get(self.number)


@dataclass(frozen=True)
class FrameSource:
    """Where a clip's or video's frames live.

    kind: ``"folder"`` (one image per frame, frame index in the file name) or ``"video"`` (a file
        decoded with decord; frame index = decoded frame position + ``first_frame``).
    path: the folder or the video file.
    first_frame: absolute index of the first decoded frame, for video files (0 for folders, where
        the index comes from the file names).
    """

    kind: SourceKind
    path: Path
    first_frame: int = 0


@dataclass(frozen=True)
class Clip:
    """One short expression clip with its onset-apex-offset course and labels.

    dataset: source dataset key (``casme2``, ``samm``, ``smic``, ``casme3``; test clips use the
        question file's prefix, e.g. ``samm_test``).
    subject: subject as the official MEGC training file writes it: ``sub01`` (CASME II), ``"6"``
        (SAMM, unpadded), ``s01`` (SMIC), ``spNO.1`` (CAS(ME)^3).
    clip_id: the annotation's file name column (``EP02_01f``, ``006_1_2``, ``s01_ne_01``).
    image_id: the official ``image_id`` (``sub01_EP02_01f``, ``006_1_2``, ``s01_ne_01``); unique per dataset.
    source: where the frames are.
    fps: frames per second of the recording.
    onset, offset: absolute frame indices, ``onset <= offset``.
    apex: absolute frame index inside ``onset..offset``, or ``None`` when unknown (SMIC, test clips,
        or an apex written ``/``); samplers then estimate it.
    aus: coded action units in annotation order (may be empty).
    fine_emotion: the dataset's own emotion word, lower case and spelling-normalised (``happiness``),
        or ``None`` when not annotated (SMIC).
    coarse_emotion: ``negative``/``positive``/``surprise``, or ``None`` when outside the composite.
    expression_type: ``micro`` or ``macro``.
    row: 1-based spreadsheet row (as Excel numbers it) the record came from, for audits; 0 if none.
    """

    dataset: str
    subject: str
    clip_id: str
    image_id: str
    source: FrameSource
    fps: float
    onset: int
    offset: int
    apex: int | None = None
    aus: tuple[ActionUnit, ...] = ()
    fine_emotion: str | None = None
    coarse_emotion: str | None = None
    expression_type: ExpressionType = "micro"
    row: int = 0

    def __post_init__(self) -> None:
        if self.onset > self.offset:
            raise ValueError(f"{self.image_id}: onset {self.onset} is after offset {self.offset}")
        if self.apex is not None and not self.onset <= self.apex <= self.offset:
            raise ValueError(f"{self.image_id}: apex {self.apex} outside {self.onset}..{self.offset}")

    @property
    def n_frames(self) -> int:
        return self.offset - self.onset + 1


@dataclass(frozen=True)
class Event:
    """One annotated expression interval inside a long video (absolute frame indices, inclusive)."""

    onset: int
    offset: int
    apex: int | None = None
    aus: tuple[ActionUnit, ...] = ()
    fine_emotion: str | None = None
    coarse_emotion: str | None = None
    expression_type: ExpressionType = "micro"
    row: int = 0


@dataclass(frozen=True)
class LongVideo:
    """A long recording (SAMM Long Videos, CAS(ME)^2, CAS(ME)^3, MEGC STR test) with its events.

    video_id: the folder name the STR CSV's ``video`` column uses (``006_1``, ``15_0101``).
    events: annotated intervals sorted by onset; empty for unlabelled test videos.
    """

    dataset: str
    subject: str
    video_id: str
    source: FrameSource
    fps: float
    events: tuple[Event, ...] = ()


@dataclass(frozen=True)
class Skip:
    """A row a loader did not turn into a record, and why. Loaders never drop a row without one."""

    dataset: str
    file: str
    row: int
    reason: str
    detail: str = ""
    sheet: str | None = None


@dataclass
class LoadResult:
    """What loading one or more dataset roots produced."""

    clips: list[Clip] = field(default_factory=list)
    long_videos: list[LongVideo] = field(default_factory=list)
    skips: list[Skip] = field(default_factory=list)

    def extend(self, other: LoadResult) -> None:
        self.clips.extend(other.clips)
        self.long_videos.extend(other.long_videos)
        self.skips.extend(other.skips)
