"""MEGC metrics: ME-VQA (UF1, UAR, BLEU, ROUGE), ME-STR (STRS, official and strict) and ME-LVQA.

- ``megc_vqa.metrics.vqa``: ``score_vqa(predictions, ground_truth, VqaVariant())`` and the pieces
  (``class_scores``, ``unweighted_f1``, ``unweighted_recall``, ``sentence_bleu_mean``, ``corpus_bleu``,
  ``rouge_mean``, ``extract_label``, ``align``, ``score_aligned``).
- ``megc_vqa.metrics.answers``: one answer against its reference (normalising, label extraction, AU sets,
  counts, event types): the primitives that ``scoring`` and both scorers build on.
- ``megc_vqa.metrics.scoring``: ``SCORINGS``, the one table of per-row functions and aggregations that
  each kind's ``scoring`` names, and ``score_kinds(rows, variant, task)`` behind both scorers.
- ``megc_vqa.metrics.strs``: ``score_str(preds, gts, mode)``, ``strs(...)``, ``read_intervals(path)``,
  ``read_events(path)`` (typed ground-truth events).
- ``megc_vqa.metrics.lvqa``: ``score_lvqa(predictions, ground_truth)`` (provisional).
- ``megc_vqa.metrics.hf_megc_vqa.HF_MODULE_PATH``: the ME-VQA metric for ``evaluate.load``.

Heavy libraries (scikit-learn, NLTK, rouge-score, sacrebleu) are imported inside the functions.
"""
