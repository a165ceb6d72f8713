"""One vision pass and one prompt prefix per clip, labels scored: the answers are ``generate``'s, byte for
byte, on both tiny families and both visual modes; the label log-probabilities are the model's own; a
cached prefix is never reused for another clip or adapter state; open kinds are refused label scoring; a
batch out of memory is halved, never losing a row."""

from __future__ import annotations

import importlib.machinery
import json
import logging
import math
import sys
import types
from dataclasses import replace
from typing import ClassVar

import numpy as np
import pytest

from megc_vqa.answering.engine import Engine, EngineError, EngineOptions
from megc_vqa.models.prompting import PromptOptions
from megc_vqa.qa import templates as T
from megc_vqa.visual.samplers import VisualInputs
from tests.helpers import PRESENCE_Q

SIDE_Q = T.SIDE_QUESTION.format(name="lip corner puller")
QUESTIONS = [T.COARSE_QUESTION, T.FINE_QUESTION, T.AU_QUESTION_PLURAL, PRESENCE_Q, T.JOINT_QUESTION_SINGULAR]


def _clips(n: int, seed: int = 0, size: int = 56) -> list[VisualInputs]:
    rng = np.random.default_rng(seed)
    out = []
    for c in range(n):
        images = tuple(rng.integers(0, 255, (size, size + 8, 3), dtype=np.uint8) for _ in range(4))
        out.append(
            VisualInputs(images, np.stack(images[:3]), (1, 5 + c, 9 + c), 10.0, f"onset 1, apex {5 + c}")
        )
    return out


@pytest.fixture(scope="module")
def tiny_models():
    from megc_vqa.models.registry import load_model, load_processor

    return {
        name: (load_model(name, dtype="float32"), load_processor(name))
        for name in ("tiny-qwen2.5-vl", "tiny-qwen3-vl")
    }


def _engine(tiny_models, name: str, **options) -> Engine:
    model, processor = tiny_models[name]
    return Engine(model, processor, EngineOptions(consistency=False, **options))


def _both(engine: Engine, clips, questions, **kwargs):
    """The raw answers (and the answers) with the shared prefix, then through plain ``generate``."""
    engine.decoder.prefix_stats = type(engine.decoder.prefix_stats)()
    shared = engine.answer_clips([(v, questions) for v in clips], **kwargs)
    stats = engine.decoder.prefix_stats
    engine.decoder.share_prefix = False
    try:
        plain = engine.answer_clips([(v, questions) for v in clips], **kwargs)
    finally:
        engine.decoder.share_prefix = True
    return shared, plain, stats


@pytest.mark.parametrize(
    ("name", "mode", "constrained"),
    [
        ("tiny-qwen2.5-vl", "images", True),
        ("tiny-qwen2.5-vl", "images", False),
        ("tiny-qwen3-vl", "images", True),
        ("tiny-qwen3-vl", "video", True),
        ("tiny-qwen2.5-vl", "video", False),
    ],
)
def test_shared_prefix_answers_are_generates_byte_for_byte(tiny_models, name, mode, constrained):
    engine = _engine(tiny_models, name, constrained=constrained, prompt=PromptOptions(visual_mode=mode),
                     batch_size=7)  # fmt: skip
    questions = [*QUESTIONS, SIDE_Q, T.ANALYSIS_QUESTIONS[0]]
    shared, plain, stats = _both(engine, _clips(3), questions)
    assert [[a.raw for a in answers] for answers, _ in shared] == [
        [a.raw for a in answers] for answers, _ in plain
    ]
    assert [[a.text for a in answers] for answers, _ in shared] == [
        [a.text for a in answers] for answers, _ in plain
    ]
    # every clip's prefix ran once (7 rows at a time: clips join the loop as rows finish), none fell back
    assert stats.prefills == 3 and stats.plain_rows == 0 and stats.prefix_tokens > 3 * 4 * 4
    closed = {T.COARSE_QUESTION, T.FINE_QUESTION, PRESENCE_Q, SIDE_Q}
    for answers, _ in shared:
        for q, a in zip(questions, answers, strict=True):
            if constrained and q in closed:
                assert a.scores and a.text in a.scores and all(v < 0 for v in a.scores.values()), q
            else:
                assert a.scores is None, q
    assert stats.scored_rows == (3 * 4 if constrained else 0)


