"""MEGC question-answer records: templates, generation from clips, and the official JSONL files.

    templates   the organisers' exact question/answer strings and ``classify_question``
    records     ``QARecord`` (training row, official keys first) and ``QuestionRow`` (``*_to_answer`` row)
    generate    ``generate_qa(clips, seed)``: SPEC section 3 questions per clip
    io          ``write_qa_jsonl``/``read_qa_jsonl``, ``read_training_file``, ``read_questions``,
                ``save_as_dataset``
    prep        the ``megc-vqa prep`` command

Everything re-exported here is light to import (no pandas, datasets or torch).
"""

from megc_vqa.qa.generate import clip_rng, generate_qa, questions_for_clip
from megc_vqa.qa.io import (
    QAFileError,
    read_qa_jsonl,
    read_questions,
    read_training_file,
    save_as_dataset,
    write_qa_jsonl,
)
from megc_vqa.qa.records import QARecord, QuestionRow

__all__ = [
    "QAFileError",
    "QARecord",
    "QuestionRow",
    "clip_rng",
    "generate_qa",
    "questions_for_clip",
    "read_qa_jsonl",
    "read_questions",
    "read_training_file",
    "save_as_dataset",
    "write_qa_jsonl",
]
