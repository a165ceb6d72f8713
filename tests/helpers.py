"""What several test files share, defined once: the repository's paths, a script loaded as a module, the last
line of a command's output, the questions the answering tests ask of a clip, a stand-in for the visual
layer (key frames seeded by the clip, as :class:`~megc_vqa.visual.samplers.VisualInputs`), and the training
worker the multi-process tests launch."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from megc_vqa.models.prompting import get_field
from megc_vqa.qa import templates as T
from megc_vqa.visual.samplers import VisualInputs

REPO = Path(__file__).resolve().parents[1]
SAMM_2025 = REPO / "data/megc/2025/me_vqa_samm_test_to_answer.jsonl"

PRESENCE_Q = "Is the action unit lip corner puller shown on the face?"
# One question of each kind the model answers about a clip (the organisers' wording).
CLIP_QUESTIONS = [
    T.COARSE_QUESTION,
    T.FINE_QUESTION,
    T.AU_QUESTION_PLURAL,
    PRESENCE_Q,
    T.JOINT_QUESTION_PLURAL,
]

KEY_FRAMES = "onset, apex and offset frames"


def script(name: str) -> ModuleType:
    """An ``eval/``, ``data_prep/`` or ``recipes/`` script (``"eval/run_vqa"``) as a module: its ``main(argv)``
    is the command."""
    folder, _, stem = name.rpartition("/")
    spec = importlib.util.spec_from_file_location(f"script_{stem}", REPO / folder / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def last_line(text: str) -> str:
    """The last non-blank line of a command's output (where the error boundary writes its one line)."""
    return [line for line in text.splitlines() if line.strip()][-1]


def seeded_key_frames(seed: int, fps: float = 100.0, description: str = KEY_FRAMES) -> VisualInputs:
    """Three random 56x56 key frames (onset, apex, offset at 0, 4, 8) from ``seed``, as the visual layer
    gives them."""
    key = np.random.default_rng(seed).integers(0, 256, (3, 56, 56, 3), dtype=np.uint8)
    return VisualInputs(tuple(key), key, (0, 4, 8), fps, description)


def clip_visual_fn(fps: float = 100.0) -> Callable[[Any], VisualInputs]:
    """A ``visual_fn`` whose pixels depend on the clip (seeded by its ``image_id``), as the visual layer's do."""

    def visual_fn(record: Any) -> VisualInputs:
        return seeded_key_frames(sum(map(ord, get_field(record, "image_id"))), fps)

    return visual_fn


visual_fn = clip_visual_fn()

# A training process as ``torch.distributed.run`` or ``accelerate launch`` starts it: the recipe from its
# arguments, the visual inputs from ``{visual_fn}`` (``module:name``), then ``{after}``.
TRAIN_WORKER = """
import sys
sys.path.insert(0, {root!r})
from {module} import {name} as visual_fn
from megc_vqa.training.config import parse_config
from megc_vqa.training.finetune import train
recipe = parse_config(sys.argv[1:])
print("WORLD", recipe.training.world_size, "RANK", recipe.training.process_index, flush=True)
train(recipe, visual_fn=visual_fn)
{after}
"""


def write_train_worker(path: Path, visual: str = "tests.helpers:visual_fn", after: str = "") -> Path:
    """Write :data:`TRAIN_WORKER` to ``path``, its visual inputs from ``visual`` (``module:name``)."""
    module, _, name = visual.partition(":")
    path.write_text(TRAIN_WORKER.format(root=str(REPO), module=module, name=name, after=after))
    return path
