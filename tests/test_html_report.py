"""report.html: structure, escaping of hostile text, the wrong-row gallery, the score.py and run_vqa hooks,
and (slow) that it renders with its images in headless Chromium."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from megc_vqa.metrics.vqa import AlignedRow, score_aligned
from megc_vqa.qa import templates as t
from megc_vqa.submission.html_report import ClassTable, build_html_report
from megc_vqa.visual.samplers import VisualInputs

REPO = Path(__file__).resolve().parents[1]
SAMM_2025 = REPO / "data/megc/2025/me_vqa_samm_test_to_answer.jsonl"
HOSTILE = '<script>alert(1)</script>"><img src=x onerror=alert(2)><a href="http://evil.example/">x</a>'
CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium   (or: make test-browser)"


class Page(HTMLParser):
    """Every tag with its attributes, and the text, of a page."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)

    def named(self, name: str) -> list[dict[str, str | None]]:
        return [attrs for tag, attrs in self.tags if tag == name]


def row(vid: str, qtype: str, reference: str, prediction: str | None, dataset: str = "samm") -> AlignedRow:
    question = {"coarse": t.COARSE_QUESTION, "fine": t.FINE_QUESTION}.get(qtype, "What is the action unit?")
    return AlignedRow(vid, dataset, question, qtype, reference, prediction)  # type: ignore[arg-type]


def rows() -> list[AlignedRow]:
    return [
        row("samm_test_A_1", "coarse", "negative", "negative"),
        row("samm_test_A_2", "coarse", "positive", "negative"),
        row("samm_test_B_1", "coarse", "surprise", HOSTILE),
        row("casme3_test_C_1", "coarse", "negative", None, dataset="casme3"),
        row("casme3_test_C_2", "fine", "disgust", "disgust", dataset="casme3"),
        row("samm_test_B_2", "fine", "anger", "contempt"),
        row("samm_test_B_3", "au", "lip corner puller", ""),
    ]


def fake_visual(value: int = 90) -> VisualInputs:
    key = np.full((3, 64, 80, 3), value, np.uint8)
    flow = np.zeros((64, 80, 3), np.uint8)
    flow[20:40, 30:50] = (255, 0, 255)
    return VisualInputs((*key, flow), key, (0, 5, 9), 30.0, "onset, apex and offset frames + flow", 5, True)


def test_page_structure_tables_and_data_uri_images():
    aligned = rows()
    scores = score_aligned(aligned, problems=["missing prediction for casme3_test_C_1: scored as wrong"])
    text = build_html_report(
        aligned, scores, visuals=lambda r: fake_visual(), visual_settings={"spec": "oao+flow"}
    )
    page = Page(text)
    assert text.startswith("<!DOCTYPE html>")
    csp = [m for m in page.named("meta") if m.get("http-equiv") == "Content-Security-Policy"]
    assert csp and "default-src 'none'" in csp[0]["content"] and "img-src data:" in csp[0]["content"]
    assert not page.named("script") and not page.named("link") and not page.named("iframe")
    # score table + per split (overall, samm, casme3) and kind: a confusion matrix and a per-class table
    assert len(page.named("table")) == 1 + 2 * 6
    images = page.named("img")
    assert images and all(
        str(i["src"]).startswith(("data:image/jpeg;base64,", "data:image/png;base64,")) for i in images
    )
    # 5 wrong rows, 4 images each (onset, apex, offset, flow), drawn as JPEG thumbnails
    jpegs = [i for i in images if str(i["src"]).startswith("data:image/jpeg")]
    assert len(jpegs) == 5 * 4
    assert {i["alt"] for i in jpegs} == {"onset #0", "apex (estimated) #5", "offset #9", "flow onset→apex"}
    body = "".join(page.text)
    assert "5 wrong" in body and "(no answer)" in body and "missing prediction for casme3_test_C_1" in body
    assert "samm_test_B_1 (samm, invalid)" in body and "samm_test_A_2 (samm, wrong)" in body
    assert "samm_test_B_3 (samm, empty)" in body and "casme3_test_C_1 (casme3, missing)" in body


def test_hostile_text_from_a_prediction_file_is_escaped():
    hostile_rows = [
        AlignedRow(HOSTILE, HOSTILE, HOSTILE, "coarse", "negative", HOSTILE),  # type: ignore[arg-type]
        AlignedRow("v2", "samm", t.COARSE_QUESTION, "coarse", HOSTILE, "negative"),  # type: ignore[arg-type]
    ]
    scores = score_aligned(hostile_rows, problems=[f"duplicated prediction {HOSTILE}"])
    text = build_html_report(
        hostile_rows, scores, visuals=lambda r: fake_visual(), details={HOSTILE: {HOSTILE: HOSTILE}}
    )
    page = Page(text)
    assert not page.named("script")
    assert all(str(a["href"]).startswith("#") for a in page.named("a"))
    assert all(str(i["src"]).startswith("data:image/") for i in page.named("img"))
    assert not [name for _, attrs in page.tags for name in attrs if name.startswith("on")]
    assert "<script>" not in text and 'evil.example/">' not in text
    assert (
        "".join(page.text).count(HOSTILE) >= 6
    )  # shown as text, literally: id, dataset, question, answer, truth...


