"""The one error boundary every command runs behind, and the base of the project's own errors.

A *project error* is a mistake the user can fix (a missing file, a bad value, a file in the wrong format):
its message names the file, row, key or option and says what to change. Every command (the ``megc-vqa``
sub-commands and the scripts under ``eval/``, ``data_prep/`` and ``recipes/``) runs its ``main`` through
:func:`run_command`, which turns

- a project error into one line on stderr (``error: <message>``) and exit status 2;
- any other exception into one line saying where its full traceback was written, and exit status 1;
- Ctrl-C into ``interrupted`` and exit status 130.

Project errors are :class:`MegcError` and the older per-module error classes listed in
:data:`PROJECT_ERRORS` (kept as they are, so code that catches ``ValueError`` still works).
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class MegcError(Exception):
    """A mistake the user can fix; the message names what to change."""


class UsageError(MegcError, ValueError):
    """A bad option value or combination of options."""


def _project_error_types() -> tuple[type[BaseException], ...]:
    """The project's error classes, found without importing anything heavy (only modules already loaded)."""
    names = {
        "megc_vqa.training.config": "ConfigError",
        "megc_vqa.training.finetune": "TrainingError",
        "megc_vqa.visual.frames": "FrameError",
        "megc_vqa.visual.face": "FaceDetectorUnavailable",
        "megc_vqa.metrics.strs": "StrInputError",
        "megc_vqa.spotting.model": "CheckpointError",
        "megc_vqa.spotting.data": "NoFramesError",
        "megc_vqa.qa.io": "QAFileError",
        "megc_vqa.qa.prep": "PrepError",
        "megc_vqa.annotations.common": "AnnotationError",
        "megc_vqa.models.collator": "VisualInputError",
        "megc_vqa.models.registry": "ModelLoadError",
        "megc_vqa.answering.run_vqa": "RunError",
        "megc_vqa.answering.answer_log": "LogMismatchError",
        "megc_vqa.answering.engine": "EngineError",
        "megc_vqa.synth.test_set": "QuestionFileError",
    }
    found: list[type[BaseException]] = [MegcError]
    for module_name, cls_name in names.items():
        module = sys.modules.get(module_name)
        cls = getattr(module, cls_name, None) if module else None
        if isinstance(cls, type):
            found.append(cls)
    return tuple(found)


def _one_line(err: BaseException, limit: int = 2000) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _write_traceback(err: BaseException) -> Path:
    folder = Path(os.environ.get("MEGC_VQA_LOG_DIR") or Path(tempfile.gettempdir()) / "megc-vqa")
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.txt"
    path.write_text("".join(traceback.format_exception(err)), encoding="utf-8")
    return path


def run_command(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` behind the boundary and return the exit status (see the module docstring)."""
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except _project_error_types() as err:
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except FileNotFoundError as err:  # an input that is not there: a user mistake, the message names it
        print(f"error: {_one_line(err)}", file=sys.stderr)
        return 2
    except Exception as err:  # unexpected: keep the traceback, say where it is
        path = _write_traceback(err)
        print(
            f"error: unexpected {type(err).__name__}: {_one_line(err, 300)} (full traceback in {path})",
            file=sys.stderr,
        )
        return 1
