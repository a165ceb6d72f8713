"""Spotting recipes and the long videos they name.

Recipes (``recipes/spotting/*.yaml``) have four sections: ``model`` (``SpotterConfig``; ``architecture``
names the network, one of ``model.SPOTTERS``), ``train`` (``TrainConfig``), ``peaks`` (``PeakParams``
defaults) and ``data`` (where the videos are: ``gt_csv`` + ``videos_root`` in the STR layout,
``long_videos_jsonl``, or ``loader: NAME`` + ``roots`` for the dataset loaders, NAME one of :data:`LOADERS`:
a recipe names a loader from that fixed table and never a module, so no recipe can run code).

Ground truth is read by the project's one STR reader (:func:`megc_vqa.metrics.strs.read_events`), long-video
JSONL by its one JSONL parser (:func:`megc_vqa.fileio.parse_jsonl`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from megc_vqa.annotations import load_all
from megc_vqa.annotations.long_videos import FpsPolicy, check_fps, discover_videos
from megc_vqa.errors import InputError, UsageError, check_number, cut, reject_unknown_keys
from megc_vqa.fileio import (
    TOLERATED_PROBLEMS,
    is_inside,
    parse_jsonl,
    read_jsonl_bytes,
    read_yaml_mapping,
    resolve_inside,
)
from megc_vqa.labels import STR_CLASSES
from megc_vqa.limits import BATCH_SIZE, EPOCHS, SAMPLES, WORKERS, check_count
from megc_vqa.metrics.strs import MAX_FRAME, canonical_subject, expression_type, read_events
from megc_vqa.records import Event, FrameSource, LongVideo

from .spotter_config import SpotterConfig

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Optimisation and model-selection settings."""

    epochs: int = 12
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    balance: float = 1.0  # total sampling weight of event windows relative to background windows
    samples_per_epoch: int | None = None  # windows drawn per epoch (default: all windows once)
    pos_weight_max: float = 10.0  # cap of the BCE positive weight (label mass imbalance)
    emotion_weight: float = 0.5
    val_subjects: float = (
        0.2  # fraction (or count when >= 1) of training subjects held out as inner validation
    )
    thresholds: tuple[float, ...] = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
    extents: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6)
    smooths: tuple[float, ...] = (0.05,)  # PeakParams.smooth_seconds candidates (a recipe may add more)
    # PeakParams.micro_cut_seconds candidates, picked after the others by typed strict F1
    # (empty: the 0.5 s rule)
    micro_cuts: tuple[float, ...] = ()
    iou: float = 0.5
    phases: int = 1  # sampling-grid offsets prepared per training video (augmentation)
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None


RECIPE_SECTIONS = ("model", "train", "peaks", "data")
DATA_KEYS = ("long_videos_jsonl", "gt_csv", "videos_root", "fps", "loader", "roots", "datasets")


def check_train_config(cfg: TrainConfig, where: str = "train") -> None:
    """Every ``train:`` value in its allowed range (``UsageError`` naming the key and the range)."""

    def num(key: str, **bounds: float) -> None:
        check_number(f"{where}.{key}", getattr(cfg, key), **bounds)

    check_count(f"{where}.epochs", cfg.epochs, EPOCHS)
    check_count(f"{where}.batch_size", cfg.batch_size, BATCH_SIZE)
    check_count(f"{where}.samples_per_epoch", cfg.samples_per_epoch, SAMPLES)
    num("lr", above=0)
    num("weight_decay", minimum=0)
    num("balance", minimum=0)
    num("pos_weight_max", minimum=1)
    num("emotion_weight", minimum=0)
    num("val_subjects", minimum=0)
    num("iou", above=0, maximum=1)
    num("phases", minimum=1)
    num("seed", minimum=0)
    check_count(f"{where}.threads", cfg.threads, WORKERS)
    for key in ("thresholds", "extents"):
        values = getattr(cfg, key)
        if not values:
            raise UsageError(f"{where}.{key}: give at least one value")
        for v in values:
            if key == "thresholds":
                check_number(f"{where}.{key} entry", v, minimum=0, maximum=1)
            else:
                check_number(f"{where}.{key} entry", v, above=0, maximum=1)
    for v in cfg.smooths:
        check_number(f"{where}.smooths entry", v, minimum=0)
    for v in cfg.micro_cuts:
        check_number(f"{where}.micro_cuts entry", v, above=0)


