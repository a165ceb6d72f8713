"""``prep`` opens every frame a clip will use before writing a record, so bad frames fail here and not at
training step 0.

For each clip read from a frame folder:

- two files giving the same frame number (``img250.jpg`` beside ``img0250.jpg``) are an error naming both
  (:class:`FrameCheckError`): which one is frame 250 cannot be guessed;
- every frame of ``onset..offset`` is opened and decoded (at reduced size, which still reads the whole
  file): a zero-byte, truncated or non-image file, or an image of under 16 px, skips the clip (reason
  :data:`UNREADABLE_FRAME`, the file and the cause in the detail);
- a missing onset, apex or offset frame is replaced by the nearest existing frame *inside* the interval,
  and that is reported (reason :data:`MISSING_KEY_FRAME`, at WARNING, in ``skips.jsonl`` and the summary)
  so a neighbour outside the expression is never used silently.

Video-file clips are left to the reader (decoding a video to check it costs as much as using it).

With ``prep --face crop|align`` every clip's onset frame also goes through the face pipeline's face finder
and geometry (:func:`check_clip_faces`): a clip without one usable face is skipped (reason
:data:`NO_USABLE_FACE`, the pipeline's line in the detail), as training, answering and export would skip it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path

from megc_vqa.errors import InputError, UsageError
from megc_vqa.face_settings import FaceSettings
from megc_vqa.limits import open_image
from megc_vqa.records import Clip, Skip
from megc_vqa.visual.errors import FaceSkip, FrameError

log = logging.getLogger(__name__)

UNREADABLE_FRAME = "unreadable frame"
MISSING_KEY_FRAME = "missing key frame (a neighbour inside the interval is used)"
NO_USABLE_FACE = "no usable face (face pipeline)"
MIN_SIDE = 16


class FrameCheckError(InputError):
    """A frame folder that no clip can be read from as it is (two files with one frame number)."""


def _listing(folder: Path) -> dict[int, Path]:
    """Frame number -> file of a frame folder (:func:`megc_vqa.visual.frames.list_frames`, the one lister)."""
    from megc_vqa.visual.frames import list_frames  # OpenCV: only when frames are checked

    try:
        return dict(list_frames(folder))
    except FrameError as err:
        raise FrameCheckError(str(err)) from None


def _unreadable(path: Path) -> str | None:
    """Why a frame file cannot be used, or ``None``."""
    from PIL import UnidentifiedImageError

    try:
        if path.stat().st_size == 0:
            return "empty file (0 bytes)"
        with open_image(path, str(path)) as im:  # the header only, pixel count checked (limits.py)
            width, height = im.size
            if min(width, height) < MIN_SIDE:
                return f"image is {width}x{height} px (at least {MIN_SIDE} px a side)"
            im.draft("L", (max(1, width // 8), max(1, height // 8)))  # JPEG: decode at 1/8, still every byte
            im.load()
    except UsageError:  # a bad MEGC_VQA_MAX_* value: the user's setting, not this frame
        raise
    except InputError as err:
        return str(err).removeprefix(f"{path}: ")
    except UnidentifiedImageError:
        return "not an image file"
    except (OSError, ValueError, SyntaxError) as err:  # truncated or corrupt data
        return f"cannot decode ({' '.join(str(err).split())[:120]})"
    return None


def _inside(numbers: list[int], wanted: int, lo: int, hi: int) -> int | None:
    """The existing frame in ``lo..hi`` nearest to ``wanted`` (ties to the earlier one)."""
    candidates = [n for n in numbers if lo <= n <= hi]
    return min(candidates, key=lambda n: (abs(n - wanted), n)) if candidates else None


def _skip(clip: Clip, folder: Path, reason: str, detail: str) -> Skip:
    return Skip(clip.dataset, str(folder), clip.row, reason, f"{clip.image_id}: {detail}")


def check_clip_frames(clips: Iterable[Clip]) -> tuple[list[Clip], list[Skip]]:
    """The clips whose frames are all readable (key frames moved inside the interval where missing), and a
    :class:`Skip` for every clip left out or changed. Raises :class:`FrameCheckError` for duplicates."""
    kept: list[Clip] = []
    skips: list[Skip] = []
    listings: dict[Path, dict[int, Path]] = {}
    checked: dict[Path, str | None] = {}
    for clip in clips:
        if clip.source.kind != "folder":
            kept.append(clip)
            continue
        folder = Path(clip.source.path)
        if not folder.is_dir():
            skips.append(_skip(clip, folder, UNREADABLE_FRAME, f"frame folder {folder} not found"))
            continue
        if folder not in listings:
            listings[folder] = _listing(folder)
        files = listings[folder]
        used = [n for n in sorted(files) if clip.onset <= n <= clip.offset]

        if not used:
            skips.append(_skip(clip, folder, UNREADABLE_FRAME, f"no frame in {clip.onset}..{clip.offset}"))
            continue
        bad = None
        for n in used:
            path = files[n]
            if path not in checked:
                checked[path] = _unreadable(path)
            if checked[path]:
                bad = f"{path.name}: {checked[path]}"
                break
        if bad:
            log.warning("%s: clip %s skipped: %s", folder, clip.image_id, bad)
            skips.append(_skip(clip, folder, UNREADABLE_FRAME, bad))
            continue
        changes = {}
        notes = []
        for key in ("onset", "apex", "offset"):
            value = getattr(clip, key)
            if value is None or value in files:
                continue
            instead = _inside(used, value, clip.onset, clip.offset)
            changes[key] = instead
            notes.append(f"{key} frame {value} is missing, frame {instead} is used instead")
        if notes:
            clip = dataclasses.replace(clip, **changes)
            detail = "; ".join(notes)
            log.warning("%s: clip %s: %s", folder, clip.image_id, detail)
            skips.append(_skip(clip, folder, MISSING_KEY_FRAME, detail))
        kept.append(clip)
    return kept, skips


def check_clip_faces(clips: Iterable[Clip], face: FaceSettings) -> tuple[list[Clip], list[Skip]]:
    """The clips whose onset frame has one usable face for ``face`` (the visual layer's own
    ``face_geometry``: no face, two faces, a face cut by the border or a crop outside the frame is a
    :class:`Skip`, logged with the clip's name). Registration and the later frames are checked when the clip
    is sampled."""
    from megc_vqa.visual.facepipe import face_geometry
    from megc_vqa.visual.frames import FrameError, FrameReader

    kept: list[Clip] = []
    skips: list[Skip] = []
    for clip in clips:
        label = f"{clip.dataset}/{clip.image_id}"
        try:
            with FrameReader(clip.source) as reader:
                onset = reader.read([clip.onset])[0]
            face_geometry(onset, face, None, label)
        except FaceSkip as err:
            log.warning("%s", err)
            skips.append(
                _skip(clip, Path(clip.source.path), NO_USABLE_FACE, str(err).removeprefix(f"{label}: "))
            )
            continue
        except FrameError as err:  # left to the reader's own report when the clip is used
            log.warning("%s: face not checked: %s", label, err)
        kept.append(clip)
    return kept, skips
