"""``report.html``: one self-contained page to look at after a scored run.

What it holds: the score tables (every split the scorer returned, overall and per dataset), a confusion
matrix and per-class precision/recall/F1 (table and figure) for the coarse and fine questions of each
split, and a gallery of wrong rows: the key frames and motion image the model saw (rebuilt with the
project's sampler and the run's visual settings, :class:`megc_vqa.models.contract.ModelContract`), the
question, the answer and the truth. At most ``max_wrong`` wrong rows of each question kind are shown
(the page says how many there were).

The page opens offline in any browser: images are small JPEG thumbnails (and PNG figures) embedded as
``data:`` URIs, the style is inline, there is no script, and a Content-Security-Policy forbids every
network load. Every text that comes from a file (questions, answers, ids, problems) is HTML-escaped: a
prediction file cannot inject markup.

Written by ``eval/score.py vqa --report DIR`` and by ``run_vqa`` with ground truth, beside ``report.md``.
The scores are the scorer's own dict (``megc_vqa.metrics.vqa.score_aligned``), never recomputed; the
per-class table is derived from the same aligned rows with the scorer's rules (classes are the
ground-truth answers, anything else counts as ``<invalid>``).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import html
import io
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from megc_vqa import __version__
from megc_vqa.answering.run_vqa import DEFAULT_FPS, FPS_BY_DATASET, frame_folder
from megc_vqa.errors import UsageError
from megc_vqa.fileio import claim_outputs, input_file_problem, read_jsonl
from megc_vqa.limits import REPORT_ROWS, check_count, check_image_size
from megc_vqa.metrics.vqa import INVALID, AlignedRow, normalise_answer
from megc_vqa.models.contract import ModelContract, read_contract
from megc_vqa.models.prompting import get_field
from megc_vqa.qa.io import read_qa_jsonl
from megc_vqa.submission.files import atomic_write_text
from megc_vqa.training.data import make_visual_fn
from megc_vqa.visual.frames import clip_from_folder
from megc_vqa.visual.samplers import VisualInputs
from megc_vqa.visual.spec import parse_sampler

log = logging.getLogger(__name__)

HTML_NAME = "report.html"
# Wrong rows shown per question kind: enough to see a pattern, small enough for a page that opens at once.
DEFAULT_WRONG_ROWS = 24
THUMBNAIL_PX = 160  # longer side of a gallery thumbnail
JPEG_QUALITY = 80
CLASS_KINDS = ("coarse", "fine")  # the kinds with a confusion matrix (one label out of a closed set)
# No network, no script: the page works offline and a hostile string could not run anything anyway.
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"

# Looks up what the model saw for a row: its VisualInputs, or None when the row has no frames to show.
# May raise (missing or unreadable frames): the gallery then shows the reason instead of the images.
VisualLookup = Callable[[AlignedRow], "VisualInputs | None"]


def esc(value: object) -> str:
    """HTML-escaped text (quotes too, so it is safe inside attributes)."""
    return html.escape(str(value), quote=True)


def data_uri(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def thumbnail_jpeg(image: np.ndarray, max_side: int = THUMBNAIL_PX) -> bytes:
    """An RGB uint8 image as a small JPEG (longer side ``max_side``, aspect kept; never enlarged)."""
    import cv2

    height, width = image.shape[:2]
    scale = min(1.0, max_side / max(height, width))
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])  # fmt: skip
    if not ok:
        raise ValueError("the image could not be encoded as JPEG")
    return encoded.tobytes()


def image_labels(visual: VisualInputs, spec: str) -> list[str]:
    """A caption per image of ``visual``: key frames (with their frame numbers), then flow, then diff."""
    parsed = parse_sampler(spec)
    indices = visual.frame_indices
    if parsed.frames == "oao" and len(indices) == 3:
        apex = "apex (estimated)" if visual.apex_estimated else "apex"
        labels = [f"{name} #{i}" for name, i in zip(("onset", apex, "offset"), indices, strict=True)]
    else:
        labels = [f"frame #{i}" for i in indices]
    if parsed.flow:
        labels.append("flow onset→apex")
    if parsed.diff:
        labels.append("diff onset→apex")
    labels += [f"image {k + 1}" for k in range(len(labels), len(visual.images))]
    return labels[: len(visual.images)]


# --- per-class results of one kind, from the aligned rows with the scorer's rules -------------------


@dataclass(frozen=True)
class ClassTable:
    """Confusion counts and per-class scores of the coarse or fine rows of one split."""

    kind: str
    classes: list[str]  # the ground-truth classes, sorted
    columns: list[str]  # classes + INVALID
    counts: list[list[int]]  # [truth][predicted]

    @classmethod
    def of(cls, rows: Sequence[AlignedRow], kind: str) -> ClassTable | None:
        subset = [r for r in rows if r.qtype == kind]
        if not subset:
            return None
        truth = [normalise_answer(r.reference) for r in subset]
        classes = sorted(set(truth))
        columns = [*classes, INVALID]
        counts = [[0] * len(columns) for _ in classes]
        for t, r in zip(truth, subset, strict=True):
            p = normalise_answer(r.prediction)
            counts[classes.index(t)][columns.index(p if p in classes else INVALID)] += 1
        return cls(kind, classes, columns, counts)

    def per_class(self) -> list[dict[str, Any]]:
        """precision, recall, F1 and support of each class (one-vs-rest, zero when undefined)."""
        out = []
        for i, name in enumerate(self.classes):
            tp = self.counts[i][i]
            support = sum(self.counts[i])
            predicted = sum(row[i] for row in self.counts)
            precision = tp / predicted if predicted else 0.0
            recall = tp / support if support else 0.0
            f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
            out.append(
                {"class": name, "precision": precision, "recall": recall, "f1": f1, "support": support}
            )
        return out


def per_class_png(table: ClassTable, title: str) -> bytes:
    """Bar chart of each class's recall and F1 (what UAR and UF1 average)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    stats = table.per_class()
    x = np.arange(len(stats))
    fig, ax = plt.subplots(figsize=(max(3.0, 0.7 * len(stats) + 1.5), 2.6))
    ax.bar(x - 0.2, [s["recall"] for s in stats], 0.4, label="recall", color="#4c72b0")
    ax.bar(x + 0.2, [s["f1"] for s in stats], 0.4, label="F1", color="#dd8452")
    ax.set_xticks(x, [f"{s['class']}\n(n={s['support']})" for s in stats], fontsize=7)
    ax.set_ylim(0, 1.3)
    ax.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper center", ncol=2, frameon=False)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return buffer.getvalue()