def load_recipe(path: str | Path) -> tuple[object, TrainConfig, object, dict]:
    """(SpotterConfig, TrainConfig, PeakParams, data section) from a recipe YAML.

    Every key is checked: an unknown one (a typo) is an error with the closest known spelling, and every
    number must be in its range, so a recipe never trains with a value silently dropped."""

    from .infer import PeakParams  # torch, OpenCV: a command module stays light until it runs
    from .model import check_architecture

    path = Path(path)
    recipe = read_yaml_mapping(path, "spotting recipe", hint=" (see recipes/spotting/*.yaml)")
    reject_unknown_keys(recipe, RECIPE_SECTIONS, str(path), "recipe section")
    sections = {}
    for name in RECIPE_SECTIONS:
        value = recipe.get(name) or {}
        if not isinstance(value, dict):
            raise InputError(f"{path}: section {name}: expected key: value lines, got {type(value).__name__}")
        sections[name] = dict(value)
    train = sections["train"]
    for key in ("thresholds", "extents", "smooths", "micro_cuts"):
        if key in train:
            train[key] = tuple(train[key]) if isinstance(train[key], (list, tuple)) else (train[key],)
    reject_unknown_keys(train, [f.name for f in dataclasses.fields(TrainConfig)], f"{path}: train")
    reject_unknown_keys(sections["data"], DATA_KEYS, f"{path}: data")
    try:
        model_cfg = SpotterConfig.from_dict(sections["model"], where=f"{path}: model")
        check_architecture(model_cfg.architecture, f"{path}: model.architecture")
        peaks = PeakParams.from_dict(sections["peaks"], where=f"{path}: peaks")
        train_cfg = TrainConfig(**train)
    except TypeError as err:
        raise InputError(f"{path}: {err}") from None
    except InputError:
        raise
    except ValueError as err:
        raise InputError(f"{path}: {err}") from None
    check_train_config(train_cfg, f"{path}: train")
    if train_cfg.micro_cuts and peaks.typing != "duration":
        raise InputError(
            f"{path}: train.micro_cuts picks the micro/macro length cut, which only peaks.typing: duration "
            f"uses (this recipe has typing: {peaks.typing}); remove micro_cuts or set typing: duration"
        )
    return model_cfg, train_cfg, peaks, sections["data"]


def read_str_gt(
    gt_csv: str | Path, videos_root: str | Path, fps: float | None = None, dataset: str | None = None
) -> list:
    """Long videos from an STR ground-truth CSV (``subject,video,onset,offset,emotion[,type]``) whose frames
    are in ``videos_root``, matched and given their fps by ``megc_vqa.annotations.long_videos`` (``fps`` or the
    ``videos.json`` sidecar or ``dataset``; never guessed). Every row is checked by the STR reader
    (:func:`megc_vqa.metrics.strs.read_events`), here also against its video's frames on disk: an event
    before the first frame or past the last one is an error naming its line. Missing ``type``: micro when at
    most 0.5 s. The file is read twice, whatever the number of videos: once for the names (every row checked
    but for the frame range; its warnings come with the second reading), once against the frames found."""
    from .data import NoFramesError  # OpenCV: a command module stays light until it runs

    keys = list(read_events(gt_csv, warnings=[]))
    jobs = discover_videos(videos_root, FpsPolicy(fps, dataset=dataset), gt_keys=keys)
    by_key = {(j.subject, j.video): j for j in jobs}
    ranges = {}
    for key in keys:
        try:
            ranges[key] = frame_range(by_key[key].source)
        except NoFramesError as err:
            raise InputError(
                f"{gt_csv}: subject {key[0]} video {key[1]} has no frames to train on ({err}); put its frames "
                "there or remove its rows"
            ) from None
    events = read_events(gt_csv, {key: by_key[key].fps for key in keys}, frames=ranges)
    videos = []
    for subject, video in sorted(keys):
        job = by_key[(subject, video)]
        ordered = tuple(sorted(events[(subject, video)], key=lambda e: e.onset))
        videos.append(LongVideo("str", subject, video, job.source, job.fps, ordered))
    return videos


def frame_range(source) -> tuple[int, int]:
    """(first, last) frame number of a long video on disk (``NoFramesError`` naming it when it has none)."""
    from .data import VideoFrames  # OpenCV: a command module stays light until it runs

    frames = VideoFrames.open(source)
    return frames.first, frames.last


