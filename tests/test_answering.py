"""The answering stack: grammars, constrained decoding, the answer log, consistency, run_vqa, the REPL."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from megc_vqa.answering.answer_log import AnswerLog, LogMismatchError
from megc_vqa.answering.grammar import AU_NAMES_IN_ORDER, AUList, answer_grammar, fullmatch, joint_grammar
from megc_vqa.answering.postprocess import fallback_answer, make_consistent, normalise_answer
from megc_vqa.answering.repl import ClipRequest, Session
from megc_vqa.qa import templates as T
from tests.helpers import CLIP_QUESTIONS, PRESENCE_Q

REPO = Path(__file__).resolve().parents[1]
QUESTION_FILES = sorted((REPO / "data/megc/2025").glob("*_to_answer.jsonl"))
SIDE_Q = "Is the action unit lip corner puller located on the left or right face?"


# -- grammars -------------------------------------------------------------------------------------------


def test_label_grammars_accept_exactly_the_labels():
    coarse = answer_grammar(T.COARSE_QUESTION)
    assert all(fullmatch(coarse, c) for c in ("negative", "positive", "surprise"))
    assert not any(fullmatch(coarse, c) for c in ("Negative", "negative.", "neg", "others", ""))
    assert fullmatch(answer_grammar(SIDE_Q), "left") and not fullmatch(answer_grammar(SIDE_Q), "yes")
    assert fullmatch(answer_grammar(PRESENCE_Q), "no") and not fullmatch(answer_grammar(PRESENCE_Q), "left")
    assert answer_grammar(T.ANALYSIS_QUESTIONS[0]) is None
    assert answer_grammar("What colour is the sky?") is None


def test_au_list_grammar_wants_distinct_known_names_in_any_order():
    plural = answer_grammar(T.AU_QUESTION_PLURAL)
    singular = answer_grammar(T.AU_QUESTION_SINGULAR)
    assert fullmatch(plural, "inner brow raiser, lip corner puller, eyes left")
    # the release's coded order, not AU order (the organisers' own files write these)
    assert fullmatch(plural, "brow lowerer, lid tightener, outer brow raiser")
    assert fullmatch(plural, "eyes left, inner brow raiser")
    assert not fullmatch(plural, "lip corner puller")  # the plural question means two or more
    assert not fullmatch(plural, "inner brow raiser, inner brow raiser")
    assert not fullmatch(plural, "jaw drop, eyes left, jaw drop")
    assert not fullmatch(plural, "inner brow raiser,lip corner puller")
    assert not fullmatch(plural, "inner brow raiser, AU99")
    assert fullmatch(singular, "jaw drop") and not fullmatch(singular, "jaw drop, eyes left")
    # every subset of every size, in either direction, is accepted by an unbounded list
    grammar = AUList(AU_NAMES_IN_ORDER, 1, None)
    for step in (1, 3, 7):
        names = list(AU_NAMES_IN_ORDER[::step])
        assert fullmatch(grammar, T.au_list_answer(names))
        assert fullmatch(grammar, T.au_list_answer(names[::-1]))
    ordered = AUList(AU_NAMES_IN_ORDER, 2, None, ordered=True)
    assert fullmatch(ordered, "brow lowerer, lid tightener")
    assert not fullmatch(ordered, "lid tightener, brow lowerer")


@pytest.mark.parametrize(
    "question", [T.AU_QUESTION_PLURAL, T.JOINT_QUESTION_PLURAL, T.LVQA_AUS, T.AU_QUESTION_SINGULAR]
)
def test_random_walks_never_reach_a_forced_stop(question):
    """Walk the grammar one random allowed character at a time (stopping at random once complete): a walk
    must never reach a state that is neither complete nor continuable. The first walks start with
    ``eyes left`` (AU61, the last AU number), which left the old ascending-order plural list stuck."""
    import random

    from megc_vqa.answering.grammar import Matcher

    grammar = answer_grammar(question)
    rng = random.Random(0)
    forced = []
    for walk in range(300 if question == T.AU_QUESTION_PLURAL else 100):
        m = Matcher.begin(grammar)
        text = ""
        if walk < 20 and question != T.JOINT_QUESTION_PLURAL:
            m, text = m.advance("eyes left"), "eyes left"
        while True:
            choices = sorted(m.next_chars())
            if m.complete and (not choices or rng.random() < 0.15):
                break
            if not choices:
                forced.append(text)
                break
            char = rng.choice(choices)
            m, text = m.advance(char), text + char
        assert not m.complete or fullmatch(grammar, text)
        names = text.split(T.AU_SEPARATOR) if question != T.JOINT_QUESTION_PLURAL else []
        assert len(names) == len(set(names)), text  # no AU twice
    assert forced == []


def test_joint_grammar_is_the_exact_template():
    plural = T.joint_answer(["cheek raiser", "lip corner puller"], "happiness", "positive")
    singular = T.joint_answer(["brow lowerer"], "disgust", "negative")
    assert fullmatch(joint_grammar(plural=True), plural)
    assert fullmatch(joint_grammar(plural=False), singular)
    assert not fullmatch(joint_grammar(plural=False), plural)
    assert not fullmatch(joint_grammar(plural=True), plural.rstrip("."))
    assert not fullmatch(joint_grammar(plural=True), plural.replace("happiness", "joy"))


# -- constrained decoding with a tiny causal LM built here ----------------------------------------------


@pytest.fixture(scope="module")
def tiny_lm():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [*CLIP_QUESTIONS, T.JOINT_ANSWER_PLURAL, T.JOINT_ANSWER_SINGULAR, *AU_NAMES_IN_ORDER]
    corpus.append(
        "negative positive surprise anger contempt disgust fear happiness repression sadness yes no"
    )
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=["<|endoftext|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(corpus * 3, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.padding_side = "left"
    return tokenizer


def _random_lm(tokenizer, seed):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )  # fmt: skip
    return Qwen2ForCausalLM(config).eval()


def _decode(model, tokenizer, questions, grammars, **kwargs):
    from transformers import LogitsProcessorList

    from megc_vqa.answering.constrained import GrammarLogitsProcessor, TokenIndex

    index = TokenIndex(tokenizer)
    enc = tokenizer(questions, return_tensors="pt", padding=True)
    width = enc.input_ids.shape[1]
    n = kwargs.get("num_return_sequences", 1)
    procs = LogitsProcessorList([GrammarLogitsProcessor(index, grammars, width, n)] if any(grammars) else [])
    out = model.generate(**enc, max_new_tokens=200, logits_processor=procs, eos_token_id=list(index.stop_ids),
                         pad_token_id=tokenizer.pad_token_id, **kwargs)  # fmt: skip
    return [a.strip() for a in tokenizer.batch_decode(out[:, width:], skip_special_tokens=True)]


QUESTIONS = [*CLIP_QUESTIONS, T.AU_QUESTION_SINGULAR, T.JOINT_QUESTION_SINGULAR, SIDE_Q]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_constrained_decoding_always_yields_valid_answers(tiny_lm, seed):
    model = _random_lm(tiny_lm, seed)
    grammars = [answer_grammar(q) for q in QUESTIONS]
    answers = _decode(model, tiny_lm, QUESTIONS, grammars, do_sample=False)
    bad = [(q, a) for q, g, a in zip(QUESTIONS, grammars, answers, strict=True) if not fullmatch(g, a)]
    assert not bad
    # the same untrained model left free writes something else: the constraint did the work
    free = _decode(model, tiny_lm, QUESTIONS, [None] * len(QUESTIONS), do_sample=False)
    assert sum(fullmatch(g, a) for g, a in zip(grammars, free, strict=True)) < len(QUESTIONS)


def test_constrained_sampling_with_several_samples_per_row(tiny_lm):
    import torch

    torch.manual_seed(0)
    model = _random_lm(tiny_lm, 3)
    qs = [T.COARSE_QUESTION, T.JOINT_QUESTION_PLURAL]
    grammars = [answer_grammar(q) for q in qs]
    answers = _decode(model, tiny_lm, qs, grammars, do_sample=True, num_return_sequences=4, temperature=1.5)
    assert len(answers) == 8
    assert all(fullmatch(grammars[i // 4], a) for i, a in enumerate(answers)), answers


# -- normalisation, fallbacks, consistency, the log ------------------------------------------------------


def test_normalise_recovers_labels_from_free_text():
    assert normalise_answer(T.COARSE_QUESTION, "Negative.") == ("negative", True)
    assert normalise_answer(T.COARSE_QUESTION, "negative or positive") == ("negative or positive", False)
    # AU lists keep the model's order unless asked (BLEU/ROUGE see what it wrote); repeats go
    assert normalise_answer(T.AU_QUESTION_PLURAL, "I see lip corner puller and cheek raiser") == (
        "lip corner puller, cheek raiser",
        True,
    )
    assert normalise_answer(T.AU_QUESTION_PLURAL, "lip corner puller, cheek raiser") == (
        "lip corner puller, cheek raiser",
        True,
    )
    assert normalise_answer(
        T.AU_QUESTION_PLURAL, "I see lip corner puller and cheek raiser", sort_aus=True
    ) == (
        "cheek raiser, lip corner puller",
        True,
    )
    assert normalise_answer(T.LVQA_AUS, "jaw drop, brow lowerer, jaw drop") == (
        "jaw drop, brow lowerer",
        True,
    )
    broken = "The action units present are: lip corner puller, cheek raiser. Therefore, the fine-grained expression class is Happiness, and the coarse expression class is positive."  # fmt: skip
    fixed, ok = normalise_answer(T.JOINT_QUESTION_PLURAL, broken)
    assert ok and fixed == T.joint_answer(["lip corner puller", "cheek raiser"], "happiness", "positive")
    fixed, ok = normalise_answer(T.JOINT_QUESTION_PLURAL, broken, sort_aus=True)
    assert ok and fixed == T.joint_answer(["cheek raiser", "lip corner puller"], "happiness", "positive")
    assert normalise_answer(T.ANALYSIS_QUESTIONS[0], "  a  free\nanswer ") == ("a free answer", True)


def test_fallbacks_are_valid_and_reuse_the_clip():
    ctx = {"au": "cheek raiser, lip corner puller", "fine": "happiness", "coarse": "positive"}
    for q in [*QUESTIONS, T.ANALYSIS_QUESTIONS[1]]:
        answer = fallback_answer(q, ctx)
        assert answer
        grammar = answer_grammar(q)
        assert grammar is None or fullmatch(grammar, answer), q
    assert fallback_answer(T.JOINT_QUESTION_PLURAL, ctx) == T.joint_answer(
        ["cheek raiser", "lip corner puller"], "happiness", "positive"
    )


def test_consistency_rules():
    answers = [
        "positive",
        "disgust",  # contradicts positive
        "cheek raiser, lip corner puller",
        "no",  # contradicts the AU list
        T.joint_answer(["brow lowerer", "jaw drop"], "anger", "negative"),
    ]
    fixed, changes = make_consistent(CLIP_QUESTIONS, answers, choose_fine=lambda coarse: "happiness")
    assert fixed == [
        "positive",
        "happiness",
        "cheek raiser, lip corner puller",
        "yes",
        T.joint_answer(["cheek raiser", "lip corner puller"], "happiness", "positive"),
    ]
    assert {c.index for c in changes} == {1, 3, 4}
    # already consistent answers are left alone
    again, none = make_consistent(CLIP_QUESTIONS, fixed)
    assert again == fixed and none == []


def test_answer_log_resumes_and_refuses_other_configurations(tmp_path):
    path = tmp_path / "answers.jsonl"
    AnswerLog(path, {"model": "typo"})  # a run that failed before its first answer
    log = AnswerLog(path, {"model": "a"})
    log.append({"key": "f:1", "answer": "negative"})
    log.extend([{"key": "f:2", "answer": "yes"}])
    with path.open("a") as fh:
        fh.write('{"key": "f:3", "answ')  # killed mid-write
    again = AnswerLog(path, {"model": "a"})
    assert set(again.done) == {"f:1", "f:2"}
    again.append({"key": "f:3", "answer": "no"})
    assert [json.loads(line)["key"] for line in path.read_text().splitlines()[1:]] == ["f:1", "f:2", "f:3"]
    with pytest.raises(LogMismatchError, match="another configuration"):
        AnswerLog(path, {"model": "b"})


# -- run_vqa with the tiny model over synthetic frames ---------------------------------------------------


@pytest.fixture(scope="module")
def test_set(tmp_path_factory):
    """``megc-vqa synth-test`` frames (and ground truth) for the shared 2025 and 2026 v2 question files."""
    from megc_vqa.cli import main as cli

    root = tmp_path_factory.mktemp("testset")
    files = [*QUESTION_FILES, *sorted((REPO / "data/megc/2026").glob("*_v2_test_to_answer.jsonl"))]
    # one worker: forking a pytest process whose torch threads run can deadlock the children
    args = [
        "synth-test",
        "--questions",
        *map(str, files),
        "--out",
        str(root),
        "--size",
        "64",
        "--workers",
        "1",
    ]
    assert cli(args) == 0
    return root


@pytest.fixture(scope="module")
def engine():
    from megc_vqa.answering.engine import Engine, EngineOptions

    return Engine.load("tiny-qwen2.5-vl", options=EngineOptions(batch_size=20))


@pytest.fixture(scope="module")
def full_run(engine, test_set, tmp_path_factory):
    from megc_vqa.answering.run_vqa import run_vqa

    out = tmp_path_factory.mktemp("run")
    return run_vqa(QUESTION_FILES, test_set, "tiny-qwen2.5-vl", out, engine=engine, progress=False)


def test_run_vqa_writes_files_the_validator_accepts(full_run):
    from megc_vqa.submission.validate import validate_files

    names = sorted(p.name for p in full_run.prediction_files)
    assert names == ["me_vqa_casme3_test_pred.jsonl", "me_vqa_samm_test_pred.jsonl"]
    assert [p for p in validate_files([full_run.zip_path], QUESTION_FILES) if p.level == "error"] == []
    for pred, questions in zip(sorted(full_run.prediction_files), QUESTION_FILES, strict=True):
        rows = [json.loads(line) for line in pred.read_text().splitlines()]
        qrows = [json.loads(line) for line in questions.read_text().splitlines()]
        assert [r["video_id"] for r in rows] == [q["video_id"] for q in qrows]
        for r in rows:  # constrained decoding: every classification answer is in its format
            grammar = answer_grammar(r["question"])
            assert r["answer"] and (grammar is None or fullmatch(grammar, r["answer"])), r
    summary = json.loads((full_run.zip_path.parent / "run_summary.json").read_text())
    assert (
        summary["rows"] == 120 and summary["answered_this_run"] == 120 and summary["validator_errors"] == []
    )


def test_a_killed_run_resumes_to_identical_files(engine, full_run, test_set, tmp_path):
    from megc_vqa.answering.run_vqa import LOG_NAME, run_vqa

    class Killer:
        """The engine, killed (KeyboardInterrupt) during its third batch of clips."""

        def __init__(self, inner):
            self.inner, self.calls, self.options, self.name = inner, 0, inner.options, inner.name

        def answer_clips(self, *args, **kwargs):
            self.calls += 1
            if self.calls == 3:
                raise KeyboardInterrupt
            return self.inner.answer_clips(*args, **kwargs)

    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        run_vqa(QUESTION_FILES, test_set, "tiny-qwen2.5-vl", out, engine=Killer(engine), progress=False)
    logged = (out / LOG_NAME).read_text().splitlines()
    assert 1 < len(logged) < 121  # fingerprint + some answers, not all
    with (out / LOG_NAME).open("a") as fh:
        fh.write('{"key": "half a line')  # and killed mid-write
    result = run_vqa(QUESTION_FILES, test_set, "tiny-qwen2.5-vl", out, engine=engine, progress=False)
    assert result.summary["resumed_rows"] == len(logged) - 1
    for mine, reference in zip(result.prediction_files, full_run.prediction_files, strict=True):
        assert mine.read_bytes() == reference.read_bytes()


def test_missing_frames_are_listed_before_any_model_loads(tmp_path, test_set):
    from megc_vqa.answering.run_vqa import RunError, run_vqa

    frames = tmp_path / "frames"
    shutil.copytree(test_set / "frames", frames)
    for video in ("SAMM-3", "CAS-7", "CAS-12"):
        shutil.rmtree(frames / video)
    with pytest.raises(RunError) as err:  # a model name that cannot load proves nothing was loaded
        run_vqa(QUESTION_FILES, frames, "no-such-model", tmp_path / "out", progress=False)
    message = str(err.value)
    assert "3 video(s) have no frame folder" in message
    assert all(v in message for v in ("SAMM-3", "CAS-7", "CAS-12"))


def test_bad_question_files(tmp_path, test_set, engine):
    from megc_vqa.answering.run_vqa import RunError, run_vqa

    empty = tmp_path / "me_vqa_samm_test_to_answer.jsonl"
    empty.write_text("")
    with pytest.raises(RunError, match="no question rows"):
        run_vqa([empty], test_set, "tiny-qwen2.5-vl", tmp_path / "out", engine=engine, progress=False)
    odd = tmp_path / "odd_to_answer.jsonl"
    rows = [
        {"video_id": "samm_test_SAMM-1_1", "video": "SAMM-1", "question": T.COARSE_QUESTION, "answer": ""},
        {
            "video_id": "samm_test_SAMM-1_2",
            "video": "SAMM-1",
            "question": "What colour is the sky?",
            "answer": "",
        },
        {
            "video_id": "samm_test_SAMM-1_3",
            "video": "SAMM-1",
            "question": T.ANALYSIS_QUESTIONS[2],
            "answer": "",
        },
    ]
    odd.write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = run_vqa([odd], test_set, "tiny-qwen2.5-vl", tmp_path / "out2", engine=engine, progress=False)
    assert [u["video_id"] for u in result.summary["unknown_questions"]] == ["samm_test_SAMM-1_2"]
    answers = [json.loads(line)["answer"] for line in result.prediction_files[0].read_text().splitlines()]
    assert all(a.strip() for a in answers) and answers[0] in ("negative", "positive", "surprise")


def test_adapter_for_another_base_model_is_refused(tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from megc_vqa.answering.engine import Engine, EngineError

    other = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))  # fmt: skip
    peft_model = get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.peft_config["default"].base_model_name_or_path = "someone/other-text-model"
    peft_model.save_pretrained(tmp_path / "adapter")
    with pytest.raises(EngineError, match=r"does not fit model 'tiny-qwen2.5-vl'.*someone/other-text-model"):
        Engine.load("tiny-qwen2.5-vl", tmp_path / "adapter")


def test_adapter_loads_onto_its_base_and_alone(tmp_path):
    import torch
    from peft import LoraConfig, get_peft_model

    from megc_vqa.answering.engine import Engine
    from megc_vqa.models.registry import load_model

    base = load_model("tiny-qwen2.5-vl", dtype="float32")
    lora = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False))
    lora.save_pretrained(tmp_path / "lora")
    saved = {k: v for k, v in lora.state_dict().items() if "lora_B" in k}
    for engine in (Engine.load("tiny-qwen2.5-vl", tmp_path / "lora"), Engine.load(tmp_path / "lora")):
        loaded = {k: v for k, v in engine.model.state_dict().items() if "lora_B" in k}
        assert len(loaded) == len(saved) > 0
        assert all(torch.equal(a, b) for a, b in zip(saved.values(), loaded.values(), strict=True))


# -- the REPL ----------------------------------------------------------------------------------------------


class FakeVisual:
    def __init__(self, name):
        import numpy as np

        self.images = tuple(np.full((8, 8, 3), i * 60, np.uint8) for i in range(4))
        self.frame_indices = (1, 5, 9)
        self.description = f"onset 1, apex 5, offset 9 + flow of {name}"


def test_repl_session_with_a_fake_answerer(tmp_path):
    out = io.StringIO()
    seen = []
    session = Session(
        answer=lambda visual, q: seen.append((visual.description, q)) or "negative",
        load_visual=lambda req: FakeVisual(req.path.name),
        clip=ClipRequest(tmp_path / "clipA"),
        sheet_path=tmp_path / "sheet.png",
        out=out,
    )
    lines = iter([T.COARSE_QUESTION, ":frames", ":clip", f":clip {tmp_path / 'clipB'}", "Why?", ":nope",
                  f":save {tmp_path / 't.jsonl'}", ":quit", "never read"])  # fmt: skip
    assert session.loop(lambda: next(lines)) == 0
    text = out.getvalue()
    assert "negative\n  (" in text and "usage: :clip" in text and "unknown command :nope" in text
    assert (tmp_path / "sheet.png").stat().st_size > 0
    assert [s[0].split()[-1] for s in seen] == ["clipA", "clipB"]
    transcript = [json.loads(line) for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert [t["question"] for t in transcript] == [T.COARSE_QUESTION, "Why?"]


def test_megc_vqa_ask_through_stdin(test_set, tmp_path):
    clip = test_set / "frames" / "SAMM-1"
    script = f"{T.COARSE_QUESTION}\n:frames\n{T.AU_QUESTION_SINGULAR}\n:save {tmp_path / 't.jsonl'}\n"
    proc = subprocess.run(
        [sys.executable, "-m", "megc_vqa", "ask", "--model", "tiny-qwen2.5-vl", "--clip", str(clip),
         "--sheet", str(tmp_path / "sheet.png")],
        input=script, capture_output=True, text=True, timeout=300, cwd=REPO,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    answers = [json.loads(line)["answer"] for line in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert answers[0] in ("negative", "positive", "surprise")
    assert fullmatch(answer_grammar(T.AU_QUESTION_SINGULAR), answers[1])
    assert "the model sees: onset" in proc.stdout and (tmp_path / "sheet.png").is_file()


def test_shared_image_processing_gives_the_processors_own_inputs(engine):
    import numpy as np
    import torch

    from megc_vqa.visual.samplers import VisualInputs

    rng = np.random.default_rng(0)

    def visual():
        images = tuple(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8) for _ in range(4))
        return VisualInputs(images, np.stack(images[:3]), (1, 2, 3), 10.0, "onset 1, apex 2, offset 3 + flow")

    a, b = visual(), visual()
    rows = ([T.COARSE_QUESTION, T.JOINT_QUESTION_PLURAL, T.FINE_QUESTION, PRESENCE_Q], [a, a, b, b])
    shared = engine.decoder._encode(*rows)
    engine.decoder.share_images = False
    try:
        plain = engine.decoder._encode(*rows)
    finally:
        engine.decoder.share_images = True
    assert set(shared) == set(plain)
    assert all(torch.equal(shared[k], plain[k]) for k in plain)


# -- Docker (not built here: check that what it runs exists) ---------------------------------------------


def test_dockerfile_runs_only_what_the_project_has():
    import fnmatch
    import importlib
    import re
    import shlex

    from megc_vqa.cli import COMMANDS

    tomllib = pytest.importorskip("tomllib")  # Python 3.11+

    text = (REPO / "Dockerfile").read_text()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    instructions = [
        line.split(None, 1) for line in lines if line.strip() and not line.lstrip().startswith("#")
    ]
    assert instructions[0][0] == "FROM" and instructions[0][1].startswith("nvidia/cuda:")
    assert "runtime" in instructions[0][1]
    ignored = [
        p.strip() for p in (REPO / ".dockerignore").read_text().splitlines() if p.strip() and p[0] != "#"
    ]
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    for op, args in instructions:
        if op == "COPY":
            *sources, _ = shlex.split(args)
            for src in sources:
                assert (REPO / src).exists(), f"COPY {src}: not in the project"
                assert not any(fnmatch.fnmatch(src, pat) for pat in ignored), (
                    f"COPY {src} is in .dockerignore"
                )
        if op == "RUN" and "pip install" in args:
            for extra in re.findall(r'"\.\[([\w,]+)\]"', args):
                assert set(extra.split(",")) <= set(pyproject["project"]["optional-dependencies"])
    entry = json.loads(dict(instructions)["ENTRYPOINT"])
    target = pyproject["project"]["scripts"][entry[0]]
    module, func = target.split(":")
    assert callable(getattr(importlib.import_module(module), func))
    assert json.loads(dict(instructions)["CMD"]) == ["--help"]
    # the usage in the header names commands and scripts that exist
    assert "ask" in COMMANDS
    for script in re.findall(r"\b((?:eval|recipes)/\w+\.py)", text):
        assert (REPO / script).is_file(), script


# -- the demo (slow: about 3-5 minutes on 2 cores) ----------------------------------------------------------


@pytest.mark.slow
def test_make_demo_reaches_the_coarse_bar(tmp_path):
    import time

    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "megc_vqa.demo", "--out", str(tmp_path / "demo")],
        capture_output=True, text=True, cwd=REPO, timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "MEGC_VQA_CACHE": str(tmp_path / "cache")},
    )  # fmt: skip
    elapsed = time.perf_counter() - start
    assert proc.returncode == 0, proc.stderr[-3000:]
    scores = json.loads((tmp_path / "demo" / "scores.json").read_text())
    assert "leaderboard files:" in proc.stdout and "submission.zip" in proc.stdout
    assert scores["overall"]["uf1_coarse"] >= 0.9, proc.stdout[-3000:]
    assert elapsed < 600


def test_grammar_regexes_for_regex_guided_backends():
    import re

    cases = {
        T.COARSE_QUESTION: (["surprise"], ["surprised", "Surprise"]),
        T.AU_QUESTION_PLURAL: (["brow lowerer, lip corner puller"], ["brow lowerer", "brow lowerer,lips part"]),
        T.JOINT_QUESTION_SINGULAR: ([T.joint_answer(["jaw drop"], "surprise", "surprise")],
                                    [T.joint_answer(["jaw drop", "eyes left"], "surprise", "surprise")]),
        "What is the expression type of the 2-th expression event in this video?": (["macro-expression"], ["macro"]),
    }  # fmt: skip
    for question, (good, bad) in cases.items():
        pattern = answer_grammar(question).regex()
        assert all(re.fullmatch(pattern, a) for a in good), question
        assert not any(re.fullmatch(pattern, a) for a in bad), question


def test_vllm_backend_is_optional(tmp_path, test_set):
    from megc_vqa.answering.run_vqa import RunError, run_vqa
    from megc_vqa.answering.vllm_backend import vllm_available

    if vllm_available():
        pytest.skip("vllm is installed here")
    with pytest.raises(RunError, match="needs the vllm package"):
        run_vqa(QUESTION_FILES, test_set, "tiny-qwen2.5-vl", tmp_path, backend="vllm", progress=False)


def test_voting_returns_a_majority_of_valid_samples(engine, test_set):
    from megc_vqa.answering.engine import Engine, EngineOptions
    from megc_vqa.answering.run_vqa import _visual_inputs, plan_jobs

    job = plan_jobs(QUESTION_FILES[:1], test_set)[0]
    visual = _visual_inputs(job, engine.contract, None)
    voter = Engine(engine.model, engine.processor, EngineOptions(votes=3, temperature=1.0, consistency=False))
    questions = [r.question for r in job.rows]
    [(answers, _)] = voter.answer_clips([(visual, questions)], sample_seed=1)
    for q, a in zip(questions, answers, strict=True):
        assert len(a.samples) == 3
        assert a.text in a.samples and a.samples.count(a.text) == max(map(a.samples.count, a.samples))
        assert fullmatch(answer_grammar(q), a.text)


def test_unreadable_clip_gets_listed_fallbacks(engine, test_set, tmp_path):
    from megc_vqa.answering.run_vqa import run_vqa

    frames = tmp_path / "frames"
    shutil.copytree(test_set / "frames", frames)
    for f in (frames / "SAMM-2").iterdir():
        f.unlink()  # the folder exists but holds no frames
    samm = [q for q in QUESTION_FILES if "samm" in q.name]
    result = run_vqa(samm, tmp_path, "tiny-qwen2.5-vl", tmp_path / "out", engine=engine, progress=False)
    fallbacks = result.summary["fallback_rows"]
    assert {f["video_id"] for f in fallbacks} == {f"samm_test_SAMM-2_{k}" for k in range(1, 6)}
    assert all("visual inputs failed" in f["reason"] for f in fallbacks)
    assert result.summary["validator_errors"] == []


def test_eval_script_interrupted_exits_cleanly(monkeypatch, capsys, tmp_path):
    import importlib.util

    import megc_vqa.answering.run_vqa as rv

    spec = importlib.util.spec_from_file_location("eval_run_vqa", REPO / "eval" / "run_vqa.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rv, "run_vqa", interrupted)
    rc = script.main(["--questions", str(QUESTION_FILES[0]), "--frames-root", str(tmp_path), "--model", "m",
                      "--out", str(tmp_path / "o")])  # fmt: skip
    assert rc == 130 and "rerun the same command to resume" in capsys.readouterr().err


def test_2026_v2_file_with_ground_truth_is_answered_and_scored(engine, test_set, tmp_path):
    from megc_vqa.answering.engine import Engine, EngineOptions
    from megc_vqa.answering.run_vqa import run_vqa

    # the untrained model babbles until the length bound: keep free answers short here
    short = Engine(engine.model, engine.processor, EngineOptions(free_max_new_tokens=24))

    questions = REPO / "data/megc/2026/me_vqa_samm_v2_test_to_answer.jsonl"
    gt = test_set / "gt" / questions.name  # synth-test's answers for its frames
    out = tmp_path / "out"
    result = run_vqa(
        [questions], test_set, "tiny-qwen2.5-vl", out, engine=short, gt_files=[gt], progress=False
    )
    assert [p.name for p in result.prediction_files] == ["me_vqa_samm_v2_test_pred.jsonl"]
    answers = [json.loads(line) for line in result.prediction_files[0].read_text().splitlines()]
    analysis = [a["answer"] for a in answers if T.classify_question(a["question"]) == "analysis"]
    assert len(analysis) == 7 and all(a.strip() for a in analysis)
    scores = json.loads((out / "scores.json").read_text())
    assert scores["overall"]["n_rows"] == 35 and scores["samm"]["n_rows"] == 35
    assert 0.0 <= scores["overall"]["uf1_coarse"] <= 1.0
    assert (out / "report.md").is_file() and "score_table" in result.summary


def test_vision_tower_runs_once_per_clip_with_the_same_answers(engine, monkeypatch):
    import numpy as np

    from megc_vqa.visual.samplers import VisualInputs

    inner = engine.model.base_model
    plain = type(inner).get_image_features
    encoded = []

    def counting(self, pixel_values, image_grid_thw=None, **kwargs):
        encoded.append(len(image_grid_thw))
        return plain(self, pixel_values, image_grid_thw, **kwargs)

    monkeypatch.setattr(type(inner), "get_image_features", counting)
    rng = np.random.default_rng(1)
    clips = [VisualInputs(tuple(rng.integers(0, 255, (60, 80, 3), dtype=np.uint8) for _ in range(4)), None,
                          (1, 2, 3), 10.0, "") for _ in range(2)]  # fmt: skip
    questions = [T.COARSE_QUESTION, T.FINE_QUESTION, PRESENCE_Q] * 2
    visuals = [clips[0]] * 3 + [clips[1]] * 3
    shared = engine.generate(questions, visuals)
    engine.decoder.share_images = False
    try:
        separate = engine.generate(questions, visuals)
    finally:
        engine.decoder.share_images = True
    assert encoded == [8, 24]  # 2 clips x 4 images, then 6 rows x 4 images
    assert shared == separate


def test_a_clip_of_a_known_dataset_is_answered_among_its_own_fine_labels(engine, monkeypatch):
    """Fine and joint answers of a SAMM clip can never be repression, of a CASME II clip never anger or
    contempt; a clip of no known dataset (or with dataset_labels off) keeps every label."""
    import numpy as np

    from megc_vqa.answering.engine import Engine, EngineOptions
    from megc_vqa.answering.grammar import DEFAULT_VOCAB
    from megc_vqa.answering.run_vqa import clip_dataset
    from megc_vqa.labels import KNOWN_FINE
    from megc_vqa.qa.records import QuestionRow
    from megc_vqa.visual.samplers import VisualInputs

    rng = np.random.default_rng(0)
    visual = VisualInputs((rng.integers(0, 255, (56, 56, 3), dtype=np.uint8),), None, (), 10.0, "")
    questions = [T.COARSE_QUESTION, T.FINE_QUESTION, T.JOINT_QUESTION_PLURAL]
    seen: list[list[object]] = []
    decode = engine.decoder.decode

    def spy(requests, sampling):
        seen.append([r.grammar for r in requests])
        return decode(requests, sampling)

    monkeypatch.setattr(engine.decoder, "decode", spy)

    def allowed(grammars: list[object]) -> set[str]:
        fine = [g for g in grammars if g is not None and fullmatch(g, "happiness")]
        assert len(fine) == 1  # the fine question's grammar (the others never accept a bare label)
        return {label for label in DEFAULT_VOCAB.fine if fullmatch(fine[0], label)}

    for dataset in ("samm", "casme2", "casme3", None, "smic"):
        seen.clear()
        [(answers, _)] = engine.answer_clips([(visual, questions)], datasets=[dataset])
        known = dataset in ("samm", "casme2", "casme3")
        expected = set(DEFAULT_VOCAB.fine) & KNOWN_FINE[dataset] if known else set(DEFAULT_VOCAB.fine)
        assert allowed(seen[0]) == expected, dataset  # the first call holds the one-label questions
        assert answers[1].text in expected
        joint_fine = re.search(r"fine-grained expression class is (\w+),", answers[2].text)
        assert joint_fine and joint_fine.group(1) in expected, answers[2].text
    assert "repression" not in DEFAULT_VOCAB.for_dataset("samm").fine
    assert {"anger", "contempt"}.isdisjoint(DEFAULT_VOCAB.for_dataset("casme2").fine)
    plain = Engine(engine.model, engine.processor, EngineOptions(dataset_labels=False))
    assert plain.clip_vocab("samm") == plain.options.vocab
    with pytest.raises(ValueError, match="2 clips but 1 datasets"):
        engine.answer_clips([(visual, questions)] * 2, datasets=["samm"])
    # The organisers' files name the dataset in every video id and in the file name.
    row = QuestionRow("samm_test_SAMM-1_1", "SAMM-1", T.COARSE_QUESTION)
    assert clip_dataset(Path("me_vqa_samm_test_to_answer.jsonl"), row) == "samm"
    row = QuestionRow("CAS-2_1", "CAS-2", T.COARSE_QUESTION)
    assert clip_dataset(Path("me_vqa_casme3_v2_test_to_answer.jsonl"), row) == "casme3"
    assert clip_dataset(Path("questions.jsonl"), QuestionRow("x_1", "x", T.COARSE_QUESTION)) is None


def test_consistency_variants_decode_once_and_match_separate_runs(engine, monkeypatch):
    """answer_clips_variants([True, False]) gives exactly what two answer_clips runs give (consistency
    on, then off) with the decoding calls of the first run alone."""
    import dataclasses

    import numpy as np

    from megc_vqa.visual.samplers import VisualInputs

    rng = np.random.default_rng(3)
    clips = [
        (VisualInputs((rng.integers(0, 255, (56, 56, 3), dtype=np.uint8),), None, (), 10.0, ""), questions)
        for questions in ([T.COARSE_QUESTION, T.FINE_QUESTION, T.JOINT_QUESTION_PLURAL], [T.FINE_QUESTION])
        * 3
    ]
    datasets = ["samm", "casme2", "casme3", None, "samm", "casme2"]
    calls: list[int] = []
    decode = engine.decoder.decode

    def counting(requests, sampling):
        calls.append(len(requests))
        return decode(requests, sampling)

    monkeypatch.setattr(engine.decoder, "decode", counting)
    separate, decoded = [], []
    for consistent in (True, False):
        monkeypatch.setattr(engine, "options", dataclasses.replace(engine.options, consistency=consistent))
        calls.clear()
        separate.append(engine.answer_clips(clips, sample_seed=5, datasets=datasets))
        decoded.append(sum(calls))
    calls.clear()
    variants = engine.answer_clips_variants(clips, [True, False], sample_seed=5, datasets=datasets)
    assert variants == separate
    assert sum(calls) == decoded[0] < decoded[0] + decoded[1]  # the consistent run's decoding alone
    assert all(not changes for _, changes in variants[1])
