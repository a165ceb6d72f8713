"""Hostile but realistic inputs, replayed from issue 10: each gives one clear line naming the file, row, key
or option, a meaningful exit status, and nothing half-written. Tiny synthetic data, no model weights; the
few cases that load the tiny model share it. Each test names the bullet it replays."""

from __future__ import annotations

import importlib.util
import io
import json
import os
import subprocess
import sys
import zipfile
from argparse import Namespace
from pathlib import Path

import pytest

from megc_vqa.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
SAMM_2025 = REPO / "data/megc/2025/me_vqa_samm_test_to_answer.jsonl"
SPOT_RECIPE = REPO / "recipes/spotting/synth.yaml"


def script(name: str):
    """An eval/, data_prep/ or recipes/ script as a module (its ``main(argv)`` is the command)."""
    folder, _, stem = name.rpartition("/")
    spec = importlib.util.spec_from_file_location(f"script_{stem}", REPO / folder / f"{stem}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def jpeg(size: int = 32, value: int = 128) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (size, size), value).save(buffer, "JPEG")
    return buffer.getvalue()


def last_line(text: str) -> str:
    return [line for line in text.splitlines() if line.strip()][-1]


@pytest.fixture(autouse=True)
def _log_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MEGC_VQA_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# --- 2. one error boundary per command ------------------------------------------------------------------


def test_unexpected_error_says_where_the_traceback_is(tmp_path, capsys):
    from megc_vqa.errors import run_command

    def broken(argv):
        raise KeyError("surprise")

    assert run_command(broken, []) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unexpected KeyError: 'surprise' (full traceback in ")
    written = list((tmp_path / "logs").glob("traceback-*.txt"))
    assert len(written) == 1 and "KeyError" in written[0].read_text()


@pytest.mark.parametrize(
    "name,argv,message",
    [
        ("eval/run_lvqa", ["--questions", "nope.jsonl", "--videos-root", ".", "--out", "o"],
         "--questions nope.jsonl: no such question file"),
        ("eval/run_str", ["--videos-root", "nope", "--out", "o"], "--videos-root nope: not a folder"),
        ("eval/score", ["str", "--pred", "nope.csv", "--gt", "nope.csv"], "nope.csv: no such file"),
        ("eval/validate", ["x.jsonl", "--questions", "nope.jsonl"], "--questions nope.jsonl: no such question file"),
        ("data_prep/prep", ["--data-root", "nope", "--out", "o"], "--data-root nope: no such folder"),
    ],
)  # fmt: skip
def test_every_script_has_the_boundary(name, argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert script(name).main(argv) == 2
    assert message in last_line(capsys.readouterr().err)


FAKE_LAUNCHER = """
import os, subprocess, sys
# what accelerate's simple launcher does: run the child, raise CalledProcessError (a traceback) when it fails
child = subprocess.Popen([sys.executable, "-c", sys.argv[1]], env=dict(os.environ, ACCELERATE_USE_CPU="True"))
child.wait()
if child.returncode:
    raise subprocess.CalledProcessError(child.returncode, ["child"])
"""
CHILD = """
import sys
from megc_vqa.errors import UsageError, run_command
def main(argv):
    raise UsageError("--max_steps must be at least 1 (got -5)")
sys.exit(run_command(main))
"""


def test_under_a_launcher_the_message_comes_last(tmp_path):
    launcher = tmp_path / "accelerate"
    launcher.write_text(FAKE_LAUNCHER)
    proc = subprocess.run(
        [sys.executable, str(launcher), CHILD, "launch"], capture_output=True, text=True, timeout=60,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert proc.returncode != 0 and "CalledProcessError" in proc.stderr
    assert last_line(proc.stderr) == "error: --max_steps must be at least 1 (got -5)"


@pytest.mark.slow
def test_real_accelerate_launch_ends_with_the_projects_message(tmp_path):
    (tmp_path / "bad.yaml").write_text("max_stepz: 3\n")
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "accelerate"), "launch", "--cpu", "--num_processes", "1",
         str(REPO / "recipes/finetune.py"), "--config", "bad.yaml"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
        env={**os.environ, "TRANSFORMERS_OFFLINE": "1"},
    )  # fmt: skip
    assert proc.returncode != 0 and "CalledProcessError" in proc.stderr
    assert last_line(proc.stderr).startswith(
        "error: bad.yaml: unknown key(s) 'max_stepz' (did you mean max_steps"
    )


# --- 3. numbers and keys checked up front ---------------------------------------------------------------


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--batch-size", "0"], "--batch-size must be at least 1 (got 0)"),
        (["--batch-size", "-3"], "--batch-size must be at least 1 (got -3)"),
        (["--votes", "0"], "--votes must be at least 1 (got 0)"),
        (["--votes", "3", "--temperature", "0"], "--votes 3 samples answers, which needs --temperature above 0"),
        (["--max-fallback-share", "2"], "--max-fallback-share must be at least 0 and at most 1 (got 2.0)"),
    ],
)  # fmt: skip
def test_run_vqa_options(extra, message, tmp_path, capsys):
    argv = [
        "--questions",
        str(SAMM_2025),
        "--frames-root",
        str(tmp_path),
        "--model",
        "m",
        "--out",
        str(tmp_path / "o"),
    ]
    assert script("eval/run_vqa").main([*argv, *extra]) == 2
    err = last_line(capsys.readouterr().err)
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "o").exists()  # refused before anything was written


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--epochs", "0"], "--epochs must be at least 1 (got 0)"),
        (["--epochs", "-2"], "--epochs must be at least 1 (got -2)"),
        (["--gt", "REPLACE.csv"], "is an STR CSV: also give --videos-root"),
        (["--recipe", "nope.yaml"], "spotting recipe nope.yaml does not exist"),
    ],
)
def test_spot_train_options(extra, message, tmp_path, capsys):
    gt = tmp_path / "gt.csv"
    gt.write_text("subject,video,onset,offset,emotion\n1,a,1,5,negative\n")
    extra = [str(gt) if e == "REPLACE.csv" else e for e in extra]
    argv = ["spot-train", "--recipe", str(SPOT_RECIPE), "--out", str(tmp_path / "o"), *extra]
    assert cli(argv) == 2
    assert message in last_line(capsys.readouterr().err)


