"""The one decoding interface every backend implements, and the request pieces they all share.

The answering layer (``engine.Engine``: normalisation, voting, consistency, re-asking, fallbacks) knows
nothing of transformers or vLLM. It hands a backend ``DecodeRequest``s (question, visual inputs,
grammar, length bound) and a ``Sampling`` setting and gets raw texts back:

    Decoder.decode(requests, sampling) -> one list of ``sampling.n`` texts per request

Implementations: ``hf_backend.HfDecoder`` (transformers ``generate`` with a grammar logits processor)
and ``vllm_backend.VllmDecoder`` (vLLM with regex-guided decoding). Both build the prompt text with
``prompt_text`` and the processor's pixel bounds with ``pixel_kwargs``, so a model sees the same prompt
and the same image grid whichever backend answers (and the same as in training, which uses the same
``megc_vqa.models.prompting`` functions).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from megc_vqa.answering.grammar import Grammar
from megc_vqa.models.prompting import PromptOptions, build_messages, render_prompt

# The processor keyword arguments that fix each image's and video frame's pixel bounds: training and the
# transformers backend pass exactly these to the processor, the vLLM backend forwards them per request.
from megc_vqa.models.prompting import _pixel_kwargs as _processor_pixel_kwargs


@dataclass(frozen=True)
class DecodeRequest:
    """One row to decode: ``grammar`` ``None`` means free decoding; ``max_new_tokens`` bounds the answer.

    labels: the closed label set of a classification row (``grammar`` is then ``OneOf(labels)``): a backend
        that scores labels returns each one's log-probability with the answer (``Texts.scores``).
    """

    question: str
    visual: Any
    grammar: Grammar | None
    max_new_tokens: int
    labels: tuple[str, ...] = ()


class Texts(list):  # list[str]: what every backend returned before label scores existed
    """One request's decoded texts (``sampling.n`` strings), and ``scores``: label -> log-probability
    (the label's tokens and the end of the answer, summed) where the backend scored the row's labels."""

    def __init__(self, texts: Sequence[str] = (), scores: dict[str, float] | None = None) -> None:
        super().__init__(texts)
        self.scores = scores


@dataclass(frozen=True)
class Sampling:
    """``n == 1``: greedy; otherwise ``n`` samples per request at ``temperature``/``top_p``, seeded."""

    n: int = 1
    temperature: float = 0.7
    top_p: float = 0.95
    seed: int = 0

    @property
    def greedy(self) -> bool:
        return self.n <= 1


class Decoder(Protocol):
    """A decoding backend.

    name: what the run summary calls it. prompt: the prompt layout and pixel bounds it encodes with.
    schedules_itself: the backend batches rows itself (vLLM), so the answering layer hands it every row
        at once instead of length-bucketed batches.
    """

    name: str
    prompt: PromptOptions
    schedules_itself: bool

    def decode(self, requests: Sequence[DecodeRequest], sampling: Sampling) -> list[list[str]]:
        """Raw texts, one list of ``sampling.n`` per request, stripped (a ``Texts`` carries label scores)."""
        ...

    def end_call(self) -> None:
        """Drop what was cached for one answering call (processed images of its clips)."""
        ...


def prompt_text(processor: Any, question: str, visual: Any, prompt: PromptOptions) -> str:
    """The rendered prompt of one row, exactly as training renders it (answer left out)."""
    return render_prompt(processor, build_messages(question, visual, None, prompt))


def pixel_kwargs(processor: Any, prompt: PromptOptions) -> dict[str, Any]:
    """Processor keyword arguments with the pixel bounds of ``prompt`` (empty groups left out)."""
    return {k: v for k, v in _processor_pixel_kwargs(prompt, processor).items() if v}
