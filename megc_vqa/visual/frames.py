"""Decode a clip's frames from a folder of numbered images or from a video file.

Frame indices are the absolute numbers the datasets use: for a folder, the *last integer group* in
each file name (``img46.jpg`` -> 46, ``reg_img46.jpg`` -> 46, ``006_05562.jpg`` -> 5562,
``image000012.jpg`` -> 12), sorted numerically so ``img100`` comes after ``img46``; for a video file,
the decoded position plus ``FrameSource.first_frame``.

Only the requested frames are decoded. A requested frame that is missing from a folder (CAS(ME)^3
drops frames) is replaced by the nearest existing one, with a logged note, unless ``nearest=False``.
Every failure (missing folder, corrupt JPEG, unreadable video, a path outside the dataset root)
raises :class:`FrameError` naming the path, never a raw OpenCV or decord error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from megc_vqa.errors import InputError
from megc_vqa.frame_names import IMAGE_SUFFIXES, frame_number, is_image
from megc_vqa.limits import check_image_header, check_image_pixels, image_header
from megc_vqa.records import Clip, FrameSource
from megc_vqa.visual.errors import FrameError

logger = logging.getLogger(__name__)

# JPEG can be decoded directly at 1/2, 1/4 or 1/8 scale, which is far cheaper than decoding and resizing.
_REDUCED_GREY = {
    1: cv2.IMREAD_GRAYSCALE,
    2: cv2.IMREAD_REDUCED_GRAYSCALE_2,
    4: cv2.IMREAD_REDUCED_GRAYSCALE_4,
    8: cv2.IMREAD_REDUCED_GRAYSCALE_8,
}
# OpenCV >= 4.11 decodes straight to RGB; older builds decode BGR and we swap channels.
_IMREAD_RGB: int | None = getattr(cv2, "IMREAD_COLOR_RGB", None)


def check_inside(path: Path, root: Path | None) -> None:
    """Raise :class:`FrameError` when ``path`` would escape ``root`` (``..`` or an absolute path elsewhere).

    The check is lexical (``os.path.normpath`` of absolute paths), so a dataset laid out with symlinks
    on purpose still works, while a path written in an input file cannot climb out of the root.
    """
    if root is None:
        return
    target = os.path.normpath(os.path.abspath(path))
    base = os.path.normpath(os.path.abspath(root))
    if os.path.commonpath([target, base]) != base:
        raise FrameError(f"{path}: path is outside the dataset root {root}")


def list_frames(folder: Path, *, root: Path | None = None) -> list[tuple[int, Path]]:
    """All numbered image files in ``folder`` as ``(frame index, path)``, sorted by index.

    Files without a digit in their name and non-image files are ignored. Two files with the same
    number (``img7.jpg`` and ``img07.jpg``) are ambiguous and raise :class:`FrameError` naming both (the
    first two in name order).
    """
    folder = Path(folder)
    check_inside(folder, root)
    if not folder.is_dir():
        if folder.exists():
            raise FrameError(f"{folder}: expected a folder of frame images, found a file")
        raise FrameError(f"{folder}: frame folder not found")
    found: dict[int, Path] = {}
    try:
        entries = sorted(os.scandir(folder), key=lambda entry: entry.name)
    except OSError as err:
        raise FrameError(f"{folder}: cannot list frame folder ({err.strerror})") from None
    for entry in entries:
        if not is_image(entry.name) or not entry.is_file():
            continue
        number = frame_number(entry.name)
        if number is None:
            continue
        if number in found:
            raise FrameError(
                f"{folder}: files {found[number].name} and {entry.name} both give frame number {number}; "
                "remove or rename one of them"
            )
        found[number] = folder / entry.name
    return sorted(found.items())


class FrameReader:
    """An opened frame source that decodes only the frames asked for.

    Open it once per clip (listing a folder or opening a video has a cost) and call :meth:`read`
    or :meth:`read_grey` as often as needed. Use as a context manager or call :meth:`close`.
    """

    def __init__(self, source: FrameSource, *, root: Path | None = None) -> None:
        self.source = source
        self.path = Path(source.path)
        check_inside(self.path, root)
        self._video: Any = None
        self._files: dict[int, Path] = {}
        # (height, width) of the first colour frame decoded: every later colour frame is brought to it,
        # so a folder whose frames differ by a few pixels (cropped releases) still gives one clip.
        self._shape: tuple[int, int] | None = None
        # header (size, mode) of the folder's first frame, and the frames already compared with it
        self._reference: tuple[tuple[int, int], str] | None = None
        self._checked: set[int] = set()
        if source.kind == "folder":
            listing = list_frames(self.path)
            if not listing:
                raise FrameError(
                    f"{self.path}: no numbered image files ({', '.join(sorted(IMAGE_SUFFIXES))})"
                )
            self._files = dict(listing)
            self.indices = np.fromiter(self._files, dtype=np.int64, count=len(self._files))
            if len(listing) == 1:
                logger.warning(
                    "%s: only one frame (%s): onset, apex and offset are that frame and it shows no motion; "
                    "check the folder holds the whole clip",
                    self.path,
                    listing[0][1].name,
                )
        elif source.kind == "video":
            self._video = _open_video(self.path)
            self.indices = np.arange(len(self._video), dtype=np.int64) + source.first_frame
            if len(self.indices) == 0:
                raise FrameError(f"{self.path}: video has no frames")
        else:
            raise FrameError(f"{self.path}: unknown frame source kind {source.kind!r}")

    def __enter__(self) -> FrameReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._video = None

    @property
    def first(self) -> int:
        return int(self.indices[0])

    @property
    def last(self) -> int:
        return int(self.indices[-1])

    def resolve(self, wanted: Sequence[int], *, nearest: bool = True) -> list[int]:
        """Map requested indices onto existing frames (the nearest one, ties to the earlier frame)."""
        wanted_arr = np.asarray(wanted, dtype=np.int64).reshape(-1)
        if wanted_arr.size == 0:
            return []
        pos = np.searchsorted(self.indices, wanted_arr)
        below = self.indices[np.clip(pos - 1, 0, len(self.indices) - 1)]
        above = self.indices[np.clip(pos, 0, len(self.indices) - 1)]
        chosen = np.where(np.abs(wanted_arr - below) <= np.abs(above - wanted_arr), below, above)
        substituted = [(int(w), int(c)) for w, c in zip(wanted_arr, chosen, strict=True) if w != c]
        if substituted:
            pairs = ", ".join(f"{w}->{c}" for w, c in sorted(set(substituted)))
            if not nearest:
                missing = ", ".join(str(w) for w in sorted({w for w, _ in substituted}))
                raise FrameError(f"{self.path}: frames not found: {missing}")
            logger.info("%s: missing frames replaced by the nearest existing: %s", self.path, pairs)
        return [int(c) for c in chosen]

    def read(self, indices: Sequence[int], *, nearest: bool = True) -> np.ndarray:
        """Decode the given absolute frame indices as an ``(N, H, W, 3)`` uint8 RGB array."""
        resolved = self.resolve(indices, nearest=nearest)
        unique = sorted(set(resolved))
        if self._video is not None:
            decoded = dict(zip(unique, self._video_batch(unique), strict=True))
        else:
            self._check_headers(unique)
            decoded = {i: _imread_rgb(self._files[i]) for i in unique}
        frames = [decoded[i] for i in resolved]
        if self._shape is None and frames:
            self._shape = frames[0].shape[:2]
        return _stack(frames, self.path, colour=True, shape=self._shape)

    def read_grey(self, indices: Sequence[int], *, reduce: int = 1, nearest: bool = True) -> np.ndarray:
        """Decode frames as greyscale ``(N, h, w)`` uint8, shrunk by ``reduce`` (1, 2, 4 or 8).

        For JPEG folders the reduction happens inside the decoder (much cheaper than full decoding).
        """
        if reduce not in _REDUCED_GREY:
            raise ValueError(f"reduce must be one of {sorted(_REDUCED_GREY)}, got {reduce}")
        resolved = self.resolve(indices, nearest=nearest)
        unique = sorted(set(resolved))
        if self._video is not None:
            decoded = {}
            for i, rgb in zip(unique, self._video_batch(unique), strict=True):
                grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
                if reduce > 1:
                    h, w = grey.shape
                    grey = cv2.resize(
                        grey, (max(1, w // reduce), max(1, h // reduce)), interpolation=cv2.INTER_AREA
                    )
                decoded[i] = grey
        else:
            self._check_headers(unique)
            decoded = {i: _imread(self._files[i], _REDUCED_GREY[reduce]) for i in unique}
        return _stack([decoded[i] for i in resolved], self.path, colour=False)

    def headers(self, indices: Sequence[int]) -> dict[int, tuple[tuple[int, int], str] | None]:
        """``{index: ((width, height), mode)}`` from the image headers of a folder's frames (no pixel is
        decoded; ``None`` for a header that cannot be parsed); empty for a video, whose frames are alike."""
        if self._video is not None:
            return {}
        return {i: _header(self._files[i]) for i in sorted(set(self.resolve(indices)))}

    def _check_headers(self, indices: list[int]) -> None:
        """Warn (once per frame) when frames of this folder differ in size or mode from its first frame: a
        frame from another clip or camera. They are still converted and resized to match (a cropped release
        differs by a few pixels); only the image headers are read, never the pixels."""
        todo = [i for i in indices if i not in self._checked]
        if not todo:
            return
        if self._reference is None:
            self._reference = _header(self._files[int(self.indices[0])])
        odd = []
        for i in todo:
            self._checked.add(i)
            header = _header(self._files[i])
            if None not in (header, self._reference) and header != self._reference:
                (w, h), mode = header
                odd.append(f"{self._files[i].name} ({w}x{h} {mode})")
        if odd:
            (w, h), mode = self._reference
            logger.warning(
                "%s: frame(s) %s differ from the clip's first frame %s (%dx%d %s); they are converted and "
                "resized to match. Check that the folder holds the frames of one clip",
                self.path,
                ", ".join(odd[:10]) + (f" and {len(odd) - 10} more" if len(odd) > 10 else ""),
                self._files[int(self.indices[0])].name,
                w,
                h,
                mode,
            )

    def _video_batch(self, indices: list[int]) -> np.ndarray:
        if not indices:
            return np.zeros((0, 0, 0, 3), np.uint8)
        positions = [i - self.source.first_frame for i in indices]
        try:
            frames = self._video.get_batch(positions).asnumpy()
        except Exception as err:  # decord raises its own DECORDError types
            raise FrameError(f"{self.path}: cannot decode video frames {indices[:5]}...: {err}") from None
        return frames


def open_frames(source: FrameSource, *, root: Path | None = None) -> FrameReader:
    """Open a frame source for repeated reads (see :class:`FrameReader`)."""
    return FrameReader(source, root=root)


def read_frames(
    source: FrameSource, indices: Sequence[int], *, nearest: bool = True, root: Path | None = None
) -> np.ndarray:
    """Decode only the given absolute frame indices as ``(N, H, W, 3)`` uint8 RGB.

    Greyscale images (SAMM) come back with three equal channels. A dropped frame is replaced by the
    nearest existing one with a logged note; with ``nearest=False`` it raises :class:`FrameError`.
    """
    with FrameReader(source, root=root) as reader:
        return reader.read(indices, nearest=nearest)


def clip_from_folder(
    folder: Path,
    fps: float,
    dataset: str = "test",
    *,
    subject: str | None = None,
    clip_id: str | None = None,
    image_id: str | None = None,
    root: Path | None = None,
) -> Clip:
    """A :class:`Clip` for a frame folder with no annotation (MEGC test clips).

    onset = first frame, offset = last frame, apex unknown (samplers estimate it). ``clip_id`` and
    ``image_id`` default to the folder name, ``subject`` to the parent folder's name.
    """
    folder = Path(folder)
    listing = list_frames(folder, root=root)
    if not listing:
        raise FrameError(f"{folder}: no numbered image files")
    name = folder.name
    return Clip(
        dataset=dataset,
        subject=subject if subject is not None else folder.parent.name,
        clip_id=clip_id or name,
        image_id=image_id or name,
        source=FrameSource("folder", folder),
        fps=float(fps),
        onset=listing[0][0],
        offset=listing[-1][0],
        apex=None,
    )


def _open_video(path: Path) -> Any:
    if not path.is_file():
        raise FrameError(f"{path}: video file not found")
    try:
        import decord
    except ImportError:
        raise FrameError(f"{path}: reading video files needs decord (pip install decord)") from None
    _check_video_frame_size(path)
    with _native_stderr() as said:
        try:
            return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        except Exception as err:  # DECORDError and friends
            failure = err
    # decord's own reason ("Invalid data found when processing input") is in its native log line
    reason = said[0].rpartition(", ")[2].strip() if ", " in said[0] else ""
    first = str(failure).splitlines()[0] if str(failure) else repr(failure)
    raise FrameError(f"{path}: cannot open video ({reason or first}); give a video file or a frame folder")


@contextlib.contextmanager
def _native_stderr() -> Iterator[list[str]]:
    """Catch what native code (decord's C++ logger, which its ``set_level`` does not reach) writes to the
    process's stderr while the block runs: the user sees the project's message, not a raw log line. The text
    is yielded (``said[0]``, filled on exit) and logged at debug level."""
    said = [""]
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2 (embedded interpreter): nothing to catch
        yield said
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            said[0] = capture.read(4096).decode("utf-8", "replace").strip()
            if said[0]:
                logger.debug("native decoder: %s", said[0])


def _header(path: Path) -> tuple[tuple[int, int], str] | None:
    """``((width, height), mode)`` from a frame file's header (:func:`megc_vqa.limits.image_header`: no pixel
    is decoded); ``None`` when it cannot be parsed (decoding the frame then says what is wrong). A frame over
    the pixel limit is a :class:`FrameError`, as its decoding would be."""
    try:
        return image_header(path, str(path))
    except InputError as err:
        raise FrameError(str(err)) from None


def _check_video_frame_size(path: Path) -> None:
    """Refuse a video whose frames are over :data:`megc_vqa.limits.IMAGE_PIXELS` before decord decodes one
    (the size comes from the container and stream headers, which OpenCV reads on open). A file OpenCV
    cannot open is left to decord, which reports it."""
    capture = cv2.VideoCapture(str(path))
    try:
        width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH) or 0)
        height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT) or 0)
    finally:
        capture.release()
    try:
        check_image_pixels(width, height, str(path), "video frames")
    except InputError as err:
        raise FrameError(str(err)) from None


def _imread(path: Path, flags: int) -> np.ndarray:
    # Read the bytes ourselves: OpenCV decodes a truncated JPEG (an interrupted copy) into a half-grey
    # image with only a warning on stderr, so we check for the end-of-image marker first.
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise FrameError(f"{path}: cannot read frame image ({err.strerror})") from None
    if path.suffix.lower() in (".jpg", ".jpeg") and b"\xff\xd9" not in data[-64:].tobytes():
        raise FrameError(f"{path}: cannot decode frame image (truncated JPEG: no end-of-image marker)")
    try:
        check_image_header(data.data, str(path))  # the pixel count, before OpenCV allocates it
    except InputError as err:
        raise FrameError(str(err)) from None
    try:
        image = cv2.imdecode(data, flags) if data.size else None
    except cv2.error as err:
        raise FrameError(f"{path}: cannot decode frame image ({getattr(err, 'msg', err)})") from None
    if image is None or image.size == 0:
        raise FrameError(f"{path}: cannot decode frame image (empty, corrupt or not an image)")
    return image


def _imread_rgb(path: Path) -> np.ndarray:
    if _IMREAD_RGB is not None:
        return _imread(path, _IMREAD_RGB)
    return cv2.cvtColor(_imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def _stack(
    frames: list[np.ndarray], path: Path, *, colour: bool, shape: tuple[int, int] | None = None
) -> np.ndarray:
    """Frames as one array of ``shape`` (default: the first frame's): a frame of another size is resized
    to it (the visual layer resizes every frame anyway; a mixed-size folder must not abort the clip)."""
    if not frames:
        return np.zeros((0, 0, 0, 3) if colour else (0, 0, 0), np.uint8)
    height, width = shape or frames[0].shape[:2]
    out = np.empty((len(frames), height, width, *frames[0].shape[2:]), dtype=np.uint8)
    resized = 0
    for k, frame in enumerate(frames):
        if frame.shape[:2] != (height, width):
            frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA)
            resized += 1
        out[k] = frame
    if resized:
        logger.info("%s: %d frame(s) of another size resized to %dx%d", path, resized, width, height)
    return out
