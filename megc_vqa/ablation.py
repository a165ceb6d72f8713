"""The realism ablation (issue 22): which face-pipeline settings the tiny model learns from on release-like
synthetic clips, each row against a model trained on blanked pixels, and the spotter against the model-free
baseline on release-like long videos.

    results = run_ablation(work, seeds=(0, 1, 2), rows=ROWS)          # one row = one training per seed
    spots = run_spotting(work, train_seed=0, eval_seed=1)             # spotter vs baseline, 30 and 200 fps

Everything lands under ``work`` and is read back when present with the same settings (a row's result file
holds the settings it was measured with), so an interrupted run resumes at the first unfinished row.
``benchmarks/realism_ablation.py`` (selection, seeds 0-2) and ``python -m megc_vqa.realistic`` (``make
realistic``: the chosen row on unseen seeds, with bars) are the two front ends.

The blanked-pixel control sees black images: it depends on the visual settings only through the number of
visual tokens (the image size), so it is trained once per seed and image size and shared by every row of
that size. The face pipeline can skip clips (no usable face); a row's training then sees fewer clips, which
its result records (``face_skipped_clips``), and the held-out clips it skips get fallback answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from megc_vqa.cli import main as cli
from megc_vqa.eval_heldout import evaluate_heldout, heldout_records
from megc_vqa.fileio import atomic_write_text

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "tiny" / "realistic.yaml"
SPOT_RECIPE = REPO / "recipes" / "spotting" / "realistic.yaml"
# The short-clip set of one seed: the three releases of the MEGC training file, as they were recorded.
# Ten subjects a dataset (a quarter held out: 3 a dataset, ~45 clips) keep generation near 3 minutes.
SYNTH_ARGS = ("--realism", "release", "--datasets", "casme2,samm,smic", "--subjects", "10")
SYNTH_CLIPS = ("--clips-per-subject", "5")
# Long videos: few events keep SAMM-LV (2040x1088 at 200 fps) affordable.
LONG_EVENTS = "3"
# The held-out score of each question type the bars measure (megc_vqa.metrics.vqa keys).
SCORES = {"coarse": "uf1_coarse", "fine": "uf1_fine"}


@dataclass(frozen=True)
class Row:
    """One visual setting: recipe overrides (``--key value`` pairs of the training recipe)."""

    name: str
    overrides: Mapping[str, str] = field(default_factory=dict)
    note: str = ""

    @property
    def image_size(self) -> str:
        return self.overrides.get("image_size", "")

    def args(self) -> list[str]:
        return [a for k, v in self.overrides.items() for a in (f"--{k}", v)]


# Each row sets every visual key (the recipe's own values never leak into a row). max_pixels follows the
# image size: the processor would otherwise shrink a 112-px image back to 56.
_BASE = {"face": "none", "register": "false", "magnify": "1", "image_size": "56", "max_pixels": "3136"}
_ALIGN = {**_BASE, "face": "align"}
_REG = {**_ALIGN, "register": "true"}
ROWS: tuple[Row, ...] = (
    Row("none", _BASE, "full frame, no face pipeline"),
    Row("crop", {**_BASE, "face": "crop"}, "square around the landmarks + 15% margin"),
    Row("align", _ALIGN, "crop + alignment (eyes level, fixed distance)"),
    Row("register", _REG, "align + every key frame registered to the onset"),
    Row("magnify", {**_REG, "magnify": "4"}, "align + register + 4x linear Eulerian magnification"),
    Row("register@112", {**_REG, "image_size": "112", "max_pixels": "12544"}, "register at 112 px"),
    Row(
        "magnify@112",
        {**_REG, "magnify": "4", "image_size": "112", "max_pixels": "12544"},
        "magnify at 112 px",
    ),
)
ROW_NAMES = tuple(r.name for r in ROWS)


def _cli(args: Sequence[str]) -> None:
    rc = cli(list(args))
    if rc:
        raise RuntimeError(f"megc-vqa {' '.join(args[:1])} failed (exit {rc}): {' '.join(args)}")


def short_clips(work: Path, seed: int) -> Path:
    """``megc-vqa synth --realism release`` + ``prep`` for one seed (reused when present): the qa.jsonl."""
    synth, prep = work / f"seed{seed}" / "synth", work / f"seed{seed}" / "prep"
    if not (prep / "qa.jsonl").is_file():
        if not (synth / "done").is_file():
            _cli(["synth", "--out", str(synth), "--seed", str(seed), *SYNTH_ARGS, *SYNTH_CLIPS])
            (synth / "done").write_text("synth finished\n")
        _cli(["prep", "--data-root", str(synth), "--out", str(prep), "--no-progress"])
    return prep / "qa.jsonl"


def _settings(seed: int, recipe: Path, args: Sequence[str]) -> dict[str, Any]:
    from megc_vqa.training.config import load_yaml

    # The visual keys a row sets are not the recipe's to decide: choosing a row as the recipe's own
    # default must not invalidate the rows measured before. A key the row leaves to the recipe (make
    # realistic's recipe row and its control) is the recipe's, and a change of it is another run.
    given = {a[2:] for a in args if a.startswith("--")}
    keys = {k: v for k, v in load_yaml(recipe).items() if k not in _BASE or k not in given}
    return {"seed": seed, "recipe": str(recipe), "recipe_keys": keys, "args": list(args)}


def train_and_score(
    work: Path,
    seed: int,
    name: str,
    args: Sequence[str],
    recipe: Path = RECIPE,
    blank: bool = False,
    read_only: bool = False,
) -> dict[str, Any] | None:
    """Train ``recipe`` with ``args`` on seed ``seed``'s clips and score its held-out subjects; the result
    is ``work/seed{seed}/rows/{name}.json``, read back when it holds the same settings. ``read_only``:
    ``None`` instead of training when there is no such result."""
    all_args = [*args, "--blank_pixels", "true" if blank else "false"]
    settings = _settings(seed, recipe, all_args)
    result_file = work / f"seed{seed}" / "rows" / f"{name}.json"
    if result_file.is_file():
        done = json.loads(result_file.read_text())
        if done.get("settings") == json.loads(json.dumps(settings, default=str)):
            log.info("seed %d %s: read back from %s", seed, name, result_file)
            return done
    if read_only:
        return None
    # torch and transformers come in here, not for a row read back
    from megc_vqa.answering.engine import EngineOptions
    from megc_vqa.training.config import parse_config
    from megc_vqa.training.data import load_records
    from megc_vqa.training.finetune import load_training_meta, train

    qa = short_clips(work, seed)
    out = work / f"seed{seed}" / "models" / name
    recipe_args = ["--config", str(recipe), "--train_file", str(qa), "--output_dir", str(out),
                   "--report_to", "none", "--final_eval", "false", "--seed", str(seed), *all_args]  # fmt: skip
    recipe_obj = parse_config(recipe_args)
    recipe_obj.overwrite_output_dir = True  # an unfinished earlier try of this row is replaced
    start = time.perf_counter()
    metrics = train(recipe_obj).metrics
    held = heldout_records(load_records(qa), load_training_meta(out).val_subjects)
    scores = evaluate_heldout(out, held, {"off": EngineOptions(consistency=False)})["off"]
    result = {
        "settings": settings,
        "scores": {k: scores[v] for k, v in SCORES.items()},
        "n_clips": scores["n_clips"],
        "face_skipped_clips": metrics.get("face_skipped_clips", 0),
        "train_s": round(metrics.get("train_runtime", 0.0), 1),
        "total_s": round(time.perf_counter() - start, 1),
    }
    result_file.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(result_file, json.dumps(result, indent=2, default=str))
    return result


def run_ablation(
    work: Path,
    seeds: Sequence[int],
    rows: Sequence[Row],
    recipe: Path = RECIPE,
    extra: Sequence[str] = (),
    read_only: bool = False,
) -> dict[str, Any]:
    """Every row (and the blanked control of its image size) on every seed; the seeds outermost, so that
    an interrupted run has whole seeds. Returns ``{"rows": {name: {seed: result}}, "blanked": {...}}``;
    ``read_only``: only the results already measured (nothing is trained)."""
    out: dict[str, Any] = {"rows": {r.name: {} for r in rows}, "blanked": {}, "seeds": list(seeds)}
    for seed in seeds:
        for size in dict.fromkeys(r.image_size for r in rows):
            name = f"blanked@{size or 'recipe'}"
            size_args = next(r for r in rows if r.image_size == size).overrides
            # No face pipeline: black images need no face, and none of the clips is skipped.
            keep = {**_BASE, **{k: v for k, v in size_args.items() if k in ("image_size", "max_pixels")}}
            args = [*Row(name, keep).args(), *extra]
            blank = train_and_score(work, seed, name, args, recipe, True, read_only)
            if blank is not None:
                out["blanked"].setdefault(name, {})[seed] = blank
        for row in rows:
            res = train_and_score(work, seed, row.name, [*row.args(), *extra], recipe, False, read_only)
            if res is not None:
                out["rows"][row.name][seed] = res
                log.info("seed %d %s: %s", seed, row.name, res["scores"])
    return out


def blanked_for(results: Mapping[str, Any], row: Row, seed: Any) -> dict[str, Any] | None:
    return results["blanked"].get(f"blanked@{row.image_size or 'recipe'}", {}).get(seed)


def summarise(results: Mapping[str, Any], rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Per row: each seed's coarse/fine UF1, its blanked control and margin, and the medians over seeds."""
    table = []
    for row in rows:
        per_seed = {}
        for seed, res in results["rows"].get(row.name, {}).items():
            blank = blanked_for(results, row, seed)
            if blank is None:
                continue
            per_seed[str(seed)] = {
                **{q: res["scores"][q] for q in SCORES},
                **{f"{q}_blanked": blank["scores"][q] for q in SCORES},
                **{f"{q}_margin": res["scores"][q] - blank["scores"][q] for q in SCORES},
                "skipped": res["face_skipped_clips"],
            }
        if not per_seed:
            continue
        med = {
            k: statistics.median(s[k] for s in per_seed.values())
            for k in next(iter(per_seed.values()))
            if k != "skipped"
        }
        table.append({"row": row.name, "note": row.note, "seeds": per_seed, "median": med})
    return table


