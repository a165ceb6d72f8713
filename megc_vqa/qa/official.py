"""The organisers' own ME-VQA training files (SPEC section 3): read, map onto the user's folders, write, compare.

- ``read_official_rows(path)``: the rows of ``me_vqa_samm_casme2_smic.jsonl`` (2025) or
  ``me_vqa_samm_casme2_smic_v2.jsonl`` (2026 v2, with free-form analysis rows), each with its line
  number; a file of another schema is an error that names the keys it found.
- ``map_rows(rows, clips)``: each row gets its clip's frame location and key frames from the user's
  dataset folders (matched on dataset + ``image_id``, else dataset + subject + filename); the question
  and answer stay exactly as the organisers wrote them. Rows without a clip come back as
  :class:`Unmatched` with file, line and reason.
- ``official_rows(clips)`` / ``write_training_file``: an organiser-format file from (synthetic) releases,
  so tests and demos can exercise the official path without the licence-only file.
- ``compare(generated, rows)``: where the generator and an organiser file differ, clip by clip.

``megc-vqa prep --training-file F`` and ``--compare-with F`` drive these (``run_training_file``,
``run_compare``).
"""

from __future__ import annotations

import logging
import random
import sys
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from megc_vqa import annotations
from megc_vqa.errors import MegcError, UsageError
from megc_vqa.qa import templates as t
from megc_vqa.qa.generate import clip_rng, generate_qa, named_aus
from megc_vqa.qa.io import iter_jsonl, save_as_dataset, write_jsonl_atomic, write_qa_jsonl
from megc_vqa.qa.mapping import (  # noqa: F401  (re-exported: the mapping is part of the official path)
    REASON_NO_CLIP,
    REASON_NO_RELEASE,
    ClipIndex,
    OfficialRow,
    TrainingMapping,
    Unmatched,
    attach_clip,
    map_rows,
)
from megc_vqa.qa.outputs import OFFICIAL_OUTPUT_NAMES, claim_prep_outputs
from megc_vqa.qa.outputs import WRITER as PREP_WRITER
from megc_vqa.qa.records import OFFICIAL_KEYS, QARecord
from megc_vqa.records import Clip, Skip

log = logging.getLogger(__name__)

TRAINING_FILES: dict[str, str] = {
    "2025": "me_vqa_samm_casme2_smic.jsonl",
    "2026": "me_vqa_samm_casme2_smic_v2.jsonl",
}
# The datasets of the organisers' training files (CAS(ME)^3 is test-only there).
TRAINING_DATASETS: tuple[str, ...] = ("casme2", "samm", "smic")


class TrainingFileError(MegcError):
    """An organiser training file that cannot be used as written; the message names file, line and keys."""


class PrepError(MegcError):
    """Bad input that ``prep`` reports as one line and exit code 2 (a data root that cannot be loaded)."""


# ---------------------------------------------------------------- reading


def read_official_rows(path: str | Path) -> list[OfficialRow]:
    """The rows of an organiser training file, in file order, with their line numbers.

    Raises :class:`TrainingFileError` for a file of another schema (naming the keys found on the first
    line that lacks an official key), a non-string value, a duplicated ``id`` or an empty file;
    ``QAFileError`` (from the JSONL reader) for a line that is not JSON.
    """
    path = Path(path)
    rows: list[OfficialRow] = []
    first_line: dict[str, int] = {}
    for number, obj in iter_jsonl(path):
        missing = [key for key in OFFICIAL_KEYS if key not in obj]
        if missing:
            hint = ""
            if "video_id" in obj:
                hint = " (this looks like an organiser question file, *_to_answer.jsonl, not a training file)"
            elif {"messages", "conversations"} & set(obj):
                hint = " (this looks like a trainer's chat dataset, not an organiser training file)"
            raise TrainingFileError(
                f"{path}:{number}: not an organiser training file{hint}: the row has keys "
                f"{', '.join(map(repr, obj)) or '(none)'}; an organiser row (me_vqa_samm_casme2_smic.jsonl or "
                f"_v2.jsonl) has {', '.join(OFFICIAL_KEYS)}; missing: {', '.join(missing)}"
            )
        try:
            record = QARecord.from_json(obj)
        except (KeyError, TypeError) as err:
            raise TrainingFileError(f"{path}:{number}: {err.args[0]}") from None
        if record.id in first_line:
            raise TrainingFileError(
                f"{path}:{number}: id {record.id!r} already used on line {first_line[record.id]}"
            )
        first_line[record.id] = number
        rows.append(OfficialRow(number, record))
    if not rows:
        raise TrainingFileError(f"{path}: no rows")
    return rows


# ---------------------------------------------------------------- writing an organiser-format file

