"""The training collator: plain QA records in, model inputs with answer-only labels out.

The collator owns the visual path. A trainer that prunes dataset columns would drop the frame source and
train text-only, so the trainer gets raw records (``remove_unused_columns=False``) and this collator
fetches each record's pixels through an injected ``visual_fn(record) -> VisualInputs``, builds the
prompt with :mod:`megc_vqa.models.prompting` and runs the model's processor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from megc_vqa.errors import MegcError
from megc_vqa.models.prompting import DEFAULT_OPTIONS, PromptOptions, VisualFn, encode_for_training, get_field

log = logging.getLogger(__name__)


class VisualInputError(MegcError, RuntimeError):
    """The visual inputs of a record could not be produced (missing frames, unreadable files)."""


class VQACollator:
    """``collator(records) -> dict`` of tensors for ``model(**batch)``, ``labels`` on the answer only.

    processor: the model's processor (tokenizer, image/video processors, chat template).
    visual_fn: record -> visual inputs (``megc_vqa.visual.samplers.VisualInputs`` or alike); ``None``
        trains text-only, which is only useful as an ablation.
    options: prompt layout and pixel bounds, shared with inference.
    """

    def __init__(self, processor: Any, visual_fn: VisualFn | None, options: PromptOptions = DEFAULT_OPTIONS):
        self.processor = processor
        self.visual_fn = visual_fn
        self.options = options

    def visual(self, record: Any) -> Any:
        if self.visual_fn is None:
            return None
        try:
            return self.visual_fn(record)
        except Exception as err:
            rid = get_field(record, "id") or get_field(record, "image_id") or "?"
            source = get_field(record, "source") or "?"
            raise VisualInputError(
                f"record {rid}: cannot build visual inputs from {source}: {type(err).__name__}: {err}. "
                "Check the frames exist (megc-vqa prep writes the frame folder into each record's "
                "'source') or drop the record from the QA file."
            ) from err

    def __call__(self, records: Sequence[Any]) -> dict[str, Any]:
        examples = []
        for record in records:
            question, answer = get_field(record, "question"), get_field(record, "answer")
            if not question or answer is None:
                rid = get_field(record, "id", "?")
                raise ValueError(
                    f"record {rid}: a training record needs a non-empty 'question' and an 'answer'"
                )
            examples.append((str(question), self.visual(record), str(answer)))
        return encode_for_training(self.processor, examples, self.options)
