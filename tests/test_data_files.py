"""The question files shipped in data/megc are the organisers' files, byte for byte."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "data" / "megc").glob("20*/*_to_answer.jsonl"))
ORGANISERS = ROOT.parent / "shared" / "megc"


def test_all_six_question_files_ship():
    assert [f"{p.parent.name}/{p.name}" for p in SHIPPED] == [
        "2025/me_vqa_casme3_test_to_answer.jsonl",
        "2025/me_vqa_samm_test_to_answer.jsonl",
        "2026/me_lvqa_casme3_test_to_answer.jsonl",
        "2026/me_lvqa_samm_test_to_answer.jsonl",
        "2026/me_vqa_casme3_v2_test_to_answer.jsonl",
        "2026/me_vqa_samm_v2_test_to_answer.jsonl",
    ]


@pytest.mark.skipif(
    not ORGANISERS.is_dir(), reason="the organisers' copy (../shared/megc) is not beside the checkout"
)
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shipped_copy_matches_the_organisers_file(path):
    assert path.read_bytes() == (ORGANISERS / path.parent.name / path.name).read_bytes()