# Free-form analysis answers of v2 rows built from a clip's labels. The organisers' own analysis texts are
# not reproducible from the spreadsheets (that is why the official file is needed); these stand-ins only
# give synthetic files the v2 shape: the exact analysis prompts with a sentence-level answer.
_ANALYSIS_OPENINGS = (
    "The clip shows a brief, low-intensity facial movement typical of a micro-expression.",
    "A subtle and short facial movement appears between the onset and offset frames.",
)
_ANALYSIS_BODY = (
    "The visible action units are {aus}. Together they suggest {fine}, which belongs to the {coarse} "
    "expression class."
)


def analysis_answer(au_names: Sequence[str], fine: str, coarse: str, rng: random.Random) -> str:
    """A free-form analysis text for a synthetic v2 row (see the note above ``_ANALYSIS_OPENINGS``)."""
    aus = t.AU_SEPARATOR.join(au_names) if au_names else "hard to name"
    return f"{rng.choice(_ANALYSIS_OPENINGS)} {_ANALYSIS_BODY.format(aus=aus, fine=fine, coarse=coarse)}"


def official_rows(clips: Iterable[Clip], version: str = "2025", seed: int = 0) -> list[dict[str, Any]]:
    """Organiser-format rows (official keys only, organisers' order) for the clips of the training datasets.

    ``2025``: the SPEC section 3 questions of the generator. ``2026``: the same plus one free-form analysis
    row per clip with a fine label (one of the exact v2 analysis prompts, drawn per clip).
    """
    if version not in TRAINING_FILES:
        raise UsageError(f"training file version {version!r}: choose one of {', '.join(TRAINING_FILES)}")
    clips = [c for c in clips if c.dataset in TRAINING_DATASETS]
    records = generate_qa(clips, seed=seed)
    by_clip: dict[tuple[str, str], list[QARecord]] = defaultdict(list)
    for record in records:
        by_clip[(record.dataset, record.image_id)].append(record)
    rows: list[dict[str, Any]] = []
    for clip in clips:
        clip_records = by_clip.pop((clip.dataset, clip.image_id), [])
        rows += [{key: getattr(r, key) for key in OFFICIAL_KEYS} for r in clip_records]
        if version == "2026" and clip_records and clip.fine_emotion and clip.coarse_emotion:
            rng = random.Random(clip_rng(clip, seed).random())
            names = [name for _, name in named_aus(clip.aus)]
            last = clip_records[-1]
            rows.append(
                {
                    **{key: getattr(last, key) for key in OFFICIAL_KEYS},
                    "id": f"{clip.dataset}_{clip.image_id}_{len(clip_records) + 1}",
                    "question": rng.choice(t.ANALYSIS_QUESTIONS),
                    "answer": analysis_answer(names, clip.fine_emotion, clip.coarse_emotion, rng),
                }
            )
    return rows


