"""Optional vLLM backend of the decoding interface (``decoding.Decoder``): vLLM's continuous batching and
paged attention do the decoding; the answering layer (normalisation, voting, consistency, re-asking,
fallbacks) is the engine's, shared with the transformers backend. Used only when ``vllm`` is installed
(``eval/run_vqa.py --backend vllm``); it is not a dependency and CI never runs it.

What is shared with the transformers backend and training: the prompt text (``decoding.prompt_text``),
the processor's pixel bounds (``decoding.pixel_kwargs``, sent as the request's ``mm_processor_kwargs``,
so a 224x299 frame under ``max_pixels=50176`` is a 12x18 patch grid here as in training), the prompt
settings training recorded, the per-kind length bounds and the grammars. What differs: a grammar is sent
as vLLM's regex-guided decoding (xgrammar inside vLLM), whose AU-list regex cannot forbid a repeated name
(normalisation drops repeats); a LoRA adapter is served through ``LoRARequest``.

One vision pass and one prefix per clip: vLLM's automatic prefix caching is switched on
(``enable_prefix_caching``), so the questions of a clip, whose prompts share everything up to the question
text, reuse the cached key/value blocks of that shared prefix. Each request names its clip's images and
video by a content hash (``multi_modal_uuids``, vLLM >= 0.10.2): vLLM then neither hashes the pixels of
every row again nor processes them again (its multimodal processor cache is keyed by these ids), and the
prefix cache sees the same ids for the same clip. The id covers the pixels and the processor's pixel
bounds, so two clips never share one. Labels are generated, not scored, with vLLM (``Engine.score_labels``
needs the transformers backend).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from megc_vqa.answering.decoding import DecodeRequest, Sampling, pixel_kwargs, prompt_text
from megc_vqa.answering.engine import (
    Engine,
    EngineError,
    EngineOptions,
    check_adapter,
    trained_contract,
    with_contract,
)
from megc_vqa.models.contract import ModelContract
from megc_vqa.models.prompting import PromptOptions, model_visuals
from megc_vqa.models.registry import ModelLoadError, load_processor, resolve

log = logging.getLogger(__name__)


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


class VllmDecoder:
    """``VllmDecoder(llm, processor, prompt, lora)``: decodes with a ``vllm.LLM``; ``load`` builds one."""

    schedules_itself = True  # vLLM batches and schedules the rows itself

    def __init__(
        self, llm: Any, processor: Any, prompt: PromptOptions | None = None, lora: Any = None, name: str = ""
    ) -> None:
        self.llm = llm
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.prompt = prompt or PromptOptions()
        self.lora = lora
        self.name = name
        self._clip_ids: dict[int, tuple[Any, dict[str, list[str]]]] = {}  # visual id -> (visual, ids)

    @classmethod
    def load(
        cls,
        model: str | Path,
        adapter: str | Path | None = None,
        prompt: PromptOptions | None = None,
        **llm_kwargs: Any,
    ) -> VllmDecoder:
        """Start vLLM on ``model`` (+ LoRA ``adapter``); ``llm_kwargs`` go to ``vllm.LLM``
        (``gpu_memory_utilization``, ``max_model_len``, ``tensor_parallel_size``, ...)."""
        if not vllm_available():
            raise EngineError(
                "the vLLM backend needs vllm (pip install vllm); use the default backend instead"
            )
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        adapter_path = Path(adapter) if adapter else None
        adapter_cfg = check_adapter(adapter_path) if adapter_path else {}
        try:
            path, _ = resolve(model)
            has_processor = adapter_path is not None and any(
                (adapter_path / f).is_file() for f in ("processor_config.json", "preprocessor_config.json")
            )
            processor = load_processor(adapter_path if has_processor else model)
        except ModelLoadError as err:
            raise EngineError(str(err)) from None
        llm_kwargs.setdefault("limit_mm_per_prompt", {"image": 8, "video": 1})
        llm_kwargs.setdefault("enable_prefix_caching", True)  # a clip's questions share their prefix
        if adapter_path is not None:
            llm_kwargs.update(enable_lora=True, max_lora_rank=max(16, int(adapter_cfg.get("r", 16))))
        llm = LLM(model=path, trust_remote_code=False, **llm_kwargs)
        lora = LoRARequest("adapter", 1, str(adapter_path)) if adapter_path else None
        name = f"{model} (vllm)" + (f" + {adapter}" if adapter else "")
        return cls(llm, processor, prompt, lora, name)

    def request(self, req: DecodeRequest) -> dict[str, Any]:
        """The vLLM prompt dict of one row: prompt text, images/video, and the processor pixel bounds."""
        from PIL import Image

        images, video = model_visuals(req.visual, self.prompt.visual_mode)
        data: dict[str, Any] = {}
        if images:
            data["image"] = [Image.fromarray(im) for im in images]
        if video is not None:
            data["video"] = video
        out: dict[str, Any] = {"prompt": prompt_text(self.processor, req.question, req.visual, self.prompt)}
        if data:
            out["multi_modal_data"] = data
            kwargs = pixel_kwargs(self.processor, self.prompt)
            if kwargs:
                out["mm_processor_kwargs"] = kwargs
            if _takes_media_ids():
                out["multi_modal_uuids"] = self.clip_ids(req.visual, images, video, kwargs)
        return out

    def clip_ids(
        self, visual: Any, images: Sequence[Any], video: Any, kwargs: dict[str, Any]
    ) -> dict[str, list[str]]:
        """Content ids of a clip's images and video, hashed once per clip in an answering call: the
        pixels, their shapes and the processor's pixel bounds (the processed inputs depend on them)."""
        hit = self._clip_ids.get(id(visual))
        if hit is not None and hit[0] is visual:
            return hit[1]
        import numpy as np

        digest = hashlib.sha256(json.dumps(kwargs, sort_keys=True, default=str).encode())
        for array in [*images, *([] if video is None else [video])]:
            a = np.ascontiguousarray(array)
            digest.update(f"{a.shape}{a.dtype}".encode())
            digest.update(a.tobytes())
        key = digest.hexdigest()[:32]
        ids: dict[str, list[str]] = {}
        if images:
            ids["image"] = [f"megc-{key}-image{i}" for i in range(len(images))]
        if video is not None:
            ids["video"] = [f"megc-{key}-video"]
        self._clip_ids[id(visual)] = (visual, ids)
        return ids

    def sampling_params(self, req: DecodeRequest, sampling: Sampling) -> Any:
        from vllm import SamplingParams

        kwargs: dict[str, Any] = {
            "max_tokens": req.max_new_tokens,
            "n": max(1, sampling.n),
            "temperature": 0.0 if sampling.greedy else sampling.temperature,
            "top_p": 1.0 if sampling.greedy else sampling.top_p,
            "seed": sampling.seed,
        }
        if req.grammar is not None:
            try:  # vLLM >= 0.10.2
                from vllm.sampling_params import StructuredOutputsParams

                kwargs["structured_outputs"] = StructuredOutputsParams(regex=req.grammar.regex())
            except ImportError:  # older vLLM
                from vllm.sampling_params import GuidedDecodingParams

                kwargs["guided_decoding"] = GuidedDecodingParams(regex=req.grammar.regex())
        return SamplingParams(**kwargs)

    def decode(self, requests: Sequence[DecodeRequest], sampling: Sampling) -> list[list[str]]:
        if not requests:
            return []
        prompts = [self.request(r) for r in requests]
        params = [self.sampling_params(r, sampling) for r in requests]
        outputs = self.llm.generate(prompts, params, lora_request=self.lora, use_tqdm=False)
        return [[c.text.strip() for c in out.outputs] for out in outputs]

    def end_call(self) -> None:
        """Forget the clips' content ids (vLLM keeps its own prefix and processor caches)."""
        self._clip_ids.clear()


def _takes_media_ids() -> bool:
    """Whether the installed vLLM accepts ``multi_modal_uuids`` in a prompt (0.10.2 and later)."""
    try:
        from vllm.multimodal.inputs import MultiModalUUIDDict  # noqa: F401
    except ImportError:
        return False
    return True


class VllmEngine(Engine):
    """The engine answering through vLLM: ``VllmEngine(model, adapter, options, **llm_kwargs)``.

    Only the decoder differs from ``Engine.load``; the answering layer and the training settings are the
    same."""

    def __init__(
        self,
        model: str | Path,
        adapter: str | Path | None = None,
        options: EngineOptions | None = None,
        contract: ModelContract | None = None,
        **llm_kwargs: Any,
    ) -> None:
        contract = trained_contract(model, Path(adapter) if adapter else None, contract)
        options = with_contract(options or EngineOptions(), contract)
        decoder = VllmDecoder.load(model, adapter, options.prompt, **llm_kwargs)
        super().__init__(options=options, name=decoder.name, decoder=decoder, contract=contract)
