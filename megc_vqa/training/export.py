"""``megc-vqa export``: QA records as a LLaMA-Factory or ms-swift dataset, with the project's visual inputs.

    megc-vqa export --format llamafactory --qa runs/prep/qa.jsonl --out runs/lf [--recipe R.yaml]
    megc-vqa export --format swift --qa runs/prep/qa.jsonl --out runs/swift --val-fraction 0.1

Every clip's visual inputs are sampled once, exactly as the project's own training samples them
(:func:`megc_vqa.visual.samplers.sample` with the recipe's ``visual_spec``, ``image_size`` and
the face keys: key frames, flow image, diff image), and written as PNG files under ``OUT/images/``; each
question of the clip becomes one row whose prompt is laid out by the project's prompt builder
(:func:`megc_vqa.models.prompting.build_messages`: images first, then the visual description and the
question), in the trainer's format (:mod:`megc_vqa.training.trainers`).

Subject splits (:mod:`megc_vqa.training.split`, the recipe's ``val_fraction``/``val_subjects``/``split_seed``
or the options) are kept as separate files: ``megc_train.jsonl`` and ``megc_val.jsonl`` (no split:
``megc_train.jsonl`` only; ``--loso``: ``megc_loso<NN>_train.jsonl``/``_val.jsonl`` per held-out subject).
LLaMA-Factory also gets ``dataset_info.json``. ``export.json`` records the settings, files and rows.

Records whose clip has no frames on disk (``source`` empty, or frames that cannot be read) are left out
and listed in ``export.json`` and on stderr; nothing exported is exit 1. An existing ``--out`` is
refused unless ``--overwrite``, which replaces only an earlier export (its output marker, or the files its
``export.json`` names) and never a folder that is or holds the working folder, the ``--qa`` file or its
folder, the recipe, the cache or the frames of the records; the export is built next to it and moved into
place when complete.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from megc_vqa.errors import UsageError
from megc_vqa.face_settings import FACE_DETECTORS, FACE_MODES, MAX_MAGNIFY, FaceSettings
from megc_vqa.fileio import (
    atomic_folder,
    atomic_write_text,
    check_outside,
    check_replaceable,
    read_jsonl,
    read_yaml_mapping,
    write_jsonl,
)
from megc_vqa.limits import check_image_size
from megc_vqa.qa.io import QAFileError, read_qa_jsonl
from megc_vqa.training.trainers import FORMATS, chat_row, llamafactory_entry
from megc_vqa.visual.errors import FrameError
from megc_vqa.visual.spec import parse_sampler

log = logging.getLogger(__name__)

# DataArguments keys of a recipe that shape what the model sees, and hence the exported rows.
RECIPE_KEYS: tuple[str, ...] = (
    "visual_spec",
    "visual_mode",
    "image_size",
    "face_crop",
    "face",
    "face_margin",
    "face_detector",
    "register",
    "magnify",
    "describe_visuals",
    "system_prompt",
    "val_fraction",
    "val_subjects",
    "split_seed",
    "max_pixels",
    "min_pixels",
)


@dataclass
class ExportSettings:
    """The visual, prompt and split settings of an export (recipe values, then the command line)."""

    visual_spec: str = "oao+flow"
    visual_mode: str = "images"
    image_size: int | None = 224
    face_crop: bool = False
    face: str | None = None
    face_margin: float = 0.15
    face_detector: str = "auto"
    register: bool = False
    magnify: float = 1.0
    describe_visuals: bool = True
    system_prompt: str | None = None
    val_fraction: float = 0.0
    val_subjects: list[str] | None = None
    split_seed: int = 0
    max_pixels: int | None = None
    min_pixels: int | None = None

    @classmethod
    def from_recipe(cls, path: str | Path | None) -> ExportSettings:
        """Defaults of the training recipe keys (``DataArguments``), then the recipe's own values."""
        from megc_vqa.training.config import DataArguments

        defaults = {f.name: f.default for f in fields(DataArguments) if f.name in RECIPE_KEYS}
        settings = cls(**{k: v for k, v in defaults.items() if not callable(v)})
        if path is None:
            return settings
        data = read_yaml_mapping(path, "recipe", error=UsageError, hint=" (--recipe)")
        for key in RECIPE_KEYS:
            if key in data:
                setattr(settings, key, data[key])
        return settings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", required=True, choices=FORMATS, help="the trainer's dataset format")
    parser.add_argument("--qa", required=True, type=Path, metavar="QA", help="qa.jsonl of `megc-vqa prep`")
    parser.add_argument("--out", required=True, type=Path, metavar="X", help="export folder (must not exist)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing export folder")
    parser.add_argument(
        "--recipe",
        type=Path,
        metavar="R.yaml",
        help="training recipe whose visual settings (visual_spec, image_size, face keys, describe_visuals, "
        "system_prompt) and split (val_fraction, val_subjects, split_seed) to use",
    )
    parser.add_argument("--visual-spec", help="sampler spec, e.g. oao+flow (overrides the recipe)")
    parser.add_argument("--image-size", type=int, help="shorter image side in pixels (overrides the recipe)")
    parser.add_argument(
        "--face-crop", action="store_true", default=None, help="the earlier face crop (same as --face box)"
    )
    parser.add_argument(
        "--face", choices=FACE_MODES, help="face pipeline: none, box, crop or align (overrides the recipe)"
    )
    parser.add_argument("--face-margin", type=float, help="share of the face's size added on each side")
    parser.add_argument("--face-detector", choices=FACE_DETECTORS, help="auto, dlib or haar")
    parser.add_argument(
        "--register", action="store_true", default=None, help="register every frame to the onset"
    )
    parser.add_argument(
        "--magnify", type=float, help=f"motion magnification factor, 1 (off) to {MAX_MAGNIFY:g}"
    )
    parser.add_argument("--val-fraction", type=float, help="fraction of subjects per dataset held out")
    parser.add_argument("--val-subjects", nargs="+", metavar="S", help="hold out these subjects")
    parser.add_argument("--split-seed", type=int, help="seed of the subject split")
    parser.add_argument("--loso", action="store_true", help="one train/val pair per held-out subject")
    parser.add_argument("--cache-dir", type=Path, help="the visual samplers' disk cache")