@pytest.mark.parametrize(
    "recipe,message",
    [
        ("model: {n_framez: 8}", "model: unknown key(s) 'n_framez' (did you mean n_frames?)"),
        ("peaks: {treshold: 0.3}", "peaks: unknown key(s) 'treshold' (did you mean threshold?)"),
        ("train: {epoch: 3}", "train: unknown key(s) 'epoch' (did you mean epochs?)"),
        ("data: {gt_cvs: x.csv}", "data: unknown key(s) 'gt_cvs' (did you mean gt_csv?)"),
        ("modle: {size: 64}", "unknown recipe section(s) 'modle' (did you mean model?)"),
        ("train: {epochs: 0}", "train.epochs must be at least 1 (got 0)"),
        ("peaks: {threshold: 7}", "peaks.threshold must be at least 0 and at most 1 (got 7)"),
        ("model: {size: 8}", "size must be a multiple of 16"),
        ("model: [1, 2]", "section model: expected key: value lines, got list"),
        ("train: {micro_cuts: [0.6]}\npeaks: {typing: channel}", "only peaks.typing: duration uses"),
    ],
)
def test_spotting_recipe_keys(recipe, message, tmp_path, capsys):
    path = tmp_path / "r.yaml"
    path.write_text(recipe + "\n")
    assert cli(["spot-train", "--recipe", str(path), "--out", str(tmp_path / "o")]) == 2
    err = last_line(capsys.readouterr().err)
    assert err.startswith(f"error: {path}") and message in err


def test_spotting_recipe_data_section(tmp_path, capsys):
    for data, message in (("{gt_csv: nope.csv, videos_root: v}", "recipe data.gt_csv nope.csv: no such file"),
                          ("{long_videos_jsonl: x.jsonl, fps: 0}", "data.fps must be greater than 0 (got 0)")):  # fmt: skip
        (tmp_path / "r.yaml").write_text(f"data: {data}\n")
        assert cli(["spot-train", "--recipe", str(tmp_path / "r.yaml"), "--out", str(tmp_path / "o")]) == 2
        assert message in last_line(capsys.readouterr().err)


def test_fine_tune_recipe_ranges(tmp_path):
    from megc_vqa.training.config import ConfigError, parse_config

    qa = tmp_path / "qa.jsonl"
    qa.write_text("{}\n")
    base = [
        "--config",
        str(REPO / "recipes/tiny/lora.yaml"),
        "--train_file",
        str(qa),
        "--output_dir",
        str(tmp_path),
    ]
    for extra, message in (
        (["--max_steps", "-5"], "max_steps must be -1 (train num_train_epochs) or at least 1 (got -5)"),
        (["--per_device_train_batch_size", "0"], "per_device_train_batch_size must be at least 1 (got 0)"),
        (["--learning_rate", "-1"], "learning_rate must be greater than 0 (got -1.0)"),
    ):
        with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
            parse_config([*base, *extra])


