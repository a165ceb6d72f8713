"""The question kinds registry and the decoding interface: one answering layer over the transformers and
vLLM backends (vLLM is not installed here: a fake ``vllm`` module records what the backend asks of it)."""

from __future__ import annotations

import importlib.machinery
import sys
import types
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from megc_vqa.answering.engine import EngineOptions
from megc_vqa.models.prompting import PromptOptions
from megc_vqa.qa import kinds as K
from megc_vqa.qa import templates as T
from megc_vqa.visual.samplers import VisualInputs
from tests.helpers import CLIP_QUESTIONS, PRESENCE_Q

REPO = Path(__file__).resolve().parents[1]
TRAINING = PromptOptions(max_pixels=50176)  # the 3B/7B recipes' bound: 224*224 pixels per image


# -- the registry -------------------------------------------------------------------------------------------


def test_every_kind_has_one_entry_and_its_facts_agree_with_its_consumers():
    from megc_vqa.answering.grammar import answer_grammar, fullmatch
    from megc_vqa.answering.postprocess import fallback_answer
    from megc_vqa.metrics.vqa import CLASSIFICATION_TYPES
    from megc_vqa.spotting.lvqa import FALLBACK_TYPE, TYPE_ANSWER

    assert set(K.KINDS) == set(T.QuestionType.__args__)  # type: ignore[attr-defined]
    assert {"coarse", "fine", "presence", "side", "lvqa_event_type"} == CLASSIFICATION_TYPES
    # one event-type fallback for the engine and for ME-LVQA answers built from spotting
    assert TYPE_ANSWER[FALLBACK_TYPE] == K.KINDS["lvqa_event_type"].fallback == "macro-expression"
    event_q = T.LVQA_EVENT_TYPE.format(n=3)
    assert fallback_answer(event_q) == "macro-expression"
    questions = [*CLIP_QUESTIONS, T.AU_QUESTION_SINGULAR, T.LVQA_AUS, T.LVQA_COUNT_MACRO, event_q]
    for q in questions:
        kind = K.kind_of(q)
        grammar = answer_grammar(q)
        assert grammar is not None and not kind.free, q
        if kind.fallback is not None:
            assert fullmatch(grammar, kind.fallback) and fallback_answer(q) == kind.fallback, q
        for label in kind.labels if kind.classification else ():
            assert fullmatch(grammar, label), (q, label)
    for free in (T.ANALYSIS_QUESTIONS[0], "What colour is the sky?"):
        assert K.kind_of(free).free and answer_grammar(free) is None
    assert K.kind_of(T.ANALYSIS_QUESTIONS[2]).name == "analysis"
    assert K.KINDS["analysis"].scoring == ("text",) and K.KINDS["analysis"].max_new_tokens is None


def test_question_rows_carry_their_kind():
    from dataclasses import replace

    from megc_vqa.qa.records import QuestionRow

    row = QuestionRow.from_json({"video_id": "x_1", "video": "x", "question": PRESENCE_Q, "answer": ""})
    assert row.question_type == "presence" and "question_type" not in row.to_json()
    assert replace(row, question=T.LVQA_AUS).question_type == "lvqa_aus"


# -- a fake vllm ------------------------------------------------------------------------------------------


class FakeLLM:
    """Records every ``generate`` call; answers each row from ``script`` (question -> text)."""

    instances: ClassVar[list[FakeLLM]] = []
    script: ClassVar[dict[str, str]] = {}

    def __init__(self, model, **kwargs):
        self.model, self.kwargs, self.calls = model, kwargs, []
        FakeLLM.instances.append(self)

    def generate(self, prompts, params, lora_request=None, use_tqdm=True):
        self.calls.append((prompts, params, lora_request))
        outs = []
        for prompt, p in zip(prompts, params, strict=True):
            text = next((a for q, a in self.script.items() if q in prompt["prompt"]), "")
            outs.append(types.SimpleNamespace(outputs=[types.SimpleNamespace(text=text)] * p.kwargs["n"]))
        return outs


class FakeParams:
    def __init__(self, **kwargs):
        self.kwargs = kwargs


class FakeStructured:
    def __init__(self, regex):
        self.regex = regex


