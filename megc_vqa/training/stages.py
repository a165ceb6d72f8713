"""What the stages after SFT (``stage: grpo``, ``stage: rft``) share: where they start, the training record
they write, the label sets they reward with, and the length check before training.

A later stage trains on from an SFT run (``sft_model``) with the prompt and visual settings that run was
trained with, and writes the same training record (:class:`megc_vqa.models.contract.ModelContract`), so
every answering path treats its output exactly as an SFT one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from megc_vqa.answering.grammar import AnswerVocabulary
from megc_vqa.models.contract import RECORD_NAME, ModelContract, read_contract
from megc_vqa.models.prompting import get_field
from megc_vqa.qa.kinds import kind_of
from megc_vqa.training.config import ConfigError, Recipe
from megc_vqa.training.finetune import sft_start, training_contract

log = logging.getLogger(__name__)


def stage_contract(recipe: Recipe, family: str, records: Sequence[Any], held: Sequence[str]) -> ModelContract:
    """The training record of a later stage: the recipe's settings, which must be the SFT run's own.

    Without ``sft_model`` (and a ``model_name_or_path`` that is no SFT output) the stage starts from the
    base model: allowed, with a warning that rewards start near chance."""
    where = recipe.config_path or "command line"
    base, _ = sft_start(recipe)
    contract = replace(training_contract(recipe, family, records, held), model_name_or_path=base)
    sft = recipe.stage.sft_model or (base if (Path(base) / RECORD_NAME).is_file() else None)
    if sft is None:
        log.warning(
            "stage %s starts from %s without an SFT model (sft_model is not set): its answers, and so its "
            "rewards, start near chance and it learns slowly, if at all; train stage sft first and pass its "
            "output_dir as sft_model",
            recipe.stage.stage,
            base,
        )
        return contract
    if not (Path(sft) / RECORD_NAME).is_file():
        log.warning(
            "%s has no %s: cannot check that it was trained with this recipe's settings", sft, RECORD_NAME
        )
        return contract
    trained = read_contract(sft)
    differences = [
        f"{part}.{key}: SFT {getattr(getattr(trained, part), key)!r}, now {getattr(getattr(contract, part), key)!r}"
        for part in ("prompt", "visual")
        for key in vars(getattr(contract, part))
        if getattr(getattr(trained, part), key) != getattr(getattr(contract, part), key)
    ]
    if differences:
        raise ConfigError(
            f"{where}: the recipe's prompt or visual settings differ from those {sft} was trained with "
            f"({'; '.join(differences)}); set them as the SFT recipe did, so the model sees what it learnt on"
        )
    fine = tuple(dict.fromkeys([*trained.labels.fine, *contract.labels.fine]))
    return replace(contract, labels=replace(contract.labels, fine=fine))


def reward_vocab(contract: ModelContract) -> AnswerVocabulary:
    """The label sets the format reward checks answers against: the training record's."""
    labels = contract.labels
    return AnswerVocabulary(coarse=labels.coarse, fine=labels.fine, au_names=labels.au_names)


def check_answer_bound(records: Sequence[Any], tokenizer: Any, bound: int, key: str, where: str) -> None:
    """Refuse, before training, a length bound that cuts a valid answer: the longest training answer of
    each question kind, with its end-of-turn token, must fit ``bound`` tokens."""
    longest: dict[str, tuple[int, str]] = {}
    for answer, question in {(str(get_field(r, "answer")), str(get_field(r, "question"))) for r in records}:
        n = len(tokenizer(answer, add_special_tokens=False)["input_ids"]) + 1  # + end of turn
        kind = kind_of(question).name
        if n > longest.get(kind, (0, ""))[0]:
            longest[kind] = (n, answer)
    cut = {k: v for k, v in longest.items() if v[0] > bound}
    if cut:
        need = max(n for n, _ in cut.values())
        kinds = ", ".join(f"{k} ({n} tokens: {a[:60]!r})" for k, (n, a) in sorted(cut.items()))
        raise ConfigError(
            f"{where}: {key} {bound} cannot hold a valid answer of {kinds}, end-of-turn token included, so "
            f"those answers could never be complete and rewarded; set {key} to at least {need}"
        )
