"""Turn a clip into what a vision-language model sees: key frames, a motion image, or a short video.

Sampler specs (``parse_sampler``) are parts joined by ``+``:

- ``oao``: the onset, apex and offset frames;
- ``uniform:N``: N frames evenly spaced over onset..offset, endpoints included (indices rounded, so
  a clip shorter than N frames repeats frames and the model always gets N);
- ``flow``: the onset-to-apex optical flow drawn as an image (see :mod:`megc_vqa.visual.flow`);
- ``diff``: the onset-to-apex grey difference image.

At most one of ``oao``/``uniform:N``; e.g. ``oao+flow`` (what the 3rd-placed MEGC2025 team fed),
``uniform:8+flow``, ``flow``. ``images`` holds the key frames in time order, then the flow image, then
the diff image; ``video`` holds the same key frames stacked ``(T, H, W, 3)`` for video-mode models.

:func:`sample` decodes only the frames it needs (plus small grey copies for apex estimation when the
clip has no apex), optionally runs the face pipeline (:class:`~megc_vqa.visual.face.FaceSettings`: a crop
or an aligned face, registration to the onset, magnification; :mod:`megc_vqa.visual.facepipe`), resizes
so the *shorter side* equals ``size`` (aspect ratio kept; up- or down-scaled; ``None`` keeps native size),
and computes flow/diff on the frames as the model sees them, so their pixels line up. A clip the face
pipeline cannot use raises :class:`~megc_vqa.visual.errors.FaceSkip` (a ``FrameError``) naming it. With ``cache_dir`` the result is stored as
an ``.npz`` keyed by everything that changes it, and a second call only loads that file.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from megc_vqa.fileio import atomic_write_bytes
from megc_vqa.frame_names import is_image
from megc_vqa.records import Clip, FrameSource
from megc_vqa.visual.apex import estimate_apex
from megc_vqa.visual.errors import FrameError
from megc_vqa.visual.face import Box, FaceSettings, crop, face_box
from megc_vqa.visual.facepipe import FaceGeometry, Registrar, check_frames_alike, face_geometry, magnify
from megc_vqa.visual.flow import diff_image, flow_image
from megc_vqa.visual.frames import FrameReader
from megc_vqa.visual.spec import APEX_METHODS, FLOW_METHODS, SamplerSpec, parse_sampler

logger = logging.getLogger(__name__)

# Bump when the cached content or its meaning changes, so stale caches are never reused.
CACHE_VERSION = 3


@dataclass(frozen=True)
class VisualInputs:
    """A clip's model-ready visual inputs.

    images: RGB uint8 HxWx3 arrays in order: key frames (time order), flow image, diff image.
    video: the key frames stacked ``(T, H, W, 3)`` for video-mode models, or ``None`` without key frames.
        ``images``' key frames are views of it (no copy).
    frame_indices: absolute frame indices of the key frames (after any dropped-frame substitution).
    fps: frame rate of ``video`` as sampled, i.e. (T - 1) / seconds spanned, so a model's temporal
        encoding matches real time; the clip's fps when fewer than two distinct frames were sampled.
    description: what the images are, e.g. ``onset, apex and offset frames + farneback flow onset->apex
        [shorter side 224px]``; it holds no frame numbers, so training and test prompts read alike.
    apex: the apex frame used (annotated or estimated; apex_estimated tells which), or ``None`` when the
        clip has none and the spec did not need one (``uniform:N`` alone).
    face_box: the crop box ``(x, y, w, h)`` in source pixels, or ``None`` for the full frame.
    """

    images: tuple[np.ndarray, ...]
    video: np.ndarray | None
    frame_indices: tuple[int, ...]
    fps: float
    description: str
    apex: int | None = None
    apex_estimated: bool = False
    face_box: Box | None = None


def key_frame_targets(spec: SamplerSpec, onset: int, apex: int | None, offset: int) -> list[int]:
    """Absolute frame indices the key frames should come from (before dropped-frame substitution)."""
    if spec.frames == "oao":
        if apex is None:
            raise ValueError("the oao sampler needs an apex")
        return [onset, apex, offset]
    if spec.frames == "uniform":
        return [round(float(x)) for x in np.linspace(onset, offset, spec.n_frames)]
    return []


def resize_shorter(frames: np.ndarray, size: int | None) -> np.ndarray:
    """Resize ``(H, W, 3)`` or ``(N, H, W, 3)`` so the shorter side is ``size`` (aspect kept); None = unchanged."""
    if size is None:
        return frames
    if size < 1:
        raise ValueError(f"size must be a positive number of pixels or None, got {size}")
    height, width = frames.shape[-3:-1]
    scale = size / min(height, width)
    if scale == 1.0:
        return frames
    new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
    interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
    if frames.ndim == 3:
        return cv2.resize(frames, (new_w, new_h), interpolation=interp)
    out = np.empty((len(frames), new_h, new_w, frames.shape[-1]), np.uint8)
    for k, frame in enumerate(frames):
        out[k] = cv2.resize(frame, (new_w, new_h), interpolation=interp)
    return out


@functools.cache
def code_version() -> str:
    """Hash of the source of the modules that shape visual inputs, and of the OpenCV and NumPy versions
    that compute them (optical flow, resizing and the face detector change between OpenCV releases): a
    code or library change never reuses a cache."""
    try:
        import dlib

        dlib_version = str(getattr(dlib, "__version__", "?"))
    except ImportError:
        dlib_version = "none"
    digest = hashlib.sha256(
        f"{CACHE_VERSION} cv2 {cv2.__version__} numpy {np.__version__} dlib {dlib_version}".encode()
    )
    for name in ("frames", "face", "facepipe", "apex", "flow", "spec", "samplers"):  # all imported above
        digest.update(Path(sys.modules[f"megc_vqa.visual.{name}"].__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


def source_fingerprint(source: FrameSource) -> list[Any]:
    """What identifies a frame source's content without decoding it: for a folder, every image file's
    name, size and mtime; for a video, its size and mtime. A frame rewritten in place, added or removed
    changes it."""
    path = Path(source.path)
    try:
        if source.kind == "folder":
            return sorted(
                [e.name, st.st_size, st.st_mtime_ns]
                for e in os.scandir(path)
                if is_image(e.name) and e.is_file() and (st := e.stat())
            )
        st = path.stat()
        return [[path.name, st.st_size, st.st_mtime_ns]]
    except OSError as err:
        raise FrameError(f"{path}: frame source not found ({err.strerror})") from None


def cache_key(
    clip: Clip,
    spec: SamplerSpec,
    *,
    size: int | None,
    face_crop: bool = False,
    flow_method: str = "farneback",
    apex_method: str = "motion",
    face: FaceSettings | None = None,
) -> str:
    """Hash of everything the result depends on: the source (path, kind, first frame, and every frame
    file's name, size and mtime), the clip's fps and onset/apex/offset, every sampler and face setting, and
    the code version of the visual modules. ``face_crop`` is the earlier switch (``face: box``)."""
    face = _face_settings(face, face_crop)
    fields = {
        "code": code_version(),
        "path": os.path.abspath(clip.source.path),
        "kind": clip.source.kind,
        "first_frame": clip.source.first_frame,
        "files": source_fingerprint(clip.source),
        "fps": float(clip.fps),
        "onset": clip.onset,
        "apex": clip.apex,
        "offset": clip.offset,
        "spec": str(spec),
        "size": size,
        "flow_method": flow_method,
        "apex_method": apex_method,
        **face.key(),
    }
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:32]


def sample(
    clip: Clip,
    spec: str | SamplerSpec = "oao+flow",
    *,
    size: int | None = 224,
    face_crop: bool = False,
    flow_method: str = "farneback",
    cache_dir: Path | None = None,
    root: Path | None = None,
    apex_method: str = "motion",
    face: FaceSettings | None = None,
) -> VisualInputs:
    """Build a clip's :class:`VisualInputs` for a sampler spec (see the module docstring).

    size: shorter side in pixels after resizing (aspect kept), ``None`` for native size.
    face: the face pipeline's settings (:class:`~megc_vqa.visual.face.FaceSettings`); ``None``: none.
    face_crop: the earlier switch, ``face: box`` (the Haar box of the onset frame grown by 15%, the full
        frame with a warning if none is found); ignored when ``face`` is given.
    flow_method: ``farneback`` or ``tvl1`` (needs opencv-contrib).
    cache_dir: where to keep ``.npz`` results; ``None`` disables caching.
    root: dataset root the clip's frames must stay inside.
    apex_method: for clips without an apex: ``motion`` (:func:`~megc_vqa.visual.apex.estimate_apex`, the
        frame of largest motion against the onset) or ``midpoint`` (the middle of onset..offset, a
        common SMIC convention).
    Raises FrameError (naming the path) when frames cannot be read, FaceSkip (a FrameError naming the clip)
    when the face pipeline cannot use the clip, FaceDetectorUnavailable when the detector asked for is not
    installed.
    """
    parsed = spec if isinstance(spec, SamplerSpec) else parse_sampler(spec)
    face = _face_settings(face, face_crop)
    if flow_method not in FLOW_METHODS:
        raise ValueError(f"unknown flow method {flow_method!r}; choose one of {', '.join(FLOW_METHODS)}")
    if apex_method not in APEX_METHODS:
        raise ValueError(f"unknown apex method {apex_method!r}; choose one of {', '.join(APEX_METHODS)}")
    cache_file = None
    if cache_dir is not None:
        key = cache_key(clip, parsed, size=size, flow_method=flow_method, apex_method=apex_method, face=face)
        cache_file = Path(cache_dir) / f"{clip.dataset}_{_safe(clip.image_id)}_{key}.npz"
        cached = _load(cache_file)
        if cached is not None:
            return cached
    with FrameReader(clip.source, root=root) as reader:
        result = _compute(
            clip,
            parsed,
            reader,
            size=size,
            face=face,
            flow_method=flow_method,
            apex_method=apex_method,
        )
    if cache_file is not None:
        _save(cache_file, result, parsed)
    return result


def _face_settings(face: FaceSettings | None, face_crop: bool) -> FaceSettings:
    return face if face is not None else FaceSettings.legacy(face_crop)


def _compute(
    clip: Clip,
    spec: SamplerSpec,
    reader: FrameReader,
    *,
    size: int | None,
    face: FaceSettings,
    flow_method: str,
    apex_method: str,
) -> VisualInputs:
    onset, offset = reader.resolve([clip.onset, clip.offset])
    label = f"{clip.dataset}/{clip.image_id}"
    box: Box | None = None
    geometry: FaceGeometry | None = None
    onset_frame: np.ndarray | None = None
    if face.face == "box":
        onset_frame = reader.read([onset])[0]
        box = face_box(onset_frame, margin=face.margin, label=label)
    elif face.pipeline:
        onset_frame = reader.read([onset])[0]
        geometry = face_geometry(onset_frame, face, size, label)
        box = geometry.box

    # The apex is only needed by oao, flow and diff: uniform:N alone never pays for estimating it.
    needs_apex = spec.frames == "oao" or spec.flow or spec.diff
    apex: int | None = None
    if clip.apex is not None:
        apex = reader.resolve([clip.apex])[0]
    elif needs_apex and apex_method == "midpoint":
        apex = reader.resolve([(onset + offset) // 2])[0]
    elif needs_apex:
        apex = estimate_apex(clip, reader=reader, box=box)
    apex_estimated = clip.apex is None and apex is not None

    key_indices = reader.resolve(key_frame_targets(spec, onset, apex, offset))
    wanted = list(key_indices)
    if apex is not None and (spec.flow or spec.diff):
        wanted += [onset, apex]
    if geometry is not None:
        wanted.append(onset)  # registration and magnification work against the onset frame
    unique = sorted(set(wanted))
    if onset_frame is not None and onset in unique:
        rest = [i for i in unique if i != onset]
        decoded = dict(zip(rest, reader.read(rest), strict=True)) if rest else {}
        decoded[onset] = onset_frame
    else:
        decoded = dict(zip(unique, reader.read(unique), strict=True)) if unique else {}
    if geometry is not None:
        ready = _face_frames(
            decoded, reader, geometry, face, size, label, onset=onset, apex=apex, offset=offset
        )
    else:
        ready = {i: resize_shorter(crop(frame, box), size) for i, frame in decoded.items()}

    images: list[np.ndarray] = []
    video = None
    if key_indices:
        video = np.stack([ready[i] for i in key_indices])
        images.extend(video)
    # The description names what each image is, never frame numbers or whether the apex was estimated:
    # a test clip's prompt must read exactly like a training clip's (train/test parity).
    parts = [_describe_frames(spec)]
    if spec.flow and apex is not None:
        images.append(flow_image(ready[onset], ready[apex], flow_method))
        parts.append(f"{flow_method} flow onset->apex")
    if spec.diff and apex is not None:
        images.append(diff_image(ready[onset], ready[apex]))
        parts.append("diff onset->apex")
    extras = _describe_face(face, box)
    if size is not None:
        extras.append(f"shorter side {size}px")
    description = " + ".join(p for p in parts if p) + (f" [{', '.join(extras)}]" if extras else "")
    return VisualInputs(
        images=tuple(images),
        video=video,
        frame_indices=tuple(int(i) for i in key_indices),
        fps=_sampled_fps(key_indices, clip.fps),
        description=description,
        apex=apex,
        apex_estimated=apex_estimated,
        face_box=box,
    )


def _face_frames(
    decoded: dict[int, np.ndarray],
    reader: FrameReader,
    geometry: FaceGeometry,
    face: FaceSettings,
    size: int | None,
    label: str,
    *,
    onset: int,
    apex: int | None,
    offset: int,
) -> dict[int, np.ndarray]:
    """The decoded frames through the face pipeline: same size and mode checked, placed in the clip's
    geometry (registered to the onset when asked), resized, magnified when asked."""
    check_frames_alike(reader.headers(list(decoded)), onset, label)
    registrar = Registrar(geometry, decoded[onset], label, face.register)
    roles = {offset: "offset", **({apex: "apex"} if apex is not None else {})}
    placed = {
        i: registrar(frame, i, roles.get(i, "key frame")) if i != onset else registrar(frame, i, "onset")
        for i, frame in decoded.items()
    }
    ready = {i: resize_shorter(frame, size) for i, frame in placed.items()}
    return magnify(ready, onset, face.magnify, label, geometry.mask)


def _describe_face(face: FaceSettings, box: Box | None) -> list[str]:
    """What the face pipeline did, the same words for every clip of a setting (train/test parity)."""
    if face.face == "box":
        return ["face crop" if box is not None else "full frame (no face found)"]
    extras = {"crop": ["face crop"], "align": ["aligned face"]}.get(face.face, [])
    if face.register:
        extras.append("registered to the onset")
    if face.magnify != 1.0:
        extras.append(f"motion magnified x{face.magnify:g}")
    return extras


def _describe_frames(spec: SamplerSpec) -> str:
    if spec.frames == "oao":
        return "onset, apex and offset frames"
    if spec.frames == "uniform":
        return f"{spec.n_frames} frames evenly spaced from onset to offset"
    return ""


def _sampled_fps(indices: list[int], clip_fps: float) -> float:
    if len(set(indices)) < 2:
        return float(clip_fps)
    seconds = (max(indices) - min(indices)) / clip_fps
    return (len(indices) - 1) / seconds


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:60]


def _save(path: Path, result: VisualInputs, spec: SamplerSpec) -> None:
    n_key = len(result.frame_indices)
    extra = result.images[n_key:]
    meta = {
        "fps": result.fps,
        "description": result.description,
        "apex": result.apex,
        "apex_estimated": result.apex_estimated,
        "face_box": result.face_box,
        "n_extra": len(extra),
    }
    arrays: dict[str, np.ndarray] = {
        "frame_indices": np.asarray(result.frame_indices, np.int64),
        "meta": np.asarray(json.dumps(meta)),
    }
    if result.video is not None:
        arrays["video"] = result.video
    for k, image in enumerate(extra):
        arrays[f"extra{k}"] = image
    buffer = io.BytesIO()  # a file object keeps numpy from appending another .npz
    np.savez(buffer, **arrays)
    # atomic: a crash never leaves a half-written cache file, and a FIFO or link there is refused
    atomic_write_bytes(path, buffer.getvalue())


def _load(path: Path) -> VisualInputs | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            video = data["video"] if "video" in data.files else None
            extra = [data[f"extra{k}"] for k in range(meta["n_extra"])]
            indices = tuple(int(i) for i in data["frame_indices"])
    except Exception as err:  # a truncated or foreign file: recompute rather than fail
        logger.warning("%s: unreadable cache file (%s); recomputing", path, err)
        return None
    images = (*(tuple(video) if video is not None else ()), *extra)
    box = meta["face_box"]
    return VisualInputs(
        images=images,
        video=video,
        frame_indices=indices,
        fps=float(meta["fps"]),
        description=meta["description"],
        apex=meta["apex"],
        apex_estimated=bool(meta["apex_estimated"]),
        face_box=tuple(box) if box is not None else None,
    )
