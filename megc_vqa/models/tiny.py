"""Offline tiny models of the real family architectures, for tests and the demo.

Each tiny model is the genuine transformers class of its family (the family's ``model_class``) built
from the family's small in-code config (:mod:`megc_vqa.models.families`), with its genuine processor
class and a byte-level BPE tokenizer trained here (``tokenizers`` library) on the MEGC question/answer
vocabulary plus the family's chat-template special tokens. It is written with ``save_pretrained`` and loaded back
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
from megc_vqa.models.chat_templates import DEFAULT_SYSTEM_PROMPT
from megc_vqa.models.families.base import Family
from megc_vqa.models.registry import FAMILIES, MODELS
from megc_vqa.qa import templates as t

log = logging.getLogger(__name__)

# Bump when the config, corpus or template changes: cached builds with another version are rebuilt.
TINY_VERSION = 1
TINY_SEED = 0


def tiny_names() -> dict[str, str]:
    """Tiny registry name -> family, read from ``MODELS`` when asked (a registry line added later counts)."""
    return {s.name: s.family for s in MODELS.values() if s.tiny}


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


def train_tokenizer(vocab_size: int = 1000, family: str | Family = "qwen2_5_vl"):
    """A byte-level BPE tokenizer (the real ``Qwen2Tokenizer`` class) trained on :func:`qa_corpus`, with
    ``family``'s special tokens, eos, pad and named tokens."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    fam = FAMILIES[family] if isinstance(family, str) else family
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
        vocab=state["vocab"], merges=merges, unk_token=None, bos_token=None, **fam.tokenizer_kwargs()
    )
    tokenizer.add_special_tokens({"additional_special_tokens": list(fam.special_tokens)})
    return tokenizer


def _ids(tokenizer, family: str = "qwen2_5_vl") -> dict[str, int]:
    return FAMILIES[family].token_ids(tokenizer)


def tiny_config(family: str, tokenizer):
    """The in-code tiny config of a family (its module's ``tiny_config``), token ids from ``tokenizer``."""
    if family not in FAMILIES:
        raise ValueError(f"no tiny config for model family {family!r}; known: {', '.join(FAMILIES)}")
    return FAMILIES[family].tiny_config(tokenizer)


def tiny_processor(family: str, tokenizer):
    """The family's real processor class around ``tokenizer``, with the family's chat template."""
    return FAMILIES[family].tiny_processor(tokenizer)


def build_tiny(name: str, out_dir: str | Path) -> Path:
    """Build tiny model ``name`` (a key of :func:`tiny_names`) into ``out_dir`` with ``save_pretrained``."""
    import torch

    family = FAMILIES[tiny_names()[name]]
    out = Path(out_dir)
    tokenizer = train_tokenizer(family=family)
    config = family.tiny_config(tokenizer)
    torch.manual_seed(TINY_SEED)
    model = family.transformers_class("model")(config)
    ids = family.token_ids(tokenizer)
    model.generation_config.eos_token_id = ids["eos_token_id"]
    model.generation_config.pad_token_id = ids["pad_token_id"]
    model.generation_config.do_sample = False
    model.save_pretrained(out)
    family.tiny_processor(tokenizer).save_pretrained(out)
    (out / "megc_vqa_tiny.json").write_text(json.dumps({"name": name, "version": TINY_VERSION}))
    return out


def ensure_tiny(name: str, cache_dir: str | Path | None = None) -> Path:
    """Path of tiny model ``name``, building it into the cache on first use (safe under concurrency)."""
    known = tiny_names()
    if name not in known:
        raise KeyError(f"unknown tiny model {name!r}; known: {', '.join(known)}")
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