def _settings(args: argparse.Namespace) -> ExportSettings:
    settings = ExportSettings.from_recipe(args.recipe)
    for option, key in (
        ("visual_spec", "visual_spec"),
        ("image_size", "image_size"),
        ("face_crop", "face_crop"),
        ("face", "face"),
        ("face_margin", "face_margin"),
        ("face_detector", "face_detector"),
        ("register", "register"),
        ("magnify", "magnify"),
        ("val_fraction", "val_fraction"),
        ("val_subjects", "val_subjects"),
        ("split_seed", "split_seed"),
    ):
        value = getattr(args, option, None)
        if value is not None:
            setattr(settings, key, value)
    if settings.visual_mode != "images":
        raise UsageError(
            f"visual_mode {settings.visual_mode!r}: export writes the key frames and flow as image files; "
            "use a recipe with visual_mode: images"
        )

    try:
        parse_sampler(settings.visual_spec)
    except ValueError as err:
        raise UsageError(f"visual_spec: {err}") from None
    check_image_size(
        "image_size", settings.image_size, where=f"--recipe {args.recipe}" if args.recipe else None
    )
    try:
        FaceSettings.from_keys(settings)
    except ValueError as err:
        raise UsageError(f"{f'--recipe {args.recipe}: ' if args.recipe else ''}{err}") from None
    if settings.val_subjects and settings.val_fraction:
        raise UsageError("give val_fraction or val_subjects, not both")
    if not 0.0 <= float(settings.val_fraction or 0.0) < 1.0:
        raise UsageError(f"val_fraction {settings.val_fraction}: must be in [0, 1)")
    return settings


def _image_names(spec: str, frame_indices: Sequence[int], n_images: int) -> list[str]:
    """File names for a clip's images in model order: key frames by absolute index, then flow, diff."""
    parsed = parse_sampler(spec)
    names = [f"{k:02d}_frame{index}.png" for k, index in enumerate(frame_indices)]
    extras = [what for what, wanted in (("flow", parsed.flow), ("diff", parsed.diff)) if wanted]
    names += [f"{len(names) + k:02d}_{what}.png" for k, what in enumerate(extras)]
    if len(names) != n_images:  # the samplers' order changed: better fail than mislabel a flow image
        raise ValueError(f"{spec}: expected {len(names)} images, the sampler gave {n_images}")
    return names


def _write_png(path: Path, image: Any) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    ok, data = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"cannot encode {path}")
    path.write_bytes(data.tobytes())


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text)


