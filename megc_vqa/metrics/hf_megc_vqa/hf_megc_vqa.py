"""MEGC ME-VQA scores (UF1/UAR coarse and fine, BLEU, ROUGE) for the Hugging Face ``evaluate`` library.

Load it offline from its folder::

    import evaluate
    from megc_vqa.metrics.hf_megc_vqa import HF_MODULE_PATH
    metric = evaluate.load(HF_MODULE_PATH)
    metric.compute(predictions=[...], references=[...], questions=[...], video_ids=[...])

It computes through ``megc_vqa.metrics.vqa.score_vqa`` (NLTK, rouge-score, sacrebleu, scikit-learn), so the
numbers are those of ``eval/score.py vqa``; nothing is fetched from the hub.
"""

import datasets
import evaluate

from megc_vqa.metrics.vqa import VqaVariant, score_vqa

_CITATION = """\
@article{megc2025,
  title={MEGC2025: Micro-Expression Grand Challenge on Spot Then Recognize and Visual Question Answering},
  journal={arXiv preprint arXiv:2506.15298},
  year={2025}
}
"""

_DESCRIPTION = """\
ME-VQA metrics of the Micro-Expression Grand Challenge: UF1 and UAR of the coarse and the fine-grained
expression questions (classes from the ground truth; an invalid answer is wrong for its true class), mean
sentence BLEU-4 and mean ROUGE-1 recall over all rows by default. Splits: overall (pooled), samm, casme3
(from the video_id prefix samm_test / casme3_test).
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: answers of the model, one per QA row.
    references: ground-truth answers.
    questions: the question of each row (tells coarse / fine / other rows apart).
    video_ids: the row ids (``samm_test_SAMM-1_1``...); unique; their prefix gives the dataset split.
    bleu: "sentence" (default) or "corpus".
    rouge: "rouge1_recall" (default), "rouge1_f1" or "rougeL_f1".
    rows: "all" (default) or "open" (text metrics on non-classification rows only).
Returns:
    {"overall": {...}, "samm": {...}, "casme3": {...}, "variant": {...}, "problems": [...]}, each split with
    uf1_coarse, uar_coarse, uf1_fine, uar_fine, bleu, rouge, n_rows (and the *_parsed scores).
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class HfMegcVqa(evaluate.Metric):
    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("string"),
                    "references": datasets.Value("string"),
                    "questions": datasets.Value("string"),
                    "video_ids": datasets.Value("string"),
                }
            ),
        )

    def _compute(
        self,
        predictions,
        references,
        questions,
        video_ids,
        bleu="sentence",
        rouge="rouge1_recall",
        rows="all",
    ):
        preds = [{"video_id": v, "answer": p} for v, p in zip(video_ids, predictions, strict=True)]
        gts = [
            {"video_id": v, "question": q, "answer": r}
            for v, q, r in zip(video_ids, questions, references, strict=True)
        ]
        return score_vqa(preds, gts, VqaVariant(bleu=bleu, rouge=rouge, rows=rows))