# --- 4. a run made of fallbacks fails -------------------------------------------------------------------


def test_run_vqa_fails_when_too_many_rows_fell_back(tmp_path, monkeypatch, capsys):
    import megc_vqa.answering.run_vqa as rv

    rows = 20
    summary = {
        "rows": rows, "answered_this_run": rows, "resumed_rows": 0, "unknown_questions": [],
        "consistency_changes": 0, "validator_errors": [], "validator_warnings": [], "prediction_files": [],
        "submission_zip": "s.zip", "summary_file": "run_summary.json", "run": {"settings": {}},
        "fallback_rows": [{"file": "f", "video_id": f"v{i}", "question": "q", "answer": "negative",
                           "reason": "generate failed: RuntimeError: shapes"} for i in range(3)],
    }  # fmt: skip
    monkeypatch.setattr(rv, "run_vqa", lambda *a, **k: rv.RunResult([], Path("s.zip"), summary))
    argv = [
        "--questions",
        str(SAMM_2025),
        "--frames-root",
        str(tmp_path),
        "--model",
        "m",
        "--out",
        str(tmp_path / "o"),
    ]
    assert script("eval/run_vqa").main(argv) == 1
    err = last_line(capsys.readouterr().err)
    assert err.startswith(
        "error: 3 of 20 rows (15%) got a fallback answer, more than --max-fallback-share 0.05"
    )
    assert "generate failed: RuntimeError: shapes" in err
    assert script("eval/run_vqa").main([*argv, "--max-fallback-share", "0.2"]) == 0


