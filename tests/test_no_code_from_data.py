"""Nothing read from a file may execute code: spotting recipes and spotter checkpoints travel between labs."""

from __future__ import annotations

import pickle

import pytest
import torch
import yaml

from megc_vqa.spotting.model import CheckpointError, Spotter, SpotterConfig, load_checkpoint, save_checkpoint
from megc_vqa.spotting.train import LOADERS, load_recipe, load_videos


def test_recipe_loader_naming_a_module_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    recipe = tmp_path / "evil.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"loader": "os:system", "roots": [f"touch {marker}"]}}))
    *_, data = load_recipe(recipe)
    with pytest.raises(ValueError, match=r"'os:system' is not a known loader; use one of"):
        load_videos(data)
    assert not marker.exists()


def test_recipe_loader_from_the_table_loads(tmp_path):
    # The table's loader reads annotation folders; an empty folder holds no long video.
    assert load_videos({"loader": "annotations", "roots": [str(tmp_path)]}) == []
    assert set(LOADERS) >= {"annotations"}


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_crafted_checkpoint_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "spotter.pt"
    with open(path, "wb") as f:
        pickle.dump({"config": {}, "state_dict": {}, "x": _Payload(marker)}, f)
    with pytest.raises(CheckpointError, match="not a spotter checkpoint written by `megc-vqa spot-train`"):
        load_checkpoint(path)
    assert not marker.exists()


def test_torch_saved_payload_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "spotter.pt"
    torch.save({"config": {}, "state_dict": {}, "x": _Payload(marker)}, path)
    marker.unlink(missing_ok=True)  # torch.save itself does not run __reduce__'s result; be sure
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize("content", [b"", b"hello, not a checkpoint\n"])
def test_empty_or_text_checkpoint_is_a_clear_error(tmp_path, content):
    path = tmp_path / "spotter.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=r"spotter\.pt"):
        load_checkpoint(path)


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such spotter checkpoint"):
        load_checkpoint(tmp_path / "nope.pt")


def test_saved_checkpoint_loads_with_weights_only(tmp_path):
    model = Spotter(SpotterConfig(size=32, n_frames=4, hidden=8, widths=(4, 4, 4))).eval()
    save_checkpoint(tmp_path / "s.pt", model, peaks={"threshold": 0.3}, train_subjects={"b", "a"})
    torch.load(tmp_path / "s.pt", weights_only=True)  # would raise on any non-plain entry
    loaded, extra = load_checkpoint(tmp_path / "s.pt")
    assert extra == {"peaks": {"threshold": 0.3}, "train_subjects": ["a", "b"]}
    x = torch.rand(1, len(model.config.inputs), 4, 32, 32)
    assert torch.equal(model(x), loaded(x))