def test_wrong_rows_are_bounded_per_kind_and_a_clip_without_frames_still_shows():
    many = [row(f"samm_test_X_{i}", "coarse", "negative", "positive") for i in range(7)]
    many += [row(f"samm_test_Y_{i}", "fine", "anger", "happiness") for i in range(3)]

    def visuals(r: AlignedRow) -> VisualInputs:
        if r.video_id == "samm_test_Y_0":
            raise FileNotFoundError("no frame folder for 'Y' under /test")
        return fake_visual()

    page = Page(build_html_report(many, score_aligned(many), visuals=visuals, max_wrong=2))
    body = "".join(page.text)
    assert (
        "coarse: 7 wrong row(s), the first 2 shown" in body
        and "fine: 3 wrong row(s), the first 2 shown" in body
    )
    assert "samm_test_X_1" in body and "samm_test_X_2" not in body
    assert "frames cannot be shown: FileNotFoundError: no frame folder for 'Y' under /test" in body
    assert len([i for i in page.named("img") if str(i["src"]).startswith("data:image/jpeg")]) == 3 * 4


def test_per_class_table_agrees_with_the_scorer():
    rng = np.random.default_rng(0)
    classes = ["negative", "positive", "surprise", "others"]
    aligned = [
        row(f"samm_test_{i}_1", "coarse", str(rng.choice(classes[:3])), str(rng.choice(classes)))
        for i in range(40)
    ]
    table = ClassTable.of(aligned, "coarse")
    stats = table.per_class()
    scores = score_aligned(aligned)["overall"]
    assert np.mean([s["f1"] for s in stats]) == pytest.approx(scores["uf1_coarse"])
    assert np.mean([s["recall"] for s in stats]) == pytest.approx(scores["uar_coarse"])
    assert sum(map(sum, table.counts)) == 40 and table.columns[-1] == "<invalid>"


# --- the hooks: score.py --report and run_vqa --gt ---------------------------------------------------


