"""Hostile but realistic inputs, replayed from issue 10: each gives one clear line naming the file, row, key
or option, a meaningful exit status, and nothing half-written. Tiny synthetic data, no model weights; the
few cases that load the tiny model share it. Each test names the bullet it replays."""

from __future__ import annotations

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
from tests.helpers import REPO, SAMM_2025, last_line, script

pytestmark = pytest.mark.usefixtures("command_env")
SPOT_RECIPE = REPO / "recipes/spotting/synth.yaml"


def run_vqa_args(frames_root: Path, out: Path) -> list[str]:
    """eval/run_vqa.py's arguments on the 2025 SAMM questions, model ``m`` (refused or stubbed before loading)."""
    return [
        "--questions",
        str(SAMM_2025),
        "--frames-root",
        str(frames_root),
        "--model",
        "m",
        "--out",
        str(out),
    ]


def jpeg(size: int = 32, value: int = 128) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (size, size), value).save(buffer, "JPEG")
    return buffer.getvalue()


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
    assert script("eval/run_vqa").main([*run_vqa_args(tmp_path, tmp_path / "o"), *extra]) == 2
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
                          ("{long_videos_jsonl: x.jsonl, fps: 0}", "data.fps must be at least 1 and at most 10000 (got 0)")):  # fmt: skip
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
    argv = run_vqa_args(tmp_path, tmp_path / "o")
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
    assert script("eval/run_vqa").main(run_vqa_args(tmp_path, tmp_path / "file")) == 2
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
    config = STRConfig(emotion="constant", plots=False)
    STRRunner(out, None, {"mode": "relative", "threshold": 0.5}, config)  # records the run's settings
    (out / "progress.jsonl").write_text('{"name": "6_1", "n_intervals": 1}\n{"name": "6_')
    (out / "intervals.jsonl").write_text(
        '{"name": "6_1", "subject": "6", "video": "1", "fps": 30, "intervals": []}\n'
    )
    (out / "str_pred.csv").write_text("subject,video,onset,offset,emotion\n6,1,3,9,negative\n6,2,1,")
    runner = STRRunner(out, None, {"mode": "relative", "threshold": 0.5}, config)
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
    line, _, words = message.partition(": error: ")  # the same words, behind one "error:" (issue 21 F9)
    assert capsys.readouterr().err.startswith(f"error: {pred}:{line}: {words}")


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
    assert "ONSET 9 is after OFFSET 2" in text and "APEX 9999 is after OFFSET 10" in text
    assert (
        f"cannot save to {tmp_path / 'missing' / 't.jsonl'}: folder {tmp_path / 'missing'} does not exist"
        in text
    )
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 1  # the one answer survived it all


@pytest.mark.parametrize(
    "extra,message",
    [
        (
            ["--onset", "100", "--offset", "10"],
            "--onset 100 is after --offset 10; the onset comes first, then the apex, then the offset",
        ),
        (["--apex", "-1"], "--apex must be at least 0 (got -1)"),
        (["--fps", "0"], "--fps must be at least 1 and at most 10000 (got 0.0)"),
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
        (b"hello", "not a spotter checkpoint written by `megc-vqa spot-train`"),
    ],
)
def test_bad_spotter_checkpoints(content, message, tmp_path, capsys):
    (tmp_path / "v" / "6_1").mkdir(parents=True)
    (tmp_path / "v" / "6_1" / "img1.jpg").write_bytes(jpeg())  # a video, so the checkpoint is what is wrong
    ckpt = tmp_path / "spotter.pt"
    if content is not None:
        ckpt.write_bytes(content)
    argv = ["--videos-root", str(tmp_path / "v"), "--out", str(tmp_path / "o"), "--spotter", str(ckpt)]
    assert script("eval/run_str").main([*argv, "--fps", "30"]) == 2
    assert message in last_line(capsys.readouterr().err)


def test_run_str_numbers(tmp_path, capsys):
    (tmp_path / "v").mkdir()
    for extra, message in ((["--fps", "-3"], "--fps must be at least 1 and at most 10000 (got -3.0)"),
                           (["--threshold", "7"], "--threshold must be at least 0 and at most 1 (got 7.0)"),
                           (["--fps-for", "0*=0"], "--fps-for '0*=0': FPS must be at least 1 and at most 10000 (got 0.0)")):  # fmt: skip
        assert (
            script("eval/run_str").main(
                ["--videos-root", str(tmp_path / "v"), "--out", str(tmp_path / "o"), *extra]
            )
            == 2
        )
        assert message in last_line(capsys.readouterr().err)


# --- issue 21: annotation spreadsheets and release files as researchers have them ---------------------------


def _casme2_copy(synth_root: Path, dst: Path) -> tuple[Path, Path]:
    """A copy of the synthetic CASME II release and its workbook."""
    root = _copy(synth_root, dst)
    return root, next((root / "casme2").glob("CASME2-coding-*.xlsx"))


def _edit_sheet(xlsx: Path, edit) -> None:
    import openpyxl

    workbook = openpyxl.load_workbook(xlsx)
    edit(workbook[workbook.sheetnames[0]])
    workbook.save(xlsx)