def read_long_videos_jsonl(path: str | Path) -> list:
    """Long videos from a ``long_videos.jsonl`` (one object per video: ``subject, video, folder, fps, events``
    with ``onset, apex, offset, type, emotion``), as ``megc-vqa synth-test --long-videos`` writes it; relative
    folders are taken from the file's parent's parent (the synth-test output folder).

    Checked as the STR ground truth is (``read_str_gt``), each error naming the line and the event: integer
    frames from 0, onset <= apex <= offset, every event inside its video's frames on disk, type micro or
    macro (default micro), emotion one of :data:`~megc_vqa.labels.STR_CLASSES` (or none), fps a positive
    number, each video once; an exact duplicate of an event is dropped with a warning."""
    path = Path(path)
    rows, problems = parse_jsonl(read_jsonl_bytes(path), str(path))  # bounded: megc_vqa.limits
    errors: list[str] = [str(p) for p in problems if not p.message.startswith(TOLERATED_PROBLEMS)]
    videos: list = []
    first_line: dict[tuple[str, str], int] = {}
    for line_no, rec in ((r.line, r.data) for r in rows):
        where = f"{path} line {line_no}"
        video = _long_video_record(rec, where, path, errors)
        if video is None:
            continue
        key = (canonical_subject(video.subject), video.video_id)
        if key in first_line:
            errors.append(
                f"{where}: subject {video.subject} video {video.video_id} again (first on line "
                f"{first_line[key]}): give each video once, with all its events"
            )
            continue
        first_line[key] = line_no
        videos.append(video)
    if errors:
        more = f"; ... and {len(errors) - 20} more" if len(errors) > 20 else ""
        raise InputError("; ".join(errors[:20]) + more)
    return videos


def _long_video_record(rec: object, where: str, path: Path, errors: list[str]):
    """One ``long_videos.jsonl`` line as a ``LongVideo``, or ``None`` with its defects added to ``errors``."""
    from .data import NoFramesError  # OpenCV: a command module stays light until it runs

    if not isinstance(rec, dict):
        errors.append(
            f"{where}: expected a JSON object (subject, video, folder, fps, events), got {type(rec).__name__}"
        )
        return None
    missing = [k for k in ("subject", "video", "folder", "fps") if rec.get(k) in (None, "")]
    if missing:
        errors.append(
            f"{where}: missing {', '.join(missing)} (a long-video record has subject, video, folder, fps, events)"
        )
        return None
    fps = rec["fps"]
    try:
        check_fps("fps", fps, where=where)
    except UsageError as err:
        errors.append(str(err))
        return None
    if not isinstance(rec["folder"], str) or not isinstance(rec.get("events", []), list):
        errors.append(f"{where}: folder must be a path (text) and events a list")
        return None
    base = path.parent.parent  # where synth-test and prep put the frame folders of the file's videos
    folder = Path(rec["folder"])
    if not is_inside(base / folder, base):  # an absolute folder elsewhere, or one climbing out
        errors.append(
            f"{where}: folder {cut(str(folder))} is outside {base} (the file's parent's parent, where its "
            "frame folders are); for frames elsewhere use --gt STR_CSV --videos-root DIR"
        )
        return None
    source = FrameSource("folder", Path(os.path.normpath(base / folder)))
    try:
        first, last = frame_range(source)
    except NoFramesError as err:
        errors.append(f"{where}: {err}")
        return None
    events: list = []
    seen: dict[tuple[int, int], int] = {}
    bad = False
    for k, e in enumerate(rec.get("events", []), start=1):
        at = f"{where}, event {k}"
        event = _long_video_event(e, at, (first, last), folder, errors)
        if event is None:
            bad = True
            continue
        if (event.onset, event.offset) in seen:
            log.warning(
                "%s: duplicate of event %d (%d..%d), dropped",
                at,
                seen[(event.onset, event.offset)],
                event.onset,
                event.offset,
            )
            continue
        seen[(event.onset, event.offset)] = k
        events.append(event)
    if bad:
        return None
    return LongVideo("synth", str(rec["subject"]), str(rec["video"]), source, float(fps), tuple(events))


