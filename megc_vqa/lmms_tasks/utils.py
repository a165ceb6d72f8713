"""lmms-eval glue for the MEGC tasks: every piece lives in ``megc_vqa.answering.lmms`` (read it there)."""

from __future__ import annotations

import sys
from typing import Any

from datasets import Dataset, DatasetDict
from lmms_eval.api.task import ConfigurableMessagesTask

from megc_vqa.answering import lmms
from megc_vqa.answering.lmms import doc_to_target, doc_to_text, doc_to_visual, process_results  # noqa: F401
from megc_vqa.errors import MegcError

aggregate_uf1_coarse = lmms.AGGREGATIONS["uf1_coarse"]
aggregate_uar_coarse = lmms.AGGREGATIONS["uar_coarse"]
aggregate_uf1_fine = lmms.AGGREGATIONS["uf1_fine"]
aggregate_uar_fine = lmms.AGGREGATIONS["uar_fine"]
aggregate_bleu = lmms.AGGREGATIONS["bleu"]
aggregate_rouge = lmms.AGGREGATIONS["rouge"]
aggregate_n_invalid = lmms.AGGREGATIONS["n_invalid"]
aggregate_n_rows = lmms.AGGREGATIONS["n_rows"]


class MegcTask(ConfigurableMessagesTask):
    """Documents from the project's readers (``dataset_kwargs.megc_source``: a question file under
    ``<year>/``, or ``prep``), not from the Hugging Face Hub. Requests are chat messages (lmms-eval's chat
    models, its default: the clip's images, then the text); ``--force_simple`` is not supported."""

    def __init__(self, *args: Any, config: dict[str, Any] | None = None, **kwargs: Any) -> None:
        if config is not None:
            config = {k: v for k, v in config.items() if k != "class"}
        super().__init__(*args, config=config, **kwargs)

    def download(self, dataset_kwargs: dict[str, Any] | None = None) -> None:
        source = (dataset_kwargs or {}).get("megc_source", "prep")
        try:
            docs = lmms.prep_docs() if source == "prep" else lmms.question_docs(source)
        except MegcError as err:  # the project's error boundary: one line and exit 2, before any model work
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
        self.dataset = DatasetDict({self.config.test_split: Dataset.from_list(docs)})
        self.dataset_no_image = self.dataset
