"""Training records and their visual inputs: read qa.jsonl through the typed reader, filter and mix
question types, and a ``visual_fn(record) -> VisualInputs`` over the visual layer's samplers with the
settings of the training record (:class:`megc_vqa.models.contract.VisualContract`).

Records are :class:`megc_vqa.qa.QARecord`; nothing here knows about models or processors.
``synth:NAME`` as a file name stands for a synthetic QA set built on first use in the cache
(``$MEGC_VQA_CACHE/data/NAME``), as the tiny models are, so the smoke recipe runs on a fresh clone.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from megc_vqa.fileio import atomic_cache_folder, cache_base
from megc_vqa.models.contract import VisualContract
from megc_vqa.models.prompting import VisualFn, get_field
from megc_vqa.qa.io import read_qa_jsonl
from megc_vqa.qa.prep import prepare
from megc_vqa.qa.records import QARecord
from megc_vqa.records import Clip, FrameSource
from megc_vqa.synth.datasets import write_datasets
from megc_vqa.visual.errors import FaceSkip
from megc_vqa.visual.frames import clip_from_folder
from megc_vqa.visual.samplers import sample

log = logging.getLogger(__name__)

SYNTH_PREFIX = "synth:"
# Synthetic QA sets: ``megc-vqa synth`` arguments. Bump "version" when the generator's output changes.
SYNTHETIC_SETS: dict[str, dict[str, Any]] = {
    "tiny": {"subjects": 5, "clips_per_subject": 2, "datasets": ("casme2", "samm", "smic"), "size": 64},
}
SYNTHETIC_VERSION = 1


def synthetic_root() -> Path:
    """``$MEGC_VQA_CACHE/data`` (default ``~/.cache/megc_vqa/data``)."""
    return cache_base() / "data"


def ensure_synthetic_qa(name: str, root: str | Path | None = None) -> Path:
    """``qa.jsonl`` of synthetic set ``name``: ``megc-vqa synth`` then ``megc-vqa prep`` into the cache on
    first use (built next to the target and renamed, so a concurrent reader never sees half a set)."""
    settings = SYNTHETIC_SETS[name]
    base = Path(root) if root else synthetic_root()
    target = base / name
    stamp = target / "megc_vqa_synth.json"
    wanted = {"name": name, "version": SYNTHETIC_VERSION, **settings, "datasets": list(settings["datasets"])}
    if stamp.is_file() and json.loads(stamp.read_text()) == wanted:
        return target / "prep" / "qa.jsonl"
    log.info("building synthetic QA set %s into %s (megc-vqa synth + prep, first use only)", name, target)
    with atomic_cache_folder(target, stamp.name, "synthetic QA cache", is_current=stamp.is_file) as tmp:
        write_datasets(
            tmp / "synth", 0, settings["subjects"], settings["clips_per_subject"], settings["datasets"],
            settings["size"], 1,
        )  # fmt: skip
        prepare(tmp / "synth", tmp / "prep", progress=False)  # frame paths relative to qa.jsonl
        (tmp / stamp.name).write_text(json.dumps(wanted))
    log.info("synthetic QA set %s: %s", name, target / "prep" / "qa.jsonl")
    return target / "prep" / "qa.jsonl"


def resolve_qa_file(value: str | Path) -> Path:
    """A recipe's ``train_file``/``eval_file``: a path, or ``synth:NAME`` (built on first use)."""
    text = str(value)
    if text.startswith(SYNTH_PREFIX):
        return ensure_synthetic_qa(text[len(SYNTH_PREFIX) :])
    return Path(value)


def load_records(path: str | Path) -> list[QARecord]:
    """Records of a QA JSONL file (``megc-vqa prep`` output or the official training file), through
    :func:`megc_vqa.qa.io.read_qa_jsonl`: a bad line is an error naming the file and line, a missing
    ``question_type`` is classified from the question, relative frame paths are relative to the file."""
    records = read_qa_jsonl(resolve_qa_file(path))
    if not records:
        raise ValueError(f"{path}: no records")
    return records


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


def clip_key(record: Any) -> tuple[str, str]:
    """The clip a QA record asks about: its questions share this key (and their visual inputs)."""
    return str(get_field(record, "dataset")), str(get_field(record, "image_id") or get_field(record, "id"))