# --- HTML pieces ----------------------------------------------------------------------------------

STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:right}
th:first-child,td:first-child{text-align:left}
.note{color:#555;font-size:13px}
.card{border:1px solid #ccc;border-radius:4px;padding:8px;margin:8px 0}
.card figure{display:inline-block;margin:2px 4px;text-align:center;font-size:11px}
.card img{display:block;border:1px solid #999;image-rendering:pixelated}
.qa{font-size:13px;margin:4px 0}
.qa b{display:inline-block;min-width:5.5em}
.wrong{color:#b00}.truth{color:#060}
.split{display:inline-block;vertical-align:top;margin-right:2em}
pre{white-space:pre-wrap;font-size:12px}
"""


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_number(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(_number(v) for v in value[:5]) + (" …" if len(value) > 5 else "")
    return str(value)


def score_table(scores: Mapping[str, Any]) -> str:
    """Every split the scorer returned as a column, every score it holds as a row."""
    splits = [k for k, v in scores.items() if isinstance(v, Mapping) and "n_rows" in v]
    # A dataset with no rows (the scorer always reports samm and casme3) is a column of dashes: left out.
    splits = [k for k in splits if k == "overall" or scores[k].get("n_rows")]
    keys: list[str] = []
    for split in splits:
        keys += [k for k in scores[split] if k not in keys]
    head = "".join(f"<th>{esc(s)}</th>" for s in splits)
    body = "".join(
        f"<tr><td>{esc(k)}</td>" + "".join(f"<td>{esc(_number(scores[s].get(k)))}</td>" for s in splits)
        + "</tr>"
        for k in keys
    )  # fmt: skip
    return f"<table><tr><th>score</th>{head}</tr>{body}</table>"


def confusion_html(table: ClassTable) -> str:
    """The confusion matrix as a shaded table (rows: truth, columns: prediction)."""
    peak = max((c for row in table.counts for c in row), default=0) or 1
    head = "".join(f"<th>{esc(c)}</th>" for c in table.columns)
    lines = []
    for name, row in zip(table.classes, table.counts, strict=True):
        cells = "".join(
            f'<td style="background:rgba(49,130,189,{c / peak:.2f});color:{"#fff" if c > peak / 2 else "#000"}">'
            f"{c}</td>"
            for c in row
        )
        lines.append(f"<tr><td>{esc(name)}</td>{cells}</tr>")
    return f"<table><tr><th>truth \\ predicted</th>{head}</tr>{''.join(lines)}</table>"


def per_class_html(table: ClassTable) -> str:
    rows = "".join(
        f"<tr><td>{esc(s['class'])}</td><td>{s['precision']:.3f}</td><td>{s['recall']:.3f}</td>"
        f"<td>{s['f1']:.3f}</td><td>{s['support']}</td></tr>"
        for s in table.per_class()
    )
    return (
        f"<table><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>n</th></tr>{rows}</table>"
    )


def class_sections(rows: Sequence[AlignedRow]) -> str:
    """Per split, per kind: confusion matrix, per-class table and figure."""
    splits: dict[str, list[AlignedRow]] = {"overall": list(rows)}
    for r in rows:
        splits.setdefault(str(r.dataset), []).append(r)
    parts = []
    for split, subset in splits.items():
        for kind in CLASS_KINDS:
            table = ClassTable.of(subset, kind)
            if table is None:
                continue
            figure = data_uri(per_class_png(table, f"{kind} ({split}): per-class recall and F1"), "image/png")
            parts.append(
                f'<div class="split"><h3 id="{esc(f"cm-{kind}-{split}")}">{esc(kind)} – {esc(split)}</h3>'
                f"{confusion_html(table)}{per_class_html(table)}"
                f'<img alt="{esc(f"per-class recall and F1, {kind} ({split})")}" src="{figure}"></div>'
            )
    return "".join(parts) or '<p class="note">No coarse or fine questions in the ground truth.</p>'


def row_status(row: AlignedRow, classes: Mapping[str, set[str]]) -> str:
    """missing, empty, invalid (not a ground-truth class of its kind) or wrong."""
    if row.prediction is None:
        return "missing"
    if not row.prediction.strip():
        return "empty"
    if row.qtype in classes and normalise_answer(row.prediction) not in classes[row.qtype]:
        return "invalid"
    return "wrong"


def _figures(visual: VisualInputs, spec: str) -> str:
    figures = []
    for label, image in zip(image_labels(visual, spec), visual.images, strict=False):
        uri = data_uri(thumbnail_jpeg(image), "image/jpeg")
        height, width = image.shape[:2]
        scale = THUMBNAIL_PX / max(height, width)
        figures.append(
            f'<figure><img alt="{esc(label)}" width="{round(width * scale)}" height="{round(height * scale)}" '
            f'src="{uri}"><figcaption>{esc(label)}</figcaption></figure>'
        )
    return "".join(figures) + f'<p class="note">{esc(visual.description)}</p>'


def _visual_html(row: AlignedRow, visuals: VisualLookup | None, spec: str, done: dict[str, str]) -> str:
    """The row's images as thumbnails; ``done`` keeps the HTML of clips already drawn (a clip's questions
    share its images)."""
    if visuals is None:
        return '<p class="note">frames: not given (see the report settings)</p>'
    try:
        visual = visuals(row)
    except Exception as err:  # a missing or unreadable clip: the row is still shown, with why
        return f'<p class="note">frames cannot be shown: {esc(type(err).__name__)}: {esc(err)}</p>'
    if visual is None:
        return '<p class="note">frames: none found for this row</p>'
    digest = hashlib.sha1(usedforsecurity=False)
    for image in visual.images:
        digest.update(np.ascontiguousarray(image).tobytes())
    key = f"{digest.hexdigest()}{visual.frame_indices}{visual.description}"
    if key not in done:
        done[key] = _figures(visual, spec)
    return done[key]


def gallery(
    rows: Sequence[AlignedRow],
    visuals: VisualLookup | None,
    spec: str,
    max_wrong: int,
    details: Mapping[str, Mapping[str, Any]] | None = None,
) -> str:
    """The wrong rows, grouped by kind, at most ``max_wrong`` of each, in ground-truth order."""
    classes: dict[str, set[str]] = {}
    for r in rows:
        if r.qtype in CLASS_KINDS:
            classes.setdefault(r.qtype, set()).add(normalise_answer(r.reference))
    by_kind: dict[str, list[AlignedRow]] = {}
    for r in rows:
        if not r.correct:
            by_kind.setdefault(str(r.qtype), []).append(r)
    if not by_kind:
        return '<p class="note">Every row is answered correctly.</p>'
    parts = []
    drawn: dict[str, str] = {}
    for kind, wrong in by_kind.items():
        shown = wrong[:max_wrong]
        parts.append(
            f'<h3 id="{esc(f"wrong-{kind}")}">{esc(kind)}: {len(wrong)} wrong row(s)'
            + (f", the first {len(shown)} shown" if len(shown) < len(wrong) else "")
            + "</h3>"
        )
        for r in shown:
            extra = ""
            for key, value in (details or {}).get(r.video_id, {}).items():
                if value not in (None, "", False):
                    extra += f'<div class="qa"><b>{esc(key)}</b> {esc(value)}</div>'
            answer = "(no answer)" if r.prediction is None else r.prediction
            parts.append(
                f'<div class="card"><div class="qa"><b>row</b> {esc(r.video_id)} ({esc(r.dataset)}, '
                f"{esc(row_status(r, classes))})</div>"
                f"{_visual_html(r, visuals, spec, drawn)}"
                f'<div class="qa"><b>question</b> {esc(r.question)}</div>'
                f'<div class="qa wrong"><b>answer</b> {esc(answer)}</div>'
                f'<div class="qa truth"><b>truth</b> {esc(r.reference)}</div>{extra}</div>'
            )
    return "".join(parts)


def build_html_report(
    rows: Sequence[AlignedRow],
    scores: Mapping[str, Any],
    *,
    visuals: VisualLookup | None = None,
    visual_settings: Mapping[str, Any] | None = None,
    max_wrong: int = DEFAULT_WRONG_ROWS,
    details: Mapping[str, Mapping[str, Any]] | None = None,
    sources: Sequence[str] = (),
    title: str = "ME-VQA report",
) -> str:
    """The page as a string. ``visuals`` finds what the model saw for a row (``None``: no frames given);
    ``visual_settings`` are the sampler settings used (``spec``, ``size``, ...; shown, and ``spec`` names
    the images); ``details`` adds lines to a row's card by ``video_id`` (raw answer, fallback, ...);
    ``sources`` names the files the report is about."""
    settings = dict(visual_settings or {})
    spec = str(settings.get("spec") or "oao+flow")
    variant = scores.get("variant", {}) if isinstance(scores.get("variant"), Mapping) else {}
    problems = [str(p) for p in scores.get("problems") or ()]
    n_wrong = sum(1 for r in rows if not r.correct)
    shown_settings = "; ".join(f"{k}={v}" for k, v in settings.items()) or "none"
    problem_list = "".join(f"<li>{esc(p)}</li>" for p in problems[:200])
    if len(problems) > 200:
        problem_list += f"<li>… and {len(problems) - 200} more (see scores.json)</li>"
    body = [
        f"<h1>{esc(title)}</h1>",
        f'<p class="note">megc-vqa {esc(__version__)}; {len(rows)} scored row(s), {n_wrong} wrong.'
        + "".join(f"<br>{esc(s)}" for s in sources)
        + "</p>",
        '<p><a href="#scores">scores</a> · <a href="#classes">confusion matrices and per-class scores</a> · '
        '<a href="#wrong">wrong rows</a></p>',
        '<h2 id="scores">Scores</h2>',
        score_table(scores),
        f'<p class="note">BLEU: {esc(variant.get("bleu_desc", "?"))}. ROUGE: {esc(variant.get("rouge_desc", "?"))}. '
        f"Rows covered by BLEU/ROUGE: {esc(variant.get('rows_desc', '?'))}. UF1/UAR classes are those of the "
        "ground truth; an answer that is none of them is wrong for its true class (<code>&lt;invalid&gt;</code>)."
        "</p>",
        f"<details><summary>{len(problems)} problem(s) found while scoring</summary><ul>{problem_list}</ul></details>"
        if problems
        else "",
        '<h2 id="classes">Confusion matrices and per-class scores</h2>',
        class_sections(rows),
        '<h2 id="wrong" style="clear:both">Wrong rows</h2>',
        f'<p class="note">What the model saw, rebuilt with the sampler settings {esc(shown_settings)}; '
        f"at most {max_wrong} row(s) per question kind.</p>",
        gallery(rows, visuals, spec, max_wrong, details),
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">'
        f"<title>{esc(title)}</title><style>{STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_html_report(
    out_dir: str | os.PathLike[str],
    rows: Sequence[AlignedRow],
    scores: Mapping[str, Any],
    *,
    writer: str = "megc-vqa score --report",
    what: str = "--report",
    **options: Any,
) -> Path:
    """Write ``out_dir/report.html`` (:func:`build_html_report` takes ``options``); a ``report.html``
    that ``writer`` did not write is refused, never replaced (:func:`megc_vqa.fileio.claim_outputs`)."""
    out = Path(out_dir)
    claim_outputs(out, writer, [HTML_NAME], what=what)
    path = atomic_write_text(out / HTML_NAME, build_html_report(rows, scores, **options))
    log.info("report: %s", path)
    return path


# --- what the model saw, for score.py: clips from records or from a test-frames root ------------------


class ClipVisuals:
    """``row -> VisualInputs`` for :func:`build_html_report` outside a run: the clip is found from

    1. a QA record with a frame location (``source``, ``onset``, ...: a ``prep`` output) of the row's id,
       among the ground-truth rows or ``clips`` (e.g. ``--gt val_truth.jsonl --clips P/qa.jsonl``);
    2. else ``frames_root`` and the row's ``video`` (organiser question files and ``synth-test`` truth),
       as ``run_vqa`` finds test clips (the apex estimated, as for a test clip).

    Records follow the visual settings' apex policy, as training and export sample them. Each clip is
    sampled once."""

    def __init__(
        self,
        contract: Any,
        records: Sequence[Any] = (),
        frames_root: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        self.contract = contract
        self.frames_root = Path(frames_root) if frames_root else None
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.by_id: dict[str, Any] = {}
        for record in records:
            key = get_field(record, "video_id", get_field(record, "id"))
            known = self.by_id.get(str(key)) if key is not None else None
            # a record that locates the clip wins over a ground-truth row that does not (--clips)
            if key is not None and (
                known is None or (get_field(record, "source") and not get_field(known, "source"))
            ):
                self.by_id[str(key)] = record
        self._record_visual = make_visual_fn(contract.visual, self.cache_dir, memory_cache=64)
        self._folder_visual = functools.lru_cache(maxsize=64)(self._sample_folder)

    def _sample_folder(self, folder: Path, fps: float) -> VisualInputs:
        return self.contract.sample(clip_from_folder(folder, fps, dataset="test"), self.cache_dir)

    def __call__(self, row: AlignedRow) -> VisualInputs | None:
        record = self.by_id.get(row.video_id, {})
        if get_field(record, "source"):
            return self._record_visual(record)
        video = get_field(record, "video")
        if self.frames_root is None or not isinstance(video, str):
            raise LookupError(
                "no frame location: give the prep output's qa.jsonl (--clips) or the test frames (--frames-root)"
            )
        folder = frame_folder(self.frames_root, video)
        if folder is None:
            raise FileNotFoundError(f"no frame folder for {video!r} under {self.frames_root}")
        return self._folder_visual(folder, FPS_BY_DATASET.get(row.dataset, DEFAULT_FPS))


def report_options(
    ground_truth: Sequence[Mapping[str, Any]],
    *,
    gt_files: Sequence[str | os.PathLike[str]] = (),
    frames_root: str | os.PathLike[str] | None = None,
    clips: str | os.PathLike[str] | None = None,
    visual_from: str | os.PathLike[str] | None = None,
    spec: str | None = None,
    size: int | None = None,
    max_wrong: int = DEFAULT_WRONG_ROWS,
) -> dict[str, Any]:
    """:func:`write_html_report` options for ``eval/score.py vqa --report``: the gallery's clips (see
    :class:`ClipVisuals`; ``gt_files`` that are ``prep`` outputs locate them too, their relative frame paths
    read from the file's folder) and the visual settings of ``visual_from`` (an adapter or model folder with a
    training record; else the defaults), ``spec``/``size`` overriding them. Every option is checked here,
    the error naming it."""
    check_count("--report-rows", max_wrong, REPORT_ROWS, minimum=0)
    check_image_size("--image-size", size)
    for option, folder in (("--frames-root", frames_root), ("--visual-from", visual_from)):
        if folder is not None and not Path(folder).is_dir():
            raise UsageError(f"{option} {folder}: not a folder; give an existing folder")
    contract = read_contract(visual_from) if visual_from else ModelContract()
    try:
        contract = contract.override(spec=spec, size=size)
    except ValueError as err:  # ContractError: the spec's grammar
        raise UsageError(f"--visual-spec: {err}") from None
    records: list[Any] = list(ground_truth)
    if clips is not None:
        problem = input_file_problem(clips, "QA file", suffix=".jsonl")
        if problem:
            raise UsageError(f"--clips {clips}: {problem}")
        records += read_qa_jsonl(clips)
    for path in gt_files:  # a prep output given as ground truth: its frame paths are relative to it
        if any("source" in row for row in read_jsonl(path)[:1]):
            records += read_qa_jsonl(path)
    located = frames_root is not None or any(get_field(r, "source") for r in records)
    settings = {
        **contract.visual.sample_kwargs(),
        "apex_policy (prep records)": contract.visual.apex_policy,
        "record": contract.source or "none (defaults)",
    }
    return {
        "visuals": ClipVisuals(contract, records, frames_root) if located else None,
        "visual_settings": settings,
        "max_wrong": max_wrong,
    }
