"""``megc-vqa export`` (LLaMA-Factory / ms-swift datasets) and scoring those trainers' prediction files
(issue 13, item 3).

Checked against each trainer's documented format (LLaMA-Factory ``data/README.md``: sharegpt
``messages`` + ``images`` and ``dataset_info.json``; ms-swift "Custom Dataset": ``messages`` + ``images``),
not against their own loaders in the default suite: both pull torch, torchaudio, transformers, peft, trl,
gradio/modelscope and more (several GB; llamafactory 0.9.5 has 31 requirements, ms-swift 4.6.0 89), which
cannot be installed into a separate environment on the shared test machine in reasonable time. The slow test
below runs LLaMA-Factory's own dataset parser and converter wherever ``llamafactory`` imports (it passed with
the 0.9.5 wheel unpacked on PYTHONPATH); ms-swift's preprocessor needs modelscope even to import.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import pytest

from megc_vqa.cli import main as cli_main
from megc_vqa.qa.io import read_qa_jsonl, write_qa_jsonl
from megc_vqa.training.split import subject_key

ROOT = Path(__file__).resolve().parents[1]
SCORE = ROOT / "eval" / "score.py"


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("export")
    data, out = base / "data", base / "p"
    args = ["--datasets", "casme2,samm", "--subjects", "3", "--clips-per-subject", "2", "--size", "48"]
    assert cli_main(["synth", "--out", str(data), *args, "--workers", "1"]) == 0
    assert cli_main(["prep", "--data-root", str(data), "--out", str(out), "--no-progress"]) == 0
    return out / "qa.jsonl"


def rows_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def export(qa: Path, out: Path, fmt: str, *extra: str) -> int:
    return cli_main(["export", "--format", fmt, "--qa", str(qa), "--out", str(out), *extra])


def check_rows(rows: list[dict], by_id: dict, base: Path | None) -> None:
    for row in rows:
        assert set(row) >= {"messages", "images"}
        user, assistant = row["messages"]
        assert (user["role"], assistant["role"]) == ("user", "assistant")
        record = by_id[row["megc_id"]]
        assert assistant["content"] == record.answer
        assert user["content"].endswith("\n" + record.question)
        assert user["content"].count("<image>") == len(row["images"]) == 4  # oao + flow
        assert user["content"].startswith("<image>" * 4)
        for image in row["images"]:
            path = Path(image) if base is None else base / image
            assert path.is_file() and (base is None) == Path(image).is_absolute()


def test_llamafactory_export_with_subject_split(qa_file, tmp_path, capsys):
    out = tmp_path / "lf"
    assert export(qa_file, out, "llamafactory", "--val-fraction", "0.4", "--image-size", "40") == 0
    by_id = {r.id: r for r in read_qa_jsonl(qa_file)}
    info = json.loads((out / "dataset_info.json").read_text())
    assert set(info) == {"megc_train", "megc_val"}
    for name, entry in info.items():
        assert entry["formatting"] == "sharegpt" and entry["file_name"] == f"{name}.jsonl"
        assert entry["columns"] == {"messages": "messages", "images": "images"}
        assert entry["tags"]["role_tag"] == "role" and entry["tags"]["user_tag"] == "user"
        assert entry["tags"]["assistant_tag"] == "assistant" and entry["tags"]["content_tag"] == "content"
    train, val = rows_of(out / "megc_train.jsonl"), rows_of(out / "megc_val.jsonl")
    assert len(train) + len(val) == len(by_id) and train and val
    check_rows(train + val, by_id, out)
    subjects = [{subject_key(by_id[r["megc_id"]]) for r in rows} for rows in (train, val)]
    assert not subjects[0] & subjects[1]
    image = cv2.imread(str(out / train[0]["images"][0]))
    assert min(image.shape[:2]) == 40
    assert "dataset_dir" in capsys.readouterr().out


def test_swift_export_absolute_paths_and_recipe_visual_settings(qa_file, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("visual_spec: uniform:2+flow+diff\nimage_size: 32\nsystem_prompt: Be brief.\n")
    out = tmp_path / "sw"
    assert export(qa_file, out, "swift", "--recipe", str(recipe)) == 0
    rows = rows_of(out / "megc_train.jsonl")
    assert len(rows) == len(read_qa_jsonl(qa_file)) and not (out / "dataset_info.json").exists()
    first = rows[0]
    assert first["messages"][0] == {"role": "system", "content": "Be brief."}
    assert first["messages"][1]["content"].count("<image>") == len(first["images"]) == 4
    names = [Path(p).name for p in first["images"]]
    assert names[2:] == ["02_flow.png", "03_diff.png"] and names[0].startswith("00_frame")
    assert all(
        Path(p).is_absolute() and Path(p).is_file() and str(out.resolve()) in p for p in first["images"]
    )
    manifest = json.loads((out / "export.json").read_text())
    assert manifest["settings"]["visual_spec"] == "uniform:2+flow+diff"
    assert manifest["settings"]["image_size"] == 32


def test_existing_export_folder_refused_unless_overwrite(qa_file, tmp_path, capsys):
    out = tmp_path / "x"
    out.mkdir()
    (out / "stale.txt").write_text("old")
    assert export(qa_file, out, "swift") == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (out / "stale.txt").exists()
    # --overwrite replaces only an earlier export (issue 21): a folder of the user's is refused, kept whole
    assert export(qa_file, out, "swift", "--overwrite") == 2
    assert "would delete stale.txt" in capsys.readouterr().err
    assert (out / "stale.txt").read_text() == "old"
    (out / "stale.txt").unlink()
    assert export(qa_file, out, "swift", "--overwrite") == 0  # an empty folder
    assert export(qa_file, out, "llamafactory", "--overwrite") == 0  # its own earlier export
    assert (out / "dataset_info.json").is_file() and (out / "megc_train.jsonl").is_file()


def test_records_without_frames_are_left_out_and_listed(qa_file, tmp_path, capsys):
    records = read_qa_jsonl(qa_file)
    lost = records[0].with_source(source=None)
    qa = write_qa_jsonl([lost, *records[1:]], tmp_path / "qa.jsonl")
    assert export(qa, tmp_path / "a", "llamafactory") == 0
    assert f"left out {lost.id}" in capsys.readouterr().err
    manifest = json.loads((tmp_path / "a" / "export.json").read_text())
    assert [e["id"] for e in manifest["left_out"]] == [lost.id]

    none = write_qa_jsonl([r.with_source(source=None) for r in records[:3]], tmp_path / "none.jsonl")
    assert export(none, tmp_path / "b", "llamafactory") == 1


def test_loso_export_one_pair_per_subject(qa_file, tmp_path):
    out = tmp_path / "loso"
    assert export(qa_file, out, "llamafactory", "--loso") == 0
    info = json.loads((out / "dataset_info.json").read_text())
    n_subjects = len({subject_key(r) for r in read_qa_jsonl(qa_file)})
    assert len(info) == 2 * n_subjects and "megc_loso00_val" in info


# ---------------------------------------------------------------- predictions back to the scorer


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def score(capsys):
    """``eval/score.py vqa ARGS`` run in-process (the script's own ``main``)."""
    spec = importlib.util.spec_from_file_location("score_script", SCORE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    def run(*args: str) -> Done:
        capsys.readouterr()
        rc = module.main(["vqa", *args])
        out = capsys.readouterr()
        return Done(rc, out.out, out.err)

    return run


@pytest.fixture(scope="module")
def exported(qa_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("lfx") / "lf"
    assert export(qa_file, out, "llamafactory", "--val-fraction", "0.4") == 0
    return out / "megc_val.jsonl"


def llamafactory_predictions(exported: Path, wrong: set[int]) -> list[dict]:
    rows = []
    for i, row in enumerate(rows_of(exported)):
        user, answer = row["messages"][0]["content"], row["messages"][1]["content"]
        prompt = f"<|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n"
        rows.append({"prompt": prompt, "predict": "no idea" if i in wrong else answer, "label": answer})
    return rows


def test_llamafactory_predictions_scored_against_the_exported_rows(exported, tmp_path, score):
    preds = llamafactory_predictions(exported, wrong={0})
    path = tmp_path / "generated_predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in preds))
    done = score("--pred", str(path), "--exported", str(exported))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["overall"]["n_rows"] == len(preds)
    assert result["overall"]["exact_match"] == pytest.approx((len(preds) - 1) / len(preds))


def test_unmatchable_prediction_rows_are_listed_with_line_numbers(exported, qa_file, tmp_path, score):
    preds = llamafactory_predictions(exported, wrong=set())
    preds[1]["label"] = "something else"  # predictions of another file or order
    preds.append(dict(preds[0]))  # one line more than the exported file
    path = tmp_path / "generated_predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in preds))
    done = score("--pred", str(path), "--exported", str(exported), "--gt", str(qa_file))
    assert done.returncode == 0, done.stderr
    problems = json.loads(done.stdout)["problems"]
    assert any(p.startswith(f"{path}:2: label") for p in problems)
    assert any(p.startswith(f"{path}:{len(preds)}: no exported row") for p in problems)
    assert any("ground-truth rows are not in" in p for p in problems)  # qa.jsonl also holds train rows
    assert json.loads(done.stdout)["overall"]["n_missing"] == 1  # row 2 was not mapped: scored as missing


def test_swift_predictions_with_messages_response_labels(exported, tmp_path, score):
    rows = []
    for row in rows_of(exported):
        rows.append(
            {
                "response": row["messages"][1]["content"],
                "labels": row["messages"][1]["content"],
                "messages": row["messages"][:1],
                "images": row["images"],
            }
        )
    path = tmp_path / "infer.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    done = score("--pred", str(path), "--exported", str(exported))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["overall"]["exact_match"] == 1.0


def test_trainer_predictions_without_exported_file_or_of_unknown_format(exported, tmp_path, score):
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"prompt": "x", "predict": "y", "label": "y"}) + "\n")
    done = score("--pred", str(path), "--gt", str(exported))
    assert done.returncode == 2 and "--exported" in done.stderr
    path.write_text(json.dumps({"output": "y"}) + "\n")
    done = score("--pred", str(path), "--exported", str(exported))
    assert done.returncode == 2 and "unknown prediction format (keys output)" in done.stderr


@pytest.mark.slow
def test_llamafactory_own_parser_and_converter_read_the_export(request, tmp_path):
    """LLaMA-Factory's own ``get_dataset_list`` and sharegpt converter on the export, where it is importable
    (a LLaMA-Factory environment, or its wheel unpacked on PYTHONPATH); skipped otherwise, see the module doc."""
    import types

    parser = pytest.importorskip("llamafactory.data.parser")
    converter = pytest.importorskip("llamafactory.data.converter")
    qa_file = request.getfixturevalue("qa_file")  # only once LLaMA-Factory is known to be there
    out = tmp_path / "lf"
    assert export(qa_file, out, "llamafactory", "--val-fraction", "0.4") == 0
    n = 0
    for attr in parser.get_dataset_list(["megc_train", "megc_val"], str(out)):
        convert = converter.get_dataset_converter(
            attr.formatting, attr, types.SimpleNamespace(media_dir=str(out))
        )
        for row in rows_of(out / attr.dataset_name):
            aligned = convert(row)
            assert aligned["_response"][0]["content"] == row["messages"][-1]["content"]
            assert [Path(p) for p in aligned["_images"]] == [out / p for p in row["images"]]
            n += 1
    assert n == len(read_qa_jsonl(qa_file))
