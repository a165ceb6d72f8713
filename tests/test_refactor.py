"""Issue 27: a second spotter is one module-like class and one registry entry; spotting reads ground truth
through the STR reader; no import cycle among the package's modules."""

from __future__ import annotations

import argparse
import ast
import doctest
import os
from collections.abc import Collection
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn

from megc_vqa.errors import InputError, MegcError, UsageError, run_command
from megc_vqa.fileio import atomic_cache_folder
from megc_vqa.metrics import answers
from megc_vqa.metrics.strs import StrInputError, read_events
from megc_vqa.spotting import train as spot_train
from megc_vqa.spotting.infer import score_video
from megc_vqa.spotting.model import SPOTTERS, CheckpointError, Spotter, load_checkpoint, save_checkpoint
from megc_vqa.spotting.pipeline import load_spotter
from megc_vqa.spotting.spotter_config import OUTPUTS, SpotterConfig, SpotterModel
from tests.spotting_synth import write_long_videos

PACKAGE = Path(__file__).resolve().parents[1] / "megc_vqa"


class ToySpotter(nn.Module):
    """A second spotting network, as a new module would hold it: one temporal conv over each sampled
    frame's mean intensity per channel. Built from a ``SpotterConfig`` alone, like every registry entry."""

    def __init__(self, config: SpotterConfig) -> None:
        super().__init__()
        self.config = config
        self.head = nn.Conv1d(len(config.inputs), len(OUTPUTS) + len(config.emotions), 3, padding=1)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        return self.head(windows.mean(dim=(3, 4)))  # (B, C, T) -> (B, 2 + E, T)


def test_a_second_spotter_trains_saves_loads_and_spots_by_its_registry_name(tmp_path, monkeypatch):
    monkeypatch.setitem(SPOTTERS, "toy", ToySpotter)  # the one registry line a new model adds
    videos = write_long_videos(tmp_path / "data", 3, seed=5, fps=30.0, seconds=4.0, size=48)
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(yaml.safe_dump({
        "model": {"architecture": "toy", "size": 32, "n_frames": 4},
        "train": {"epochs": 1, "batch_size": 8, "thresholds": [0.5], "extents": [0.5], "val_subjects": 1},
        "data": {"gt_csv": "data/gt/str_gt.csv", "videos_root": "data/long", "fps": 30},
    }))  # fmt: skip
    parser = argparse.ArgumentParser()
    spot_train.add_arguments(parser)
    assert spot_train.run(parser.parse_args(["--recipe", str(recipe), "--out", "run"])) == 0

    model, extra = load_checkpoint(tmp_path / "run" / "spotter.pt")
    assert isinstance(model, ToySpotter) and isinstance(model, SpotterModel)
    assert model.config.architecture == "toy" and extra["epoch"] == 1
    spotter, peaks = load_spotter(tmp_path / "run" / "spotter.pt")
    curve = score_video(spotter, videos[0].source, videos[0].fps, workers=0)
    assert curve.scores.shape[0] == len(curve.grid) and peaks["threshold"] == 0.5

    # without the registry entry the name is refused, never imported
    monkeypatch.delitem(SPOTTERS, "toy")
    with pytest.raises(CheckpointError, match="architecture 'toy' is not one this version knows"):
        load_checkpoint(tmp_path / "run" / "spotter.pt")
    with pytest.raises(
        InputError, match=r"model.architecture 'toy' is not a known spotter; use one of cnn3d"
    ):
        spot_train.load_recipe(recipe)


def test_the_3d_cnn_checkpoint_keeps_its_record(tmp_path):
    torch.manual_seed(0)
    model = Spotter(SpotterConfig(size=32, n_frames=4, widths=(4, 8, 8), hidden=8)).eval()
    assert "architecture" not in model.config.to_dict()  # checkpoints and run identities as before
    save_checkpoint(tmp_path / "s.pt", model)
    loaded, _ = load_checkpoint(tmp_path / "s.pt")
    assert type(loaded) is Spotter and loaded.config == model.config


