"""The second hostile pass (issue 21, after its fixes): each test replays a case that was still wrong or new
in that pass (/work/notes/hostile2.md names them), on tiny files and without model weights."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest

from tests.helpers import REPO, SAMM_2025, last_line, script

pytestmark = pytest.mark.usefixtures("command_env")
TINY_LORA = REPO / "recipes/tiny/lora.yaml"


# --- an output folder named by an existing file (C8, C9): one clear line, never Errno 17 / 20 -------------


def test_an_output_folder_that_is_a_file_is_named_so(tmp_path):
    from megc_vqa.errors import UsageError
    from megc_vqa.fileio import atomic_write_text, claim_outputs

    taken = tmp_path / "notes.txt"
    taken.write_text("mine")
    with pytest.raises(UsageError, match=r"--report .*notes.txt: is a file, not a folder"):
        claim_outputs(taken, "writer", ["report.md"], what="--report")
    with pytest.raises(UsageError, match=r"notes.txt/x.json: cannot be written: .*notes.txt is a file"):
        atomic_write_text(taken / "x.json", "{}")
    assert taken.read_text() == "mine"


def test_score_report_into_a_file(tmp_path, capsys):
    rows = [json.loads(line) for line in SAMM_2025.read_text().splitlines()[:4]]
    gt = tmp_path / "me_vqa_samm_test_to_answer.jsonl"
    gt.write_text("".join(json.dumps({**r, "answer": "negative"}) + "\n" for r in rows))
    pred = tmp_path / "me_vqa_samm_test_pred.jsonl"
    pred.write_text(gt.read_text())
    taken = tmp_path / "taken.jsonl"
    taken.write_text("keep")
    argv = ["vqa", "--pred", str(pred), "--gt", str(gt), "--report", str(taken)]
    assert script("eval/score").main(argv) == 2
    err = last_line(capsys.readouterr().err)
    assert f"--report {taken}: is a file, not a folder" in err and "unexpected" not in err
    assert taken.read_text() == "keep" and not (tmp_path / "logs").exists()  # no crash log either


# --- the disk or a chosen path says no (new: read-only folder, full disk, over-long name) ----------------


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (OSError(errno.ENOSPC, "No space left on device"), "writing under OUT: no space left on the device (ENOSPC); free"),
        (OSError(errno.EROFS, "Read-only file system", "ro/v"), "'ro/v': the file system is read-only (EROFS); choose"),
        (PermissionError(errno.EACCES, "Permission denied", "q.jsonl"), "'q.jsonl': permission denied (EACCES)"),
        (OSError(errno.ENAMETOOLONG, "File name too long", "x" * 300), "(300 characters): the file name is too long"),
    ],
)  # fmt: skip
def test_disk_and_path_errors_are_one_line_without_a_crash_log(error, message, tmp_path, capsys):
    from megc_vqa.errors import run_command, set_output_folder

    def writes(argv):
        set_output_folder("OUT")
        raise error

    assert run_command(writes, []) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "then run the command again" in err
    assert "Traceback" not in err and not (tmp_path / "logs").exists()


def test_other_os_errors_stay_unexpected(tmp_path, capsys):
    from megc_vqa.errors import run_command

    def broken(argv):
        raise OSError(errno.EIO, "Input/output error")

    assert run_command(broken, []) == 1
    assert "error: unexpected OSError" in capsys.readouterr().err
    assert list((tmp_path / "logs").glob("traceback-*.txt"))


# --- recipes/finetune.py into its own earlier output_dir (A3, residual (b)); cut before any checkpoint ----


def _recipe(tmp_path: Path, out: Path):
    from megc_vqa.training.config import parse_config

    qa = tmp_path / "qa.jsonl"
    qa.write_text(SAMM_2025.read_text())
    args = [
        "--config",
        str(TINY_LORA),
        "--train_file",
        str(qa),
        "--output_dir",
        str(out),
        "--report_to",
        "none",
    ]
    return parse_config(args)


def _finished_run(out: Path) -> None:
    """What a finished tiny run leaves: the adapter, the record, the metrics and a complete checkpoint."""
    checkpoint = out / "checkpoint-2"
    checkpoint.mkdir(parents=True)
    (checkpoint / "trainer_state.json").write_text(json.dumps({"global_step": 2, "epoch": 1.0}))
    (checkpoint / "adapter_model.safetensors").write_bytes(b"w")
    (out / "adapter_model.safetensors").write_bytes(b"adapter")
    (out / "megc_vqa_train.json").write_text("{}")
    (out / "train_metrics.json").write_text("{}")


def test_finetune_refuses_to_replace_its_earlier_adapter(tmp_path):
    from megc_vqa.training.config import ConfigError
    from megc_vqa.training.finetune import check_output_dir

    out = tmp_path / "run"
    _finished_run(out)
    recipe = _recipe(tmp_path, out)
    with pytest.raises(
        ConfigError,
        match=r"holds an earlier training run \(adapter_model.safetensors, megc_vqa_train.json, "
        r"train_metrics.json, checkpoint-2\).*--resume_from_checkpoint true.*--overwrite_output_dir",
    ):
        check_output_dir(recipe)
    assert (out / "adapter_model.safetensors").read_bytes() == b"adapter"
    recipe.training.resume_from_checkpoint = "true"
    check_output_dir(recipe)  # continuing it is what resume is for
    assert (out / "checkpoint-2").is_dir()
    recipe.training.resume_from_checkpoint = None
    recipe.overwrite_output_dir = True
    check_output_dir(recipe)  # replacing it: its checkpoints go, not to be resumed later
    assert not (out / "checkpoint-2").exists() and (out / "adapter_model.safetensors").exists()


def test_finetune_rerun_after_a_cut_before_the_first_checkpoint(tmp_path):
    from megc_vqa.fileio import RunRecord
    from megc_vqa.training.finetune import RUN_RECORD, check_output_dir

    out = tmp_path / "run"
    out.mkdir()
    RunRecord(out / RUN_RECORD).start({"model": "tiny"})  # all a run stopped by Ctrl-C while loading leaves
    (out / "checkpoint-1").mkdir()  # and a checkpoint cut while saving: nothing worth keeping
    check_output_dir(_recipe(tmp_path, out))  # was: "holds megc_vqa_run.json, and no earlier training run"


def test_finetune_output_dir_that_is_a_file(tmp_path, capsys):
    from megc_vqa.training.finetune import main as finetune

    taken = tmp_path / "ok.jsonl"
    taken.write_text("keep")
    qa = tmp_path / "qa.jsonl"
    qa.write_text(SAMM_2025.read_text())
    argv = ["--config", str(TINY_LORA), "--train_file", str(qa), "--output_dir", str(taken)]
    assert finetune(argv) == 2
    assert f"output_dir {taken}: is a file, not a folder" in last_line(capsys.readouterr().err)
    assert taken.read_text() == "keep"


@pytest.mark.parametrize(
    ("argv", "rest", "overwrite"),
    [
        (["--config", "r.yaml"], ["--config", "r.yaml"], False),
        (["--overwrite_output_dir", "--config", "r.yaml"], ["--config", "r.yaml"], True),
        (["--overwrite_output_dir", "false", "--seed", "1"], ["--seed", "1"], False),
        (["--seed", "1", "--overwrite_output_dir=true"], ["--seed", "1"], True),
    ],
)
def test_the_overwrite_switch_is_read_from_the_command_line(argv, rest, overwrite):
    from megc_vqa.training.finetune import pop_overwrite_flag

    assert pop_overwrite_flag(argv) == (rest, overwrite)


# --- finetune: max_steps is bounded like epochs (new: --max_steps 1e12 trained until killed) -------------


def test_finetune_max_steps_is_bounded(tmp_path):
    from megc_vqa.training.config import ConfigError

    with pytest.raises(
        ConfigError, match=r"max_steps: 1,000,000,000,000 is too many.*MEGC_VQA_MAX_TRAIN_STEPS"
    ):
        _recipe_with(tmp_path, "--max_steps", "1000000000000")
    assert _recipe_with(tmp_path, "--max_steps", "-1").training.max_steps == -1  # train by epochs


def _recipe_with(tmp_path: Path, *extra: str):
    from megc_vqa.training.config import parse_config

    qa = tmp_path / "qa.jsonl"
    qa.write_text(SAMM_2025.read_text())
    return parse_config(["--config", str(TINY_LORA), "--train_file", str(qa), "--output_dir",
                         str(tmp_path / "run"), "--report_to", "none", *extra])  # fmt: skip


# --- score.py str: an empty --emotions and a header-only ground truth (E12, E13) --------------------------

STR_GT = "subject,video,onset,offset,emotion,type\n006,1,24,63,surprise,macro\n006,1,205,214,negative,micro\n"
STR_PRED = "subject,video,onset,offset,emotion\n006,1,24,63,surprise\n"


@pytest.mark.parametrize(
    ("gt", "extra", "message"),
    [
        (
            STR_GT,
            ["--emotions", ","],
            "--emotions ',': give comma-separated classes among negative, positive",
        ),
        (STR_GT, ["--emotions", "happy"], "--emotions 'happy': give comma-separated classes among"),
        ("subject,video,onset,offset,emotion,type\n", [], "no ground-truth intervals (a header only)"),
    ],
)
def test_score_str_refuses_what_it_would_score_as_nothing(gt, extra, message, tmp_path, capsys):
    pred, gt_file = tmp_path / "str_pred.csv", tmp_path / "gt.csv"
    pred.write_text(STR_PRED)
    gt_file.write_text(gt)
    assert script("eval/score").main(["str", "--pred", str(pred), "--gt", str(gt_file), *extra]) == 2
    assert message in last_line(capsys.readouterr().err)
    argv = ["str", "--pred", str(pred), "--gt", str(gt_file), "--emotions", "surprise,negative"]
    if "a header only" not in message:  # the classes of the ground truth are accepted
        assert script("eval/score").main(argv) == 0


# --- the validator without --questions: an empty question (residual (a) of issue 21) ---------------------


def test_validator_refuses_an_empty_question_without_the_question_file(tmp_path, capsys):
    rows = [json.loads(line) for line in SAMM_2025.read_text().splitlines()[:3]]
    rows = [{**r, "answer": "negative"} for r in rows]
    rows[1]["question"], rows[2]["question"] = " ", 5
    pred = tmp_path / "me_vqa_samm_test_pred.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert script("eval/validate").main([str(pred)]) == 1
    out = capsys.readouterr().out
    assert (
        f"{pred}:2: error: empty question for {rows[1]['video_id']!r}" in out
        or ":2: error: empty question" in out
    )
    assert f"{pred}:3: error: question must be a string, got int" in out
    assert f"{pred}:1:" not in out


# --- run_vqa --out among the frames it reads (A5, still open) ---------------------------------------------


def test_run_vqa_out_that_is_the_frames_root_is_refused_before_the_model(tmp_path, capsys):
    frames = tmp_path / "frames"
    (frames / "SAMM-1").mkdir(parents=True)
    (tmp_path / "link").symlink_to(frames)
    base = ["--questions", str(SAMM_2025), "--frames-root", str(frames), "--model", "no-such-model", "--out"]
    for out in (frames, tmp_path / "link", Path(f"{frames}/../frames")):
        assert script("eval/run_vqa").main([*base, str(out)]) == 2
        assert f"--out {out}: is --frames-root {frames}; the answers" in last_line(capsys.readouterr().err)
    assert sorted(p.name for p in frames.iterdir()) == ["SAMM-1"]


# --- small unclear messages: a cut fallback reason, a root named twice ------------------------------------


def test_the_fallback_reason_keeps_what_to_change():
    from types import SimpleNamespace

    from megc_vqa.answering.run_vqa import fallback_failure

    reason = (
        "visual inputs failed: FrameError: fr/big/SAMM-1/img6.png: image of 30000x30000 = 900,000,000 pixels, "
        "over the limit image_pixels = 50,000,000 pixels per image; set MEGC_VQA_MAX_IMAGE_PIXELS to raise it"
    )
    result = SimpleNamespace(
        summary={"rows": 2, "fallback_rows": [{"reason": reason}] * 2, "summary_file": "s"}
    )
    assert f"reason (2 rows): {reason}. Every" in fallback_failure(result, 0.05)


def test_a_root_given_twice_is_named_once(tmp_path):
    from megc_vqa.errors import InputError
    from megc_vqa.fileio import resolve_inside

    with pytest.raises(InputError, match=r"'/etc' is outside side; allow$"):
        resolve_inside("/etc", ["side", "side/"], "where", "allow")


# --- Ctrl-C during synth: the pool's workers print no traceback (new) -------------------------------------


def test_ctrl_c_during_synth_prints_no_worker_traceback(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "synth"
    # 40 subjects: rendering lasts well past the first frame, so the Ctrl-C lands mid-run on a slow machine too
    # (with 6 the run could finish between the first frame and the signal, exiting 0)
    argv = [sys.executable, "-m", "megc_vqa.cli", "synth", "--out", str(out), "--subjects", "40",
            "--clips-per-subject", "4", "--size", "128", "--workers", "4"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # its own process group, as a terminal's foreground job: Ctrl-C reaches the parent and the workers
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and next(out.rglob("*.jpg"), None) is None and proc.poll() is None:
        time.sleep(0.05)
    assert next(out.rglob("*.jpg"), None) is not None and proc.poll() is None  # the pool is rendering
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err and "PoolWorker" not in err
    assert err.strip().splitlines()[-1] == "interrupted"


# --- issue 21, closing pass: synth rerun into its own --out with other settings (N8) ---


def _synth(out: Path, *extra: str) -> int:
    from megc_vqa.cli import main

    return main(["synth", "--out", str(out), "--subjects", "2", "--clips-per-subject", "1", *extra])


def test_synth_rerun_with_other_settings_is_refused_and_same_settings_rewrite(tmp_path, capsys):
    out = tmp_path / "syn"
    assert _synth(out, "--size", "64", "--datasets", "casme2") == 0
    frames = sorted(p.relative_to(out) for p in (out / "casme2").rglob("*.jpg"))
    assert _synth(out, "--size", "64", "--datasets", "casme2") == 0  # same settings: same frames, allowed
    assert sorted(p.relative_to(out) for p in (out / "casme2").rglob("*.jpg")) == frames
    capsys.readouterr()
    assert _synth(out, "--size", "32", "--datasets", "casme2,samm") == 2
    err = capsys.readouterr().err
    assert "casme2: size: earlier 64, now 32" in err and "mix" in err
    assert not (out / "samm").exists()  # refused before anything was written
    # another dataset into the same --out is its own record; the first keeps its settings
    assert _synth(out, "--size", "32", "--datasets", "samm") == 0
    assert _synth(out, "--size", "32", "--datasets", "casme2") == 2


def test_synth_refuses_dataset_folders_without_a_record(tmp_path, capsys):
    out = tmp_path / "syn"
    assert _synth(out, "--size", "64", "--datasets", "casme2") == 0
    (out / "synth_run.json").unlink()  # as an earlier version left it
    assert _synth(out, "--size", "64", "--datasets", "casme2") == 2
    assert "casme2: no record of the settings" in capsys.readouterr().err


# --- issue 21, closing pass: the validator's --str-videos names videos as run_str does (F14) ---


def test_str_videos_folder_accepts_run_str_names_and_ground_truth_names(tmp_path, capsys):
    long = tmp_path / "long"
    (long / "006_1").mkdir(parents=True)
    for i in range(1, 51):
        (long / "006_1" / f"img{i}.jpg").write_bytes(b"x")
    pred = tmp_path / "str_pred.csv"
    # run_str's own naming (video = folder name) and the ground truth's (video after the "_")
    pred.write_text("subject,video,onset,offset,emotion\n006,006_1,10,20,surprise\n006,1,30,40,surprise\n")
    assert script("eval/validate").main([str(pred), "--str-videos", str(long)]) == 0
    assert "not one of the known videos" not in capsys.readouterr().out
    pred.write_text("subject,video,onset,offset,emotion\n006,006_2,10,20,surprise\n")
    assert script("eval/validate").main([str(pred), "--str-videos", str(long)]) == 0
    assert "not one of the known videos" in capsys.readouterr().out


# --- issue 21, closing pass: score.py prints strict JSON (N10) and names a zip given as predictions (F12) ---


def test_strict_json_writes_null_for_non_finite_numbers():
    from megc_vqa.fileio import strict_json

    text = strict_json({"strs": float("nan"), "f1": [1.0, float("inf")], "n": 3})
    assert json.loads(text) == {"strs": None, "f1": [1.0, None], "n": 3}
    assert "NaN" not in text and "Infinity" not in text


def test_score_refuses_a_zip_as_predictions(tmp_path, capsys):
    import zipfile

    pred = tmp_path / "submission.zip"
    with zipfile.ZipFile(pred, "w") as zf:
        zf.writestr("me_vqa_samm_test_pred.jsonl", "{}\n")
    gt = tmp_path / "gt.jsonl"
    gt.write_text('{"video_id": "a", "question": "q", "answer": "positive"}\n')
    assert script("eval/score").main(["vqa", "--pred", str(pred), "--gt", str(gt)]) == 2
    assert "is a zip archive" in capsys.readouterr().err


# --- issue 21, closing pass: the validator never unpacks a zip member it rejects by name (N11) ---


def test_validator_does_not_unpack_members_rejected_by_name(tmp_path, capsys, monkeypatch):
    import zipfile

    import megc_vqa.submission.validate as validate

    unpacked = []
    real = validate.read_stream_bounded
    monkeypatch.setattr(validate, "read_stream_bounded", lambda s, cap: unpacked.append(cap) or real(s, cap))
    sub = tmp_path / "total.zip"
    with zipfile.ZipFile(sub, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(3):
            zf.writestr(f"junk{i}.jsonl", b"\0" * (4 << 20))  # 4 MB each, a few KB packed
        zf.writestr("me_vqa_samm_test_pred.jsonl", '{"video_id": "a", "question": "q", "answer": "x"}\n')
    assert script("eval/validate").main([str(sub)]) == 1
    out = capsys.readouterr().out
    assert out.count("wrong file name in zip") == 3
    assert len(unpacked) == 1  # only the leaderboard-named member was read


# --- issue 21, closing pass: a bad value given on the command line is named as the option (F11) ---


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--train_file", "/nonexistent.jsonl"], "--train_file on the command line (over "),
        (["--learning_rate", "nan"], "--learning_rate on the command line (over "),
    ],
)
def test_finetune_names_the_command_line_option_it_refuses(extra, message):
    from megc_vqa.training.config import ConfigError, parse_config

    recipe = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny" / "lora.yaml")
    with pytest.raises(ConfigError) as err:
        parse_config(["--config", recipe, *extra])
    assert str(err.value).startswith(message)


def test_finetune_still_blames_the_recipe_for_its_own_values(tmp_path):
    from megc_vqa.training.config import ConfigError, parse_config

    recipe = tmp_path / "r.yaml"
    recipe.write_text("model_name_or_path: tiny-qwen2.5-vl\ntrain_file: /nonexistent.jsonl\noutput_dir: o\n")
    with pytest.raises(ConfigError) as err:
        parse_config(["--config", str(recipe)])
    assert str(err.value).startswith(f"{recipe}: train_file")