def _long_video_event(
    e: object, at: str, span: tuple[int, int], folder: Path, errors: list[str]
) -> Event | None:
    """One event of a ``long_videos.jsonl`` line as an ``Event``, or ``None`` with its defect added to
    ``errors``: integer frames from 0, onset <= apex <= offset inside the video's frames ``span``, type micro
    or macro (default micro), emotion one of the STR classes (or none)."""
    if not isinstance(e, dict):
        errors.append(f"{at}: expected an object with onset, offset, type, emotion")
        return None
    first, last = span
    frames = {c: e.get(c) for c in ("onset", "apex", "offset")}
    wrong = [
        c for c, v in frames.items()
        if (v is not None or c != "apex") and (type(v) is not int or not 0 <= v <= MAX_FRAME)
    ]  # fmt: skip
    if wrong:
        errors.append(
            f"{at}: {', '.join(f'{c} {cut(frames[c], 30)}' for c in wrong)} is not a frame number "
            f"(an integer 0..{MAX_FRAME:,})"
        )
        return None
    onset, apex, offset = frames["onset"], frames["apex"], frames["offset"]
    problem = None
    if onset > offset:
        problem = f"onset {onset} is after offset {offset}"
    elif apex is not None and not onset <= apex <= offset:
        problem = f"apex {apex} is outside onset..offset {onset}..{offset}"
    elif onset < first or offset > last:
        problem = f"frames {onset}..{offset} are outside the video's frames {first}..{last} ({folder})"
    kind = expression_type(e.get("type", "micro")) if isinstance(e.get("type", "micro"), str) else None
    if problem is None and kind is None:
        problem = f"type {cut(e.get('type'), 40)} is neither micro nor macro"
    emotion = e.get("emotion")
    if problem is None and emotion is not None and str(emotion).strip().lower() not in STR_CLASSES:
        problem = f"emotion {cut(emotion, 40)} is not one of {', '.join(STR_CLASSES)}"
    if problem is not None:
        errors.append(f"{at}: {problem}")
        return None
    emotion = None if emotion is None else str(emotion).strip().lower()
    return Event(onset, offset, apex, coarse_emotion=emotion, expression_type=kind)


def _long_videos_of_all_datasets(root: Path) -> list:
    """Every long video the annotation loaders find under ``root`` (CAS(ME)^2, SAMM-LV)."""
    return list(load_all(root).long_videos)


# The loaders a spotting recipe's ``data.loader`` may name. A fixed table of the project's own functions:
# recipes travel between labs, and a name read from a file must never import or call arbitrary code.
LOADERS = {
    "annotations": _long_videos_of_all_datasets,
    # the spelling of earlier recipes, kept as an alias of the same loader (it is not imported)
    "megc_vqa.annotations:load_all": _long_videos_of_all_datasets,
}


def _recipe_loader(name: object):
    if not isinstance(name, str) or name not in LOADERS:
        raise InputError(
            f"recipe data.loader {name!r} is not a known loader; use one of {sorted(LOADERS)} "
            "(recipes name loaders from this table, never a module)"
        )
    return LOADERS[name]


def load_videos(data: dict, base: Path = Path(".")) -> list:
    """The recipe's ``data`` section -> long videos."""

    check_fps("data.fps", data.get("fps"))
    for key in ("long_videos_jsonl", "gt_csv"):
        if key in data and not (base / str(data[key])).is_file():
            raise InputError(f"recipe data.{key} {data[key]}: no such file (or give --gt)")
    if "long_videos_jsonl" in data:
        return read_long_videos_jsonl(base / data["long_videos_jsonl"])
    if "gt_csv" in data:
        if not data.get("videos_root"):
            raise InputError(
                f"recipe data.gt_csv {data['gt_csv']} needs data.videos_root (its frame folders)"
            )
        fps = data.get("fps")
        return read_str_gt(
            base / data["gt_csv"],
            base / data["videos_root"],
            None if fps is None else float(fps),
            data.get("dataset"),
        )
    if "loader" in data:
        loader = _recipe_loader(data["loader"])
        videos = []
        for root in data.get("roots", []):
            videos.extend(loader(base / root))
        if data.get("datasets"):
            videos = [v for v in videos if v.dataset in data["datasets"]]
        return videos
    raise InputError("recipe data section needs long_videos_jsonl, gt_csv + videos_root, or loader + roots")


# The options that give each data path of a recipe on the command line instead (then any path is taken).
_PATH_OPTIONS = {
    "long_videos_jsonl": "--gt",
    "gt_csv": "--gt",
    "videos_root": "--videos-root",
    "roots": "--data-root",
}


def check_recipe_paths(data: dict, recipe: str | Path, given: set[str] = frozenset()) -> None:
    """A recipe's data paths (relative to the working folder, as documented) must stay below the working
    folder: an absolute path or one climbing out with ``..`` written in a recipe is refused, naming the key
    and the option that gives it on the command line. Keys in ``given`` come from the command line."""
    cwd = Path.cwd()
    for key, option in _PATH_OPTIONS.items():
        if key in given or key not in data:
            continue
        values = data[key] if key == "roots" and isinstance(data[key], list) else [data[key]]
        for value in values:
            if not isinstance(value, str):
                raise InputError(f"{recipe}: data.{key} {cut(value)} is not a path")
            allow = (
                f"a recipe names data below the working folder; give this path on the command line ({option})"
            )
            resolve_inside(value, [cwd], f"{recipe}: data.{key}", allow)