def test_ground_truth_events_come_typed_from_the_str_reader(tmp_path):
    gt = tmp_path / "gt.csv"
    gt.write_text("subject,video,onset,offset,emotion,type\n006,v1,10,20,negative,\n006,v1,30,200,positive,\n"
                  "006,v1,300,400,surprise,micro\n")  # fmt: skip
    events = read_events(gt, fps=100.0)
    assert [e.expression_type for e in events[("006", "v1")]] == ["micro", "macro", "micro"]
    assert [e.row for e in events[("006", "v1")]] == [2, 3, 4]
    gt.write_text("subject,video,onset,offset,emotion\n006,v1,10.0,20,negative\n")
    with pytest.raises(StrInputError, match=r"gt.csv:2: onset '10.0' is not an integer frame number"):
        read_events(gt)


def test_atomic_cache_folder_builds_whole_or_not_at_all(tmp_path):
    entry = tmp_path / "cache" / "tiny"
    with pytest.raises(KeyboardInterrupt), atomic_cache_folder(entry, "stamp.json", "test cache") as tmp:
        (tmp / "half").write_text("x")
        raise KeyboardInterrupt
    assert not entry.exists() and os.listdir(entry.parent) == []  # no half entry, no temporary folder
    with atomic_cache_folder(entry, "stamp.json", "test cache") as tmp:
        (tmp / "stamp.json").write_text("{}")
    assert sorted(os.listdir(entry)) == ["stamp.json"]
    with atomic_cache_folder(entry, "stamp.json", "test cache") as tmp:  # an older entry is replaced
        (tmp / "stamp.json").write_text('{"v": 2}')
    assert (entry / "stamp.json").read_text() == '{"v": 2}'
    mine = tmp_path / "cache" / "mine"
    (mine / "notes").mkdir(parents=True)
    refused = pytest.raises(UsageError, match=r"holds no stamp\.json, so it is not an earlier cache entry")
    with refused, atomic_cache_folder(mine, "stamp.json", "test cache") as tmp:
        (tmp / "stamp.json").write_text("{}")
    assert (mine / "notes").is_dir()


def test_every_project_error_class_has_the_one_base():
    """Found by reading the package (nothing imported): a class named ``*Error`` derives from MegcError,
    directly or through another project error, so the boundary needs no list."""
    bases: dict[str, list[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                names = [b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases]
                bases.setdefault(node.name, []).extend(names)

    def project(name: str, seen: frozenset[str] = frozenset()) -> bool:
        return name == "MegcError" or any(
            b in bases and b not in seen and project(b, seen | {name}) for b in bases.get(name, [])
        )

    errors = sorted(n for n in bases if n.endswith("Error") and n != "MegcError")
    assert len(errors) >= 16
    assert [n for n in errors if not project(n)] == []


def test_a_new_error_class_reaches_the_user_as_one_line(capsys):
    class LayerError(MegcError, RuntimeError):
        """As a new layer would define it, with no list to add it to."""

    def main(argv):
        raise LayerError("frames.csv: column 'onset' missing; add it")

    assert run_command(main, []) == 2
    assert (
        capsys.readouterr().err.strip().splitlines()[-1]
        == "error: frames.csv: column 'onset' missing; add it"
    )


def _imports(path: Path, module: str, modules: Collection[str], everywhere: bool = False) -> set[str]:
    """The megc_vqa modules ``module`` imports at its top level (``everywhere``: in functions too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(tree) if everywhere else tree.body:
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("megc_vqa")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            if base.startswith("megc_vqa"):  # ``from pkg import module`` imports the module, else pkg
                found |= {f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names}
    return found


def test_no_import_cycle_among_the_package_modules():
    modules = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    graph = {name: _imports(path, name, modules) & modules.keys() - {name} for name, path in modules.items()}
    cycles, state = [], {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                cycles.append(" -> ".join([*stack[stack.index(nxt) :], nxt]))
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert not cycles, "import cycles: " + "; ".join(cycles)


def test_the_answer_primitives_keep_their_doctests():
    """Moved out of vqa/lvqa (so scoring and the scorers do not import each other), still checked."""
    result = doctest.testmod(answers)
    assert result.failed == 0 and result.attempted >= 5
