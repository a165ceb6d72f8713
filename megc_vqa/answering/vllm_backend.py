"""Optional vLLM backend: the same answers flow (normalisation, voting, consistency, fallbacks) with vLLM's
continuous batching and paged attention doing the decoding. Used only when ``vllm`` is installed
(``eval/run_vqa.py --backend vllm``); it is not a dependency and CI never runs it.

Differences from the transformers engine: label constraints use vLLM's regex-guided decoding, whose
regex for an AU list accepts any order (answers are put in AU order afterwards); a LoRA adapter is
served through ``LoRARequest``; prompts still come from ``megc_vqa.models.prompting``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from megc_vqa.answering.engine import (
    MAX_NEW_TOKENS,
    Engine,
    EngineError,
    EngineOptions,
    check_adapter,
    contract_folders,
    with_contract,
)
from megc_vqa.answering.grammar import Grammar, answer_grammar
from megc_vqa.models.contract import ModelContract, read_contract
from megc_vqa.models.prompting import PromptOptions, build_messages, model_visuals, render_prompt
from megc_vqa.qa import templates as T

log = logging.getLogger(__name__)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VllmEngine(Engine):
    """``VllmEngine(model, adapter, options, **llm_kwargs)``; ``llm_kwargs`` go to ``vllm.LLM``
    (``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size``, ...)."""

    def __init__(
        self,
        model: str | Path,
        adapter: str | Path | None = None,
        options: EngineOptions | None = None,
        contract: ModelContract | None = None,
        **llm_kwargs: Any,
    ) -> None:
        options = options or EngineOptions()
        if not vllm_available():
            raise EngineError(
                "the vLLM backend needs vllm (pip install vllm); use the default backend instead"
            )
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        from megc_vqa.models.registry import ModelLoadError, load_processor, resolve

        adapter_path = Path(adapter) if adapter else None
        adapter_cfg = check_adapter(adapter_path) if adapter_path else {}
        try:
            path, _ = resolve(model)
            has_processor = adapter_path is not None and (adapter_path / "preprocessor_config.json").is_file()
            self.processor = load_processor(adapter_path if has_processor else model)
        except ModelLoadError as err:
            raise EngineError(str(err)) from None
        self.contract = contract or read_contract(*contract_folders(model, adapter_path))
        options = with_contract(options, self.contract)
        llm_kwargs.setdefault("limit_mm_per_prompt", {"image": 8, "video": 1})
        # The pixel bounds of training: without them vLLM's processor grids images differently.
        bounds = {
            k: v
            for k, v in (("min_pixels", options.prompt.min_pixels), ("max_pixels", options.prompt.max_pixels))
            if v is not None
        }
        if bounds:
            llm_kwargs.setdefault("mm_processor_kwargs", bounds)
        if adapter_path is not None:
            llm_kwargs.update(enable_lora=True, max_lora_rank=max(16, int(adapter_cfg.get("r", 16))))
        self.llm = LLM(model=path, trust_remote_code=False, **llm_kwargs)
        self.lora = LoRARequest("adapter", 1, str(adapter_path)) if adapter_path else None
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        self.options = options
        self.prompt = options.prompt or PromptOptions()
        self.name = f"{model} (vllm)" + (f" + {adapter}" if adapter else "")
        self._index = None
        self.share_images = False
        self._image_cache = {}

    def _request(self, question: str, visual: Any) -> dict[str, Any]:
        from PIL import Image

        text = render_prompt(self.processor, build_messages(question, visual, None, self.prompt))
        images, video = model_visuals(visual, self.prompt.visual_mode)
        data: dict[str, Any] = {}
        if images:
            data["image"] = [Image.fromarray(im) for im in images]
        if video is not None:
            data["video"] = video
        return {"prompt": text, "multi_modal_data": data} if data else {"prompt": text}

    def _params(self, question: str, grammar: Grammar | None, seed: int | None) -> Any:
        from vllm import SamplingParams

        o = self.options
        kwargs: dict[str, Any] = {
            "max_tokens": MAX_NEW_TOKENS.get(T.classify_question(question), o.free_max_new_tokens),
            "n": max(1, o.votes),
            "temperature": o.temperature if o.votes > 1 else 0.0,
            "top_p": o.top_p if o.votes > 1 else 1.0,
            "seed": seed,
        }
        if grammar is not None:
            try:  # vLLM >= 0.10.2
                from vllm.sampling_params import StructuredOutputsParams

                kwargs["structured_outputs"] = StructuredOutputsParams(regex=grammar.regex())
            except ImportError:  # older vLLM
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(regex=grammar.regex())
        return SamplingParams(**kwargs)

    def generate(
        self,
        questions: Sequence[str],
        visuals: Sequence[Any],
        grammars: Sequence[Grammar | None] | None = None,
        sample_seed: int | None = None,
    ) -> list[list[str]]:
        o = self.options
        if grammars is None:
            grammars = [answer_grammar(q, o.vocab) if o.constrained else None for q in questions]
        seed = o.seed if sample_seed is None else sample_seed
        requests = [self._request(q, v) for q, v in zip(questions, visuals, strict=True)]
        params = [self._params(q, g, seed) for q, g in zip(questions, grammars, strict=True)]
        outputs = self.llm.generate(requests, params, lora_request=self.lora, use_tqdm=False)
        return [[c.text.strip() for c in out.outputs] for out in outputs]

    def _batches(self, questions: Sequence[str]) -> list[list[int]]:
        return [list(range(len(questions)))] if questions else []  # vLLM schedules the rows itself
