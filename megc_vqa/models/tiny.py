"""Offline tiny models of the real Qwen2.5-VL and Qwen3-VL architectures, for tests and the demo.

Each tiny model is the genuine transformers class (``Qwen2_5_VLForConditionalGeneration``,
``Qwen3VLForConditionalGeneration``) built from a small in-code config, with its genuine processor
class and a byte-level BPE tokenizer trained here (``tokenizers`` library) on the MEGC question/answer
vocabulary plus the chat-template special tokens. It is written with ``save_pretrained`` and loaded back
with ``from_pretrained``, exactly the path a hub checkpoint takes, so code that works on the tiny model
works on the real one.

Cache: ``$MEGC_VQA_CACHE/models/<name>`` when ``MEGC_VQA_CACHE`` is set, else
``~/.cache/megc_vqa/models/<name>``. The first use builds the model (about a second) and later uses load
it; a build is deterministic (fixed seed, fixed corpus order) and is replaced when ``TINY_VERSION`` changes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

from megc_vqa.fileio import atomic_cache_folder, cache_base
from megc_vqa.labels import AU_NAMES, COARSE_MAPS, KNOWN_FINE, STR_CLASSES
from megc_vqa.models.chat_templates import (
    DEFAULT_SYSTEM_PROMPT,
    QWEN2_5_VL_TEMPLATE,
    QWEN3_VL_TEMPLATE,
    QWEN_SPECIAL_TOKENS,
)

log = logging.getLogger(__name__)

# Bump when the config, corpus or template changes: cached builds with another version are rebuilt.
TINY_VERSION = 1
TINY_SEED = 0
TINY_NAMES: dict[str, str] = {"tiny-qwen2.5-vl": "qwen2_5_vl", "tiny-qwen3-vl": "qwen3_vl"}

# Words the visual layer and prompts may add around the question (frame descriptions).
_EXTRA_WORDS = (
    "onset apex offset frame frames optical flow image images video clip face micro-expression "
    "macro-expression uniform sampled from to the of and with a an in this seconds left right yes no"
)


def cache_root() -> Path:
    """Folder that holds built tiny models (``$MEGC_VQA_CACHE/models`` or ``~/.cache/megc_vqa/models``)."""
    return cache_base() / "models"


def qa_corpus() -> Iterator[str]:
    """Every string the tiny tokenizer should encode compactly: MEGC questions, answers and chat text."""
    from megc_vqa.qa import templates as t

    au_names = [AU_NAMES[n] for n in sorted(AU_NAMES)]
    fines = sorted(set().union(*KNOWN_FINE.values()) | {f for m in COARSE_MAPS.values() for f in m})
    yield from (
        t.COARSE_QUESTION,
        t.FINE_QUESTION,
        t.AU_QUESTION_SINGULAR,
        t.AU_QUESTION_PLURAL,
        t.JOINT_QUESTION_SINGULAR,
        t.JOINT_QUESTION_PLURAL,
        *t.ANALYSIS_QUESTIONS,
        t.LVQA_COUNT_ALL,
        t.LVQA_COUNT_MICRO,
        t.LVQA_COUNT_MACRO,
        t.LVQA_AUS,
        DEFAULT_SYSTEM_PROMPT,
        "system\nuser\nassistant\n",
        _EXTRA_WORDS,
        " ".join(str(i) for i in range(100)),
        *STR_CLASSES,
        *fines,
        *t.SIDES,
        *t.YES_NO,
        *t.EXPRESSION_TYPES,
    )
    for name in au_names:
        yield t.SIDE_QUESTION.format(name=name)
        yield t.PRESENCE_QUESTION.format(name=name)
        yield name
    for i in range(1, 10):
        yield t.LVQA_EVENT_TYPE.format(n=i)
    for i, fine in enumerate(fines):
        coarse = STR_CLASSES[i % 3]
        yield t.joint_answer(au_names[i % len(au_names) : i % len(au_names) + 1], fine, coarse)
        yield t.joint_answer(au_names[i % 5 : i % 5 + 2], fine, coarse)


def train_tokenizer(vocab_size: int = 1000):
    """A Qwen2 byte-level BPE tokenizer (the real ``Qwen2Tokenizer`` class) trained on :func:`qa_corpus`."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    # Same pre-tokenisation as the published Qwen tokenizer, so merges split text the same way.
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(list(qa_corpus()), trainer=trainer)
    state = json.loads(bpe.to_str())["model"]
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in state["merges"]]
    tokenizer = Qwen2Tokenizer(
        vocab=state["vocab"],
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(QWEN_SPECIAL_TOKENS)})
    return tokenizer


