"""Training records and their visual inputs: read qa.jsonl, filter and mix question types, and a
``visual_fn(record) -> VisualInputs`` over the visual layer's samplers.

Records stay plain JSON rows (dicts with the ``megc_vqa.qa`` QARecord keys); nothing here knows about
models or processors.
"""

from __future__ import annotations

import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from megc_vqa.models.prompting import VisualFn, get_field

log = logging.getLogger(__name__)

REQUIRED_KEYS = ("id", "dataset", "subject", "question", "answer")


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a QA JSONL file (``megc-vqa prep`` output or the official training file).

    A line that is not JSON or lacks a required key is an error naming the file and line.
    ``question_type`` is filled in from the question when absent.
    """
    from megc_vqa.qa.templates import classify_question

    p = Path(path)
    rows = []
    with p.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{p}:{n}: not valid JSON ({err.msg})") from None
            missing = [k for k in REQUIRED_KEYS if k not in row]
            if missing:
                raise ValueError(f"{p}:{n}: missing key(s) {', '.join(missing)}")
            row["subject"] = str(row["subject"])
            row.setdefault("question_type", classify_question(row["question"]))
            rows.append(row)
    if not rows:
        raise ValueError(f"{p}: no records")
    return rows


def select_records(
    records: Sequence[Any], question_types: Sequence[str] | None = None, mix: dict[str, int] | None = None
) -> list[Any]:
    """Keep ``question_types`` (all when ``None``) and repeat each type ``mix[type]`` times (default 1)."""
    kept = [r for r in records if not question_types or get_field(r, "question_type") in question_types]
    if not mix:
        return kept
    out = []
    for r in kept:
        out += [r] * max(0, int(mix.get(get_field(r, "question_type"), 1)))
    return out


def record_clip(record: Any) -> Any:
    """The :class:`megc_vqa.records.Clip` a QA record points at (frames, fps and key frames)."""
    from megc_vqa.records import Clip, FrameSource
    from megc_vqa.visual.frames import clip_from_folder

    source = get_field(record, "source")
    if not source:
        raise FileNotFoundError(
            "the record has no 'source' (its clip was not found when the QA file was made)"
        )
    fps = float(get_field(record, "fps") or 30.0)
    kind = get_field(record, "source_kind") or ("video" if Path(source).is_file() else "folder")
    onset, offset = get_field(record, "onset"), get_field(record, "offset")
    if onset is None or offset is None:
        return clip_from_folder(Path(source), fps, str(get_field(record, "dataset", "test")))
    image_id = str(get_field(record, "image_id") or get_field(record, "id"))
    return Clip(
        dataset=str(get_field(record, "dataset")),
        subject=str(get_field(record, "subject")),
        clip_id=str(get_field(record, "filename") or image_id),
        image_id=image_id,
        source=FrameSource(kind, Path(source), int(get_field(record, "first_frame") or 0)),
        fps=fps,
        onset=int(onset),
        offset=int(offset),
        apex=None if get_field(record, "apex") is None else int(get_field(record, "apex")),
    )


def make_visual_fn(
    spec: str = "oao+flow",
    size: int | None = 224,
    face_crop: bool = False,
    cache_dir: str | Path | None = None,
    memory_cache: int = 512,
) -> VisualFn:
    """``visual_fn(record) -> VisualInputs`` through ``megc_vqa.visual.samplers.sample``.

    Questions of one clip share its visual inputs, so the last ``memory_cache`` clips are kept in memory
    (keyed by source and key frames); ``cache_dir`` adds the sampler's own disk cache.
    """
    from megc_vqa.visual.samplers import parse_sampler, sample

    parsed = parse_sampler(spec)  # fail now, with the grammar, not at the first batch
    cache: OrderedDict[tuple, Any] = OrderedDict()

    def visual_fn(record: Any) -> Any:
        key = tuple(get_field(record, k) for k in ("source", "first_frame", "fps", "onset", "apex", "offset"))
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        result = sample(
            record_clip(record),
            parsed,
            size=size,
            face_crop=face_crop,
            cache_dir=Path(cache_dir) if cache_dir else None,
        )
        if memory_cache > 0:
            cache[key] = result
            if len(cache) > memory_cache:
                cache.popitem(last=False)
        return result

    return visual_fn