def write_training_file(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write organiser rows the way the organisers distribute them (compact JSON lines), atomically."""
    return write_jsonl_atomic(({key: row[key] for key in OFFICIAL_KEYS} for row in rows), path)


# ---------------------------------------------------------------- comparing with the generator


@dataclass(frozen=True)
class ClipDiff:
    """One difference between the generated and the organisers' rows of a clip."""

    clip: str  # dataset/image_id
    kind: str  # only_in_file | only_generated | missing_question | extra_question | au_order | answer | presence
    detail: str

    def __str__(self) -> str:
        return f"{self.clip}: {self.kind}: {self.detail}"


@dataclass
class Comparison:
    clips_compared: int = 0
    identical: int = 0
    diffs: list[ClipDiff] = field(default_factory=list)
    analysis_rows: int = 0  # organiser free-form rows, which no generator rebuilds (not a difference)
    not_loaded: Counter = field(default_factory=Counter)  # file clips per dataset with no release loaded

    @property
    def differing_clips(self) -> list[str]:
        return list(dict.fromkeys(d.clip for d in self.diffs))


def _as_au_set(answer: str) -> list[str]:
    return sorted(a.strip() for a in answer.split(t.AU_SEPARATOR))


def compare(
    generated: Sequence[QARecord], official: Sequence[QARecord], skips: Sequence[Skip] = ()
) -> Comparison:
    """Compare clip by clip (dataset + image_id).

    Within a clip, rows are compared per question; two things are not counted as differences: the AU
    that each presence question names (drawn at random by both generators: only the yes/no answers are
    compared) and the v2 free-form analysis rows (counted in ``analysis_rows``). An AU list or joint
    answer with the same AUs in another order is reported as ``au_order``. ``skips`` (the loaders' and
    generator's) explain clips of the file that were not generated. Clips of a dataset with no release
    under the data root are not compared (counted in ``not_loaded``).
    """

    def group(records: Sequence[QARecord]) -> dict[str, list[QARecord]]:
        out: dict[str, list[QARecord]] = defaultdict(list)
        for r in records:
            out[f"{r.dataset}/{r.image_id}"].append(r)
        return out

    gen, off = group(generated), group(official)
    loaded = {r.dataset for r in generated} | {s.dataset for s in skips}
    result = Comparison()
    for clip in off:
        rows = off[clip]
        result.analysis_rows += sum(r.question_type == "analysis" for r in rows)
        if rows[0].dataset not in loaded:
            result.not_loaded[rows[0].dataset] += 1
            continue
        if clip not in gen:
            why = "; ".join(sorted({s.reason for s in skips if clip.split("/", 1)[1] in s.detail}))
            result.diffs.append(
                ClipDiff(
                    clip, "only_in_file", f"{len(rows)} rows, not generated" + (f" ({why})" if why else "")
                )
            )
            continue
        result.clips_compared += 1
        before = len(result.diffs)
        result.diffs += _compare_clip(clip, gen[clip], [r for r in rows if r.question_type != "analysis"])
        if len(result.diffs) == before:
            result.identical += 1
    for clip in gen:
        if clip not in off:
            result.diffs.append(ClipDiff(clip, "only_generated", f"{len(gen[clip])} rows, not in the file"))
    return result


def _compare_clip(clip: str, generated: list[QARecord], official: list[QARecord]) -> list[ClipDiff]:
    diffs: list[ClipDiff] = []
    presence_gen = Counter(r.answer for r in generated if r.question_type == "presence")
    presence_off = Counter(r.answer for r in official if r.question_type == "presence")
    if presence_gen != presence_off:
        diffs.append(
            ClipDiff(clip, "presence", f"generated answers {dict(presence_gen)} vs file {dict(presence_off)}")
        )
    gen = {r.question: r.answer for r in generated if r.question_type != "presence"}
    off = {r.question: r.answer for r in official if r.question_type != "presence"}
    for question, answer in off.items():
        if question not in gen:
            diffs.append(ClipDiff(clip, "missing_question", f"{question!r} (file answer {answer!r})"))
        elif gen[question] != answer:
            mine = gen[question]
            kind = "answer"
            if t.classify_question(question) == "au" and _as_au_set(mine) == _as_au_set(answer):
                kind = "au_order"
            elif t.classify_question(question) == "joint":
                parsed_mine, parsed_file = t.parse_joint_answer(mine), t.parse_joint_answer(answer)
                if (
                    parsed_mine
                    and parsed_file
                    and parsed_mine[1:] == parsed_file[1:]
                    and sorted(parsed_mine[0]) == sorted(parsed_file[0])
                ):
                    kind = "au_order"
            diffs.append(ClipDiff(clip, kind, f"{question!r}: generated {mine!r} vs file {answer!r}"))
    for question, answer in gen.items():
        if question not in off:
            diffs.append(ClipDiff(clip, "extra_question", f"{question!r} (generated answer {answer!r})"))
    return diffs


# ---------------------------------------------------------------- the prep command's two modes


def load_clips(data_root: Path) -> tuple[list[Clip], list[Skip]]:
    """Every clip under ``data_root`` (the annotation loaders); ``PrepError`` for an unreadable file."""
    if not Path(data_root).is_dir():
        raise PrepError(f"--data-root {data_root}: no such folder")
    try:
        # absolute clip sources: qa.jsonl stores them relative to itself, from any working folder
        loaded = annotations.load_all(Path(data_root).absolute())
    except annotations.AnnotationError as err:
        raise PrepError(str(err)) from None
    return loaded.clips, loaded.skips


def _print_unmatched(unmatched: Sequence[Unmatched], limit: int = 20) -> None:
    words = {"no_clip": "rows whose clip is not in its release", "no_release": "rows of a dataset not found"}
    for (dataset, kind), count in sorted(Counter((u.dataset, u.kind) for u in unmatched).items()):
        print(f"  unmatched {dataset}: {count} {words[kind]}")
    for u in unmatched[:limit]:
        print(f"  {u}")
    if len(unmatched) > limit:
        print(f"  ... and {len(unmatched) - limit} more (all in unmatched.jsonl)")


def prepare_official(
    training_file: Path,
    data_root: Path,
    out: Path,
    *,
    max_unmatched_share: float = 0.0,
    add_generated: bool = False,
    seed: int = 0,
) -> tuple[int, TrainingMapping, list[QARecord]]:
    """``prep --training-file``: map, write and return ``(exit status, mapping, records written)``.

    Writes ``out/unmatched.jsonl`` always; ``out/qa.jsonl``, ``out/dataset/`` and ``out/skips.jsonl`` only
    when the unmatched share is at most ``max_unmatched_share`` (else exit status 1 and no ``qa.jsonl``, so
    a pipeline cannot go on training on fewer clips than the user allowed). ``add_generated`` appends the
    generator's records of clips the file does not name (e.g. CAS(ME)^3), so official and generated
    records train together without two versions of one clip.
    """
    import dataclasses

    if not 0.0 <= max_unmatched_share <= 1.0:
        raise UsageError(f"--max-unmatched-share {max_unmatched_share}: give a fraction between 0 and 1")
    inputs = [("the data root", data_root), ("the training file", training_file)]
    claim_prep_outputs(out, OFFICIAL_OUTPUT_NAMES, inputs, record=False)  # before the slow part
    rows = read_official_rows(training_file)
    clips, load_skips = load_clips(data_root)
    mapping = map_rows(training_file, rows, clips)
    claim_prep_outputs(out, OFFICIAL_OUTPUT_NAMES, inputs)
    write_jsonl_atomic([asdict(u) for u in mapping.unmatched], out / "unmatched.jsonl")
    if mapping.unmatched_share > max_unmatched_share:
        return 1, mapping, []
    records = list(mapping.records)
    if add_generated:
        named = {(r.dataset, r.image_id) for r in mapping.records} | {
            (u.dataset, u.image_id) for u in mapping.unmatched
        }
        records += generate_qa([c for c in clips if (c.dataset, c.image_id) not in named], seed=seed)
    # Frame paths relative to qa.jsonl, as plain prep writes them: readable from any working folder.
    write_qa_jsonl(records, out / "qa.jsonl", relative_sources=True)
    write_jsonl_atomic([{"stage": "load", **dataclasses.asdict(s)} for s in load_skips], out / "skips.jsonl")
    save_as_dataset(records, out / "dataset", writer=PREP_WRITER)
    return 0, mapping, records


def run_training_file(args: Any) -> int:
    """``megc-vqa prep --training-file F --data-root D --out P`` (see :func:`prepare_official`)."""
    share = float(getattr(args, "max_unmatched_share", 0.0) or 0.0)
    status, mapping, records = prepare_official(
        Path(args.training_file),
        Path(args.data_root),
        Path(args.out),
        max_unmatched_share=share,
        add_generated=bool(getattr(args, "add_generated", False)),
        seed=int(getattr(args, "seed", 0)),
    )
    kinds = Counter(r.question_type for r in mapping.records)
    print(
        f"{mapping.path}: {mapping.rows} organiser rows ({mapping.version} schema), "
        f"{len(mapping.records)} mapped onto clips under {args.data_root}, {len(mapping.unmatched)} unmatched"
    )
    print("  questions: " + ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items())))
    if kinds.get("unknown"):
        print(f"  {kinds['unknown']} rows ask a question of no known template: kept as they are (free-form)")
    if mapping.unmatched:
        _print_unmatched(mapping.unmatched)
    out = Path(args.out)
    if status:
        print(
            f"megc-vqa prep: error: {len(mapping.unmatched)} of {mapping.rows} rows "
            f"({mapping.unmatched_share:.1%}) have no clip under {args.data_root}, above "
            f"--max-unmatched-share {share:g}; nothing written but {out / 'unmatched.jsonl'}. Add the missing "
            "releases to the data root, or allow the share (e.g. --max-unmatched-share 0.4 without SMIC)",
            file=sys.stderr,
        )
        return status
    extra = len(records) - len(mapping.records)
    if extra:
        print(f"  + {extra} generated records of clips the file does not name")
    for name in ("qa.jsonl", "unmatched.jsonl", "skips.jsonl", "dataset"):
        print(f"{name}: {out / name}")
    return 0