def test_label_log_probabilities_are_the_models_own(tiny_models):
    """log P(label) = the label's tokens' log-probabilities after the whole prompt, plus the end of the
    answer, computed here with one plain forward over prompt + label."""
    import torch

    from megc_vqa.answering.constrained import stop_token_ids
    from megc_vqa.answering.decoding import prompt_text
    from megc_vqa.models.prompting import encode_prompts

    engine = _engine(tiny_models, "tiny-qwen2.5-vl")
    model, processor = tiny_models["tiny-qwen2.5-vl"]
    visual = _clips(1, seed=4)[0]
    questions = [T.COARSE_QUESTION, PRESENCE_Q]
    scores = engine.score_labels(questions, [visual] * 2)
    stops = stop_token_ids(processor.tokenizer)
    for q, got in zip(questions, scores, strict=True):
        assert set(got) == set(T.YES_NO if q == PRESENCE_Q else engine.options.vocab.coarse)
        for label, value in got.items():
            enc = encode_prompts(
                processor, [prompt_text(processor, q, visual, engine.prompt)], [visual], engine.prompt
            )
            ids = processor.tokenizer(label, add_special_tokens=False)["input_ids"]
            n = enc["input_ids"].shape[1]
            enc["input_ids"] = torch.cat([enc["input_ids"], torch.tensor([ids])], 1)
            enc["attention_mask"] = torch.ones_like(enc["input_ids"])
            enc["mm_token_type_ids"] = torch.cat(
                [enc["mm_token_type_ids"], torch.zeros(1, len(ids), dtype=torch.long)], 1
            )
            with torch.inference_mode():
                logp = torch.log_softmax(model(**enc).logits[0].float(), -1)
            expected = sum(float(logp[n - 1 + j, t]) for j, t in enumerate(ids))
            expected += float(torch.logsumexp(logp[n - 1 + len(ids), stops], 0))
            assert value == pytest.approx(expected, abs=1e-4), (q, label)


def test_label_scoring_is_refused_for_open_kinds_with_the_kind_named(tiny_models):
    engine = _engine(tiny_models, "tiny-qwen2.5-vl")
    visual = _clips(1)[0]
    for question, kind in ((T.AU_QUESTION_PLURAL, "au"), (T.JOINT_QUESTION_PLURAL, "joint"),
                           (T.ANALYSIS_QUESTIONS[0], "analysis")):  # fmt: skip
        with pytest.raises(EngineError, match=f"kind '{kind}'"):
            engine.score_labels([T.COARSE_QUESTION, question], [visual, visual])
    engine.decoder.share_prefix = False
    try:
        with pytest.raises(EngineError, match="cannot score labels"):
            engine.score_labels([T.COARSE_QUESTION], [visual])
    finally:
        engine.decoder.share_prefix = True


