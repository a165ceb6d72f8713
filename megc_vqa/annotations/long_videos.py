"""Long videos for ME-STR and ME-LVQA: the one naming rule, where each video's fps comes from, and the
``videos.json`` sidecar that says both.

Naming rule (loaders, ``megc-vqa synth-test``, ``eval/run_str.py``, ``eval/run_lvqa.py``, ``megc-vqa prep``
and the scorer all follow it): a long video's STR ``subject`` and ``video`` are the dataset loader's
``LongVideo.subject`` and ``LongVideo.video_id`` (SAMM-LV ``006`` / ``006_1``, CAS(ME)^2 ``s15`` /
``15_0101``, synth-test ``006`` / ``006_1``), and a frame folder under ``--videos-root`` is named by the
video (``DIR/006_1/``). The scorer matches rows on (subject, video), digit subjects as integers.

Ground truth in another naming (documented way to match it): a ground-truth row ``(subject, video)`` is
matched to the folder named ``video``; failing that, to the folder ``<subject>_<video>`` (the short
naming, ``006,1`` -> ``006_1``). Predictions are then written with the ground truth's own names, so the CSV
scores against that file. Ground-truth videos that match no folder: one error listing them all.

fps, never guessed, first of: an explicit option (``--fps`` for every video, ``--fps-for PATTERN=FPS``);
the ``videos.json`` sidecar (synth-test and prep write one); the dataset (``--dataset NAME``: the loader's
``FPS``, e.g. ``samm_lv`` 200). A video whose fps none of them gives: one error before any work.

``videos.json``: ``{"format": "megc-vqa-long-videos", "videos": [{"folder", "subject", "video", "fps",
"dataset"}, ...]}``; ``folder`` is relative to the file's own folder (or absolute).

Inputs stay where they were given: a sidecar's ``folder`` must lie inside the sidecar's own folder, or
inside a folder the user named *on the command line* (``--videos-root``, ``--videos-under DIR``); an entry
that climbs out (``..``, an absolute path elsewhere) is an error naming it and the option that lets it in.
The check is lexical (:func:`megc_vqa.fileio.is_inside`): a layout with symlinks made by the data's owner
still works, a path written in the file cannot leave. ``prep`` writes ``<dataset>_videos.json`` into its
``--out`` naming frame folders under ``--data-root``: read it with ``--videos-under DATA_ROOT``.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from megc_vqa.annotations import DATASETS
from megc_vqa.annotations.common import subfolders
from megc_vqa.errors import InputError, UsageError, check_number, cut
from megc_vqa.fileio import (
    atomic_write_text,
    is_inside,
    loads_json,
    read_json_bytes,
    refuse_non_folder,
    resolve_inside,
)
from megc_vqa.frame_names import is_image
from megc_vqa.records import FrameSource

log = logging.getLogger(__name__)

SIDECAR = "videos.json"
SIDECAR_FORMAT = "megc-vqa-long-videos"


@dataclass(frozen=True)
class VideoJob:
    """One long video to spot: STR ``subject`` and ``video``, its frames and fps (with where it came from)."""

    subject: str
    video: str
    source: FrameSource
    fps: float
    fps_from: str = ""

    @property
    def name(self) -> str:
        """The frame folder's name (the key of per-video outputs: curves, plots, intervals)."""
        return self.source.path.name if self.source.kind == "folder" else self.video


@dataclass(frozen=True)
class VideoEntry:
    """One line of a ``videos.json`` sidecar."""

    folder: Path
    subject: str
    video: str
    fps: float | None = None
    dataset: str | None = None


def str_names(long_video) -> tuple[str, str]:
    """The (subject, video) a ``LongVideo`` goes by in every STR file."""
    return str(long_video.subject), str(long_video.video_id)


def dataset_fps() -> dict[str, float]:
    """Frame rate of every dataset a loader knows (``megc_vqa.annotations.DATASETS[key].FPS``)."""
    return {key: float(module.FPS) for key, module in DATASETS.items()}


def write_sidecar(path: str | Path, entries: Iterable[VideoEntry]) -> Path:
    """Write ``videos.json`` (atomically); folders are stored relative to the file when they lie below it."""
    path = Path(path)
    base = path.parent.resolve()
    rows = []
    for e in entries:
        folder = Path(e.folder).resolve()
        try:
            folder_text = str(folder.relative_to(base))
        except ValueError:
            folder_text = str(folder)
        rows.append(
            {
                "folder": folder_text,
                "subject": e.subject,
                "video": e.video,
                "fps": e.fps,
                "dataset": e.dataset,
            }
        )
    return atomic_write_text(path, json.dumps({"format": SIDECAR_FORMAT, "videos": rows}, indent=1) + "\n")


