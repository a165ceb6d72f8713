"""Review 4 (helper review2): regressions for bugs found in the answering, submission and QA layers."""

from __future__ import annotations

from pathlib import Path

from megc_vqa.qa import templates as T
from megc_vqa.qa.records import QuestionRow


def test_clip_dataset_prefix_is_a_whole_word():
    """``cas`` (the organisers' ``CAS-1`` clips) must not claim a CASME II id or file: a ``casme2_...`` row
    was answered among CAS(ME)^3's fine labels (no ``repression``) at 30 fps instead of 200."""
    from megc_vqa.answering.run_vqa import clip_dataset, clip_fps

    row = QuestionRow("casme2_sub01_EP02_01f_1", "sub01_EP02_01f", T.COARSE_QUESTION)
    assert clip_dataset(Path("me_vqa_casme2_val_to_answer.jsonl"), row) == "casme2"
    assert clip_fps(Path("me_vqa_casme2_val_to_answer.jsonl"), row) == 200.0
    other = QuestionRow("x_1", "x", T.COARSE_QUESTION)
    assert clip_dataset(Path("me_vqa_casme2_val_to_answer.jsonl"), other) == "casme2"
    assert clip_dataset(Path("me_vqa_smic_to_answer.jsonl"), other) == "smic"
    assert clip_fps(Path("me_vqa_smic_to_answer.jsonl"), other) == 100.0
    # the organisers' own names still resolve
    assert clip_dataset(Path("q.jsonl"), QuestionRow("CAS-2_1", "CAS-2", T.COARSE_QUESTION)) == "casme3"
    assert (
        clip_dataset(Path("q.jsonl"), QuestionRow("casme3_test_CAS-1_1", "CAS-1", T.FINE_QUESTION))
        == "casme3"
    )
    assert (
        clip_dataset(Path("q.jsonl"), QuestionRow("samm_test_SAMM-1_1", "SAMM-1", T.FINE_QUESTION)) == "samm"
    )


def test_ground_truth_read_is_bounded(tmp_path, monkeypatch):
    """``--gt`` was read whole (``read_bytes``) before any check: a huge file exhausted memory instead of
    the one-line refusal naming the JSONL limit that every other reader gives."""
    import json

    import pytest

    from megc_vqa.answering.run_vqa import ClipJob, check_ground_truth
    from megc_vqa.errors import InputError

    row = QuestionRow("samm_test_SAMM-1_1", "SAMM-1", T.COARSE_QUESTION)
    job = ClipJob(tmp_path / "q.jsonl", "SAMM-1", tmp_path, 200.0, rows=[row])
    gt = tmp_path / "gt.jsonl"
    line = {"video_id": row.video_id, "video": row.video, "question": row.question, "answer": "negative"}
    gt.write_text(json.dumps(line) + "\n" + json.dumps({**line, "video_id": "x" * 400}) + "\n")
    check_ground_truth([gt], [job])  # within the limit: accepted
    monkeypatch.setenv("MEGC_VQA_MAX_JSONL_BYTES", "100")
    with pytest.raises(InputError, match="MEGC_VQA_MAX_JSONL_BYTES"):
        check_ground_truth([gt], [job])


def test_atomic_writes_keep_the_usual_permissions(tmp_path):
    """Atomic writes went through ``mkstemp``/``mkdtemp`` and so left every output 0600 (folders 0700),
    whatever the umask: a group's shared results became unreadable to the group, and a file the user had
    made readable lost its mode when rewritten."""
    import os
    import stat

    from megc_vqa.fileio import atomic_folder, atomic_write_text

    old = os.umask(0o022)
    try:
        new = atomic_write_text(tmp_path / "new.jsonl", "{}\n")
        assert stat.S_IMODE(new.stat().st_mode) == 0o644
        kept = tmp_path / "kept.jsonl"
        kept.write_text("old\n")
        kept.chmod(0o640)
        atomic_write_text(kept, "new\n")
        assert stat.S_IMODE(kept.stat().st_mode) == 0o640
        with atomic_folder(tmp_path / "built", "test writer") as tmp:
            (tmp / "a.txt").write_text("a")
        assert stat.S_IMODE((tmp_path / "built").stat().st_mode) == 0o755
    finally:
        os.umask(old)


def test_logged_answers_of_another_clip_dataset_are_answered_again(tmp_path):
    """The clip's dataset (its fine labels, its fps) was in no resume check: a CASME II clip answered as
    CAS(ME)^3 (before the prefix fix) was resumed from the log as it was."""
    from megc_vqa.answering.engine import Answer
    from megc_vqa.answering.run_vqa import ClipJob, _entry, _forget_stale_answers

    (tmp_path / "img1.jpg").write_bytes(b"x")
    row = QuestionRow("casme2_sub01_EP02_01f_1", "sub01_EP02_01f", T.FINE_QUESTION)
    job = ClipJob(tmp_path / "q.jsonl", row.video, tmp_path, 200.0, rows=[row], dataset="casme2")
    _forget_stale_answers([job], {})  # sets the frames stamp
    entry = _entry(job, 0, row, Answer("repression"), None)
    done = {job.key(row): dict(entry)}
    _forget_stale_answers([job], done)
    assert job.key(row) in done  # same dataset: resumed
    done = {job.key(row): {**entry, "dataset": "casme3"}}
    _forget_stale_answers([job], done)
    assert done == {}  # answered among another dataset's labels: answered again
    legacy = {k: v for k, v in entry.items() if k != "dataset"}
    done = {job.key(row): legacy}
    _forget_stale_answers([job], done)
    assert done == {}  # a log from before: this clip was taken for CAS(ME)^3 then
    samm = ClipJob(tmp_path / "q.jsonl", row.video, tmp_path, 200.0, rows=[row], dataset="samm")
    done = {samm.key(row): legacy}
    _forget_stale_answers([samm], done)
    assert samm.key(row) in done  # a SAMM clip was named so before too: kept