def balance_classes(records: Sequence[Any], question_type: str, cap: int) -> list[Any]:
    """Repeat the records of clips whose ``question_type`` answer is rare in their dataset.

    A clip of class ``c`` in dataset ``D`` is repeated ``min(cap, round(n_max / n_c))`` times, with
    ``n_c`` the clips of ``c`` in ``D`` and ``n_max`` those of ``D``'s commonest class, so a class with a
    tenth of the commonest's clips is seen ``cap`` times as often. Every question of the clip is repeated,
    not only ``question_type``'s: the rare classes' action units are then also seen more in the AU,
    presence and joint answers. Clips without a ``question_type`` record (SMIC has no fine class) stay once.
    The MEGC scores (UF1, UAR) weigh each class the same, however rare.
    """
    from collections import Counter, defaultdict

    label = {
        clip_key(r): str(get_field(r, "answer"))
        for r in records
        if get_field(r, "question_type") == question_type
    }
    per_dataset: dict[str, Counter[str]] = defaultdict(Counter)
    for (dataset, _), answer in label.items():
        per_dataset[dataset][answer] += 1
    factor = {
        (dataset, answer): max(1, min(cap, round(max(counts.values()) / n)))
        for dataset, counts in per_dataset.items()
        for answer, n in counts.items()
    }
    for dataset, counts in sorted(per_dataset.items()):
        log.info(
            "balance_classes %s, %s: %s",
            question_type,
            dataset,
            ", ".join(f"{a} {n} clips x{factor[dataset, a]}" for a, n in counts.most_common()),
        )
    repeats = {key: factor[key[0], answer] for key, answer in label.items()}
    out = []
    for r in records:
        out += [r] * repeats.get(clip_key(r), 1)
    return out


def record_clip(record: Any) -> Any:
    """The :class:`megc_vqa.records.Clip` a QA record points at (frames, fps and key frames)."""
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


def uses_estimated_apex(clip: Any, policy: str) -> bool:
    """Whether ``policy`` replaces this clip's annotated apex by the estimator's (``mix``: stable per clip)."""
    if policy == "estimated":
        return True
    if policy == "mix":
        digest = hashlib.sha256(f"{clip.dataset}/{clip.image_id}".encode()).digest()
        return digest[0] % 2 == 1
    return False


def make_visual_fn(
    visual: VisualContract | None = None,
    cache_dir: str | Path | None = None,
    memory_cache: int = 512,
    apex_policy: str | None = None,
) -> VisualFn:
    """``visual_fn(record) -> VisualInputs`` with the training record's visual settings.

    ``apex_policy`` replaces ``visual.apex_policy`` (validation uses ``estimated``, as at test time).
    Questions of one clip share its visual inputs, so the last ``memory_cache`` clips are kept in memory;
    ``cache_dir`` adds the sampler's own disk cache.
    """
    visual = visual or VisualContract()
    policy = apex_policy or visual.apex_policy
    cache: OrderedDict[tuple, Any] = OrderedDict()

    def visual_fn(record: Any) -> Any:
        key = tuple(get_field(record, k) for k in ("source", "first_frame", "fps", "onset", "apex", "offset"))
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
        clip = record_clip(record)
        if clip.apex is not None and uses_estimated_apex(clip, policy):
            clip = replace(clip, apex=None)  # the sampler estimates it, with the answering estimator
        result = sample(clip, cache_dir=Path(cache_dir) if cache_dir else None, **visual.sample_kwargs())
        if memory_cache > 0:
            cache[key] = result
            if len(cache) > memory_cache:
                cache.popitem(last=False)
        return result

    return visual_fn


def drop_face_skips(
    records: Sequence[Any], visual_fn: VisualFn, what: str = "training"
) -> tuple[list[Any], list[str]]:
    """The records whose clip the face pipeline can use, and one line per clip it skipped (no face, two
    faces, a face cut by the border, a crop outside the frame, a face leaving the frame, frames of another
    size or mode: :class:`megc_vqa.visual.errors.FaceSkip`). Each clip is sampled once here (the visual
    function's memory and disk caches keep the result for training); every skip is logged with the clip's
    name and the count said once."""
    kept: list[Any] = []
    skipped: dict[tuple, str] = {}
    seen: set[tuple] = set()
    for record in records:
        key = tuple(get_field(record, k) for k in ("source", "first_frame", "fps", "onset", "apex", "offset"))
        if key not in seen:
            seen.add(key)
            try:
                visual_fn(record)
            except FaceSkip as err:
                skipped[key] = str(err)
                log.warning("%s clip %s", what, err)
        if key not in skipped:
            kept.append(record)
    if skipped:
        log.warning(
            "face pipeline: %d of %d %s clip(s) skipped (%d record(s)); each is named above",
            len(skipped), len(seen), what, len(records) - len(kept),
        )  # fmt: skip
    return kept, list(skipped.values())