# Frame rates a video may have: real cameras give 25..1000 (SAMM 200, CAS(ME)^2 30, CAS(ME)^3 30/90);
# outside 1..10000 the spotting windows round to nothing or overflow, so such a value is a typo.
MIN_FPS, MAX_FPS = 1.0, 10000.0


def check_fps(name: str, value: float | None, where: str | None = None) -> None:
    """The one fps check of every command (``--fps``, ``--fps-for``, sidecars, recipes): a finite number in
    ``MIN_FPS..MAX_FPS``, else a :class:`UsageError` naming ``name`` (the option or key), the range and
    the value; ``None`` (not given) passes."""
    check_number(name, value, minimum=MIN_FPS, maximum=MAX_FPS, where=where)


def read_sidecar(path: str | Path, allowed_roots: Sequence[str | Path] = ()) -> list[VideoEntry]:
    """Entries of a ``videos.json``; a malformed file or entry raises ``UsageError`` naming it, a file over
    :data:`megc_vqa.limits.JSON_BYTES` or a ``folder`` outside the sidecar's folder and ``allowed_roots``
    (folders the user named on the command line) an ``InputError`` naming the entry."""
    path = Path(path)
    try:
        data = loads_json(read_json_bytes(path, "videos sidecar"), str(path), "videos sidecar")
    except OSError as err:
        raise UsageError(f"{path}: cannot read the videos sidecar ({err.strerror})") from None
    if not isinstance(data, dict) or not isinstance(data.get("videos"), list):
        raise UsageError(f'{path}: expected {{"format": "{SIDECAR_FORMAT}", "videos": [...]}}')
    entries = []
    roots = [path.parent, *map(Path, allowed_roots)]
    allow = (
        "a sidecar names frame folders below its own folder; to read frames from elsewhere, name the folder "
        "holding them on the command line (--videos-under DIR or --videos-root DIR)"
    )
    for k, row in enumerate(data["videos"]):
        try:
            if not isinstance(row["folder"], str) or not row["folder"].strip():
                raise TypeError(f"folder {cut(row['folder'])} is not a path")
            folder = resolve_inside(row["folder"], roots, f"{path}: videos[{k}] folder", allow)
            fps = row.get("fps")
            fps = None if fps is None else float(fps)
            check_fps(f"videos[{k}].fps", fps, where=str(path))
            entries.append(
                VideoEntry(
                    folder,
                    str(row["subject"]),
                    str(row["video"]),
                    fps,
                    row.get("dataset"),
                )
            )
        except (InputError, UsageError):  # a folder outside the roots, a bad fps: the message names it
            raise
        except (KeyError, TypeError, ValueError) as err:
            raise UsageError(f"{path}: videos[{k}] needs folder, subject, video and fps ({err})") from None
    return entries


def parse_fps_rules(rules: Sequence[str] = ()) -> list[tuple[str, float]]:
    """``PATTERN=FPS`` rules (fnmatch on the folder name, first match wins)."""
    parsed = []
    for rule in rules:
        pattern, sep, value = rule.rpartition("=")
        try:
            fps = float(value)
        except ValueError:
            fps = None
        if not sep or not pattern or fps is None:
            raise UsageError(f"--fps-for {rule!r}: expected PATTERN=FPS, e.g. '006_*=200'")
        check_fps(f"--fps-for {rule!r}: FPS", fps)
        parsed.append((pattern, fps))
    return parsed


@dataclass
class FpsPolicy:
    """Where fps comes from, in order: ``fps`` (every video), ``rules``, the sidecar, ``dataset``."""

    fps: float | None = None
    rules: Sequence[tuple[str, float]] = ()
    dataset: str | None = None

    def __post_init__(self) -> None:
        check_fps("--fps", self.fps)
        if self.dataset is not None:
            known = dataset_fps()
            if self.dataset not in known:
                raise UsageError(f"--dataset {self.dataset!r}: not one of {', '.join(sorted(known))}")

    def resolve(self, folder_name: str, sidecar_fps: float | None) -> tuple[float | None, str]:
        if self.fps is not None:
            return self.fps, "option --fps"
        for pattern, fps in self.rules:
            if fnmatch.fnmatch(folder_name, pattern):
                return fps, f"option --fps-for {pattern}"
        if sidecar_fps:
            return sidecar_fps, SIDECAR
        if self.dataset is not None:
            return dataset_fps()[self.dataset], f"dataset {self.dataset}"
        return None, ""