def test_a_cached_prefix_serves_only_its_own_clip_and_adapter_state(tiny_models):
    from peft import LoraConfig, get_peft_model

    from megc_vqa.answering.prefix import PrefixCache, model_key

    model, processor = tiny_models["tiny-qwen2.5-vl"]
    cache = PrefixCache(keep=2)
    a, b = _clips(2)
    from megc_vqa.answering.prefix import Prefix

    entry = Prefix(a, (1, 2, 3), ("m",), [], [], 10)
    cache.put(entry, pinned=0)
    assert cache.lookup(a, [[1, 2, 3, 4]], ("m",)) is entry
    assert cache.lookup(b, [[1, 2, 3, 4]], ("m",)) is None  # another clip
    assert cache.lookup(a, [[1, 2, 3, 4]], ("m", "other adapter")) is None  # another model state
    assert cache.lookup(a, [[1, 2, 9, 4]], ("m",)) is None  # tokens that do not start with it
    assert cache.lookup(a, [[1, 2, 3]], ("m",)) is None  # no token of the row's own left
    for v in _clips(4, seed=1):
        cache.put(Prefix(v, (1,), ("m",), [], [], 1), pinned=1)
    assert len(cache) == 3  # bounded: keep + the current call's clips

    # End to end: the same clip asked again within a call reuses its prefix; under another adapter
    # state (a second adapter active, adapters disabled) it is prefilled again, and answers still equal
    # generate's.
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    peft_model = get_peft_model(model, config)
    peft_model.add_adapter("second", config)
    try:
        engine = Engine(peft_model, processor, EngineOptions(consistency=False))
        stats = engine.decoder.prefix_stats
        first = engine.generate([T.COARSE_QUESTION], [a])
        assert engine.generate([T.COARSE_QUESTION], [a]) == first  # no end_call between: cache kept
        assert (stats.prefills, stats.reused) == (1, 1)
        key = model_key(peft_model)
        peft_model.set_adapter("second")
        assert model_key(peft_model) != key
        second = engine.generate([T.COARSE_QUESTION], [a])
        with peft_model.disable_adapter():
            assert model_key(peft_model) not in (key,)
            base = engine.generate([T.COARSE_QUESTION], [a])
        assert (stats.prefills, stats.reused) == (3, 1)
        engine.decoder.share_prefix = False
        with peft_model.disable_adapter():
            assert engine.generate([T.COARSE_QUESTION], [a]) == base
        peft_model.set_adapter("second")
        assert engine.generate([T.COARSE_QUESTION], [a]) == second
        peft_model.set_adapter("default")
        assert engine.generate([T.COARSE_QUESTION], [a]) == first
    finally:
        peft_model.unload()  # the module-scoped model goes back to its plain layers


def test_question_before_the_images_takes_the_plain_path(tiny_models):
    """A template that writes the question text before the images leaves the images outside what a
    clip's rows share: no cache can hold them, so those rows go through generate (same answers)."""
    from megc_vqa.models.registry import load_processor

    model, _ = tiny_models["tiny-qwen2.5-vl"]
    processor = load_processor("tiny-qwen2.5-vl")
    processor.chat_template = (
        "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
        "{% for c in message['content'] %}{% if c['type'] == 'text' %}{{ c['text'] }}{% endif %}{% endfor %}"
        "{% for c in message['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|>"
        "<|vision_end|>{% endif %}{% endfor %}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    engine = Engine(
        model, processor, EngineOptions(consistency=False, prompt=PromptOptions(describe_visuals=False))
    )
    shared, plain, stats = _both(engine, _clips(2), QUESTIONS[:3])
    assert [a.raw for r, _ in shared for a in r] == [a.raw for r, _ in plain for a in r]
    assert stats.plain_rows == 6 and stats.prefills == 0


def test_a_batch_out_of_memory_is_halved_and_no_row_is_lost(tiny_models, monkeypatch, caplog):
    import torch

    engine = _engine(tiny_models, "tiny-qwen2.5-vl")
    clips = _clips(2)
    questions = QUESTIONS[:3]
    expected = engine.answer_clips([(v, questions) for v in clips])
    decode = engine.decoder.decode
    sizes: list[int] = []

    def tight(requests, sampling):
        sizes.append(len(requests))
        if len(requests) > 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return decode(requests, sampling)

    monkeypatch.setattr(engine.decoder, "decode", tight)
    with caplog.at_level(logging.WARNING):
        got = engine.answer_clips([(v, questions) for v in clips])
    assert sizes == [6, 3, 2, 1, 3, 2, 1]
    assert "a batch of 6 rows ran out of memory" in caplog.text and "retrying it as 3 + 3 rows" in caplog.text
    assert [[a.text for a in r] for r, _ in got] == [[a.text for a in r] for r, _ in expected]

    def never(requests, sampling):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(engine.decoder, "decode", never)
    [(answers, _)] = engine.answer_clips([(clips[0], QUESTIONS[:2])])
    assert [a.fallback for a in answers] == [True, True] and all(a.text for a in answers)
    assert all("OutOfMemoryError" in a.reason for a in answers)


# -- vLLM: prefix caching, and a clip's images named once ------------------------------------------------


class _FakeLLM:
    instances: ClassVar[list[_FakeLLM]] = []

    def __init__(self, model, **kwargs):
        self.kwargs, self.calls = kwargs, []
        _FakeLLM.instances.append(self)

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        self.calls.append(prompts)
        return [types.SimpleNamespace(outputs=[types.SimpleNamespace(text="negative")]) for _ in prompts]


