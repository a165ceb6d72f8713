"""Model registry, offline tiny models of the real architectures, prompting and the training collator.

- :mod:`megc_vqa.models.families`: one module per model family (Qwen2.5-VL, Qwen3-VL, Qwen3-VL-MoE,
  InternVL3.5, GLM-4.1V), each a ``Family`` object holding everything family-specific
  (``docs/families.md``: adding a family).
- :mod:`megc_vqa.models.registry`: ``FAMILIES`` and ``MODELS`` (one line each), ``resolve``,
  ``load_model``, ``load_processor``, ``load_for_inference`` (the one loading path: registry names, hub
  ids, folders and PEFT adapter folders), LoRA target scopes.
- :mod:`megc_vqa.models.tiny`: ``tiny-qwen2.5-vl``, ``tiny-qwen3-vl``, ``tiny-internvl``, ``tiny-glm4v``,
  ``tiny-qwen3-vl-moe``, built on first use into
  ``$MEGC_VQA_CACHE/models/<name>`` (default ``~/.cache/megc_vqa/models/<name>``).
- :mod:`megc_vqa.models.prompting`: record + visual inputs -> chat messages -> processor inputs; used by
  training and inference alike (answers come from :mod:`megc_vqa.answering.engine`).
- :mod:`megc_vqa.models.contract`: ``ModelContract``, the training record (``megc_vqa_train.json``) that
  carries prompt layout, visual settings and label sets from training to every answer.
- :mod:`megc_vqa.models.collator`: ``VQACollator`` (answer-only labels; owns the visual path).
"""