@pytest.mark.parametrize("value", [None, "x"])
def test_a_cell_at_the_sheets_last_row_and_column_is_bounded_work(value, synth_root, tmp_path, capsys):
    import time
    import tracemalloc

    from openpyxl.styles import Font

    from megc_vqa.annotations import casme2
    from megc_vqa.annotations.common import AnnotationError

    root, xlsx = _casme2_copy(synth_root, tmp_path / "d")
    clips = len(casme2.load(root / "casme2").clips)

    def far_cell(sheet):
        sheet.cell(row=1048576, column=16384, value=value).font = Font(bold=True)  # styled even when empty

    _edit_sheet(xlsx, far_cell)
    assert xlsx.stat().st_size < 10_000  # a few KB declaring the whole sheet (A1:XFD1048576)
    started = time.perf_counter()
    tracemalloc.start()
    try:
        if value is None:  # an empty (styled) cell is no part of the used range: read as if it were not there
            assert len(casme2.load(root / "casme2").clips) == clips
        else:
            with pytest.raises(
                AnnotationError, match=r"cell XFD1048576 holds 'x', beyond row 100,000 .*--max-sheet-rows N"
            ):
                casme2.load(root / "casme2")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 30_000_000 and time.perf_counter() - started < 10  # was a MemoryError at 3 GB after 34 s
    if value is not None:
        assert cli(["prep", "--data-root", str(root), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
        err = last_line(capsys.readouterr().err)
        assert str(xlsx) in err and "sheet 'Sheet1', row 1048576" in err and "--max-sheet-rows" in err
        assert not (tmp_path / "o").exists()


def test_a_stray_value_below_the_table_loads_with_the_row_limit_raised(synth_root, tmp_path, capsys):
    root, xlsx = _casme2_copy(synth_root, tmp_path / "d")
    _edit_sheet(xlsx, lambda sheet: sheet.cell(row=150_000, column=1, value="note"))
    argv = ["prep", "--data-root", str(root), "--out", str(tmp_path / "o"), "--no-progress"]
    assert cli(argv) == 2
    assert "cell A150000 holds 'note', beyond row 100,000" in last_line(capsys.readouterr().err)
    assert cli([*argv, "--max-sheet-rows", "200000"]) == 0  # the note row is a reported skip, not data
    skips = [json.loads(line) for line in (tmp_path / "o" / "skips.jsonl").read_text().splitlines()]
    assert {"row": 150_000, "reason": "not a data row"}.items() <= next(
        s for s in skips if s["row"] == 150_000
    ).items()


def test_a_spreadsheet_that_inflates_to_hundreds_of_mb_is_refused(synth_root, tmp_path, capsys):
    root, xlsx = _casme2_copy(synth_root, tmp_path / "d")
    with zipfile.ZipFile(xlsx) as archive:
        members = [(info.filename, archive.read(info)) for info in archive.infolist()]
    with zipfile.ZipFile(xlsx, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members:
            if name != "xl/worksheets/sheet1.xml":
                archive.writestr(name, data)
                continue
            head, _, tail = data.partition(b"<sheetData>")
            with archive.open(name, "w", force_zip64=True) as member:  # 200 MB of whitespace inside the XML
                member.write(head + b"<sheetData>")
                for _ in range(200):
                    member.write(b" " * (1 << 20))
                member.write(tail)
    assert xlsx.stat().st_size < 1_000_000
    assert cli(["prep", "--data-root", str(root), "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = last_line(capsys.readouterr().err)
    assert err.startswith(f"megc-vqa prep: error: {xlsx}: the .xlsx inflates to 210 MB")
    assert "raise the limit of 100 MB with --max-sheet-mb N" in err


def test_merged_subject_cells_read_as_their_value(synth_root, tmp_path):
    from megc_vqa.annotations import casme2

    root, xlsx = _casme2_copy(synth_root, tmp_path / "d")
    plain = casme2.load(root / "casme2")
    merged_ranges = []

    def merge_subjects(sheet):  # as the releases are often kept: one Subject cell per subject, merged down
        rows = list(sheet.iter_rows(values_only=True))
        header = next(i for i, r in enumerate(rows, start=1) if "Subject" in r)
        column = rows[header - 1].index("Subject") + 1
        first = header + 1
        for row in range(header + 2, len(rows) + 2):
            if row > len(rows) or sheet.cell(row, column).value != sheet.cell(first, column).value:
                if row - 1 > first:
                    sheet.merge_cells(
                        start_row=first, start_column=column, end_row=row - 1, end_column=column
                    )
                    merged_ranges.append((first, row - 1))
                first = row

    _edit_sheet(xlsx, merge_subjects)
    assert merged_ranges  # the merged cells below the first of each range are now empty in the file
    loaded = casme2.load(root / "casme2")
    assert [(c.subject, c.image_id) for c in loaded.clips] == [(c.subject, c.image_id) for c in plain.clips]
    assert [s.reason for s in loaded.skips] == [s.reason for s in plain.skips]


def test_a_symlink_loop_beside_the_datasets_is_skipped(synth_root, tmp_path, caplog):
    from megc_vqa.annotations import detect_datasets, load_all

    root = _copy(synth_root, tmp_path / "d")
    (root / "loop").symlink_to("loop")  # a link to itself: listing it fails with ELOOP
    (root / "again").symlink_to(".")  # a link back up: the datasets again, and again...
    with caplog.at_level("WARNING"):
        assert detect_datasets(root) == [("casme2", root / "casme2")]
    assert f"{root / 'loop'}: skipped (Too many levels of symbolic links: a symlink loop)" in caplog.text
    assert f"{root / 'again'}: skipped, a symlink loop or a second name of {root}" in caplog.text
    assert len(load_all(root).clips) == len(load_all(synth_root).clips)


def _gt_videos(tmp_path: Path) -> Path:
    for name in ("006_1", "007_1"):  # frames 1..20
        (tmp_path / "long" / name).mkdir(parents=True)
        for i in range(1, 21):
            (tmp_path / "long" / name / f"img{i}.jpg").write_bytes(jpeg())
    return tmp_path / "long"


GT_HEADER = "subject,video,onset,offset,emotion,type\n006,006_1,2,9,negative,micro\n"
GT_CASES = {
    "negative onset": ("007,007_1,-3,6,negative,micro\n", "onset '-3' is not a frame number (0..10,000,000)"),
    "onset after offset": ("007,007_1,9,6,negative,micro\n", "onset 9 is after offset 6"),
    "offset past the video": ("007,007_1,5,90,positive,macro\n",
                              "frames 5..90 are outside the video's frames 1..20 (subject 007, video 007_1)"),
    "onset before the first frame": ("007,007_1,0,6,positive,micro\n",
                                     "frames 0..6 are outside the video's frames 1..20"),
    "unknown emotion": ("007,007_1,2,6,angry,micro\n", "emotion 'angry' is not one of negative, others, positive"),
    "unknown type": ("007,007_1,2,6,negative,blink\n", "type 'blink' is neither micro nor macro"),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(GT_CASES))
def test_spot_train_refuses_a_bad_ground_truth_row(case, tmp_path, capsys):
    row, message = GT_CASES[case]
    gt = tmp_path / "gt.csv"
    gt.write_text(GT_HEADER + row)
    argv = ["spot-train", "--recipe", str(SPOT_RECIPE), "--out", str(tmp_path / "o"), "--gt", str(gt),
            "--videos-root", str(_gt_videos(tmp_path)), "--fps", "30"]  # fmt: skip
    assert cli(argv) == 2
    assert last_line(capsys.readouterr().err).startswith(f"error: {gt}:3: {message}")
    assert not (tmp_path / "o").exists()


def test_spot_train_drops_a_duplicated_ground_truth_row_with_a_warning(tmp_path, caplog):
    from megc_vqa.spotting.train import read_str_gt

    gt = tmp_path / "gt.csv"
    gt.write_text(GT_HEADER + "007,007_1,2,6,negative,micro\n006,006_1,2,9,positive,micro\n")
    with caplog.at_level("WARNING"):
        videos = read_str_gt(gt, _gt_videos(tmp_path), fps=30)
    assert [len(v.events) for v in videos] == [1, 1] and videos[0].events[0].coarse_emotion == "negative"
    assert caplog.text.count("duplicate interval") == 1  # said once, though the file is read twice
    assert (f"{gt}:4: warning: duplicate interval 2..9 of subject 006, video 006_1 (first on line 2, dropped; "
            "its label positive/micro differs from the kept negative/micro)") in caplog.text  # fmt: skip


def test_spot_train_checks_long_videos_jsonl_events(tmp_path, capsys, caplog):
    _gt_videos(tmp_path)
    event = {"onset": 2, "apex": 4, "offset": 9, "type": "micro", "emotion": "negative"}
    records = [
        {"subject": "006", "video": "006_1", "folder": "long/006_1", "fps": 30, "events": [event, event]},
        {"subject": "007", "video": "007_1", "folder": "long/007_1", "fps": 30,
         "events": [event, {**event, "offset": 99}, {**event, "onset": -1}, {**event, "emotion": "angry"}]},
    ]  # fmt: skip
    path = tmp_path / "gt" / "long_videos.jsonl"  # folders relative to the file's parent's parent
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["spot-train", "--recipe", str(SPOT_RECIPE), "--out", str(tmp_path / "o"), "--gt", str(path)]
    with caplog.at_level("WARNING"):
        assert cli(argv) == 2
    err = last_line(capsys.readouterr().err)
    assert f"{path} line 2, event 2: frames 2..99 are outside the video's frames 1..20" in err
    assert f"{path} line 2, event 3: onset -1 is not a frame number" in err
    assert f"{path} line 2, event 4: emotion 'angry' is not one of" in err
    assert f"{path} line 1, event 2: duplicate of event 1 (2..9), dropped" in caplog.text


# --- issue 21: no stale result reported as new ------------------------------------------------------------


def _frames(folder: Path, n: int = 40, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(1, n + 1):
        Image.fromarray(rng.integers(0, 255, (48, 48), dtype=np.uint8)).save(folder / f"img{i}.png")


@pytest.fixture(scope="module")
def long_videos(tmp_path_factory) -> Path:
    """Two long videos (random frames) and a tiny spotter checkpoint that spots with threshold 0."""
    import torch

    from megc_vqa.spotting.model import Spotter, SpotterConfig, save_checkpoint

    root = tmp_path_factory.mktemp("long")
    for k, name in enumerate(("s1_v1", "s1_v2")):
        _frames(root / "videos" / name, seed=k)
    torch.manual_seed(0)
    spotter = Spotter(SpotterConfig(size=32, n_frames=4, widths=(4, 8, 8), hidden=8)).eval()
    save_checkpoint(root / "spotter.pt", spotter, peaks={"threshold": 0.0, "mode": "relative"})
    (root / "gt.csv").write_text("subject,video,onset,offset,emotion\ns1,s1_v1,5,12,negative\n")
    return root


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_run_str_spotter_after_the_baseline_is_refused_or_restarted(long_videos, tmp_path, capsys):
    out = tmp_path / "out"
    base = ["--videos-root", str(long_videos / "videos"), "--out", str(out), "--fps", "30",
            "--gt", str(long_videos / "gt.csv")]  # fmt: skip
    assert script("eval/run_str").main(base) == 0
    baseline = _snapshot(out)
    assert json.loads(baseline["scores.json"])["baseline"] is True
    (out / "notes.txt").write_text("mine")  # the user's own files in --out, beside and among the run's
    (out / "plots" / "mine.png").write_bytes(b"mine")
    capsys.readouterr()

    spotter = [*base, "--spotter", str(long_videos / "spotter.pt")]
    assert script("eval/run_str").main(spotter) == 2
    err = last_line(capsys.readouterr().err)
    assert "holds 2 video(s) of an earlier run made with other settings" in err
    assert "spotter: earlier 'baseline: model-free motion spotter" in err and "now 'trained spotter" in err
    assert "peaks.threshold: earlier" in err and "--restart" in err
    assert {k: v for k, v in _snapshot(out).items() if k not in ("notes.txt", "plots/mine.png")} == baseline

    # A VQA model is checked before it loads: a model that cannot load proves none was loaded.
    assert script("eval/run_str").main([*base, "--model", "no-such-model"]) == 2
    assert "emotion: earlier 'head', now 'vqa'" in last_line(capsys.readouterr().err)

    assert script("eval/run_str").main([*spotter, "--restart"]) == 0
    now = _snapshot(out)
    assert now["notes.txt"] == b"mine" and now["plots/mine.png"] == b"mine"  # only the run's files went
    scores = json.loads(now["scores.json"])
    assert scores["baseline"] is False and scores["spotter"] != json.loads(baseline["scores.json"])["spotter"]
    assert now["intervals.jsonl"] != baseline["intervals.jsonl"]  # spotted anew, not the baseline's
    assert json.loads(now["str_run.json"])["settings"]["spotter"].startswith(
        "trained spotter, weights sha256"
    )

    assert script("eval/run_str").main([*spotter, "--threshold", "0.3"]) == 2  # --threshold is a setting too
    assert "peaks.threshold: earlier 0.0, now 0.3" in last_line(capsys.readouterr().err)
    assert script("eval/run_str").main(spotter) == 0  # the same settings resume
    assert sorted(json.loads((out / "str_summary.json").read_text())["skipped"]) == ["s1_v1", "s1_v2"]


def test_run_str_video_read_at_another_fps_is_refused(long_videos, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["--videos-root", str(long_videos / "videos"), "--out", str(out), "--no-plots"]
    assert script("eval/run_str").main([*argv, "--fps", "30"]) == 0
    capsys.readouterr()
    assert script("eval/run_str").main([*argv, "--fps", "60"]) == 2
    err = last_line(capsys.readouterr().err)
    assert "s1_v1: earlier subject s1, video s1_v1 at 30 fps, now subject s1, video s1_v1 at 60 fps" in err


def test_run_lvqa_spotter_after_the_baseline_is_refused_or_restarted(long_videos, tmp_path, capsys):
    from megc_vqa.qa import templates as T

    questions = tmp_path / "me_lvqa_samm_test_to_answer.jsonl"
    questions.write_text("".join(json.dumps({"video_id": f"q{i}", "video": v, "question": T.LVQA_COUNT_ALL,
                                             "answer": ""}) + "\n" for i, v in enumerate(("s1_v1", "s1_v2"))))  # fmt: skip
    out = tmp_path / "out"
    base = ["--questions", str(questions), "--videos-root", str(long_videos / "videos"), "--out", str(out),
            "--fps", "30", "--no-plots"]  # fmt: skip
    assert script("eval/run_lvqa").main(base) == 0
    baseline = _snapshot(out)
    (out / "notes.txt").write_text("mine")
    capsys.readouterr()
    spotter = [*base, "--spotter", str(long_videos / "spotter.pt")]
    assert script("eval/run_lvqa").main(spotter) == 2
    assert "made with other settings (peaks.extent" in last_line(capsys.readouterr().err)
    assert script("eval/run_lvqa").main([*spotter, "--restart"]) == 0
    now = _snapshot(out)
    assert now["notes.txt"] == b"mine"
    assert "trained spotter" in json.loads(now["summary.json"])["spotter"]
    assert now["intervals.jsonl"] != baseline["intervals.jsonl"]
    record = json.loads(now["str_run.json"])
    assert "me_lvqa_samm_test_pred.jsonl" in record["files"]  # a later --restart removes it too


def test_restart_removes_only_what_the_record_may_name(tmp_path):
    from megc_vqa.fileio import RunRecord

    run, outside = tmp_path / "run", tmp_path / "outside.txt"
    run.mkdir()
    outside.write_text("keep")
    (run / "link.txt").symlink_to(outside)
    (run / "mine.txt").write_text("keep")
    (run / "theirs.csv").write_text("run")
    record = RunRecord(run / "run.json")
    record.start({"a": 1}, ["theirs.csv", "../outside.txt", "link.txt", "missing.npz"])
    assert record.differences({"a": 2}) == ["a: earlier 1, now 2"]
    removed = record.discard()
    assert sorted(p.name for p in removed) == ["run.json", "theirs.csv"]
    assert outside.read_text() == "keep" and (run / "link.txt").is_symlink() and (run / "mine.txt").is_file()


def test_run_vqa_validation_is_the_validators(tmp_path, capsys):
    """A renamed copy of the organisers' question file gives a zip member the leaderboard does not read:
    run_vqa says so (exit 1) exactly as eval/validate.py does, with or without --questions."""
    rows = [json.loads(line) for line in SAMM_2025.read_text().splitlines()][:2]
    questions = tmp_path / "me_vqa_samm_test_to_answer (1).jsonl"
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for i in range(1, 4):
        (tmp_path / "frames" / rows[0]["video"]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "frames" / rows[0]["video"] / f"img{i}.jpg").write_bytes(jpeg(32, 40 * i))
    out = tmp_path / "out"
    argv = ["--questions", str(questions), "--frames-root", str(tmp_path / "frames"), "--model",
            "tiny-qwen2.5-vl", "--out", str(out), "--quiet"]  # fmt: skip
    assert script("eval/run_vqa").main(argv) == 1
    printed = capsys.readouterr().out
    assert "validator: OK" not in printed and "VALIDATOR ERRORS" in printed
    [error] = json.loads((out / "run_summary.json").read_text())["validator_errors"]
    member = "me_vqa_samm_test_to_answer (1)_pred.jsonl"
    assert f"submission.zip:{member}: error: " in error and "is not a leaderboard file name" in error
    zip_path = str(out / "submission.zip")
    assert script("eval/validate").main(["--questions", str(questions), zip_path]) == 1
    assert capsys.readouterr().out.strip() == error  # the same check, the same words
    assert script("eval/validate").main([zip_path]) == 1
    assert f"submission.zip:{member}: error: wrong file name in zip" in capsys.readouterr().out


def test_question_files_giving_one_prediction_name_are_refused(tmp_path):
    from megc_vqa.answering.run_vqa import RunError, plan_jobs

    for name in ("a.jsonl", "a_to_answer.jsonl"):
        (tmp_path / name).write_text(SAMM_2025.read_text())
    with pytest.raises(RunError, match=r"a.jsonl and .*a_to_answer.jsonl -> a_pred.jsonl"):
        plan_jobs([tmp_path / "a.jsonl", tmp_path / "a_to_answer.jsonl"], tmp_path)


@pytest.fixture(scope="module")
def adapters(tmp_path_factory) -> Path:
    """A tiny adapter as training writes it, and three made unusable: for another base model, with half
    its tensors gone, with NaN weights."""
    import shutil

    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file, save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from megc_vqa.models.registry import load_model

    root = tmp_path_factory.mktemp("adapters")
    config = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    lora = get_peft_model(load_model("tiny-qwen2.5-vl", dtype="float32"), config)
    lora.peft_config["default"].base_model_name_or_path = "tiny-qwen2.5-vl"
    lora.save_pretrained(root / "good", save_embedding_layers=False)
    text_model = Qwen2ForCausalLM(Qwen2Config(vocab_size=300, hidden_size=48, intermediate_size=64, num_hidden_layers=2,
                                              num_attention_heads=4, num_key_value_heads=2))  # fmt: skip
    foreign = get_peft_model(text_model, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    foreign.peft_config["default"].base_model_name_or_path = "tiny-qwen2.5-vl"  # says so, is not
    foreign.save_pretrained(root / "foreign", save_embedding_layers=False)
    edits = {"half": lambda t: dict(list(t.items())[: len(t) // 2]),
             "nan": lambda t: {k: torch.full_like(v, float("nan")) for k, v in t.items()}}  # fmt: skip
    for name, edit in edits.items():
        shutil.copytree(root / "good", root / name)
        weights = root / name / "adapter_model.safetensors"
        save_file(edit(load_file(str(weights))), str(weights))
    return root


@pytest.mark.parametrize(
    "name,message",
    [
        ("foreign", "8 of the 8 LoRA tensors missing (base_model.model.model.language_model.layers.0"),
        ("half", "4 of the 8 LoRA tensors missing"),
        ("nan", "adapter_model.safetensors: 8 of 8 tensor(s) hold NaN or infinite values"),
    ],
)
def test_merge_adapter_refuses_an_adapter_that_does_not_fit(adapters, name, message, tmp_path, capsys):
    out = tmp_path / "merged"
    assert cli(["merge-adapter", str(adapters / name), "--out", str(out)]) == 2
    err = last_line(capsys.readouterr().err)
    assert err.startswith("merge-adapter: error: ") and message in err and str(adapters / name) in err
    assert not out.exists()  # nothing written


def test_run_vqa_and_merge_share_one_adapter_check(adapters, tmp_path, capsys):
    from megc_vqa.answering.engine import Engine, EngineError
    from megc_vqa.models.contract import ModelContract

    with pytest.raises(EngineError, match=r"8 of 8 tensor\(s\) hold NaN"):
        Engine.load("tiny-qwen2.5-vl", adapters / "nan")
    with pytest.raises(EngineError, match=r"4 of the 8 LoRA tensors missing"):
        Engine.load("tiny-qwen2.5-vl", adapters / "half")
    import shutil

    mixed = tmp_path / "mixed"
    shutil.copytree(adapters / "good", mixed)
    ModelContract(model_name_or_path="tiny-qwen3-vl").write(mixed)  # its record names another base
    assert cli(["merge-adapter", str(mixed), "--out", str(tmp_path / "m")]) == 2
    assert "base_model_name_or_path 'tiny-qwen2.5-vl' is not the base model the adapter was trained on " \
           "(megc_vqa_train.json records 'tiny-qwen3-vl')" in last_line(capsys.readouterr().err)  # fmt: skip


def test_fine_tuning_resumes_only_its_own_settings(tmp_path, capsys):
    from megc_vqa.fileio import RunRecord
    from megc_vqa.training.config import ConfigError, parse_config
    from megc_vqa.training.finetune import RUN_RECORD, run_settings, train

    qa, out = tmp_path / "qa.jsonl", tmp_path / "run"
    qa.write_text(SAMM_2025.read_text())
    checkpoint = out / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2, "epoch": 1.0}))
    (checkpoint / "adapter_model.safetensors").write_text("w")
    args = ["--config", str(REPO / "recipes/tiny/lora.yaml"), "--train_file", str(qa), "--output_dir", str(out),
            "--report_to", "none", "--resume_from_checkpoint", "true"]  # fmt: skip
    RunRecord(out / RUN_RECORD).start(run_settings(parse_config(args)))  # what the earlier run wrote
    with pytest.raises(
        ConfigError, match=r"trained with other settings .*training.learning_rate: earlier 0.001, now 0.5"
    ):
        train(parse_config([*args, "--learning_rate", "0.5"]))
    assert train(parse_config(args)).metrics["already_finished"] is True  # the same recipe: nothing to do
    qa.write_text(SAMM_2025.read_text().replace("coarse", "Coarse"))  # the training file edited in place
    with pytest.raises(ConfigError, match=r"data.train_file.content: earlier"):
        train(parse_config(args))


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--emotion", "vqa"], "--emotion vqa needs --model (the VQA model asked each interval's emotion)"),
        (["--adapter", "lora"], "--adapter needs --model (the base model it was trained on)"),
        (
            ["--fallback-emotion", "anger"],
            "--fallback-emotion 'anger' is not an STR class; use one of negative",
        ),
    ],
)
def test_run_str_emotion_options_that_would_be_ignored(extra, message, long_videos, tmp_path, capsys):
    argv = ["--videos-root", str(long_videos / "videos"), "--out", str(tmp_path / "o"), "--fps", "30", *extra]
    assert script("eval/run_str").main(argv) == 2
    assert last_line(capsys.readouterr().err).startswith(f"error: {message}")


# --- issue 21: nothing outside the chosen output is created, changed or deleted ---------------------------


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (links as their target), to show that nothing changed."""
    return {
        str(p.relative_to(root)): (os.readlink(p).encode() if p.is_symlink() else p.read_bytes())
        for p in sorted(root.rglob("*"))
        if p.is_symlink() or p.is_file()
    }


@pytest.fixture
def workdir(synth_root, prepped, tmp_path, monkeypatch) -> Path:
    """A working folder as a user has it: data (with prep output inside), own notes, cwd there."""
    work = tmp_path / "w"
    _copy(synth_root, work / "data")
    (work / "notes.txt").write_text("my notes")
    monkeypatch.chdir(work)
    return work


def test_export_overwrite_refuses_what_export_did_not_write(workdir, capsys):
    qa = workdir / "data" / "p0" / "qa.jsonl"
    (workdir / "foreign").mkdir()
    (workdir / "foreign" / "thesis.tex").write_text("mine")
    before = _tree(workdir)
    for out, message in (
        (".", "is the current folder"),
        ("data/p0", "holds the --qa file"),
        ("data", "holds the --qa file"),
        ("foreign", "would delete thesis.tex"),
    ):
        argv = [
            "export",
            "--format",
            "swift",
            "--qa",
            str(qa),
            "--out",
            out,
            "--overwrite",
            "--image-size",
            "32",
        ]
        assert cli(argv) == 2, out
        err = last_line(capsys.readouterr().err)
        assert err.startswith(f"error: --out {out}") and message in err, err
        assert _tree(workdir) == before  # nothing deleted, nothing added
    assert not list(workdir.glob(".*"))  # no build folder left beside it either

    frames_root = workdir / "frames-only"  # --out holding the frames (but not the --qa file)
    _copy(workdir / "data" / "casme2", frames_root / "casme2")
    records = [json.loads(line) for line in qa.read_text().splitlines()]
    for r in records:
        r["source"] = str((frames_root / Path(r["source"]).relative_to("../casme2")).resolve())
    (workdir / "qa2.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    argv = ["export", "--format", "swift", "--qa", "qa2.jsonl", "--out", "frames-only", "--overwrite"]
    assert cli(argv) == 2
    assert "holds the frames of record" in last_line(capsys.readouterr().err)
    assert any(frames_root.rglob("*.jpg"))

    # its own earlier export is replaced, in either format; something added to it since is not deleted
    mine = ["export", "--qa", str(qa), "--out", "ex", "--image-size", "32"]
    assert cli([*mine, "--format", "swift"]) == 0
    assert cli([*mine, "--format", "llamafactory", "--overwrite"]) == 0
    assert (workdir / "ex" / "dataset_info.json").is_file() and (
        workdir / "ex" / "megc_train.jsonl"
    ).is_file()
    (workdir / "ex" / ".megc-vqa-output.json").unlink()  # an export from before the markers
    assert cli([*mine, "--format", "llamafactory", "--overwrite"]) == 0
    (workdir / "ex" / "my_eval.txt").write_text("keep")
    assert cli([*mine, "--format", "swift", "--overwrite"]) == 2
    assert "holds my_eval.txt, which megc-vqa export did not write" in last_line(capsys.readouterr().err)
    assert (workdir / "ex" / "my_eval.txt").read_text() == "keep"


def test_prep_owns_only_its_own_files(workdir, capsys):
    data = workdir / "data"
    (workdir / "D" / "dataset").mkdir(parents=True)
    (workdir / "D" / "dataset" / "thesis.tex").write_text("mine")
    (workdir / "D" / "readme.md").write_text("mine too")
    before = _tree(workdir / "D")
    prep = ["prep", "--data-root", str(data), "--no-progress", "--out"]
    assert cli([*prep, "D"]) == 2
    err = last_line(capsys.readouterr().err)
    assert "--out D: holds dataset, which megc-vqa prep would replace but did not write" in err
    assert "move or rename them, or choose another --out" in err
    assert _tree(workdir / "D") == before

    assert cli([*prep, "data"]) == 2  # the data root itself
    assert "--out data: is the data root" in last_line(capsys.readouterr().err)

    (workdir / "D" / "dataset").rename(workdir / "D" / "thesis")  # out of the way: prep writes beside it
    assert cli([*prep, "D"]) == 0 and cli([*prep, "D"]) == 0  # a rerun replaces its own output
    assert (workdir / "D" / "readme.md").read_text() == "mine too"
    assert (workdir / "D" / "thesis" / "thesis.tex").read_text() == "mine"
    assert (workdir / "D" / "qa.jsonl").stat().st_size and (
        workdir / "D" / "dataset" / "state.json"
    ).is_file()

    (data / "p0" / ".megc-vqa-output.json").unlink(missing_ok=True)  # an output of a prep before markers
    assert cli([*prep, str(data / "p0")]) == 0


def test_training_file_with_a_relative_data_root_is_readable_from_anywhere(synth_root, tmp_path, monkeypatch):
    from megc_vqa.qa.io import read_qa_jsonl
    from megc_vqa.qa.official import load_clips, official_rows, write_training_file

    rows = official_rows(load_clips(synth_root)[0])
    training = write_training_file(rows, tmp_path / "me_vqa_samm_casme2_smic.jsonl")
    monkeypatch.chdir(synth_root.parent)
    argv = [
        "prep",
        "--training-file",
        str(training),
        "--data-root",
        synth_root.name,
        "--out",
        str(tmp_path / "po"),
    ]
    assert cli(argv) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    records = read_qa_jsonl(tmp_path / "po" / "qa.jsonl")
    assert len(records) == len(rows)
    assert all(Path(r.source).is_dir() and any(Path(r.source).glob("*.jpg")) for r in records)


def test_writes_never_replace_a_special_file(tmp_path):
    from megc_vqa.answering.repl import ClipRequest, Session
    from megc_vqa.errors import UsageError
    from megc_vqa.fileio import atomic_write_text

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (tmp_path / "link").symlink_to(victim)
    for target, kind in ((fifo, "FIFO"), (tmp_path / "link", "symbolic link"), (tmp_path, "folder")):
        with pytest.raises(UsageError, match=f"{target}: is a {kind}"):
            atomic_write_text(target, "x")
    if Path("/dev/null").exists():
        with pytest.raises(UsageError, match="/dev/null: is a character device"):
            atomic_write_text("/dev/null", "x")
    assert fifo.is_fifo() and victim.read_text() == "keep" and (tmp_path / "link").is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fifo", "link", "victim.txt"]  # no temp left

    out = io.StringIO()
    session = Session(answer=lambda visual, q: "negative", load_visual=lambda request: None,
                      clip=ClipRequest(tmp_path), sheet_path=tmp_path / "s.png", out=out)  # fmt: skip
    lines = iter(
        [f":save {fifo}", "What is the coarse expression class?", f":save {tmp_path / 't.jsonl'}", ":quit"]
    )
    assert session.loop(lambda: next(lines)) == 0
    assert f"cannot save: {fifo}: is a FIFO (named pipe), not a regular file" in out.getvalue()
    assert fifo.is_fifo() and (tmp_path / "t.jsonl").is_file()  # the session went on


def test_crash_log_never_through_a_planted_link(tmp_path, monkeypatch, capsys):
    import stat
    import tempfile

    from megc_vqa.errors import run_command, set_output_folder

    monkeypatch.delenv("MEGC_VQA_LOG_DIR")
    shared_tmp, victim = tmp_path / "tmp", tmp_path / "victim"
    shared_tmp.mkdir()
    victim.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(shared_tmp))
    # planted by another user: the old predictable folder, and the per-user fallback name
    (shared_tmp / "megc-vqa").symlink_to(victim)
    (shared_tmp / f"megc-vqa-{os.getuid()}").symlink_to(victim)

    def broken(argv):
        raise KeyError("surprise")

    def logged() -> Path:
        err = capsys.readouterr().err
        assert "(full traceback in " in err
        return Path(err.split("(full traceback in ")[1].rsplit(")", 1)[0])

    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    assert run_command(broken, []) == 1
    path = logged()
    assert path.parent == tmp_path / "state" / "megc-vqa" / "logs" and "KeyError" in path.read_text()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and stat.S_IMODE(path.stat().st_mode) == 0o600

    (tmp_path / "nohome").write_text("")  # state folder cannot be made: the temp fallback, not the link
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "nohome"))
    assert run_command(broken, []) == 1
    path = logged()
    assert path.parent.parent == shared_tmp and not path.parent.is_symlink()
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and "KeyError" in path.read_text()
    assert list(victim.iterdir()) == []  # nothing written through a link

    def crashes_in_its_output(argv):
        (tmp_path / "run").mkdir()
        set_output_folder(tmp_path / "run")
        raise KeyError("surprise")

    assert run_command(crashes_in_its_output, []) == 1
    assert logged().parent == tmp_path / "run"
    assert run_command(broken, []) == 1 and logged().parent != tmp_path / "run"  # forgotten after the run


def test_other_writers_refuse_what_they_did_not_write(tmp_path, capsys):
    from megc_vqa.demo import QUESTIONS_DIR, RECIPE, RunState, run_fingerprint
    from megc_vqa.errors import UsageError
    from megc_vqa.fileio import check_cache_entry
    from megc_vqa.spotting.pipeline import STRRunner

    real = tmp_path / "data" / "casme2"
    real.mkdir(parents=True)
    (real / "CASME2-coding-20140508.xlsx").write_text("the real release")
    assert cli(["synth", "--out", str(tmp_path / "data"), "--datasets", "casme2", "--subjects", "1"]) == 2
    assert "holds casme2, which megc-vqa synth would replace" in last_line(capsys.readouterr().err)

    frames = tmp_path / "test" / "frames" / "v1"
    frames.mkdir(parents=True)
    (frames / "img1.jpg").write_bytes(jpeg())
    argv = ["synth-test", "--questions", str(SAMM_2025), "--out", str(tmp_path / "test")]
    assert cli(argv) == 2
    assert "holds frames, which megc-vqa synth-test would replace" in last_line(capsys.readouterr().err)

    (tmp_path / "str").mkdir()
    (tmp_path / "str" / "str_pred.csv").write_text("subject,video,onset,offset,emotion\ns1,v1,1,5,happy\n")
    with pytest.raises(UsageError, match=r"holds str_pred\.csv"):
        STRRunner(tmp_path / "str")
    STRRunner(tmp_path / "str2")  # its own folder: a second runner resumes there
    STRRunner(tmp_path / "str2")

    foreign = tmp_path / "old"
    (foreign / "model").mkdir(parents=True)
    (foreign / "model" / "weights.bin").write_text("w")
    questions = sorted(QUESTIONS_DIR.glob("*_to_answer.jsonl"))
    args = Namespace(seed=0, recipe=RECIPE, out=foreign)
    with pytest.raises(UsageError, match="holds model, which megc-vqa demo would replace"):
        RunState(foreign, run_fingerprint(args, questions), restart=True)

    adapter, base = tmp_path / "adapter", tmp_path / "base"
    adapter.mkdir()
    base.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base)}))
    for out, message in ((adapter, "is the adapter"), (base, "is the base model"), (real, "did not write")):
        assert cli(["merge-adapter", str(adapter), "--out", str(out)]) == 2
        assert message in last_line(capsys.readouterr().err)

    with pytest.raises(UsageError, match=r"holds no megc_vqa_tiny\.json"):
        check_cache_entry(real, "megc_vqa_tiny.json", "tiny model cache")
    assert (real / "CASME2-coding-20140508.xlsx").read_text() == "the real release"
    assert [p.name for p in frames.iterdir()] == ["img1.jpg"] and (
        tmp_path / "str" / "str_pred.csv"
    ).is_file()
    assert (foreign / "model" / "weights.bin").is_file()


def test_score_report_keeps_a_report_it_did_not_write(answered, tmp_path, capsys):
    gt = tmp_path / "gt.jsonl"
    gt.write_text(answered.read_text())
    (tmp_path / "rep").mkdir()
    (tmp_path / "rep" / "report.md").write_text("# my own report")
    argv = ["vqa", "--pred", str(answered), "--gt", str(gt), "--report"]
    assert script("eval/score").main([*argv, str(tmp_path / "rep")]) == 2
    assert "holds report.md, which megc-vqa score --report would replace" in capsys.readouterr().err
    assert (tmp_path / "rep" / "report.md").read_text() == "# my own report"
    mine = str(tmp_path / "mine")
    assert script("eval/score").main([*argv, mine]) == 0 and script("eval/score").main([*argv, mine]) == 0
    assert (tmp_path / "mine" / "report.md").read_text().startswith("# ME-VQA scores")


def test_finetune_output_dir_of_someone_else_is_refused(synth_root, prepped, tmp_path, capsys):
    from megc_vqa.training.finetune import main as finetune

    base = tmp_path / "my-base-model"
    base.mkdir()
    (base / "README.md").write_text("model card")
    qa = synth_root / "p0" / "qa.jsonl"
    argv = ["--config", str(REPO / "recipes/tiny/lora.yaml"), "--train_file", str(qa), "--output_dir"]
    assert finetune([*argv, str(base)]) == 2
    assert f"output_dir {base}: holds README.md, and no earlier training run" in capsys.readouterr().err
    assert finetune([*argv, str(synth_root)]) == 2  # holds the train_file
    assert "holds train_file" in capsys.readouterr().err
    assert (base / "README.md").read_text() == "model card" and sorted(os.listdir(base)) == ["README.md"]


# --- issue 21: bounded reads (zips, images, YAML, JSONL, counts) and inputs that stay where they were given ---


def _big_png(width: int = 30000, height: int = 30000) -> bytes:
    """A valid PNG header declaring ``width`` x ``height`` greyscale pixels, with a few hundred bytes of
    data: 2.7 GB decoded if a reader trusts it."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
        + chunk(b"IEND", b"")
    )


def test_every_limit_is_documented_and_a_bad_setting_is_a_usage_error(tmp_path, monkeypatch, capsys):
    from megc_vqa import limits

    for limit in limits.ALL:
        assert f"``{limit.name}``" in limits.__doc__ and limit.env == f"MEGC_VQA_MAX_{limit.name.upper()}"
    monkeypatch.setenv("MEGC_VQA_MAX_ZIP_MEMBERS", "lots")
    (tmp_path / "s.zip").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    assert script("eval/validate").main([str(tmp_path / "s.zip")]) == 2
    assert (
        last_line(capsys.readouterr().err)
        == "error: MEGC_VQA_MAX_ZIP_MEMBERS='lots': expected a positive integer"
    )


def test_zip_bomb_member_is_refused_with_its_limit_before_unpacking(tmp_path, capsys):
    import time

    bomb = tmp_path / "submission.zip"
    with (
        zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf,
        zf.open("me_vqa_samm_test_pred.jsonl", "w", force_zip64=True) as member,
    ):
        block = b"\0" * (1 << 20)
        for _ in range(300):  # 300 MB of zeros, ~1.4 MB packed, written as a stream
            member.write(block)
    start = time.perf_counter()
    assert script("eval/validate").main([str(bomb)]) == 1
    assert time.perf_counter() - start < 2
    out = capsys.readouterr().out
    assert "unpacks to 314,572,800 bytes, over the limit zip_member_bytes" in out
    assert "MEGC_VQA_MAX_ZIP_MEMBER_BYTES" in out


def test_zip_total_unpacked_size_is_bounded(tmp_path, monkeypatch):
    from megc_vqa.submission.validate import validate_files

    path = tmp_path / "s.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("me_vqa_samm_test_pred.jsonl", b"x" * 1000)
        zf.writestr("me_vqa_casme3_test_pred.jsonl", b"x" * 1000)
    monkeypatch.setenv("MEGC_VQA_MAX_ZIP_TOTAL_BYTES", "1500")
    messages = [p.message for p in validate_files([path], [])]
    assert any("zip_total_bytes = 1,500" in m and "MEGC_VQA_MAX_ZIP_TOTAL_BYTES" in m for m in messages)


def test_an_encrypted_zip_member_is_a_problem_not_a_traceback(tmp_path):
    from megc_vqa.submission.validate import validate_files

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        zf.writestr("me_vqa_samm_test_pred.jsonl", b"{}\n")
    data = bytearray(buffer.getvalue())
    data[6] |= 1  # the "encrypted" flag, in the local and the central header
    data[data.find(b"PK\x01\x02") + 8] |= 1
    (tmp_path / "s.zip").write_bytes(bytes(data))
    [problem] = validate_files([tmp_path / "s.zip"], [])
    assert problem.message == "the member is encrypted: zip it again without a password"


def test_zip_of_20000_empty_members_is_refused_and_read_in_linear_time(tmp_path, monkeypatch):
    import time

    from megc_vqa.submission.validate import validate_files

    path = tmp_path / "many.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for k in range(20_000):
            zf.writestr(f"f{k}.jsonl", b"")
    start = time.perf_counter()
    [problem] = validate_files([path], [])
    assert "20,000 members, over the limit zip_members = 1,000" in problem.message
    assert time.perf_counter() - start < 2
    monkeypatch.setenv("MEGC_VQA_MAX_ZIP_MEMBERS", "100000")  # raised: every member is read, in linear time
    start = time.perf_counter()
    problems = validate_files([path], [])
    assert time.perf_counter() - start < 5  # was quadratic: minutes
    assert len(problems) == 20_000 and all("wrong file name in zip" in p.message for p in problems)


def test_validating_a_long_prediction_file_is_linear():
    import time

    from megc_vqa.submission.validate import validate_prediction_bytes

    questions = [{"video_id": f"q{k}", "video": f"c{k}", "question": "Is AU1 present?", "answer": ""}
                 for k in range(20_000)]  # fmt: skip
    data = "".join(json.dumps({**q, "answer": "yes"}) + "\n" for q in reversed(questions)).encode()
    start = time.perf_counter()
    [problem] = validate_prediction_bytes(data, "p.jsonl", questions)
    assert time.perf_counter() - start < 3  # the order check built a set per row: ~30 s
    assert problem.message == "rows out of order: q19999 here, q0 expected"


def test_scoring_many_class_rows_is_linear():
    import time

    from megc_vqa.metrics.vqa import AlignedRow, score_rows

    labels = ("negative", "positive", "surprise", "others")
    rows = [AlignedRow(f"q{k}", "samm", "What is the coarse expression class?", "coarse", labels[k % 4],
                       f"The coarse expression class is {labels[(k // 4) % 4]}.") for k in range(12_000)]  # fmt: skip
    start = time.perf_counter()
    scores = score_rows(rows)
    assert time.perf_counter() - start < 10  # every row's truth was the vocabulary of every row: ~25 s
    assert scores["n_coarse"] == 12_000 and 0 < scores["uf1_coarse_parsed"] < 1


def test_a_png_declaring_30000x30000_pixels_is_refused_before_decoding(tmp_path, monkeypatch):
    import time

    import cv2
    import numpy as np

    from megc_vqa.qa.frame_check import _unreadable
    from megc_vqa.records import FrameSource
    from megc_vqa.visual.frames import FrameError, open_frames

    clip = tmp_path / "clip"
    clip.mkdir()
    (clip / "img1.png").write_bytes(_big_png())
    start = time.perf_counter()
    huge = r"img1.png: image of 30000x30000 = 900,000,000 pixels, over the limit image_pixels = 50,000,000 .*MEGC"
    with pytest.raises(FrameError, match=huge), open_frames(FrameSource("folder", clip)) as reader:
        reader.read([1])
    assert "over the limit image_pixels" in _unreadable(clip / "img1.png")  # prep's frame check (Pillow)
    assert time.perf_counter() - start < 2
    monkeypatch.setenv("MEGC_VQA_MAX_IMAGE_PIXELS", "1000")  # the limit is the one in force, also for JPEG
    (clip / "img1.png").write_bytes(jpeg(64))
    small = r"64x64 = 4,096 pixels, over the limit image_pixels = 1,000"
    with pytest.raises(FrameError, match=small), open_frames(FrameSource("folder", clip)) as reader:
        reader.read([1])
    video = tmp_path / "clip.avi"  # a video's frame size, from its headers, before decord decodes a frame
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 30.0, (64, 64))
    if writer.isOpened():
        for _ in range(3):
            writer.write(np.zeros((64, 64, 3), np.uint8))
        writer.release()
        with pytest.raises(
            FrameError, match=r"clip.avi: video frames of 64x64 = 4,096 pixels, over the limit"
        ):
            open_frames(FrameSource("video", video))


BILLION_LAUGHS = (
    "".join(
        f"{name}: &{name} [{', '.join([f'*{prev}'] * 9) if prev else ', '.join(['lol'] * 9)}]\n"
        for prev, name in zip([None, *"abcdefgh"], "abcdefghi", strict=True)
    )
    + "data: {roots: *i}\n"
)


def test_yaml_alias_bomb_recipes_are_refused_fast(tmp_path, capsys):
    import time

    from megc_vqa.training.config import ConfigError, load_yaml

    recipe = tmp_path / "bomb.yaml"
    recipe.write_text(BILLION_LAUGHS)
    assert len(BILLION_LAUGHS) < 1200
    start = time.perf_counter()
    assert cli(["spot-train", "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 2
    assert "found the alias *a: aliases are not accepted" in last_line(capsys.readouterr().err)
    with pytest.raises(ConfigError, match="aliases are not accepted"):
        load_yaml(recipe)
    assert time.perf_counter() - start < 2


def test_an_oversized_yaml_recipe_is_refused_naming_the_limit(tmp_path, monkeypatch, capsys):
    recipe = tmp_path / "big.yaml"
    recipe.write_text("# padding\n" * 200)
    monkeypatch.setenv("MEGC_VQA_MAX_YAML_BYTES", "1000")
    assert cli(["spot-train", "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 2
    err = last_line(capsys.readouterr().err)
    assert "spotting recipe of 2,000 bytes, over the limit yaml_bytes = 1,000" in err
    assert "MEGC_VQA_MAX_YAML_BYTES" in err


def test_an_over_long_jsonl_line_is_refused_with_its_line(tmp_path, monkeypatch, capsys):
    from megc_vqa.qa.io import QAFileError, read_questions

    questions = tmp_path / "me_vqa_samm_test_to_answer.jsonl"
    row = {"video_id": "v1", "video": "v1", "question": "What is the coarse expression class?", "answer": ""}
    long_row = {**row, "video_id": "v2", "question": "x" * 5000}
    questions.write_text(json.dumps(row) + "\n" + json.dumps(long_row) + "\n")
    monkeypatch.setenv("MEGC_VQA_MAX_JSONL_LINE_BYTES", "4000")
    with pytest.raises(QAFileError, match=r"to_answer.jsonl:2: line of 5,\d+ bytes, over the limit "
                                          r"jsonl_line_bytes = 4,000 .*MEGC_VQA_MAX_JSONL_LINE_BYTES"):  # fmt: skip
        read_questions(questions)
    pred = tmp_path / "me_vqa_samm_test_pred.jsonl"
    pred.write_text(questions.read_text())
    assert script("eval/validate").main([str(pred)]) == 1
    assert "pred.jsonl:2: error: line of 5," in capsys.readouterr().out


def test_a_fifo_given_as_a_question_file_is_refused_not_waited_on(tmp_path):
    from megc_vqa.errors import InputError
    from megc_vqa.fileio import read_jsonl
    from megc_vqa.qa.io import QAFileError, read_questions

    fifo = tmp_path / "me_vqa_samm_test_to_answer.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(QAFileError, match=r"is a FIFO \(named pipe\), not a file"):
        read_questions(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        read_jsonl(fifo)


def test_deeply_nested_json_is_an_error_not_a_traceback(tmp_path):
    from megc_vqa.errors import InputError
    from megc_vqa.fileio import parse_jsonl, read_json_object

    deep = b"[" * 200_000 + b"]" * 200_000
    _, problems = parse_jsonl(deep + b"\n", "deep.jsonl")
    assert [p.message for p in problems] == ["not valid JSON: nested too deeply"]
    _, problems = parse_jsonl(b'{"answer": ' + b"1" * 5000 + b"}\n", "digits.jsonl")  # Python's int limit
    assert [p.message for p in problems] == [
        "not valid JSON: Exceeds the limit (4300 digits) for integer string conversion: value has 5000 digits"
    ]
    (tmp_path / "deep.json").write_bytes(deep)
    with pytest.raises(InputError, match="nested too deeply"):
        read_json_object(tmp_path / "deep.json")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["synth", "--subjects", "100000000"], "--subjects: 100,000,000 is too many, over the limit synth_count"),
        (["synth", "--subjects", "200", "--clips-per-subject", "200"],
         "--subjects x --clips-per-subject: 40,000 is too many, over the limit synth_count = 10,000"),
        (["synth-test", "--long-videos", "100000000"], "--long-videos: 100,000,000 is too many"),
        (["synth", "--workers", "100000"], "--workers: 100,000 is too many, over the limit workers = 256"),
        (["synth-test", "--long-videos", "1", "--long-size", "100000"], "--long-size must be at least 32 and at most"),
    ],
)  # fmt: skip
def test_huge_counts_on_the_command_line_are_refused(argv, message, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli([argv[0], "--out", str(out), *argv[1:]]) == 2
    err = last_line(capsys.readouterr().err)
    assert message in err
    assert "MEGC_VQA_MAX_" in err or "at most" in err
    assert not out.exists()


def test_image_size_is_bounded_for_every_command(tmp_path, capsys):
    (tmp_path / "v").mkdir()
    for name in ("eval/run_str", "eval/run_lvqa"):
        argv = ["--videos-root", str(tmp_path / "v"), "--out", str(tmp_path / "o"), "--image-size", "100000"]
        argv += ["--questions", str(SAMM_2025)] if name == "eval/run_lvqa" else []
        assert script(name).main(argv) == 2
        assert (
            last_line(capsys.readouterr().err)
            == "error: --image-size must be at least 16 and at most 4096 (got 100000)"
        )


def test_frames_sampled_per_clip_are_bounded(tmp_path, capsys):
    from megc_vqa.training.export import ExportSettings
    from megc_vqa.visual.samplers import parse_sampler

    assert parse_sampler("uniform:1024+flow").n_frames == 1024
    with pytest.raises(ValueError, match=r"uniform:100,000,000 is over the limit sampled_frames = 1,024"):
        parse_sampler("uniform:100000000")
    recipe = tmp_path / "r.yaml"
    recipe.write_text("visual_spec: uniform:100000000\n")
    assert cli(["export", "--format", "swift", "--qa", str(tmp_path / "qa.jsonl"), "--out", str(tmp_path / "x"),
                "--recipe", str(recipe)]) == 2  # fmt: skip
    assert (
        ExportSettings.from_recipe(recipe).visual_spec == "uniform:100000000"
    )  # read as written, refused above


@pytest.mark.parametrize(
    "model,message",
    [
        (
            "{hidden: 1000000000}",
            "model.hidden: 1,000,000,000 is too many, over the limit spotter_width = 4,096",
        ),
        ("{size: 100000}", "model.size: 100,000 is too many, over the limit spotter_crop = 512"),
        ("{n_frames: 100000}", "model.n_frames: 100,000 is too many, over the limit sampled_frames"),
    ],
)
def test_a_spotting_recipe_cannot_ask_for_a_network_that_fills_the_memory(model, message, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"model: {model}\n")
    assert cli(["spot-train", "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 2
    assert message in last_line(capsys.readouterr().err)


def test_run_vqa_votes_and_batch_size_are_bounded():
    from megc_vqa.answering.run_vqa import check_run_options
    from megc_vqa.errors import UsageError

    with pytest.raises(
        UsageError, match=r"--votes: 1,000,000 is too many, over the limit votes = 256.*MEGC_VQA_MAX_VOTES"
    ):
        check_run_options(batch_size=1, votes=1_000_000, temperature=0.7)
    with pytest.raises(UsageError, match=r"--batch-size: 10,000,000 is too many"):
        check_run_options(batch_size=10_000_000, votes=1, temperature=0.7)


def _sidecar(folder: Path, entry_folder: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "videos.json"
    row = {"folder": entry_folder, "subject": "006", "video": "006_1", "fps": 30.0, "dataset": None}
    path.write_text(json.dumps({"format": "megc-vqa-long-videos", "videos": [row]}))
    return path


@pytest.mark.parametrize("where", ["absolute", "dotdot"])
def test_sidecar_folders_outside_the_sidecar_are_refused_unless_given_on_the_command_line(
    where, tmp_path, capsys
):
    from megc_vqa.annotations.long_videos import FpsPolicy, discover_videos

    outside = tmp_path / "elsewhere" / "006_1"
    outside.mkdir(parents=True)
    (outside / "img1.jpg").write_bytes(jpeg())
    entry = str(outside) if where == "absolute" else "../elsewhere/006_1"
    sidecar = _sidecar(tmp_path / "videos", entry)
    argv = ["--videos", str(sidecar), "--out", str(tmp_path / "o"), "--no-plots"]
    assert script("eval/run_str").main(argv) == 2
    err = last_line(capsys.readouterr().err)
    assert f"{sidecar}: videos[0] folder: {entry!r} is outside {sidecar.parent}" in err
    assert "--videos-under DIR" in err
    assert not (tmp_path / "o").exists()
    # named on the command line, the folder is read
    [job] = discover_videos(None, FpsPolicy(), sidecar=sidecar, allowed_roots=[tmp_path / "elsewhere"])
    assert job.source.path == outside


def test_question_file_video_names_cannot_leave_the_frames_root(tmp_path):
    from megc_vqa.answering.run_vqa import RunError, frame_folder, plan_jobs
    from megc_vqa.qa.io import QAFileError
    from megc_vqa.spotting.lvqa import answer_file
    from megc_vqa.synth.test_set import QuestionFileError
    from megc_vqa.synth.test_set import read_questions as read_synth_questions

    root = tmp_path / "root"
    (root / "clip").mkdir(parents=True)
    (tmp_path / "..-x").mkdir()  # what ROOT/<prefix>/<video> found for the video '..-x' (prefix '..')
    assert frame_folder(root, "..-x") is None
    assert frame_folder(root, "clip") == root / "clip"
    for video in ("../../etc", "/etc", "..", "a/../../b"):
        questions = tmp_path / "me_vqa_samm_test_to_answer.jsonl"
        questions.write_text(json.dumps({"video_id": "q1", "video": video, "question": "Is AU1 present?",
                                         "answer": ""}) + "\n")  # fmt: skip
        with pytest.raises(RunError, match=r"to_answer.jsonl:1: .*is not a plain folder name"):
            plan_jobs([questions], root)
        with pytest.raises(QuestionFileError, match="is not a plain folder name"):
            read_synth_questions(questions)
        with pytest.raises(QAFileError, match=r"to_answer.jsonl:1: video .* is not a plain folder name"):
            answer_file(questions, {}, tmp_path / "lvqa")  # ME-LVQA reads question files the same way


@pytest.mark.parametrize("path_value", ["/etc/passwd", "../../outside.csv"])
def test_spotting_recipe_paths_stay_below_the_working_folder(path_value, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: {{gt_csv: '{path_value}', videos_root: v}}\n")
    assert cli(["spot-train", "--recipe", str(recipe), "--out", str(tmp_path / "o")]) == 2
    err = last_line(capsys.readouterr().err)
    assert f"{recipe}: data.gt_csv: {path_value!r} is outside {tmp_path}" in err
    assert "give this path on the command line (--gt)" in err


def test_training_recipe_paths_stay_below_the_working_folder(tmp_path, monkeypatch):
    from megc_vqa.training.config import ConfigError, check_recipe_paths, parse_config

    monkeypatch.chdir(tmp_path)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "model_name_or_path: tiny-qwen2.5-vl\ntrain_file: qa.jsonl\noutput_dir: /tmp/elsewhere\n"
    )
    with pytest.raises(ConfigError, match=r"r.yaml: output_dir: '/tmp/elsewhere' is outside .*--output_dir"):
        parse_config(["--config", str(recipe)])
    check_recipe_paths({"output_dir": "/tmp/elsewhere"}, recipe, {"output_dir"})  # the command line gives it
    check_recipe_paths({"output_dir": "runs/x", "train_file": "synth:demo"}, recipe)  # below the folder
    with pytest.raises(ConfigError, match=r"train_file: '\.\./qa.jsonl' is outside"):
        check_recipe_paths({"train_file": "../qa.jsonl"}, recipe)


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--lora_r", "1000000000"], "lora_r: 1,000,000,000 is too many, over the limit lora_rank = 4,096"),
        (
            ["--max_pixels", "1000000000000"],
            "max_pixels: 1,000,000,000,000 is too many, over the limit image_pixels",
        ),
        (
            ["--per_device_train_batch_size", "10000000"],
            "per_device_train_batch_size: 10,000,000 is too many",
        ),
    ],
)
def test_a_training_recipe_cannot_ask_for_unbounded_sizes(extra, message, tmp_path):
    from megc_vqa.training.config import ConfigError, parse_config

    argv = ["--config", str(REPO / "recipes/tiny/lora.yaml"), "--train_file", "synth:tiny"]
    with pytest.raises(ConfigError, match=message):
        parse_config([*argv, "--output_dir", str(tmp_path / "o"), *extra])


def test_long_videos_jsonl_folders_stay_below_its_output_folder(tmp_path):
    from megc_vqa.errors import InputError
    from megc_vqa.spotting.train import read_long_videos_jsonl

    gt = tmp_path / "out" / "gt"
    gt.mkdir(parents=True)
    _frames(tmp_path / "out" / "long" / "006_1", n=3)  # the reader checks that the frames are there
    row = {"subject": "006", "video": "006_1", "fps": 30.0, "events": []}
    (gt / "long_videos.jsonl").write_text(json.dumps({**row, "folder": "long/006_1"}) + "\n")
    [video] = read_long_videos_jsonl(gt / "long_videos.jsonl")
    assert video.source.path == tmp_path / "out" / "long" / "006_1"
    for folder in ("/etc", "../../etc"):
        (gt / "long_videos.jsonl").write_text(json.dumps({**row, "folder": folder}) + "\n")
        with pytest.raises(InputError, match=r"long_videos.jsonl line 1: folder .* is outside"):
            read_long_videos_jsonl(gt / "long_videos.jsonl")


# --- issue 21: hostile pass, VQA side ---------------------------------------------------------------------

STR_GT_CSV = (
    "subject,video,onset,offset,emotion,type\n006,1,24,63,surprise,macro\n006,1,70,80,negative,micro\n"
)


def _one_error(err: str) -> str:
    """The single ``error: ...`` line of a refused command: one prefix, no traceback (issue 21 F9)."""
    assert "Traceback" not in err and "unexpected" not in err
    line = last_line(err)
    assert line.startswith("error: ") and line.count("error:") == 1, line
    return line


@pytest.fixture
def vqa_inputs(tmp_path) -> tuple[Path, Path, list[dict]]:
    """A two-row SAMM question file (official name), its clip's frames, and its rows."""
    rows = [json.loads(line) for line in SAMM_2025.read_text().splitlines()][:2]
    questions = tmp_path / "q" / SAMM_2025.name
    questions.parent.mkdir()
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for i in range(1, 4):
        (tmp_path / "frames" / rows[0]["video"]).mkdir(parents=True, exist_ok=True)
        (tmp_path / "frames" / rows[0]["video"] / f"img{i}.jpg").write_bytes(jpeg(32, 40 * i))
    return questions, tmp_path / "frames", rows


def _gt_file(path: Path, rows: list[dict], answer: str = "negative") -> Path:
    path.write_text("".join(json.dumps({**r, "answer": answer}) + "\n" for r in rows))
    return path


@pytest.mark.parametrize(
    "case,message",
    [
        ("str csv", "--gt {gt}: this looks like an ME-STR CSV (intervals: STR ground truth or str_pred.csv)"),
        ("other questions", "--gt {gt}: none of its 2 video_id(s) (e.g. casme3_test_x_1) is among the questions'"),
        ("folder", "--gt {gt}: is a folder, not a ground-truth file; give the .jsonl file itself"),
        ("empty answer", "--gt {gt}:2: ground-truth row 2 (samm_test_SAMM-1_2) needs video_id, question and a "
                         "non-empty answer"),
        ("visual cache file", "--visual-cache {gt}: is a file, not a folder; give a folder"),
        ("empty fine label", "--fine-labels: '' is not a label"),
        ("questions folder", "--questions {q}: is a folder, not a question file; give the .jsonl file itself"),
    ],
)  # fmt: skip
def test_run_vqa_checks_every_input_before_the_model_loads(
    case, message, vqa_inputs, tmp_path, monkeypatch, capsys
):
    """C2, E1, E2, E3, F1: a wrong --gt, --visual-cache, --fine-labels or --questions is refused (exit 2,
    one line) before any model loads and before --out exists, instead of after the whole run."""
    from megc_vqa.answering.engine import Engine

    questions, frames, rows = vqa_inputs
    gt = tmp_path / "gt"
    extra: list[str] = ["--gt", str(gt)]
    if case == "str csv":
        gt.write_text(STR_GT_CSV)
    elif case == "other questions":
        _gt_file(gt, [{**r, "video_id": f"casme3_test_x_{i}"} for i, r in enumerate(rows, 1)])
    elif case == "folder":
        gt.mkdir()
    elif case == "empty answer":
        _gt_file(gt, rows[:1])
        gt.write_text(gt.read_text() + json.dumps(rows[1]) + "\n")
    elif case == "visual cache file":
        gt.write_text("mine")
        extra = ["--visual-cache", str(gt)]
    elif case == "empty fine label":
        extra = ["--fine-labels", ""]
    else:
        questions = questions.parent

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(Engine, "load", no_model)
    out = tmp_path / "out"
    argv = ["--questions", str(questions), "--frames-root", str(frames), "--model", "tiny-qwen2.5-vl",
            "--out", str(out), "--quiet", *extra]  # fmt: skip
    assert script("eval/run_vqa").main(argv) == 2
    assert _one_error(capsys.readouterr().err).startswith("error: " + message.format(gt=gt, q=questions))
    assert not out.exists()


def test_run_vqa_scores_with_ground_truth_of_its_questions(vqa_inputs, tmp_path, capsys):
    """The up-front --gt check lets the right ground truth through: the run scores as before."""
    questions, frames, rows = vqa_inputs
    gt = _gt_file(tmp_path / "gt.jsonl", rows)
    out = tmp_path / "out"
    argv = ["--questions", str(questions), "--frames-root", str(frames), "--model", "tiny-qwen2.5-vl",
            "--out", str(out), "--quiet", "--gt", str(gt)]  # fmt: skip
    assert script("eval/run_vqa").main(argv) == 0
    assert json.loads((out / "scores.json").read_text())["overall"]["n_rows"] == 2


QUESTION_ROW_CASES = {
    "empty video_id": ({"video_id": ""}, "1: empty video_id; every question row needs one"),
    "blank question": ({"question": "  "}, "1: empty question; every question row needs one"),
    "duplicate key": (None, "1: key 'video_id' given twice in one object; keep one of each"),
}


@pytest.mark.parametrize("case", sorted(QUESTION_ROW_CASES))
def test_run_vqa_and_the_validator_refuse_the_same_question_rows(case, vqa_inputs, tmp_path, capsys):
    """E6, E7, E8: an empty video_id or question, or a key given twice (JSON keeps the last silently), is
    refused naming the line by the one question-file reader, so run_vqa and validate.py --questions agree."""
    change, message = QUESTION_ROW_CASES[case]
    questions, frames, rows = vqa_inputs
    if change is None:
        line = json.dumps(rows[0])[:-1] + ', "video_id": "samm_test_SAMM-1_9"}'
    else:
        line = json.dumps({**rows[0], **change})
    questions.write_text(line + "\n" + json.dumps(rows[1]) + "\n")
    argv = ["--questions", str(questions), "--frames-root", str(frames), "--model", "tiny-qwen2.5-vl",
            "--out", str(tmp_path / "out"), "--quiet"]  # fmt: skip
    assert script("eval/run_vqa").main(argv) == 2
    assert _one_error(capsys.readouterr().err) == f"error: {questions}:{message}"
    pred = tmp_path / "me_vqa_samm_test_pred.jsonl"
    pred.write_text(questions.read_text().replace('"answer": ""', '"answer": "negative"'))
    assert script("eval/validate").main(["--questions", str(questions), str(pred)]) == 2
    assert _one_error(capsys.readouterr().err) == f"error: question file unreadable: {questions}:{message}"
    if change is None:  # in a prediction file the validator reports it as a problem of its own
        assert script("eval/validate").main([str(pred)]) == 1
        assert f"{pred}:1: error: key 'video_id' given twice in one object" in capsys.readouterr().out


def test_csv_where_jsonl_is_read_is_said_once(answered, tmp_path, capsys):
    """F2: an STR CSV given as a JSONL file is named as such in one message, not "not valid JSON" per line."""
    from megc_vqa.fileio import parse_jsonl

    csv = tmp_path / "str_gt.csv"
    csv.write_text(STR_GT_CSV)
    rows, problems = parse_jsonl(csv.read_bytes(), str(csv))
    assert rows == [] and len(problems) == 1 and "looks like an ME-STR CSV" in problems[0].message
    assert script("eval/score").main(["vqa", "--pred", str(answered), "--gt", str(csv)]) == 2
    line = _one_error(capsys.readouterr().err)
    assert line.startswith(f"error: {csv}: this looks like an ME-STR CSV") and "not valid JSON" not in line


def test_score_lvqa_refuses_vqa_files(answered, tmp_path, capsys):
    """E4: ME-VQA files scored as ME-LVQA were exit 0 with every metric null; now exit 2 naming the task."""
    gt = tmp_path / "gt.jsonl"
    gt.write_text(answered.read_text())
    assert script("eval/score").main(["lvqa", "--pred", str(answered), "--gt", str(gt)]) == 2
    line = _one_error(capsys.readouterr().err)
    assert line.startswith(f"error: --gt {gt}: none of the 35 ground-truth rows asks an ME-LVQA question")
    assert "they are ME-VQA questions (au, coarse, fine, joint): score them with `score.py vqa`" in line


def test_folders_given_as_files_are_named_folders(answered, tmp_path, capsys):
    """F1: a folder where a file is expected is called a folder, not missing."""
    assert script("eval/validate").main([str(tmp_path)]) == 1
    assert f"{tmp_path}: error: is a folder, not a file; give the .jsonl, .csv or .zip file itself" in (
        capsys.readouterr().out
    )
    assert script("eval/validate").main([str(answered), "--questions", str(tmp_path)]) == 2
    assert _one_error(capsys.readouterr().err) == (
        f"error: --questions {tmp_path}: is a folder, not a question file; give the .jsonl file itself"
    )
    assert script("eval/score").main(["vqa", "--pred", str(answered), "--gt", str(tmp_path)]) == 2
    assert (
        _one_error(capsys.readouterr().err)
        == f"error: {tmp_path}: is a folder, not a file; give the .jsonl file itself"
    )


def test_prep_reads_compare_with_before_it_runs(synth_root, tmp_path, capsys):
    """E10: a wrong --compare-with file is refused before prep writes anything."""
    csv = tmp_path / "str_gt.csv"
    csv.write_text(STR_GT_CSV)
    out = tmp_path / "prep"
    assert cli(["prep", "--data-root", str(synth_root), "--out", str(out), "--compare-with", str(csv)]) == 2
    assert _one_error(capsys.readouterr().err).startswith(f"error: {csv}: this looks like an ME-STR CSV")
    assert not out.exists()


def test_export_qa_given_an_organiser_question_file(tmp_path, capsys):
    """F8: --qa given a *_to_answer.jsonl says so, and that --qa takes prep's qa.jsonl."""
    out = tmp_path / "e"
    assert cli(["export", "--format", "swift", "--qa", str(SAMM_2025), "--out", str(out)]) == 2
    line = _one_error(capsys.readouterr().err)
    assert line.startswith(
        f"error: --qa: {SAMM_2025}:1: missing key(s) id, dataset, image_id, subject, filename"
    )
    assert "looks like an organiser question or ground-truth file" in line and "qa.jsonl" in line
    assert not out.exists()


# --- issue 21: hostile pass, spotting/synth/REPL side ---


def _session(tmp_path, lines, load_visual=lambda request: None):
    from megc_vqa.answering.repl import ClipRequest, Session

    out = io.StringIO()
    session = Session(answer=lambda visual, q: "negative", load_visual=load_visual,
                      clip=ClipRequest(tmp_path), sheet_path=tmp_path / "s.png", out=out)  # fmt: skip
    lines = iter([*lines, ":quit"])
    assert session.loop(lambda: next(lines)) == 0
    return out.getvalue()


def test_repl_save_keeps_files_that_are_not_its_transcripts(tmp_path):
    """A1: ``:save`` onto a frame (or any file but an earlier transcript) is refused; an empty one is not written."""
    frame = tmp_path / "img1.jpg"
    frame.write_bytes(jpeg())
    kept = frame.read_bytes()
    text = _session(tmp_path, [f":save {frame}", f":save {tmp_path / 'new.jsonl'}"])
    assert f"cannot save to {frame}: it exists and is not a transcript written by :save" in text
    assert "the transcript is empty (ask a question first)" in text and not (tmp_path / "new.jsonl").exists()
    t = tmp_path / "t.jsonl"
    text = _session(
        tmp_path, ["What is the coarse expression class?", f":save {frame}", f":save {t}", f":save {t}"]
    )
    assert (
        frame.read_bytes() == kept and text.count(f"transcript (1 answers) saved to {t}") == 2
    )  # own file replaced


def test_repl_names_its_own_arguments(tmp_path):
    """F5 + E11: ``:clip`` errors name ONSET/APEX/OFFSET (not the command line's flags), apex included;
    ``:frames ARG`` is not silently ignored."""

    calls = []
    text = _session(tmp_path, [f":clip {tmp_path} 50 10 5", ":frames -1", ":frames abc"], calls.append)
    assert "ONSET 50 is after OFFSET 5; APEX 10 is before ONSET 50" in text and "--onset" not in text
    assert ":frames takes no argument (got -1)" in text and ":frames takes no argument (got abc)" in text
    assert calls == []  # the bad :clip never reached the loader


FPS_RANGE_MESSAGE = "must be at least 1 and at most 10000"


@pytest.mark.parametrize(
    "argv,message",
    [
        (["eval/run_str", "--videos-root", "V", "--fps", "1e308"], f"--fps {FPS_RANGE_MESSAGE} (got 1e+308)"),
        (
            ["eval/run_str", "--videos-root", "V", "--fps", "1000000"],
            f"--fps {FPS_RANGE_MESSAGE} (got 1000000.0)",
        ),
        (
            ["eval/run_str", "--videos-root", "V", "--fps-for", "0*=1e-9"],
            f"FPS {FPS_RANGE_MESSAGE} (got 1e-09)",
        ),
        (
            ["eval/run_lvqa", "--questions", "Q", "--videos-root", "V", "--fps", "inf"],
            f"--fps {FPS_RANGE_MESSAGE}",
        ),
        (
            ["ask", "--model", "nope", "--clip", "V", "--fps", "20000"],
            f"--fps {FPS_RANGE_MESSAGE} (got 20000.0)",
        ),
        (
            ["spot-train", "--recipe", str(SPOT_RECIPE), "--fps", "0.5"],
            f"--fps {FPS_RANGE_MESSAGE} (got 0.5)",
        ),
        (["synth-test", "--long-videos", "1", "--fps", "nan"], f"--fps {FPS_RANGE_MESSAGE} (got nan)"),
        (["synth-test", "--long-videos", "-1"], "--long-videos must be at least 0 (got -1)"),
        (
            ["synth-test", "--long-videos", "1", "--workers", "0"],
            "--workers must be at least 1 (got 0)",
        ),
        (["synth", "--subjects", "-1"], "--subjects must be at least 1 (got -1)"),
        (["synth", "--clips-per-subject", "0"], "--clips-per-subject must be at least 1 (got 0)"),
        (["synth", "--size", "1000000"], "--size must be at least 32 and at most 1024 (got 1000000)"),
        (["synth", "--workers", "0"], "--workers must be at least 1 (got 0)"),
        (
            ["synth", "--datasets", "casme9"],
            "--datasets 'casme9': unknown dataset(s) ['casme9']; choose from",
        ),
    ],
)
def test_one_fps_check_and_named_synth_options(argv, message, tmp_path, capsys):
    """B1, E5, C6, F3, F4, E11: one fps range everywhere; synth names the option and value, as "error: ..."."""
    (tmp_path / "V").mkdir()
    (tmp_path / "Q").write_text("")
    argv = [str(tmp_path / a) if a in ("V", "Q") else a for a in argv]
    argv += [] if argv[0] == "ask" else ["--out", str(tmp_path / "o")]
    rc = script(argv[0]).main(argv[1:]) if argv[0].startswith("eval/") else cli(argv)
    assert rc == 2
    err = capsys.readouterr().err
    assert last_line(err).startswith("error: ") and message in last_line(err) and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # refused before any work


def test_sidecar_fps_is_checked_like_the_option(tmp_path):
    from megc_vqa.annotations.long_videos import discover_videos
    from megc_vqa.errors import UsageError

    (tmp_path / "006_1").mkdir()
    (tmp_path / "videos.json").write_text(json.dumps({"format": "megc-vqa-long-videos", "videos": [
        {"folder": "006_1", "subject": "006", "video": "006_1", "fps": 1e308}]}))  # fmt: skip
    with pytest.raises(
        UsageError, match=rf"videos.json: videos\[0\].fps {FPS_RANGE_MESSAGE} \(got 1e\+308\)"
    ):
        discover_videos(tmp_path)


def test_an_input_error_in_one_video_logs_no_traceback(tmp_path, caplog):
    """B1: the runner names the video and the problem; a traceback is only for a bug."""
    from megc_vqa.annotations.long_videos import VideoJob
    from megc_vqa.errors import InputError
    from megc_vqa.records import FrameSource
    from megc_vqa.spotting.pipeline import STRConfig, STRRunner

    runner = STRRunner(tmp_path / "o", None, {}, STRConfig(emotion="constant", plots=False), None, {})

    def spot(job):
        raise InputError(f"{job.name}: img3.png is 100x80 grey, the clip's other frames 64x64")

    runner.spot = spot
    job = VideoJob("006", "006_1", FrameSource("folder", tmp_path / "006_1"), 200.0, "option --fps")
    summary = runner.run([job])
    assert "img3.png is 100x80 grey" in summary["failed"]["006_1"]
    assert not [r for r in caplog.records if r.exc_info]


def test_run_lvqa_refuses_an_empty_question_file_before_any_work(tmp_path, capsys):
    """C1: said up front (rc 2), nothing spotted or written."""
    (tmp_path / "v").mkdir()
    (tmp_path / "empty.jsonl").write_text("\n")
    argv = ["--questions", str(tmp_path / "empty.jsonl"), "--videos-root", str(tmp_path / "v"), "--out"]
    assert script("eval/run_lvqa").main([*argv, str(tmp_path / "o")]) == 2
    assert last_line(capsys.readouterr().err) == (
        f"error: {tmp_path / 'empty.jsonl'}: no question rows (the file is empty); give an organiser *_to_answer.jsonl"
    )
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("command", ["eval/run_str", "eval/run_lvqa", "spot-train"])
def test_device_is_checked_up_front(command, tmp_path, capsys):
    """C3: a bad --device is named with what to give, not torch's list of device types."""
    (tmp_path / "v").mkdir()
    (tmp_path / "q.jsonl").write_text('{"video": "a", "question": "q"}\n')
    common = ["--out", str(tmp_path / "o"), "--device", "bogus"]
    if command == "spot-train":
        rc = cli(["spot-train", "--recipe", str(SPOT_RECIPE), *common])
    else:
        extra = ["--questions", str(tmp_path / "q.jsonl")] if command.endswith("lvqa") else []
        rc = script(command).main([*extra, "--videos-root", str(tmp_path / "v"), *common])
    assert rc == 2 and last_line(capsys.readouterr().err) == "error: --device bogus: use cpu or cuda[:N]"


@pytest.mark.parametrize("kind", ["file", "dangling link", "under a file"])
def test_cache_variable_that_is_not_a_folder(kind, tmp_path, monkeypatch):
    """C4 + C5: wherever the cache is used (tiny models, synthetic sets), one error naming MEGC_VQA_CACHE."""
    from megc_vqa.errors import UsageError
    from megc_vqa.models.tiny import cache_root
    from megc_vqa.training.data import synthetic_root

    (tmp_path / "f").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    value = {
        "file": tmp_path / "f",
        "dangling link": tmp_path / "dangling",
        "under a file": tmp_path / "f" / "c",
    }
    monkeypatch.setenv("MEGC_VQA_CACHE", str(value[kind]))
    for where in (cache_root, synthetic_root):
        with pytest.raises(UsageError, match=rf"^MEGC_VQA_CACHE={value[kind]}: .*point it at a folder"):
            where()
    monkeypatch.setenv("MEGC_VQA_CACHE", str(tmp_path / "new" / "cache"))  # a folder to be made is fine
    assert cache_root() == tmp_path / "new" / "cache" / "models"


def test_foreign_spotter_file_gets_no_torch_advice(tmp_path, capsys):
    """F7: never torch's 'weights_only=False' advice (following it would let a crafted file run code)."""
    (tmp_path / "v" / "6_1").mkdir(parents=True)
    (tmp_path / "v" / "6_1" / "img1.jpg").write_bytes(jpeg())
    (tmp_path / "q.jsonl").write_text('{"video": "a"}\n')
    argv = ["--videos-root", str(tmp_path / "v"), "--out", str(tmp_path / "o"), "--fps", "30"]
    assert script("eval/run_str").main([*argv, "--spotter", str(tmp_path / "q.jsonl")]) == 2
    err = last_line(capsys.readouterr().err)
    assert "not a spotter checkpoint written by `megc-vqa spot-train`" in err and "weights_only" not in err


def test_videos_root_of_folders_without_frames(tmp_path, capsys):
    """F10: said as such, not as 'fps unknown'."""
    for name in ("bom", "dupkey"):
        (tmp_path / "v" / name).mkdir(parents=True)
        (tmp_path / "v" / name / "rows.jsonl").write_text("{}\n")
    assert (
        script("eval/run_str").main(["--videos-root", str(tmp_path / "v"), "--out", str(tmp_path / "o")]) == 2
    )
    assert last_line(capsys.readouterr().err) == (
        f"error: --videos-root {tmp_path / 'v'}: its 2 folder(s) hold no frames (numbered image files): "
        "bom, dupkey; give the folder whose sub-folders each hold one video's frames"
    )


def test_frames_of_another_size_or_mode_are_named(tmp_path, caplog):
    """E9: odd frames (another size, grey, RGBA, 16-bit) are named in a warning; a one-frame clip is warned."""
    import numpy as np
    from PIL import Image

    from megc_vqa.records import FrameSource
    from megc_vqa.visual.frames import open_frames

    clip = tmp_path / "SAMM-1"
    clip.mkdir()
    for i in range(1, 7):
        Image.new("RGB", (64, 64), (i, 2, 3)).save(clip / f"img{i}.jpg")
    Image.new("L", (100, 80), 128).save(clip / "img3.jpg")
    (clip / "img4.jpg").unlink()
    Image.new("RGBA", (200, 50), (1, 2, 3, 4)).save(clip / "img4.png")
    (clip / "img5.jpg").unlink()
    Image.fromarray((np.random.rand(64, 64) * 65535).astype("uint16")).save(clip / "img5.png")
    with caplog.at_level("WARNING"), open_frames(FrameSource("folder", clip)) as reader:
        assert reader.read([1, 2, 3, 4, 5, 6]).shape == (6, 64, 64, 3)  # still read, converted to match
        reader.read_grey([1, 3])
    odd = [r.getMessage() for r in caplog.records if "differ from the clip's first frame" in r.getMessage()]
    assert len(odd) == 1 and str(clip) in odd[0] and "img1.jpg (64x64 RGB)" in odd[0]
    assert all(f"{name} (" in odd[0] for name in ("img3.jpg", "img4.png", "img5.png"))
    assert "img2.jpg" not in odd[0] and "img6.jpg" not in odd[0]

    single = tmp_path / "one"
    single.mkdir()
    (single / "img7.jpg").write_bytes(jpeg())
    caplog.clear()
    with caplog.at_level("WARNING"), open_frames(FrameSource("folder", single)):
        pass
    assert f"{single}: only one frame (img7.jpg)" in caplog.text


def test_non_video_file_gives_no_native_log_line(tmp_path, capfd):
    """F6: decord's C++ 'ERROR opening' line never reaches the terminal; the project's message says why."""
    pytest.importorskip("decord")
    from megc_vqa.records import FrameSource
    from megc_vqa.visual.frames import FrameError, open_frames

    notes = tmp_path / "ok.jsonl"
    notes.write_text('{"video": "a"}\n')
    with pytest.raises(
        FrameError, match=rf"{notes}: cannot open video \(Invalid data.*give a video file or a frame"
    ):
        open_frames(FrameSource("video", notes))
    assert "video_reader.cc" not in capfd.readouterr().err


def test_run_str_out_inside_the_videos_root_is_refused(tmp_path, capsys):
    """Every folder of --videos-root is read as a video: an --out there would make a rerun read the run's
    own folders (curves/, plots/) as videos."""
    root = tmp_path / "long"
    _frames(root / "006_1", n=3)
    for out in (root / "out", root):
        argv = ["--videos-root", str(root), "--fps", "30", "--out", str(out), "--no-plots"]
        assert script("eval/run_str").main(argv) == 2
        assert f"--out {out}: lies inside --videos-root {root}" in last_line(capsys.readouterr().err)
    assert sorted(os.listdir(root)) == ["006_1"]  # nothing written


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