@pytest.fixture
def fake_vllm(monkeypatch):
    modules = {name: types.ModuleType(name) for name in (
        "vllm", "vllm.sampling_params", "vllm.lora", "vllm.lora.request", "vllm.multimodal", "vllm.multimodal.inputs"
    )}  # fmt: skip
    modules["vllm"].__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    modules["vllm"].LLM = _FakeLLM
    modules["vllm"].SamplingParams = lambda **kw: kw
    modules["vllm.sampling_params"].StructuredOutputsParams = lambda regex: regex
    modules["vllm.lora.request"].LoRARequest = lambda *a: a
    modules["vllm.multimodal.inputs"].MultiModalUUIDDict = dict
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    _FakeLLM.instances = []


def test_vllm_caches_prefixes_and_names_each_clips_images_once(fake_vllm):
    from megc_vqa.answering.vllm_backend import VllmEngine

    engine = VllmEngine("tiny-qwen2.5-vl", options=EngineOptions(consistency=False))
    llm = _FakeLLM.instances[-1]
    assert llm.kwargs["enable_prefix_caching"] is True
    a, b = _clips(2)
    same_pixels = replace(a, images=tuple(im.copy() for im in a.images))  # another object, same content
    engine.answer_clips([(a, QUESTIONS[:3]), (b, QUESTIONS[:2]), (same_pixels, QUESTIONS[:1])])
    ids = [p["multi_modal_uuids"] for p in llm.calls[0]]
    assert ids[0] == ids[1] == ids[2] == ids[5] and ids[3] == ids[4] and ids[0] != ids[3]
    assert len(ids[0]["image"]) == 4 and len(set(ids[0]["image"])) == 4 and "video" not in ids[0]
    with pytest.raises(EngineError, match="cannot score labels"):
        engine.score_labels([T.COARSE_QUESTION], [a])


# -- run_vqa: the log carries the scores, --label-scores writes them per row -------------------------------


def test_run_vqa_logs_label_scores_and_writes_the_scores_file(tiny_models, tmp_path):
    from megc_vqa.answering.run_vqa import LABEL_SCORES_NAME, LOG_NAME, run_vqa
    from megc_vqa.visual.toyclips import write_toy_clip

    rows = [{"video_id": f"samm_test_SAMM-{c}_{i}", "video": f"SAMM-{c}", "question": q, "answer": ""}
            for c in (1, 2) for i, q in enumerate(QUESTIONS, 1)]  # fmt: skip
    questions = tmp_path / "me_vqa_samm_test_to_answer.jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for c in (1, 2):
        write_toy_clip(tmp_path / "frames" / f"SAMM-{c}", n_frames=12, apex_pos=6, seed=c)
    engine = _engine(tiny_models, "tiny-qwen2.5-vl")
    out = tmp_path / "run"
    result = run_vqa([questions], tmp_path / "frames", "tiny-qwen2.5-vl", out, engine=engine, progress=False,
                     label_scores=True)  # fmt: skip
    lines = [json.loads(line) for line in (out / LABEL_SCORES_NAME).read_text().splitlines()]
    assert [x["video_id"] for x in lines] == [r["video_id"] for r in rows]
    for line in lines:
        if line["kind"] in ("coarse", "fine", "presence"):
            assert line["answer"] in line["probs"] and math.isclose(sum(line["probs"].values()), 1.0)
            if line["kind"] == "fine":  # a SAMM clip is scored among SAMM's own fine labels
                assert "repression" not in line["logprobs"]
        else:
            assert line["logprobs"] is None and line["probs"] is None
    logged = [json.loads(line) for line in (out / LOG_NAME).read_text().splitlines()[1:]]
    assert {e["video_id"]: e["label_logprobs"] for e in logged} == {
        x["video_id"]: x["logprobs"] for x in lines
    }
    assert result.summary["label_scores"] == str(out / LABEL_SCORES_NAME)
    first = (out / LABEL_SCORES_NAME).read_text()
    run_vqa(
        [questions],
        tmp_path / "frames",
        "tiny-qwen2.5-vl",
        out,
        engine=engine,
        progress=False,
        label_scores=True,
    )  # fmt: skip  (a resumed run rewrites the file from the log)
    assert (out / LABEL_SCORES_NAME).read_text() == first