def run_compare(
    generated: Sequence[QARecord],
    skips: Sequence[Skip],
    path: Path,
    limit: int = 50,
    rows: Sequence[OfficialRow] | None = None,
) -> int:
    """Print where the generator and the organisers' file differ; 0 when they agree, 1 when they differ.
    ``rows``: the file's rows when already read (``prep`` reads them before it starts)."""
    official = [row.record for row in (read_official_rows(path) if rows is None else rows)]
    result = compare(generated, official, skips)
    print(
        f"compare with {path}: {result.clips_compared} clips in both, {result.identical} identical, "
        f"{len(result.differing_clips)} clips differ"
        + (f"; {result.analysis_rows} free-form analysis rows not compared" if result.analysis_rows else "")
    )
    for dataset, count in sorted(result.not_loaded.items()):
        print(f"  {count} {dataset} clips of the file not compared: no {dataset} release under the data root")
    kinds = Counter(d.kind for d in result.diffs)
    if kinds:
        print("  differences: " + ", ".join(f"{kind} {n}" for kind, n in kinds.most_common()))
    for diff in result.diffs[:limit]:
        print(f"  {diff}")
    if len(result.diffs) > limit:
        print(f"  ... and {len(result.diffs) - limit} more")
    return 1 if result.diffs else 0
