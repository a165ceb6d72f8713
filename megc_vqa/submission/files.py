"""Low-level file handling for leaderboard files: atomic writes, JSONL reading with line numbers,
and the official file names (SPEC section 4).

The official names are fixed by the organisers for ME-VQA (``me_vqa_<dataset>[_v2]_test_pred.jsonl``).
For ME-LVQA and ME-STR no name was published; this project chose ``me_lvqa_<dataset>_test_pred.jsonl``
(the question file's name with ``_to_answer`` replaced by ``_pred``, the same rule as ME-VQA) and
``str_pred.csv``. Change them here if the organisers publish others.
"""

from __future__ import annotations

import os
from pathlib import Path

# The generic file helpers live on the ground floor (megc_vqa.fileio); re-exported for the leaderboard layer.
from megc_vqa.fileio import (  # noqa: F401
    JsonlRow,
    Problem,
    atomic_write_bytes,
    atomic_write_text,
    dumps_jsonl,
    parse_jsonl,
    read_jsonl,
    write_jsonl,
)

QUESTION_SUFFIX = "_to_answer.jsonl"
PREDICTION_SUFFIX = "_pred.jsonl"
STR_PREDICTION_NAME = "str_pred.csv"
SUBMISSION_ZIP_NAME = "submission.zip"

# Every question file the organisers distributed; each one's prediction file follows the one naming rule
# of prediction_file_name (OFFICIAL_PREDICTION_NAMES).
OFFICIAL_QUESTION_FILES: tuple[str, ...] = (
    "me_vqa_samm_test_to_answer.jsonl",
    "me_vqa_casme3_test_to_answer.jsonl",
    "me_vqa_samm_v2_test_to_answer.jsonl",
    "me_vqa_casme3_v2_test_to_answer.jsonl",
    "me_lvqa_samm_test_to_answer.jsonl",  # its prediction name is the project's choice (module docstring)
    "me_lvqa_casme3_test_to_answer.jsonl",
)


def prediction_file_name(question_path: str | os.PathLike[str]) -> str:
    """The file name a prediction for this question file must carry.

    >>> prediction_file_name("../shared/megc/2026/me_vqa_samm_v2_test_to_answer.jsonl")
    'me_vqa_samm_v2_test_pred.jsonl'
    >>> prediction_file_name("my_val_questions.jsonl")
    'my_val_questions_pred.jsonl'
    """
    name = Path(question_path).name
    if name.endswith(QUESTION_SUFFIX):
        return name[: -len(QUESTION_SUFFIX)] + PREDICTION_SUFFIX
    stem = name[: -len(".jsonl")] if name.endswith(".jsonl") else Path(name).stem
    return stem + PREDICTION_SUFFIX


# Question file -> prediction file, for every question file the organisers distributed.
OFFICIAL_PREDICTION_NAMES: dict[str, str] = {q: prediction_file_name(q) for q in OFFICIAL_QUESTION_FILES}