def _splits(records: Sequence[Any], settings: ExportSettings, loso: bool) -> dict[str, list[Any]]:
    from megc_vqa.training.split import loso_folds, split_by_subject

    if loso:
        out: dict[str, list[Any]] = {}
        for fold in loso_folds(records):
            out[f"megc_loso{fold.index:02d}_train"] = fold.train
            out[f"megc_loso{fold.index:02d}_val"] = fold.val
        return out
    if not settings.val_fraction and not settings.val_subjects:
        return {"megc_train": list(records)}
    try:
        train, val = split_by_subject(
            records, float(settings.val_fraction or 0.0), int(settings.split_seed), settings.val_subjects
        )
    except ValueError as err:
        raise UsageError(str(err)) from None
    return {"megc_train": train, "megc_val": val} if val else {"megc_train": train}


def export(
    records: Sequence[Any],
    out: Path,
    fmt: str,
    settings: ExportSettings,
    *,
    loso: bool = False,
    cache_dir: Path | None = None,
) -> dict[str, Any]:
    """Write the export into ``out`` (an empty or new folder) and return its manifest."""
    import numpy as np

    from megc_vqa.models.contract import VisualContract
    from megc_vqa.models.prompting import PromptOptions, build_messages, get_field
    from megc_vqa.training.data import make_visual_fn
    from megc_vqa.training.split import subject_key

    face = FaceSettings.from_keys(settings).key()  # named as the record names them
    visual = VisualContract(spec=settings.visual_spec, size=settings.image_size, **face)
    visual_fn = make_visual_fn(visual, cache_dir, memory_cache=1)
    options = PromptOptions(
        visual_mode="images",
        system_prompt=settings.system_prompt,
        describe_visuals=bool(settings.describe_visuals),
    )
    images_of: dict[tuple, list[str] | str] = {}  # clip key -> image paths, or why it has none
    rows_of: dict[str, dict[str, Any]] = {}
    left_out: list[dict[str, str]] = []
    descriptions: dict[tuple, Any] = {}
    for record in records:
        key = tuple(
            get_field(record, k) for k in ("dataset", "image_id", "source", "onset", "apex", "offset")
        )
        if key not in images_of:
            if not get_field(record, "source"):
                images_of[key] = (
                    "no frames: the clip was not found under the data root when qa.jsonl was made"
                )
            else:
                try:
                    visual = visual_fn(record)
                except (FrameError, FileNotFoundError, ValueError) as err:
                    images_of[key] = f"frames cannot be sampled: {err}"
                else:
                    folder = Path("images") / _safe(str(record.dataset)) / _safe(str(record.image_id))
                    names = _image_names(settings.visual_spec, visual.frame_indices, len(visual.images))
                    paths = []
                    for name, image in zip(names, visual.images, strict=True):
                        _write_png(out / folder / name, image)
                        paths.append(
                            str(folder / name)
                            if fmt == "llamafactory"
                            else str((out / folder / name).resolve())
                        )
                    images_of[key] = paths
                    # Only the layout is kept (how many images, their description), not the pixels.
                    blank = np.zeros((1, 1, 3), np.uint8)
                    descriptions[key] = replace(visual, images=(blank,) * len(visual.images), video=None)
        found = images_of[key]
        if isinstance(found, str):
            left_out.append({"id": record.id, "reason": found})
            continue
        messages = build_messages(record.question, descriptions[key], record.answer, options)
        rows_of[record.id] = chat_row(messages, found, record.id, record.dataset, record.subject)
    kept = [r for r in records if r.id in rows_of]
    files: dict[str, dict[str, Any]] = {}
    if kept:
        for name, subset in _splits(kept, settings, loso).items():
            write_jsonl(out / f"{name}.jsonl", [rows_of[r.id] for r in subset])
            files[name] = {
                "file": f"{name}.jsonl",
                "rows": len(subset),
                "subjects": sorted({"/".join(subject_key(r)) for r in subset}),
            }
    if fmt == "llamafactory" and files:
        info = {name: llamafactory_entry(entry["file"]) for name, entry in files.items()}
        atomic_write_text(out / "dataset_info.json", json.dumps(info, indent=2) + "\n")
    manifest = {
        "format": fmt,
        "settings": {f.name: getattr(settings, f.name) for f in fields(settings)},
        "files": files,
        "images": sum(len(v) for v in images_of.values() if isinstance(v, list)),
        "clips": sum(isinstance(v, list) for v in images_of.values()),
        "left_out": left_out,
    }
    atomic_write_text(out / "export.json", json.dumps(manifest, indent=2) + "\n")
    return manifest


