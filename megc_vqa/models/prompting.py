"""The one place where a QA record and its visual inputs become chat messages and model inputs.

Training (:mod:`megc_vqa.models.collator`) and answering both go through these functions, so the model
sees at inference exactly the prompt layout it was tuned on:

    record + VisualInputs --build_messages--> chat messages --render--> prompt text
        --processor--> input_ids, pixel_values(_videos), *_grid_thw, mm_token_type_ids

Records are plain: anything with ``question`` (and ``answer`` for training) as attributes or dict keys,
such as ``megc_vqa.qa.QARecord`` or a row of its JSONL. Visual inputs are anything shaped like
``megc_vqa.visual.samplers.VisualInputs`` (``images``: HxWx3 uint8 arrays, ``video``: TxHxWx3 uint8 or
``None``, ``frame_indices``, ``fps``, ``description``). Neither knows about processors or templates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from megc_vqa.models.families.base import Family
from megc_vqa.models.registry import DEFAULT_MODEL, FAMILIES, MODELS, family_for_processor

log = logging.getLogger(__name__)

IGNORE_INDEX = -100


class VisualLike(Protocol):
    """What the prompt builder reads from ``megc_vqa.visual.samplers.VisualInputs``."""

    images: Sequence[np.ndarray]
    video: np.ndarray | None
    frame_indices: Sequence[int]
    fps: float
    description: str


VisualFn = Callable[[Any], VisualLike]


@dataclass(frozen=True)
class PromptOptions:
    """How prompts are laid out and how large images get. The same values must be used to train and answer.

    visual_mode: ``"images"``: every image of the visual inputs (key frames, then flow/diff) as separate
        images; ``"video"``: the key frames as one video (the model's temporal encoding sees their timing),
        then the remaining images (flow/diff). Visual inputs without a video fall back to images.
    system_prompt: replaces the template's default system message; ``None`` keeps the default.
    describe_visuals: put the visual layer's one-line description (e.g. which frames the images are)
        before the question, so the model knows which image is the onset and which the flow.
    min_pixels, max_pixels: bounds for each image and video frame after the processor's resize
        (multiples of (patch*merge)^2: 28*28 for Qwen2.5-VL, 32*32 for Qwen3-VL). ``None`` keeps the
        processor's default.
    """

    visual_mode: str = "images"
    system_prompt: str | None = None
    describe_visuals: bool = True
    min_pixels: int | None = None
    max_pixels: int | None = None


DEFAULT_OPTIONS = PromptOptions()


def get_field(record: Any, name: str, default: Any = None) -> Any:
    """``record.name`` or ``record[name]``: records may be dataclasses or JSON rows."""
    if isinstance(record, Mapping):
        return record.get(name, default)
    return getattr(record, name, default)


VISUAL_MODES = ("images", "video")


def model_visuals(visual: VisualLike | None, mode: str) -> tuple[list[np.ndarray], np.ndarray | None]:
    """``(images, video)`` the model gets from ``visual`` in ``mode`` (see :class:`PromptOptions`)."""
    if visual is None:
        return [], None
    if mode not in VISUAL_MODES:
        raise ValueError(f"visual_mode must be one of {VISUAL_MODES}, got {mode!r}")
    images = list(visual.images)
    if mode == "video" and visual.video is not None:
        # The visual layer puts the key frames first in ``images``; the video replaces them.
        return images[len(visual.video) :], visual.video
    return images, None


def build_messages(
    question: str,
    visual: VisualLike | None,
    answer: str | None = None,
    options: PromptOptions = DEFAULT_OPTIONS,
) -> list[dict[str, Any]]:
    """Chat messages for one question: the video (if any), then the images, then the (described) question.

    Content items carry no pixel data: the arrays go to the processor separately, in the same order.
    """
    images, video = model_visuals(visual, options.visual_mode)
    content: list[dict[str, Any]] = []
    if video is not None:
        content.append({"type": "video"})
    content += [{"type": "image"} for _ in images]
    text = question
    if options.describe_visuals and visual is not None and getattr(visual, "description", ""):
        text = f"{visual.description}\n{question}"
    content.append({"type": "text", "text": text})
    messages: list[dict[str, Any]] = []
    if options.system_prompt is not None:
        messages.append({"role": "system", "content": [{"type": "text", "text": options.system_prompt}]})
    messages.append({"role": "user", "content": content})
    if answer is not None:
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def processor_family(processor: Any) -> Family:
    """The family whose processor this is; a processor of no known family gets the default model's
    family's rules (the Qwen-VL conventions)."""
    return family_for_processor(processor) or FAMILIES[MODELS[DEFAULT_MODEL].family]


def render_prompt(processor: Any, messages: list[dict[str, Any]]) -> str:
    """Prompt text up to and including the assistant header (``add_generation_prompt=True``)."""
    text = processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return processor_family(processor).fix_prompt(text)


def render_completion(processor: Any, messages: list[dict[str, Any]]) -> str:
    """The text the template writes for the final assistant message (answer + end-of-turn), found as
    the difference between the whole conversation and its prompt."""
    prompt = render_prompt(processor, messages[:-1])
    full = processor_family(processor).fix_prompt(processor.apply_chat_template(messages, tokenize=False))
    if not full.startswith(prompt):
        raise ValueError(
            "the model's chat template renders the conversation so that it does not start with its own "
            "generation prompt; cannot locate the answer tokens. Use a Qwen-style template."
        )
    return full[len(prompt) :]


def _pixel_kwargs(options: PromptOptions, processor: Any) -> dict[str, Any]:
    """Processor keyword arguments for the options' pixel bounds, by the processor's family's rule."""
    return processor_family(processor).pixel_kwargs(processor, options.min_pixels, options.max_pixels)


def _video_budget_per_frame(kwargs: dict[str, Any], processor: Any, videos: Sequence[np.ndarray]) -> None:
    """Our min/max pixels are per frame; the family says how its video processor reads them for the
    longest video of the batch (Qwen3-VL bounds the whole video, Qwen2-VL each frame)."""
    size = kwargs["videos_kwargs"].get("size")
    if size is None:
        return
    frames = max(len(v) for v in videos)
    video_processor = getattr(processor, "video_processor", None)
    kwargs["videos_kwargs"]["size"] = processor_family(processor).video_size(size, frames, video_processor)


def _video_metadata(video: np.ndarray, visual: VisualLike) -> dict[str, Any]:
    """Metadata telling the processor the true timing of pre-sampled frames.

    The visual layer gives the key frames' absolute ``frame_indices`` and ``fps`` = (T - 1) / seconds
    spanned, so the clip's own rate is ``fps * (last - first) / (T - 1)``. The metadata carries the
    frames' indices relative to the first key frame at that rate: Qwen3-VL writes each frame pair's
    timestamp from them (onset/apex/offset need not be evenly spaced). Qwen2.5-VL reads one interval
    per video; :func:`encode_prompts` sets it from ``fps`` (see :func:`seconds_per_grid`).
    """
    n = len(video)
    fps = float(getattr(visual, "fps", None) or 24.0)
    idx = [int(i) for i in (getattr(visual, "frame_indices", None) or ())]
    if len(idx) == n >= 2 and idx[-1] > idx[0] and idx == sorted(idx):
        clip_fps = fps * (idx[-1] - idx[0]) / (n - 1)
        rel = [i - idx[0] for i in idx]
        return {"total_num_frames": rel[-1] + 1, "fps": clip_fps, "frames_indices": rel}
    return {"total_num_frames": n, "fps": fps, "frames_indices": list(range(n))}


def seconds_per_grid(visual: VisualLike, temporal_patch_size: int) -> float:
    """Seconds between Qwen2.5-VL's temporal patches of ``visual``'s video: ``temporal_patch_size``
    frames at the sampled rate (a float; the model's M-RoPE multiplies it by ``tokens_per_second``)."""
    return temporal_patch_size / float(getattr(visual, "fps", None) or 24.0)


def encode_prompts(
    processor: Any,
    prompts: Sequence[str],
    visuals: Sequence[VisualLike | None],
    options: PromptOptions = DEFAULT_OPTIONS,
    padding_side: str = "left",
) -> Any:
    """Run the processor on rendered prompts and their visual inputs, padded on ``padding_side``.

    Returns the processor's ``BatchFeature`` (``input_ids``, ``attention_mask``, ``mm_token_type_ids``,
    ``pixel_values``/``image_grid_thw`` when there are images, ``pixel_values_videos``/``video_grid_thw``
    when there are videos).
    """
    images, videos, meta = [], [], []
    for visual in visuals:
        ims, video = model_visuals(visual, options.visual_mode)
        images += [np.ascontiguousarray(im) for im in ims]
        if video is not None:
            videos.append(np.ascontiguousarray(video))
            meta.append(_video_metadata(video, visual))
    kwargs = _pixel_kwargs(options, processor)
    family = processor_family(processor)
    if videos and images and not family.video_with_images:
        raise ValueError(
            f"the {family.name} family cannot take a video and images in one prompt; use visual_mode: images, "
            "or a visual_spec of key frames only (no flow/diff) with visual_mode: video"
        )
    if videos:
        _video_budget_per_frame(kwargs, processor, videos)
        kwargs["videos_kwargs"].update(processor_family(processor).video_kwargs(meta))
    batch = processor(
        text=list(prompts),
        images=images or None,
        videos=videos or None,
        padding=True,
        padding_side=padding_side,
        return_tensors="pt",
        **kwargs,
    )
    if "second_per_grid_ts" in batch:
        # The processor derives it from len(frames_indices) / total_num_frames, a uniform-sampling
        # estimate; the sampled rate of the key frames is known exactly.
        import torch

        temporal = int(processor.video_processor.temporal_patch_size)
        batch["second_per_grid_ts"] = torch.tensor(
            [
                seconds_per_grid(v, temporal)
                for v in visuals
                if model_visuals(v, options.visual_mode)[1] is not None
            ],
            dtype=torch.float32,
        )
    return batch


def encode_for_training(
    processor: Any,
    examples: Sequence[tuple[str, VisualLike | None, str]],
    options: PromptOptions = DEFAULT_OPTIONS,
) -> dict[str, Any]:
    """Model inputs with ``labels`` for (question, visual, answer) examples.

    Prompt and completion are tokenised apart and joined (left-padded prompt, right-padded completion),
    so the labels cover exactly the answer and its end-of-turn token, whatever the template. Positions
    come from the attention mask, so the padding in front does not shift M-RoPE.
    """
    import torch

    prompts, completions, visuals = [], [], []
    for question, visual, answer in examples:
        messages = build_messages(question, visual, answer, options)
        prompts.append(render_prompt(processor, messages[:-1]))
        completions.append(render_completion(processor, messages))
        visuals.append(visual)
    batch = encode_prompts(processor, prompts, visuals, options, padding_side="left")
    tok = processor.tokenizer
    comp = tok(completions, add_special_tokens=False, padding=True, padding_side="right", return_tensors="pt")
    out = dict(batch)
    out["input_ids"] = torch.cat([batch["input_ids"], comp["input_ids"]], dim=1)
    out["attention_mask"] = torch.cat([batch["attention_mask"], comp["attention_mask"]], dim=1)
    if "mm_token_type_ids" in batch:
        out["mm_token_type_ids"] = torch.cat(
            [batch["mm_token_type_ids"], torch.zeros_like(comp["input_ids"])], dim=1
        )
    labels = torch.full_like(out["input_ids"], IGNORE_INDEX)
    n_prompt = batch["input_ids"].shape[1]
    labels[:, n_prompt:] = comp["input_ids"].masked_fill(comp["attention_mask"] == 0, IGNORE_INDEX)
    out["labels"] = labels
    return out


def blank_visual(visual: VisualLike) -> VisualLike:
    """The same visual inputs with every pixel set to zero (the no-pixels ablation)."""
    images = tuple(np.zeros_like(im) for im in visual.images)
    video = None if visual.video is None else np.zeros_like(visual.video)
    try:
        return replace(visual, images=images, video=video)  # dataclasses
    except TypeError:
        visual.images, visual.video = images, video  # plain objects
        return visual


def blanked(visual_fn: VisualFn) -> VisualFn:
    """Wrap a visual function so it returns black images and videos of the same shapes."""

    def fn(record: Any) -> VisualLike:
        return blank_visual(visual_fn(record))

    return fn