@pytest.fixture
def fake_vllm(monkeypatch):
    vllm = types.ModuleType("vllm")
    vllm.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    vllm.LLM, vllm.SamplingParams = FakeLLM, FakeParams
    sampling = types.ModuleType("vllm.sampling_params")
    sampling.StructuredOutputsParams = FakeStructured
    lora, lora_request = types.ModuleType("vllm.lora"), types.ModuleType("vllm.lora.request")
    lora_request.LoRARequest = lambda name, n, path: ("lora", name, n, path)
    for name, module in {"vllm": vllm, "vllm.sampling_params": sampling, "vllm.lora": lora,
                         "vllm.lora.request": lora_request}.items():  # fmt: skip
        monkeypatch.setitem(sys.modules, name, module)
    FakeLLM.instances, FakeLLM.script = [], {}
    return FakeLLM


def _visual(h=224, w=299, n=4, seed=0):
    rng = np.random.default_rng(seed)
    images = tuple(rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for _ in range(n))
    return VisualInputs(images, np.stack(images[:3]), (1, 2, 3), 10.0, "onset, apex, offset + flow")


# -- both backends build the same requests ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    from megc_vqa.models.registry import load_model, load_processor

    return load_model("tiny-qwen2.5-vl", dtype="float32"), load_processor("tiny-qwen2.5-vl")


@pytest.mark.parametrize(
    "prompt", [TRAINING, PromptOptions(describe_visuals=False, system_prompt="Be brief.")]
)
def test_hf_and_vllm_backends_build_identical_prompts_and_pixel_settings(fake_vllm, tiny, prompt):
    from megc_vqa.answering.decoding import DecodeRequest
    from megc_vqa.answering.grammar import answer_grammar
    from megc_vqa.answering.hf_backend import HfDecoder
    from megc_vqa.answering.vllm_backend import VllmDecoder

    model, processor = tiny
    hf = HfDecoder(model, processor, prompt)
    vl = VllmDecoder(FakeLLM("m"), processor, prompt)
    visual = _visual()
    for q in (T.COARSE_QUESTION, T.JOINT_QUESTION_PLURAL):
        req = vl.request(DecodeRequest(q, visual, answer_grammar(q), 12))
        hf_inputs = hf._encode([q], [visual])
        # what vLLM hands the processor (the request's text, images and processor kwargs) gives the
        # tokens, grid and pixels that the transformers backend (and training) give
        mine = processor(
            text=[req["prompt"]],
            images=req["multi_modal_data"]["image"],
            return_tensors="pt",
            **req.get("mm_processor_kwargs", {}),
        )
        assert mine["input_ids"].tolist() == hf_inputs["input_ids"].tolist()
        assert mine["image_grid_thw"].tolist() == hf_inputs["image_grid_thw"].tolist()
        assert np.allclose(mine["pixel_values"].numpy(), hf_inputs["pixel_values"].numpy())
        # a 224x299 frame under the training bound is a 12x18 patch grid (16x22 without the bound)
        grid = [1, 12, 18] if prompt.max_pixels == 50176 else [1, 16, 22]
        assert hf_inputs["image_grid_thw"][0].tolist() == grid
        assert (prompt.system_prompt or "") in req["prompt"]


def test_vllm_request_building_and_sampling(fake_vllm, tmp_path):
    import re

    from megc_vqa.answering.vllm_backend import VllmEngine

    engine = VllmEngine("tiny-qwen2.5-vl", options=EngineOptions(prompt=TRAINING), gpu_memory_utilization=0.5)
    llm = FakeLLM.instances[-1]
    assert llm.kwargs["gpu_memory_utilization"] == 0.5 and llm.kwargs["limit_mm_per_prompt"]["image"] == 8
    FakeLLM.script = {T.COARSE_QUESTION: "Negative.", T.FINE_QUESTION: "disgust", T.AU_QUESTION_PLURAL:
                      "lip corner puller, cheek raiser", PRESENCE_Q: "no"}  # fmt: skip
    [(answers, _)] = engine.answer_clips([(_visual(), CLIP_QUESTIONS)])
    assert [a.text for a in answers[:4]] == ["negative", "disgust", "lip corner puller, cheek raiser", "yes"]
    # the model wrote nothing for the joint row: flagged, and rebuilt from the clip's answers (AU order
    # as the model wrote it)
    assert answers[4].fallback and answers[4].text == T.joint_answer(
        ["lip corner puller", "cheek raiser"], "disgust", "negative"
    )
    [(prompts, params, lora)] = llm.calls  # every row in one call: vLLM schedules them
    assert lora is None and len(prompts) == 5
    for q, prompt, p in zip(CLIP_QUESTIONS, prompts, params, strict=True):
        assert p.kwargs["max_tokens"] == K.kind_of(q).max_new_tokens
        assert p.kwargs["n"] == 1 and p.kwargs["temperature"] == 0.0 and p.kwargs["seed"] == 0
        assert len(prompt["multi_modal_data"]["image"]) == 4
        size = prompt["mm_processor_kwargs"]["images_kwargs"]["size"]
        assert size["longest_edge"] == 50176
    coarse = params[0].kwargs["structured_outputs"].regex
    assert re.fullmatch(coarse, "negative") and not re.fullmatch(coarse, "Negative.")


