"""Training losses beside the transformers default.

The default causal-LM loss averages over every answer token of a batch, so a question with a long answer
(an AU list, the joint sentence of some 35 tokens) weighs ten times one with a one-word answer (the fine
class). The MEGC scores weigh each question the same; ``answer_mean_loss`` does too: it averages each
answer's tokens first, then the answers.
"""

from __future__ import annotations

from typing import Any


def answer_mean_loss(outputs: Any, labels: Any, num_items_in_batch: Any = None) -> Any:
    """Mean over the batch's answers of each answer's mean token cross-entropy (labels ``-100`` ignored).

    A ``Trainer(compute_loss_func=...)`` function: ``labels`` are the collator's (not yet shifted), and
    ``num_items_in_batch`` (the token count the default loss divides by) is not used.
    """
    import torch
    import torch.nn.functional as F

    logits = outputs.logits[:, :-1]
    targets = labels[:, 1:].to(logits.device)
    mask = targets != -100
    tokens = F.cross_entropy(logits[mask].float(), targets[mask], reduction="none")
    rows = mask.nonzero()[:, 0]
    per_answer = torch.zeros(mask.shape[0], device=tokens.device).index_add_(0, rows, tokens)
    counts = mask.sum(1)
    answered = counts > 0
    return (per_answer[answered] / counts[answered]).mean()


# recipe ``loss_weighting`` -> the Trainer's ``compute_loss_func`` (None: the transformers token mean)
LOSS_FUNCTIONS: dict[str, Any] = {"token": None, "answer": answer_mean_loss}
LOSS_WEIGHTINGS: tuple[str, ...] = tuple(LOSS_FUNCTIONS)