def _holds_images(folder: Path) -> bool:
    """Whether ``folder`` holds at least one image file (names only, stops at the first)."""
    try:
        with os.scandir(folder) as it:
            return any(is_image(e.name) for e in it)
    except OSError:
        return False


def discover_videos(
    root: str | Path | None = None,
    fps: FpsPolicy | None = None,
    *,
    sidecar: str | Path | None = None,
    names: Sequence[str] = (),
    gt_keys: Sequence[tuple[str, str]] = (),
    allowed_roots: Sequence[str | Path] = (),
) -> list[VideoJob]:
    """The videos to spot, with STR names and fps, or one ``UsageError`` before any work.

    Videos come from ``sidecar`` (a ``videos.json`` anywhere, e.g. written by prep), else from every folder
    of ``root`` (``root/videos.json``, when there, names them and gives their fps). ``names`` keeps only
    those folders (or videos). ``gt_keys``: the ground truth's (subject, video) pairs, matched by the rule
    in the module docstring; unmatched ones are an error, and matched folders take the ground truth's names.
    The sidecar's folders must lie inside its own folder, ``root`` or ``allowed_roots`` (the folders the
    user named on the command line; see the module docstring).
    """
    fps = fps or FpsPolicy()
    entries: dict[str, VideoEntry] = {}
    if sidecar is None and root is not None and (Path(root) / SIDECAR).is_file():
        sidecar = Path(root) / SIDECAR
    if sidecar is not None:
        allowed = [*allowed_roots, *([root] if root is not None else [])]
        for e in read_sidecar(sidecar, allowed):
            entries[e.folder.name] = e
    if root is not None:
        root = Path(root)
        if not root.is_dir():
            raise UsageError(f"--videos-root {root}: not a folder")
        # symlink loops (a link to itself, ``self -> .``) skipped with a warning, never taken for a video
        found = [f for f in subfolders(root, {os.path.realpath(root): root}) if f.name not in entries]
        if found and not any(map(_holds_images, found)):  # stops at the first folder with an image
            names = ", ".join(f.name for f in found[:10]) + (
                f" (and {len(found) - 10} more)" if len(found) > 10 else ""
            )
            raise UsageError(
                f"--videos-root {root}: its {len(found)} folder(s) hold no frames (numbered image files): "
                f"{names}; give the folder whose sub-folders each hold one video's frames"
            )
        for folder in found:
            subject, sep, _ = folder.name.partition("_")
            entries[folder.name] = VideoEntry(folder, subject if sep else folder.name, folder.name)
    elif sidecar is None:
        raise UsageError("give --videos-root DIR or --videos videos.json")
    by_video = {e.video: name for name, e in entries.items()}
    renamed: dict[str, tuple[str, str]] = {}
    unmatched = []
    for subject, video in gt_keys:
        name = next(
            (n for n in (by_video.get(video), video, f"{subject}_{video}") if n and n in entries), None
        )
        if name is None:
            unmatched.append(f"{subject}/{video}")
        else:
            renamed[name] = (subject, video)
    if unmatched:
        where = sidecar or root
        raise UsageError(
            f"{len(unmatched)} ground-truth video(s) match no frame folder in {where} (tried <video> and "
            f"<subject>_<video>): {', '.join(sorted(unmatched))}"
        )
    if names:
        wanted = set(names)
        picked = {n: e for n, e in entries.items() if n in wanted or e.video in wanted}
        missing = sorted(wanted - set(picked) - {e.video for e in picked.values()})
        if missing:
            raise UsageError(f"no frame folder for video(s) {', '.join(missing)} in {sidecar or root}")
        entries = picked
    jobs, unknown = [], []
    for name, e in sorted(entries.items()):
        rate, origin = fps.resolve(name, e.fps)
        if rate is None:
            unknown.append(name)
            continue
        subject, video = renamed.get(name, (e.subject, e.video))
        jobs.append(VideoJob(subject, video, FrameSource("folder", Path(e.folder)), rate, origin))
    if unknown:
        raise UsageError(
            f"fps unknown for {len(unknown)} video(s): {', '.join(unknown)}; give --fps N, --fps-for "
            f"PATTERN=N, --dataset NAME (one of {', '.join(sorted(dataset_fps()))}) or a {SIDECAR} next to "
            "the frame folders (synth-test and prep write one)"
        )
    return jobs


def fps_summary(jobs: Sequence[VideoJob]) -> Mapping[str, object]:
    """Per-video fps and where it came from (run summaries record it)."""
    return {job.name: {"fps": job.fps, "from": job.fps_from} for job in jobs}


STR_GT_COLUMNS = ("subject", "video", "onset", "offset", "emotion", "type")