def _ids(tokenizer) -> dict[str, int]:
    def tid(tok: str) -> int:
        i = tokenizer.convert_tokens_to_ids(tok)
        assert isinstance(i, int) and i != tokenizer.unk_token_id, tok
        return i

    return {
        "bos_token_id": tid("<|endoftext|>"),
        "eos_token_id": tid("<|im_end|>"),
        "pad_token_id": tid("<|endoftext|>"),
        "image_token_id": tid("<|image_pad|>"),
        "video_token_id": tid("<|video_pad|>"),
        "vision_start_token_id": tid("<|vision_start|>"),
        "vision_end_token_id": tid("<|vision_end|>"),
    }


def tiny_config(family: str, tokenizer):
    """The in-code tiny config of a family, with every token id taken from ``tokenizer``.

    Text: 2 layers, hidden 64, 4 heads of 16 dims, so the M-RoPE sections (temporal, height, width)
    must sum to 16 / 2 = 8. Vision: 2 blocks, hidden 32, the real patch, merge and temporal patch sizes,
    so the real image and video processors produce inputs this model accepts.
    """
    ids = _ids(tokenizer)
    vocab_size = len(tokenizer)
    text = {
        "vocab_size": vocab_size,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 2048,
        "bos_token_id": ids["bos_token_id"],
        "eos_token_id": ids["eos_token_id"],
        "pad_token_id": ids["pad_token_id"],
    }
    token_ids = {
        k: ids[k]
        for k in ("image_token_id", "video_token_id", "vision_start_token_id", "vision_end_token_id")
    }
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        text["rope_parameters"] = {"rope_type": "default", "rope_theta": 1e6, "mrope_section": [2, 3, 3]}
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "window_size": 112,
            "out_hidden_size": 64,
            "fullatt_block_indexes": [1],
            "tokens_per_second": 2,
        }
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **token_ids)
    if family == "qwen3_vl":
        from transformers import Qwen3VLConfig

        text["head_dim"] = 16
        text["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": 5e5,
            "mrope_section": [2, 3, 3],
            "mrope_interleaved": True,
        }
        vision = {
            "depth": 2,
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_heads": 2,
            "patch_size": 16,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": 64,
            "num_position_embeddings": 64,
            "deepstack_visual_indexes": [0],
        }
        return Qwen3VLConfig(text_config=text, vision_config=vision, **token_ids)
    raise ValueError(f"no tiny config for model family {family!r}; known: qwen2_5_vl, qwen3_vl")


def tiny_processor(family: str, tokenizer):
    """The family's real processor class around ``tokenizer``, with the chat template of this project."""
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

        return Qwen2_5_VLProcessor(
            image_processor=Qwen2VLImageProcessor(),
            tokenizer=tokenizer,
            video_processor=Qwen2VLVideoProcessor(),
            chat_template=QWEN2_5_VL_TEMPLATE,
        )
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    return Qwen3VLProcessor(
        image_processor=Qwen2VLImageProcessor(patch_size=16),
        tokenizer=tokenizer,
        video_processor=Qwen3VLVideoProcessor(patch_size=16),
        chat_template=QWEN3_VL_TEMPLATE,
    )


def build_tiny(name: str, out_dir: str | Path) -> Path:
    """Build tiny model ``name`` (a key of ``TINY_NAMES``) into ``out_dir`` with ``save_pretrained``."""
    import torch
    from transformers import Qwen2_5_VLForConditionalGeneration, Qwen3VLForConditionalGeneration

    family = TINY_NAMES[name]
    out = Path(out_dir)
    tokenizer = train_tokenizer()
    config = tiny_config(family, tokenizer)
    model_cls = (
        Qwen2_5_VLForConditionalGeneration if family == "qwen2_5_vl" else Qwen3VLForConditionalGeneration
    )
    torch.manual_seed(TINY_SEED)
    model = model_cls(config)
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    tiny_processor(family, tokenizer).save_pretrained(out)
    (out / "megc_vqa_tiny.json").write_text(json.dumps({"name": name, "version": TINY_VERSION}))
    return out


def ensure_tiny(name: str, cache_dir: str | Path | None = None) -> Path:
    """Path of tiny model ``name``, building it into the cache on first use (safe under concurrency)."""
    if name not in TINY_NAMES:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(TINY_NAMES)}")
    root = Path(cache_dir) if cache_dir else cache_root()
    target = root / name
    stamp = target / "megc_vqa_tiny.json"
    if stamp.is_file() and json.loads(stamp.read_text()).get("version") == TINY_VERSION:
        return target
    log.info("building tiny model %s into %s", name, target)

    def current() -> bool:  # another process's entry, renamed in first
        return stamp.is_file() and json.loads(stamp.read_text()).get("version") == TINY_VERSION

    with atomic_cache_folder(target, stamp.name, "tiny model cache", is_current=current) as tmp:
        build_tiny(name, tmp)
    return target
