"""What ``megc-vqa prep`` writes and owns in its ``--out``: the output names, how an earlier prep's files
are recognised, and the claim made before anything is written. Shared by both modes of prep (clips from
the loaders, :mod:`.prep`; an organiser training file, :mod:`.official`), below both so neither imports
the other for it.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Sequence
from pathlib import Path

from megc_vqa.annotations.long_videos import SIDECAR_FORMAT, STR_GT_COLUMNS
from megc_vqa.errors import UsageError, set_output_folder
from megc_vqa.fileio import check_claimable, check_outside, claim_outputs
from megc_vqa.qa.io import is_saved_qa_dataset
from megc_vqa.qa.records import OFFICIAL_KEYS

OUTPUT_NAMES = ("qa.jsonl", "skips.jsonl", "dataset")
OFFICIAL_OUTPUT_NAMES = (*OUTPUT_NAMES, "unmatched.jsonl")  # prep --training-file
WRITER = "megc-vqa prep"


def _first_line(path: Path, limit: int = 1 << 16) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(limit).split(b"\n", 1)[0]


def earlier_prep_output(path: Path) -> bool:
    """Whether ``path`` has the shape of what a ``prep`` from before the output markers wrote there:
    a QA or skips JSONL, an STR ground truth or sidecar, or a ``datasets`` folder of the QA columns.

    Lets a rerun replace an older prep's output; a user's file of another shape is kept (and the run
    refused)."""
    try:
        mode = path.lstat().st_mode
        if stat.S_ISDIR(mode):
            return is_saved_qa_dataset(path)
        if not stat.S_ISREG(mode):
            return False
        if path.stat().st_size == 0:
            return path.suffix == ".jsonl"
        line = _first_line(path).decode("utf-8", errors="replace")
        if path.name.endswith("_str_gt.csv"):
            return line.strip() == ",".join(STR_GT_COLUMNS)
        if path.name.endswith("_videos.json"):  # write_sidecar puts the format first
            with open(path, "rb") as handle:
                return f'"format": "{SIDECAR_FORMAT}"'.encode() in handle.read(4096)
        row = json.loads(line)
        if path.name == "qa.jsonl":
            return isinstance(row, dict) and set(OFFICIAL_KEYS) <= set(row)
        if path.name == "skips.jsonl":
            return isinstance(row, dict) and "stage" in row and "reason" in row
        if path.name == "unmatched.jsonl":
            return isinstance(row, dict) and {"file", "line", "reason", "kind"} <= set(row)
    except (OSError, ValueError, AttributeError):
        return False
    return False


def claim_prep_outputs(
    out: Path, names: Sequence[str], inputs: Sequence[tuple[str, Path | None]], *, record: bool = True
) -> None:
    """Refuse an ``--out`` where prep would replace what it did not write, or destroy an input.

    ``--out`` may be any folder (also the user's own, or inside the data root), but not the data root
    itself, and none of prep's outputs there (``names``) may be or hold an input (``inputs``: the data
    root, the training file); each existing output must be prep's own. With ``record``, the names are
    then recorded as prep's (``megc_vqa.fileio.claim_outputs``)."""
    for description, path in inputs:
        if path is not None and Path(path).is_dir() and Path(out).resolve() == Path(path).resolve():
            raise UsageError(
                f"--out {out}: is {description}; prep would write its files among the inputs. "
                "Choose another --out (e.g. a folder beside it)"
            )
    for name in names:
        check_outside(Path(out) / name, inputs, label=f"--out {out}: {name}")
    if record:
        claim_outputs(out, WRITER, names, legacy=earlier_prep_output)
        set_output_folder(out)  # a crash log of this run goes beside its outputs
    else:
        check_claimable(out, WRITER, names, legacy=earlier_prep_output)