def test_adapter_for_another_model_stops_before_any_row(tmp_path, capsys):
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    other = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))  # fmt: skip
    peft_model = get_peft_model(other, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft_model.peft_config["default"].base_model_name_or_path = "someone/other-text-model"
    peft_model.save_pretrained(tmp_path / "adapter")
    (tmp_path / "frames" / "clip").mkdir(parents=True)
    for i in range(1, 4):
        (tmp_path / "frames" / "clip" / f"img{i}.jpg").write_bytes(jpeg())
    questions = tmp_path / "q_to_answer.jsonl"
    questions.write_text(json.dumps({"video_id": "clip_1", "video": "clip", "question": "What is the coarse "
                                     "expression class?", "answer": ""}) + "\n")  # fmt: skip
    argv = ["--questions", str(questions), "--frames-root", str(tmp_path / "frames"), "--model", "tiny-qwen2.5-vl",
            "--adapter", str(tmp_path / "adapter"), "--out", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    assert script("eval/run_vqa").main(argv) == 2
    assert "does not fit model 'tiny-qwen2.5-vl'" in last_line(capsys.readouterr().err)
    log = (tmp_path / "out" / "answers.jsonl").read_text().splitlines()
    assert len(log) == 1 and "_fingerprint" in log[0]  # no row was answered


# --- 5. prep opens every frame --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    args = ["synth", "--out", str(root), "--datasets", "casme2", "--subjects", "2", "--clips-per-subject", "2",
            "--size", "32", "--workers", "1"]  # fmt: skip
    assert cli(args) == 0
    return root


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _clip_frames(root: Path) -> list[dict]:
    qa = root / "p0" / "qa.jsonl"
    rows = [json.loads(line) for line in qa.read_text().splitlines()]
    for r in rows:  # qa.jsonl stores frame folders relative to itself
        r["source"] = str((qa.parent / r["source"]).resolve())
    return list({r["image_id"]: r for r in rows}.values())


@pytest.fixture(scope="module")
def prepped(synth_root):
    assert (
        cli(["prep", "--data-root", str(synth_root), "--out", str(synth_root / "p0"), "--no-progress"]) == 0
    )
    return _clip_frames(synth_root)


def test_prep_duplicate_frame_number_names_both_files(synth_root, prepped, tmp_path, capsys):
    data = _copy(synth_root, tmp_path / "d")
    clip = prepped[0]
    folder = data / Path(clip["source"]).relative_to(synth_root.resolve())
    n = clip["onset"] + 1
    (folder / f"img0{n}.jpg").write_bytes((folder / f"img{n}.jpg").read_bytes())
    assert cli(["prep", "--data-root", str(data), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = last_line(capsys.readouterr().err)
    assert f"files img0{n}.jpg and img{n}.jpg both give frame number {n}" in err and str(folder) in err


def test_prep_bad_and_missing_frames_are_reported(synth_root, prepped, tmp_path, caplog, capsys):
    data = _copy(synth_root, tmp_path / "d")
    empty, text, gap = prepped[:3]

    def folder(clip):
        return data / Path(clip["source"]).relative_to(synth_root.resolve())

    (folder(empty) / f"img{empty['onset'] + 2}.jpg").write_bytes(b"")
    (folder(text) / f"img{text['offset']}.jpg").write_text("not a picture")
    (folder(gap) / f"img{gap['onset']}.jpg").unlink()
    with caplog.at_level("WARNING"):
        assert cli(["prep", "--data-root", str(data), "--out", str(tmp_path / "o"), "--no-progress"]) == 0
    skips = [json.loads(line) for line in (tmp_path / "o" / "skips.jsonl").read_text().splitlines()]
    frames = {s["detail"].split(":")[0]: s for s in skips if s["stage"] == "frames"}
    assert f"img{empty['onset'] + 2}.jpg: empty file (0 bytes)" in frames[empty["image_id"]]["detail"]
    assert f"img{text['offset']}.jpg: not an image file" in frames[text["image_id"]]["detail"]
    assert (
        f"onset frame {gap['onset']} is missing, frame {gap['onset'] + 1} is used instead"
        in (frames[gap["image_id"]]["detail"])
    )
    assert "is used instead" in caplog.text and "skipped: " in caplog.text  # at WARNING
    out = capsys.readouterr().out
    assert "2 x unreadable frame" in out and "1 x missing key frame" in out
    records = [json.loads(line) for line in (tmp_path / "o" / "qa.jsonl").read_text().splitlines()]
    before = (synth_root / "p0" / "qa.jsonl").read_text().splitlines()
    kept_before = {json.loads(line)["image_id"] for line in before}
    # the two clips with unreadable frames are dropped; the gap clip is kept and starts one frame later
    assert {r["image_id"] for r in records} == kept_before - {empty["image_id"], text["image_id"]}
    assert {r["onset"] for r in records if r["image_id"] == gap["image_id"]} == {gap["onset"] + 1}


def test_out_naming_a_file(synth_root, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert cli(["prep", "--data-root", str(synth_root), "--out", str(tmp_path / "file")]) == 2
    assert "--out " in capsys.readouterr().err
    argv = [
        "--questions",
        str(SAMM_2025),
        "--frames-root",
        str(tmp_path),
        "--model",
        "m",
        "--out",
        str(tmp_path / "file"),
    ]
    assert script("eval/run_vqa").main(argv) == 2
    assert "is a file, not a folder" in last_line(capsys.readouterr().err)


# --- 6. resume and files written whole ------------------------------------------------------------------


def test_garbage_line_in_the_answer_log(tmp_path):
    from megc_vqa.answering.answer_log import AnswerLog, LogMismatchError

    path = tmp_path / "answers.jsonl"
    AnswerLog(path, {"model": "m"}).append({"key": "a:1", "answer": "negative"})
    with path.open("a") as fh:
        fh.write("garbage }{\n")
    with pytest.raises(LogMismatchError, match=r"answers.jsonl, line 3: not JSON .*delete that line"):
        AnswerLog(path, {"model": "m"})
    path.write_text("not a log\n")
    with pytest.raises(LogMismatchError, match="line 1: not the answer log's header line"):
        AnswerLog(path, {"model": "m"})


def test_empty_adapter_config_names_the_file(tmp_path, capsys):
    (tmp_path / "adapter").mkdir()
    (tmp_path / "adapter" / "adapter_config.json").write_text("")
    from megc_vqa.answering.engine import check_adapter
    from megc_vqa.errors import InputError

    with pytest.raises(InputError, match=r"adapter_config.json: empty adapter config"):
        check_adapter(tmp_path / "adapter")
    (tmp_path / "adapter" / "adapter_config.json").write_text("{cut")
    with pytest.raises(InputError, match=r"adapter_config.json: not a valid adapter config"):
        check_adapter(tmp_path / "adapter")


def test_incomplete_checkpoints_are_skipped(tmp_path, caplog):
    from megc_vqa.training.finetune import last_complete_checkpoint

    for step, files in ((1, ("trainer_state.json", "adapter_model.safetensors")), (2, ("adapter_model.safetensors",)),
                        (3, ("trainer_state.json",))):  # fmt: skip
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        for name in files:
            (folder / name).write_text(json.dumps({"global_step": step}) if name.endswith(".json") else "w")
    with caplog.at_level("WARNING"):
        assert last_complete_checkpoint(tmp_path) == tmp_path / "checkpoint-1"
    assert "checkpoint-3 is incomplete (no model weights" in caplog.text
    assert "checkpoint-2 is incomplete (no trainer_state.json" in caplog.text


def test_str_resume_survives_a_cut_line_and_the_csv_is_whole(tmp_path):
    from megc_vqa.spotting.pipeline import STRConfig, STRRunner

    out = tmp_path / "run"
    out.mkdir()
    (out / "progress.jsonl").write_text('{"name": "6_1", "n_intervals": 1}\n{"name": "6_')
    (out / "intervals.jsonl").write_text(
        '{"name": "6_1", "subject": "6", "video": "1", "fps": 30, "intervals": []}\n'
    )
    (out / "str_pred.csv").write_text("subject,video,onset,offset,emotion\n6,1,3,9,negative\n6,2,1,")
    runner = STRRunner(
        out, None, {"mode": "relative", "threshold": 0.5}, STRConfig(emotion="constant", plots=False)
    )
    assert runner.done == {"6_1"}
    assert (
        out / "str_pred.csv"
    ).read_bytes() == b"subject,video,onset,offset,emotion\r\n6,1,3,9,negative\r\n"


# --- 7. validator and scorer agree ----------------------------------------------------------------------


@pytest.fixture
def answered(tmp_path) -> Path:
    rows = [json.loads(line) for line in SAMM_2025.read_text().splitlines()]
    for r in rows:
        r["answer"] = "negative"
    path = tmp_path / "me_vqa_samm_test_pred.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_validate_without_questions_accepts_a_correct_zip(answered, tmp_path, capsys):
    archive = tmp_path / "submission.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.write(answered, answered.name)
    assert script("eval/validate").main([str(archive)]) == 0
    assert "0 error(s)" in capsys.readouterr().err


def test_broken_zips_are_named_as_such(answered, tmp_path, capsys):
    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as zf:
        zf.write(answered, answered.name)
    cases = {"cut.zip": good.read_bytes()[:60], "zero.zip": b""}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    with zipfile.ZipFile(tmp_path / "none.zip", "w"):
        pass
    with zipfile.ZipFile(tmp_path / "dup.zip", "w") as zf, pytest.warns(UserWarning, match="Duplicate name"):
        zf.write(answered, answered.name)
        zf.write(answered, answered.name)
    with zipfile.ZipFile(tmp_path / "nested.zip", "w") as zf:
        zf.write(answered, f"run/{answered.name}")
    expected = {
        "cut.zip": "cut.zip: error: not a readable zip archive (corrupt or truncated",
        "zero.zip": "zero.zip: error: empty file (0 bytes), not a zip archive",
        "none.zip": "none.zip: error: the zip is empty: it holds no file",
        "dup.zip": f"dup.zip:{answered.name}: error: the zip holds 2 members named {answered.name}",
        "nested.zip": f"nested.zip:run/{answered.name}: error: file is in a folder (run/) inside the zip",
    }
    for name, message in expected.items():
        assert script("eval/validate").main([str(tmp_path / name)]) == 1
        assert message in capsys.readouterr().out, name


def test_a_huge_answer_is_cut_in_the_message(answered, capsys):
    rows = [json.loads(line) for line in answered.read_text().splitlines()]
    rows[0]["answer"] = "x" * 27_000_000
    answered.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert script("eval/validate").main(["--questions", str(SAMM_2025), str(answered)]) == 0
    [line] = [line for line in capsys.readouterr().out.splitlines() if "pred.jsonl:1:" in line]
    assert "warning: answer is 27,000,000 characters long: 'xxx" in line and len(line) < 300


STR_GT = "subject,video,onset,offset,emotion,type\n006,1,24,63,surprise,macro\n006,1,205,214,negative,micro\n"
STR_CASES = {
    "type column": ("subject,video,onset,offset,emotion,type\n006,1,24,63,surprise,macro\n",
                    "1: error: unknown column(s) 'type' (an STR prediction has subject,video,onset,offset,emotion)"),
    "duplicate": ("subject,video,onset,offset,emotion\n006,1,24,63,surprise\n006,1,24,63,negative\n",
                  "3: error: duplicate interval 24..63 of subject 006, video 1 (first on line 2)"),
    "absurd frame": ("subject,video,onset,offset,emotion\n006,1,24,99999999999,surprise\n",
                     "2: error: offset '99999999999' is not a frame number (0..10,000,000)"),
    "negative frame": ("subject,video,onset,offset,emotion\n006,1,-4,63,surprise\n",
                       "2: error: onset '-4' is not a frame number"),
    "invalid label": ("subject,video,onset,offset,emotion\n006,1,24,63,anger\n",
                      "2: error: emotion 'anger' is not one of negative, others, positive, surprise"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(STR_CASES))
def test_validator_and_scorer_reject_the_same_str_csv(case, tmp_path, capsys):
    text, message = STR_CASES[case]
    pred, gt = tmp_path / "str_pred.csv", tmp_path / "gt.csv"
    pred.write_text(text)
    gt.write_text(STR_GT)
    assert script("eval/validate").main([str(pred)]) == 1
    assert f"{pred}:{message}" in capsys.readouterr().out
    assert script("eval/score").main(["str", "--pred", str(pred), "--gt", str(gt)]) == 2
    assert f"{pred}:{message}" in capsys.readouterr().err


def test_unknown_video_is_the_same_warning_in_both(tmp_path, capsys):
    pred, gt = tmp_path / "str_pred.csv", tmp_path / "gt.csv"
    pred.write_text("subject,video,onset,offset,emotion\n006,1,24,63,surprise\n006,9,1,5,negative\n")
    gt.write_text(STR_GT)
    message = "3: warning: subject 6 video '9' is not one of the known videos"
    assert script("eval/validate").main([str(pred), "--str-videos", str(gt)]) == 0
    assert f"{pred}:{message}" in capsys.readouterr().out
    assert script("eval/score").main(["str", "--pred", str(pred), "--gt", str(gt), "--mode", "strict"]) == 0
    captured = capsys.readouterr()
    assert f"{pred}:{message}" in captured.err and json.loads(captured.out)["overall"]["fp_spot"] == 1


def test_frames_outside_a_known_video(tmp_path, capsys):
    (tmp_path / "long" / "006_1").mkdir(parents=True)
    for i in range(1, 101):
        (tmp_path / "long" / "006_1" / f"img{i}.jpg").write_bytes(b"x")
    pred = tmp_path / "str_pred.csv"
    pred.write_text("subject,video,onset,offset,emotion\n006,1,90,120,surprise\n")
    assert script("eval/validate").main([str(pred), "--str-videos", str(tmp_path / "long")]) == 1
    assert "2: error: frames 90..120 are outside the video's frames 1..100" in capsys.readouterr().out


def test_scorer_refuses_a_vqa_file_the_validator_rejects(answered, tmp_path, capsys):
    rows = [json.loads(line) for line in answered.read_text().splitlines()]
    gt = tmp_path / "gt.jsonl"
    gt.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rows[1]["answer"] = 3
    answered.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert script("eval/score").main(["vqa", "--pred", str(answered), "--gt", str(gt)]) == 2
    assert "the validator rejects the predictions, not scored" in capsys.readouterr().err
    assert script("eval/validate").main(["--questions", str(SAMM_2025), str(answered)]) == 1
    assert ":2: error: answer must be a string, got int" in capsys.readouterr().out


# --- the REPL keeps the session -------------------------------------------------------------------------


def test_repl_survives_every_mistake(tmp_path):
    from megc_vqa.answering.repl import ClipRequest, Session, make_clip_loader
    from megc_vqa.models.contract import ModelContract, VisualContract

    empty = tmp_path / "empty"
    empty.mkdir()
    clip = tmp_path / "clip"
    clip.mkdir()
    for i in range(1, 11):
        (clip / f"img{i}.jpg").write_bytes(jpeg(32, 20 * i))
    args = Namespace(visual_spec="oao", image_size=32, fps=30.0)
    out = io.StringIO()
    session = Session(answer=lambda visual, q: "negative", load_visual=make_clip_loader(args, ModelContract(visual=VisualContract(spec="oao", size=32))),
                      clip=ClipRequest(empty), sheet_path=tmp_path / "s.png", out=out)  # fmt: skip
    lines = iter([
        "What is the coarse expression class?",  # the first question on an empty clip folder
        f":clip {clip} 9 5 2",  # onset after offset
        f":clip {clip} 1 9999 10",  # apex outside the clip
        f":clip {clip}",
        "What is the coarse expression class?",
        f":save {tmp_path / 'missing' / 't.jsonl'}",  # a folder that does not exist
        f":save {tmp_path / 't.jsonl'}",
        ":quit",
    ])  # fmt: skip
    assert session.loop(lambda: next(lines)) == 0
    text = out.getvalue()
    assert f"error: {empty}: no numbered image files" in text
    assert "--onset 9 is after --offset 2" in text and "apex 9999 is after --offset 10" in text
    assert (
        f"cannot save to {tmp_path / 'missing' / 't.jsonl'}: folder {tmp_path / 'missing'} does not exist"
        in text
    )
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 1  # the one answer survived it all


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--onset", "100", "--offset", "10"], "--onset 100 is after --offset 10; the onset comes first"),
        (["--apex", "-1"], "--apex must be at least 0 (got -1)"),
        (["--fps", "0"], "--fps must be greater than 0 (got 0.0)"),
    ],
)
def test_ask_refuses_bad_frame_options_before_loading(extra, message, tmp_path, capsys):
    (tmp_path / "clip").mkdir()
    assert cli(["ask", "--model", "nope", "--clip", str(tmp_path / "clip"), *extra]) == 2
    assert last_line(capsys.readouterr().err) == f"error: {message}"


def test_apex_outside_the_clip_is_said_at_the_first_question(tmp_path):
    from megc_vqa.answering.repl import ClipRequest, make_clip_loader
    from megc_vqa.errors import UsageError

    for i in range(1, 6):
        (tmp_path / f"img{i}.jpg").write_bytes(jpeg())
    load = make_clip_loader(Namespace(visual_spec="oao", image_size=32, fps=30.0), {})
    with pytest.raises(UsageError, match=r"apex 9999 is outside the clip's frames 1..5"):
        load(ClipRequest(tmp_path, apex=9999))


# --- spotting -------------------------------------------------------------------------------------------


def test_one_frame_video_gives_no_interval():
    import numpy as np

    from megc_vqa.spotting.infer import PeakParams, ScoreCurve, extract_intervals

    curve = ScoreCurve(np.array([1]), np.array([[0.9, 0.1]]), 30.0, 1, 1, 1)
    assert extract_intervals(curve, PeakParams(threshold=0.5)) == []
    longer = ScoreCurve(
        np.arange(1, 31), np.r_[np.zeros(10), np.ones(5), np.zeros(15)][:, None].repeat(2, 1), 30.0, 1, 1, 30
    )
    assert [(iv.onset, iv.offset) for iv in extract_intervals(longer, PeakParams(threshold=0.5))] != []


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "no such spotter checkpoint"),
        (b"", "empty file, not a spotter checkpoint"),
        (b"hello", "not a loadable spotter checkpoint"),
    ],
)
def test_bad_spotter_checkpoints(content, message, tmp_path, capsys):
    (tmp_path / "v" / "6_1").mkdir(parents=True)
    ckpt = tmp_path / "spotter.pt"
    if content is not None:
        ckpt.write_bytes(content)
    argv = ["--videos-root", str(tmp_path / "v"), "--out", str(tmp_path / "o"), "--spotter", str(ckpt)]
    assert script("eval/run_str").main([*argv, "--fps", "30"]) == 2
    assert message in last_line(capsys.readouterr().err)