def str_ground_truth_names(videos: Sequence) -> list[str]:
    """The file names :func:`write_str_ground_truth` writes for ``videos`` (two per long-video dataset)."""
    keys = dict.fromkeys(str(v.dataset) for v in videos)
    return [name for key in keys for name in (f"{key}_str_gt.csv", f"{key}_videos.json")]


def write_str_ground_truth(videos: Sequence, out: str | Path) -> dict[str, Path]:
    """For every long-video dataset among ``videos`` (``LongVideo`` records as the loaders give them, e.g.
    CAS(ME)^2, SAMM-LV): ``out/<dataset>_str_gt.csv`` (the STR CSV columns plus ``type``, in the naming
    rule above) and ``out/<dataset>_videos.json`` (the frame folders and the loader's fps), so that
    ``run_str --videos out/<dataset>_videos.json --gt out/<dataset>_str_gt.csv`` scores without hand work
    (``megc-vqa prep`` calls this). Events without an emotion (SAMM-LV codes none) are written ``others``:
    spotting scores are meaningful there, analysis scores are not. Returns ``{name: path}`` written."""
    import csv
    import io

    out = Path(out)
    written: dict[str, Path] = {}
    grouped: dict[str, list] = {}
    for v in videos:
        grouped.setdefault(str(v.dataset), []).append(v)
    for key, group in grouped.items():
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(STR_GT_COLUMNS)
        for v in group:
            subject, video = str_names(v)
            for e in sorted(v.events, key=lambda e: (e.onset, e.offset)):
                writer.writerow(
                    [subject, video, e.onset, e.offset, e.coarse_emotion or "others", e.expression_type]
                )
        written[f"{key}_str_gt"] = atomic_write_text(out / f"{key}_str_gt.csv", buffer.getvalue())
        entries = [VideoEntry(Path(v.source.path), *str_names(v), float(v.fps), key) for v in group]
        written[f"{key}_videos"] = write_sidecar(out / f"{key}_videos.json", entries)
        log.info("%s: STR ground truth of %d long videos -> %s", key, len(group), written[f"{key}_str_gt"])
    return written


def add_video_arguments(parser: argparse.ArgumentParser, sidecar_help: str) -> None:
    """``--videos-root``, ``--videos`` and ``--videos-under``: where run_str and run_lvqa find long videos;
    ``--fps``, ``--fps-for`` and ``--dataset``: their frame rates (:class:`FpsPolicy`). :func:`video_jobs`
    reads them back."""
    parser.add_argument("--videos-root", type=Path, help="folder of frame folders, one per video")
    parser.add_argument("--videos", type=Path, metavar="JSON", help=sidecar_help)
    parser.add_argument(
        "--videos-under",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help="a --videos sidecar may name frame folders under DIR (besides its own folder), e.g. the "
        "--data-root prep read; repeatable",
    )
    parser.add_argument("--fps", type=float, help="fps of every video (overrides videos.json)")
    parser.add_argument(
        "--fps-for",
        action="append",
        default=[],
        metavar="PATTERN=FPS",
        help="per-folder fps, e.g. '006_*=200'",
    )
    parser.add_argument("--dataset", help="fps of the dataset's loader for videos without one (e.g. samm_lv)")


def video_jobs(
    args: argparse.Namespace, *, names: Sequence[str] = (), gt_keys: Sequence[tuple[str, str]] = ()
) -> list[VideoJob]:
    """The videos the options of :func:`add_video_arguments` name (:func:`discover_videos`, with ``names``
    and ``gt_keys`` as there), each with its fps from the options' :class:`FpsPolicy`."""
    policy = FpsPolicy(args.fps, parse_fps_rules(args.fps_for), args.dataset)
    return discover_videos(
        args.videos_root,
        policy,
        sidecar=args.videos,
        names=names,
        gt_keys=gt_keys,
        allowed_roots=args.videos_under,
    )


def check_video_arguments(videos_root: Path | None, sidecar: Path | None, out: Path) -> None:
    """One of ``--videos-root``/``--videos`` is given, and ``--out`` is a folder (or absent) outside
    ``--videos-root``: every folder there is read as a video, so a rerun would take the run's own
    ``curves/`` for one."""
    refuse_non_folder(out)
    if videos_root is None and sidecar is None:
        raise UsageError("give --videos-root DIR (frame folders) or --videos videos.json")
    if videos_root is not None and is_inside(out, videos_root):
        raise UsageError(
            f"--out {out}: lies inside --videos-root {videos_root}, where every folder is read as a video "
            "(a rerun would read the run's own folders as videos); choose an --out outside it"
        )