def test_votes_reach_the_vllm_sampling_params(fake_vllm):
    from megc_vqa.answering.vllm_backend import VllmEngine

    engine = VllmEngine("tiny-qwen2.5-vl", options=EngineOptions(votes=3, temperature=0.9, seed=7))
    FakeLLM.script = {T.COARSE_QUESTION: "surprise"}
    [answer] = engine.answer([T.COARSE_QUESTION], [_visual()], sample_seed=11)
    p = FakeLLM.instances[-1].calls[0][1][0].kwargs
    assert (p["n"], p["temperature"], p["top_p"], p["seed"]) == (3, 0.9, 0.95, 11)
    assert answer.text == "surprise" and answer.samples == ["surprise"] * 3


# -- re-asking: one generate call saved where the coarse class has one fine label ----------------------------


@pytest.mark.parametrize(
    ("coarse", "calls", "fine"),
    [("surprise", 1, "surprise"), ("positive", 1, "happiness"), ("negative", 2, "fear")],
)
def test_a_fine_label_is_re_asked_only_among_several(fake_vllm, coarse, calls, fine):
    from megc_vqa.answering.vllm_backend import VllmEngine

    engine = VllmEngine("tiny-qwen2.5-vl")
    wrong = "happiness" if coarse != "positive" else "disgust"  # contradicts the coarse class
    FakeLLM.script = {T.COARSE_QUESTION: coarse, T.FINE_QUESTION: wrong}
    llm = FakeLLM.instances[-1]
    if coarse == "negative":  # the re-ask among the negative labels answers fear
        original = llm.generate

        def generate(prompts, params, **kwargs):
            if llm.calls:
                FakeLLM.script = {T.FINE_QUESTION: "fear"}
            return original(prompts, params, **kwargs)

        llm.generate = generate
    [(answers, changes)] = engine.answer_clips([(_visual(), [T.COARSE_QUESTION, T.FINE_QUESTION])])
    assert len(llm.calls) == calls
    assert [a.text for a in answers] == [coarse, fine]
    assert [c.rule for c in changes] == ["fine agrees with coarse"]
    if calls == 2:
        regex = llm.calls[1][1][0].kwargs["structured_outputs"].regex
        assert "fear" in regex and "happiness" not in regex


# -- visual inputs: a folder whose frames differ in size still gives the clip --------------------------------


def test_mixed_frame_sizes_in_one_clip_are_resized_not_fatal(tmp_path):
    import cv2

    from megc_vqa.visual.frames import clip_from_folder
    from megc_vqa.visual.samplers import sample
    from megc_vqa.visual.toyclips import write_toy_clip

    folder = tmp_path / "clip"
    write_toy_clip(folder, n_frames=12, apex_pos=6)
    for k in (5, 6, 7, 12):  # a few frames a couple of pixels off (cropped releases do this)
        path = folder / f"img{k}.jpg"
        image = cv2.imread(str(path))
        cv2.imwrite(str(path), cv2.resize(image, (image.shape[1] + 3, image.shape[0] - 2)))
    for spec, face_crop in (("oao+flow", False), ("uniform:4+diff", True)):
        visual = sample(clip_from_folder(folder, 30.0, dataset="toy"), spec, size=48, face_crop=face_crop)
        assert len({im.shape for im in visual.images}) == 1, spec
        assert min(visual.images[0].shape[:2]) == 48
