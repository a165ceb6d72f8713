"""The stages after SFT leave out the clips SFT left out: with a face pipeline, a clip without one usable
face (``FaceSkip``) is named and skipped by GRPO and RFT as by SFT, instead of stopping the run mid-way
(found by ``benchmarks/grpo_table.py --preset realistic``: release-like CASME II crops leave the frame)."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from megc_vqa.training.config import parse_config  # noqa: E402
from megc_vqa.training.data import clip_key  # noqa: E402
from megc_vqa.visual.face import FaceSkip  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--max_steps", "1", "--question_types", "coarse", "--final_eval", "false", "--face", "align",
        "--report_to", "none", "--disable_tqdm", "true", "--val_fraction", "0.2", "--train_file", "synth:tiny"]  # fmt: skip


def skipped(record) -> bool:
    """About a third of the clips, the same ones every call."""
    return zlib.crc32("/".join(clip_key(record)).encode()) % 3 == 0


def visual_fn(record):
    from megc_vqa.visual.samplers import VisualInputs

    if skipped(record):
        raise FaceSkip(f"{clip_key(record)}: skipped: no usable face (test)")
    key = np.random.default_rng(0).integers(0, 256, (3, 56, 56, 3), dtype=np.uint8)
    return VisualInputs(images=tuple(key), video=None, frame_indices=(0, 4, 8), fps=50.0, description="")


@pytest.mark.slow  # one GRPO step: ~30 s on an idle 2-core machine, 86 s under load
def test_grpo_leaves_out_clips_without_a_usable_face(tmp_path, caplog):
    import megc_vqa.training.grpo as grpo

    argv = ["--config", str(ROOT / "recipes/tiny/grpo.yaml"), *FAST, "--output_dir", str(tmp_path / "g"),
            "--max_completion_length", "12", "--num_generations", "2", "--per_device_train_batch_size", "4"]  # fmt: skip
    grpo.train_grpo(parse_config(argv), visual_fn=visual_fn)  # a skipped clip reaching the trainer raises
    assert (tmp_path / "g" / "megc_vqa_train.json").is_file()
    assert "clip(s) skipped" in caplog.text


def test_rft_samples_only_clips_with_a_usable_face(tmp_path, monkeypatch):
    import megc_vqa.training.rft as rft

    seen = []

    def samples(model, processor, contract, records, fn, recipe):
        seen.extend(records)
        return [[str(r.answer), "maybe"] for r in records]

    monkeypatch.setattr(rft, "sample_answers", samples)
    argv = ["--config", str(ROOT / "recipes/tiny/lora.yaml"), *FAST, "--output_dir", str(tmp_path / "r"),
            "--stage", "rft", "--rft_samples", "2"]  # fmt: skip
    result = rft.train_rft(parse_config(argv), visual_fn=visual_fn)
    assert seen and not any(skipped(r) for r in seen)
    assert result.metrics["rft_kept"] > 0