def choose(table: Sequence[Mapping[str, Any]]) -> str | None:
    """The row with the largest median of (coarse margin + fine margin): both bars count."""
    if not table:
        return None
    return max(table, key=lambda t: t["median"]["coarse_margin"] + t["median"]["fine_margin"])["row"]


def markdown(table: Sequence[Mapping[str, Any]], chosen: str | None, spots: Mapping[str, Any]) -> str:
    lines = [
        "| row | settings | seeds | coarse UF1 | blanked | margin | fine UF1 | blanked | margin | skipped |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for t in table:
        seeds = t["seeds"]

        def cell(key: str, t: Mapping[str, Any] = t, seeds: Mapping[str, Any] = seeds) -> str:
            per = " / ".join(f"{s[key]:.3f}" for s in seeds.values())
            return f"**{t['median'][key]:.3f}** ({per})" if len(seeds) > 1 else per

        mark = " (chosen)" if t["row"] == chosen else ""
        lines.append(
            f"| {t['row']}{mark} | {t['note']} | {', '.join(seeds)} | {cell('coarse')} | "
            f"{cell('coarse_blanked')} | {cell('coarse_margin')} | {cell('fine')} | "
            f"{cell('fine_blanked')} | {cell('fine_margin')} | "
            f"{' / '.join(str(s['skipped']) for s in seeds.values())} |"
        )
    if spots:
        lines += ["", "| long videos | fps | videos | spotter strict F1 | baseline strict F1 | margin |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for fps, s in spots.get("fps", {}).items():
            lines.append(
                f"| seed {spots['eval_seed']} (spotter trained on seed {spots['train_seed']}) | {fps} | "
                f"{s['videos']} | {s['spotter']:.3f} | {s['baseline']:.3f} | "
                f"{s['spotter'] - s['baseline']:.3f} |"
            )
    return "\n".join(lines) + "\n"


def plot(table: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Coarse and fine UF1 per row (median bar, one dot per seed) with the blanked control's medians."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    names = [t["row"] for t in table]
    for ax, q in zip(axes, SCORES, strict=True):
        ax.bar(names, [t["median"][q] for t in table], color="tab:blue", alpha=0.6, label="pixels (median)")
        ax.bar(names, [t["median"][f"{q}_blanked"] for t in table], color="none", edgecolor="black",
               linestyle="--", label="blanked pixels (median)")  # fmt: skip
        for i, t in enumerate(table):
            ax.scatter([i] * len(t["seeds"]), [s[q] for s in t["seeds"].values()], color="black", s=12)
        ax.set_title(f"held-out {q} UF1")
        ax.tick_params(axis="x", rotation=30)
        ax.set_ylim(0, 1)
    axes[0].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(work: Path, results: Mapping[str, Any], rows: Sequence[Row], spots: Mapping[str, Any],
                 stem: str = "ablation") -> tuple[list[dict[str, Any]], str | None]:  # fmt: skip
    """``work/{stem}.json`` (every result), ``.md`` (the table) and ``.png`` (the plot)."""
    table = summarise(results, rows)
    chosen = choose(table)
    doc = {"results": results, "table": table, "chosen": chosen, "spotting": spots}
    atomic_write_text(work / f"{stem}.json", json.dumps(doc, indent=2, default=str))
    atomic_write_text(work / f"{stem}.md", markdown(table, chosen, spots))
    if table:
        plot(table, work / f"{stem}.png")
    return table, chosen


# --- spotting -------------------------------------------------------------------------------------------


def long_videos(work: Path, name: str, seed: int, n: int, fps: int | None = None) -> Path:
    """``megc-vqa synth-test --realism release --long-videos n`` (reused when present): the folder holding
    ``long/`` (frame folders, videos.json) and ``gt/str_gt.csv``."""
    out = work / "long" / name
    if not (out / "done").is_file():
        fps_args = ["--fps", str(fps)] if fps else []
        _cli(["synth-test", "--out", str(out), "--seed", str(seed), "--realism", "release",
              "--long-videos", str(n), "--long-events", LONG_EVENTS, *fps_args])  # fmt: skip
        (out / "done").write_text("synth-test finished\n")
    return out


def _run_str(videos: Path, out: Path, spotter: Path | None) -> float:
    """``eval/run_str.py`` (the public path) on ``videos``; its strict spotting F1."""
    scores = out / "scores.json"
    if not scores.is_file():
        cmd = [sys.executable, str(REPO / "eval" / "run_str.py"), "--videos-root", str(videos / "long"),
               "--gt", str(videos / "gt" / "str_gt.csv"), "--out", str(out), "--restart"]  # fmt: skip
        cmd += ["--spotter", str(spotter)] if spotter else []
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return float(json.loads(scores.read_text())["strict"]["overall"]["f1_spot"])


def run_spotting(
    work: Path,
    train_seed: int,
    eval_seed: int,
    n_train: int = 16,
    n_eval: int = 4,
    recipe: Path = SPOT_RECIPE,
    read_only: bool = False,
) -> dict[str, Any]:
    """Train the spotter (``megc-vqa spot-train``) on ``n_train`` long videos of ``train_seed`` (30 and 200
    fps alternating), then spot ``n_eval`` videos of ``eval_seed`` at 30 fps and at 200 fps with it and
    with the model-free baseline, both through ``eval/run_str.py``. The figures are kept in
    ``work/long/spotting-{train_seed}-{eval_seed}-{recipe digest}.json``; ``read_only``: those, or ``{}``."""
    # The spotter and its figures belong to the recipe's content: an edited recipe is another spotter.
    tag = hashlib.sha256(Path(recipe).read_bytes()).hexdigest()[:8]
    done = work / "long" / f"spotting-{train_seed}-{eval_seed}-{tag}.json"
    if done.is_file() or read_only:
        return json.loads(done.read_text()) if done.is_file() else {}
    train_set = long_videos(work, f"train-seed{train_seed}", train_seed, n_train)
    spotter_dir = work / "long" / f"spotter-seed{train_seed}-{tag}"
    if not (spotter_dir / "spotter.pt").is_file():
        _cli(["spot-train", "--recipe", str(recipe), "--out", str(spotter_dir),
              "--gt", str(train_set / "gt" / "str_gt.csv"), "--videos-root", str(train_set / "long")])  # fmt: skip
    out: dict[str, Any] = {"train_seed": train_seed, "eval_seed": eval_seed, "n_train": n_train, "fps": {}}
    for fps in (30, 200):
        videos = long_videos(work, f"eval{fps}-seed{eval_seed}", eval_seed, n_eval, fps)
        runs = work / "long" / f"str-{fps}-seed{eval_seed}-by{train_seed}-{tag}"
        out["fps"][str(fps)] = {
            "videos": n_eval,
            "spotter": _run_str(videos, runs / "spotter", spotter_dir / "spotter.pt"),
            "baseline": _run_str(videos, runs / "baseline", None),
        }
    atomic_write_text(done, json.dumps(out, indent=2))
    return out