def _hint(fmt: str, out: Path, manifest: dict[str, Any]) -> str:
    names = list(manifest["files"])
    train = names[0] if names else "megc_train"
    val = next((n for n in names if n.endswith("_val")), None)
    pixels = manifest["settings"].get("max_pixels")
    if fmt == "llamafactory":
        text = f"LLaMA-Factory: dataset_dir: {out}  dataset: {train}" + (
            f"  eval_dataset: {val}" if val else ""
        )
        return text + (f"  image_max_pixels: {pixels}" if pixels else "")
    text = f"ms-swift: swift sft --dataset {out / (train + '.jsonl')}" + (
        f" --val_dataset {out / (val + '.jsonl')}" if val else ""
    )
    return text + (f"  (MAX_PIXELS={pixels})" if pixels else "")


WRITER = "megc-vqa export"


def _inputs(args: argparse.Namespace) -> list[tuple[str, Path | None]]:
    """What an ``--out --overwrite`` must not hold: the working folder and every input of the command."""
    return [
        ("the current folder", Path.cwd()),
        ("the --qa file", args.qa),
        ("the folder of the --qa file", Path(args.qa).parent),
        ("the --recipe", args.recipe),
        ("the --cache-dir", args.cache_dir),
    ]


def _earlier_export(folder: Path) -> bool:
    """Whether ``folder`` is an export written before exports left an output marker: its ``export.json``
    and only the files that manifest names (rows, ``dataset_info.json``, ``images/``)."""
    try:
        manifest = json.loads((folder / "export.json").read_text(encoding="utf-8"))
        files = {str(entry["file"]) for entry in manifest["files"].values()}
        names = {p.name for p in folder.iterdir()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return False
    return "format" in manifest and names <= {"export.json", "dataset_info.json", "images", *files}


def run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    out: Path = args.out
    exists = os.path.lexists(out)
    if exists and not args.overwrite:
        raise UsageError(f"--out {out} already exists: choose a new folder or pass --overwrite to replace it")
    if exists:  # --overwrite: only an earlier export, and nothing the export reads
        check_outside(out, _inputs(args), label=f"--out {out}")
    try:
        records = read_qa_jsonl(args.qa)
    except QAFileError as err:
        raise UsageError(f"--qa: {err}") from None
    if not records:
        raise UsageError(f"--qa {args.qa}: no records")
    if exists:
        frames = {r.source: r.id for r in records if r.source}
        check_outside(
            out, [(f"the frames of record {rid}", src) for src, rid in frames.items()], label=f"--out {out}"
        )
        check_replaceable(out, WRITER, what="--out", legacy=_earlier_export)
    # Built beside the target and moved in when complete: an interrupted export leaves no half folder.
    with atomic_folder(out, WRITER, what="--out", legacy=_earlier_export) as tmp:
        manifest = export(records, tmp, args.format, settings, loso=args.loso, cache_dir=args.cache_dir)
        if args.format == "swift":  # absolute image paths point into the temporary folder until moved
            _repoint(tmp, out, manifest)
    left_out = manifest["left_out"]
    for entry in left_out[:20]:
        print(f"  left out {entry['id']}: {entry['reason']}", file=sys.stderr)
    if len(left_out) > 20:
        print(f"  ... and {len(left_out) - 20} more (all in {out / 'export.json'})", file=sys.stderr)
    if not manifest["files"]:
        print(f"megc-vqa export: error: no record of {args.qa} has frames to export", file=sys.stderr)
        return 1
    for name, entry in manifest["files"].items():
        print(
            f"{name:20s} {entry['rows']:6d} rows  {len(entry['subjects']):3d} subjects  {out / entry['file']}"
        )
    print(
        f"{manifest['images']} images of {manifest['clips']} clips under {out / 'images'}; {len(left_out)} records left out"
    )
    print(_hint(args.format, out, manifest))
    return 0


def _repoint(tmp: Path, out: Path, manifest: dict[str, Any]) -> None:
    """Rewrite absolute image paths from the build folder to the final one (ms-swift rows)."""
    old, new = str(tmp.resolve()), str(out.resolve())
    for entry in manifest["files"].values():
        path = tmp / entry["file"]
        rows = read_jsonl(path)
        for row in rows:
            row["images"] = [new + p[len(old) :] if p.startswith(old) else p for p in row["images"]]
        write_jsonl(path, rows)