def test_run_str_numbers(tmp_path, capsys):
    (tmp_path / "v").mkdir()
    for extra, message in ((["--fps", "-3"], "--fps must be greater than 0 (got -3.0)"),
                           (["--threshold", "7"], "--threshold must be at least 0 and at most 1 (got 7.0)"),
                           (["--fps-for", "0*=0"], "--fps-for '0*=0': expected PATTERN=FPS with a positive FPS")):  # fmt: skip
        assert (
            script("eval/run_str").main(
                ["--videos-root", str(tmp_path / "v"), "--out", str(tmp_path / "o"), *extra]
            )
            == 2
        )
        assert message in last_line(capsys.readouterr().err)


# --- issue 21: the real-size check with headroom ---


@pytest.mark.parametrize("tiny", ["tiny-qwen2.5-vl", "tiny-qwen3-vl"])
def test_4bit_loading_keeps_the_vision_tower_and_lm_head_unquantised(tiny):
    """transformers 5 anchors skip patterns at the start of the module name: a bare "visual" quantised
    the whole vision tower (and the merger) of every QLoRA model."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb

    from megc_vqa.models.registry import load_model

    model = load_model(tiny, dtype="float32", bits=4)
    quantised = [n for n, m in model.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert quantised and all(".language_model." in f".{n}" for n in quantised), quantised


def test_4bit_layers_of_every_shape_answer_on_the_cpu():
    """bitsandbytes' AVX512-BF16 repacking needs out % 32 == 0 and in % blocksize == 0; a layer that fails
    either (the real Qwen2.5-VL vision MLP is 3420 wide) keeps the generic path, the others the fast one."""
    pytest.importorskip("bitsandbytes")
    import bitsandbytes as bnb
    import torch

    from megc_vqa.models.registry import cpu_repack_fits, keep_generic_cpu_path_where_repacking_fails

    torch.manual_seed(0)
    shapes = [(3420, 1280), (1280, 3420), (96, 32), (48, 64), (64, 96), (256, 128)]  # (out, in)
    layers = torch.nn.ModuleList(
        bnb.nn.Linear4bit(i, o, compute_dtype=torch.bfloat16, quant_type="nf4") for o, i in shapes
    ).to(torch.bfloat16)
    for layer in layers:
        layer.weight._quantize("cpu")
        layer.support_avx512bf16_for_cpu = True  # as on a CPU with AVX512-BF16, wherever this runs
    assert [cpu_repack_fits(o, i, 64) for o, i in shapes] == [False] * 5 + [True]
    assert keep_generic_cpu_path_where_repacking_fails(layers) == 5
    assert [layer.support_avx512bf16_for_cpu for layer in layers] == [False] * 5 + [True]
    for layer, (_, i) in zip(layers[:5], shapes[:5], strict=True):
        x = torch.randn(2, i, dtype=torch.bfloat16)
        train_out = layer(x)
        layer.eval()
        with torch.inference_mode():
            assert torch.equal(layer(x), train_out)  # the generic path, not a failed repacking


def test_realsize_report_over_the_memory_budget_fails():
    from megc_vqa.training.realsize import MEMORY_BUDGET_GIB, failures

    ok = {
        "lora_modules": {"language": 2}, "lora_wrapped": 2, "stray_trainable": [], "visual_tokens": 4,
        "visual_tokens_promised": 4, "train_loss": 1.0, "loss_trained": 1.0, "loss_reloaded": 1.0,
        "adapter_weights_changed": True, "adapter_weights_reloaded_equal": True,
        "peak_rss_gib": MEMORY_BUDGET_GIB - 0.5, "memory_budget_gib": MEMORY_BUDGET_GIB,
    }  # fmt: skip
    assert failures(ok) == []
    (bad,) = failures({**ok, "peak_rss_gib": 19.2})
    assert "peak resident memory 19.2 GiB, over the 16 GiB budget" in bad


def test_realsize_check_runs_qlora_in_bf16_on_the_tiny_model(tmp_path):
    """The dtype a CPU with bf16 instructions gets (the recipe's own): 4-bit training, the first
    no-grad forward (bitsandbytes repacks there), save + reload to the same loss."""
    pytest.importorskip("bitsandbytes")
    from megc_vqa.models.tiny import ensure_tiny
    from megc_vqa.training.realsize import check

    recipe = REPO / "recipes/qwen2.5-vl-3b/qlora.yaml"
    r = check(recipe, tmp_path, model_path=ensure_tiny("tiny-qwen2.5-vl"), steps=2, dtype="bfloat16")
    assert r["failures"] == [], r["failures"]
    assert r["dtype"] == "bfloat16" and "--bf16" in r["overrides"]
    assert r["loss_reloaded"] == pytest.approx(r["loss_trained"], abs=1e-3)


def test_realsize_merge_bar_in_bf16_is_closeness_to_the_adapter_than_to_the_base():
    from megc_vqa.training.realsize import merge_tolerance

    r = {"logits_scale": 4.5, "adapter_logits_effect": 2.0}
    assert merge_tolerance({**r, "dtype": "float32"}) == pytest.approx(0.225)
    assert merge_tolerance({**r, "dtype": "bfloat16"}) == pytest.approx(2.0)  # closer than the base
    assert merge_tolerance({**r, "dtype": "bfloat16", "adapter_logits_effect": 0.1}) == pytest.approx(0.225)