def score_script():
    spec = importlib.util.spec_from_file_location("score_script", REPO / "eval" / "score.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def synth_samm(tmp_path_factory) -> tuple[Path, Path, Path]:
    """synth-test frames and truth for the 2025 SAMM question file, and predictions with wrong and hostile
    answers: ``(frames root, ground truth, predictions)``."""
    from megc_vqa.cli import main as cli

    root = tmp_path_factory.mktemp("samm")
    args = [
        "synth-test",
        "--questions",
        str(SAMM_2025),
        "--out",
        str(root / "ts"),
        "--size",
        "64",
        "--workers",
        "1",
    ]
    assert cli(args) == 0
    gt = root / "ts" / "gt" / SAMM_2025.name
    rows = [json.loads(line) for line in gt.read_text().splitlines()]
    preds = [{**r, "answer": HOSTILE if i % 4 == 0 else r["answer"]} for i, r in enumerate(rows)]
    pred = root / "me_vqa_samm_test_pred.jsonl"
    pred.write_text("".join(json.dumps(r) + "\n" for r in preds))
    return root / "ts", gt, pred


def test_score_report_writes_report_html_with_the_clips_frames(synth_samm, tmp_path, capsys):
    frames, gt, pred = synth_samm
    out = tmp_path / "rep"
    argv = ["vqa", "--pred", str(pred), "--gt", str(gt), "--report", str(out), "--frames-root", str(frames),
            "--report-rows", "2", "--image-size", "96"]  # fmt: skip
    assert score_script().main(argv) == 0
    page = Page((out / "report.html").read_text())
    jpegs = [i for i in page.named("img") if str(i["src"]).startswith("data:image/jpeg")]
    body = "".join(page.text)
    assert jpegs and "frames cannot be shown" not in body and "size=96" in body
    assert not page.named("script") and HOSTILE in body
    assert (
        "report.html"
        in json.loads((out / ".megc-vqa-output.json").read_text())["owners"]["megc-vqa score --report"]
    )
    # the gallery options need --report; a user's report.html is never replaced
    capsys.readouterr()
    assert (
        score_script().main(["vqa", "--pred", str(pred), "--gt", str(gt), "--frames-root", str(frames)]) == 2
    )
    assert "need --report DIR" in capsys.readouterr().err
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my page")
    assert score_script().main(["vqa", "--pred", str(pred), "--gt", str(gt), "--report", str(mine)]) == 2
    assert "holds report.html" in capsys.readouterr().err and (mine / "report.html").read_text() == "my page"


class CannedEngine:
    """An engine that answers ``positive`` to everything (run_vqa's engine interface, no model)."""

    def __init__(self) -> None:
        from megc_vqa.answering.engine import EngineOptions
        from megc_vqa.models.contract import ModelContract

        self.options, self.contract = EngineOptions(), ModelContract()

    def answer_clips(self, clips, sample_seed=None, kinds=None, datasets=None):
        from megc_vqa.answering.engine import Answer

        assert all(len(visual.images) == 4 for visual, _ in clips)  # what the gallery shows again
        return [([Answer("positive", raw=" Positive.") for _ in questions], []) for _, questions in clips]


def test_run_vqa_with_ground_truth_writes_report_html(synth_samm, tmp_path):
    from megc_vqa.answering.run_vqa import run_vqa

    frames, _, _ = synth_samm
    rows = [json.loads(line) for line in SAMM_2025.read_text().splitlines()][:10]
    questions = tmp_path / "q" / SAMM_2025.name
    questions.parent.mkdir()
    questions.write_text("".join(json.dumps(r) + "\n" for r in rows))
    truth = tmp_path / "gt.jsonl"  # an answer no model gives: every row is wrong, every row in the gallery
    truth.write_text("".join(json.dumps({**r, "answer": "zzz"}) + "\n" for r in rows))
    result = run_vqa([questions], frames, "tiny-qwen2.5-vl", tmp_path / "out", gt_files=[truth], progress=False,
                     engine=CannedEngine(), report_rows=1)  # fmt: skip
    page = Page(Path(result.summary["report_html"]).read_text())
    kinds = {t.classify_question(r["question"]) for r in rows}
    jpegs = [i for i in page.named("img") if str(i["src"]).startswith("data:image/jpeg")]
    assert len(kinds) > 2 and len(jpegs) == 4 * len(kinds)  # one wrong row per kind, oao+flow: 4 images
    body = "".join(page.text)
    assert "record=none (defaults)" in body and "raw output" in body and " Positive." in body
    assert f"{len(rows)} wrong" in body and f"{len(rows)} scored row(s)" in body


# --- slow: the page in a real browser ---------------------------------------------------------------------


def chromium() -> str | None:
    return next(
        (p for n in ("chromium", "chromium-browser", "google-chrome") if (p := shutil.which(n))), None
    )


def screenshot(browser: str, page: Path, png: Path, profile: Path) -> np.ndarray:
    from PIL import Image

    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--virtual-time-budget=5000", f"--user-data-dir={profile}", f"--screenshot={png}",
             "--window-size=1200,5000"]  # fmt: skip
    subprocess.run([browser, *flags, page.as_uri()], check=True, capture_output=True, timeout=120)
    return np.asarray(Image.open(png).convert("RGB"))


@pytest.mark.slow
def test_report_html_renders_with_its_images_in_headless_chromium(synth_samm, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip(f"no Chromium: {CHROMIUM_INSTALL}")
    frames, gt, pred = synth_samm
    out = tmp_path / "rep"
    argv = ["vqa", "--pred", str(pred), "--gt", str(gt), "--report", str(out), "--frames-root", str(frames),
            "--report-rows", "3"]  # fmt: skip
    assert score_script().main(argv) == 0
    text = (out / "report.html").read_text()
    # The same page with every image's data emptied (a broken image): what the page is without its images.
    broken = tmp_path / "broken.html"
    broken.write_text(text.replace("data:image/jpeg;base64,", "data:image/jpeg;base64,AA").replace(
        "data:image/png;base64,", "data:image/png;base64,AA"))  # fmt: skip
    shot = screenshot(browser, out / "report.html", tmp_path / "shot.png", tmp_path / "p1")
    bare = screenshot(browser, broken, tmp_path / "bare.png", tmp_path / "p2")
    n_images = text.count('src="data:image/')

    def drawn(image: np.ndarray) -> int:  # pixels that are not the white page
        return int((image.min(axis=2) < 235).sum())

    # Every image is a face, a flow field or a figure, far from blank: the images add many drawn pixels.
    assert n_images >= 8
    assert drawn(shot) > drawn(bare) + n_images * 2000, (drawn(shot), drawn(bare), n_images)
    # Faces are mid grey: a thumbnail area of non-white, non-black pixels with some texture is there.
    faces = (shot.min(axis=2) > 40) & (shot.max(axis=2) < 220)
    assert faces.sum() > 4 * 100 * 100 and np.std(shot[faces]) > 5
    os.remove(tmp_path / "shot.png")
