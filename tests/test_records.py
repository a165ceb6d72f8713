from pathlib import Path

import pytest

from megc_vqa.labels import coarse_of, normalise_fine
from megc_vqa.records import ActionUnit, Clip, FrameSource


def _clip(**kw):
    base = dict(
        dataset="casme2",
        subject="sub01",
        clip_id="EP02_01f",
        image_id="sub01_EP02_01f",
        source=FrameSource("folder", Path("x")),
        fps=200.0,
        onset=10,
        offset=20,
        apex=15,
    )
    base.update(kw)
    return Clip(**base)


def test_clip_rejects_onset_after_offset():
    with pytest.raises(ValueError, match="onset 30 is after offset 20"):
        _clip(onset=30, apex=None)


def test_clip_rejects_apex_outside():
    with pytest.raises(ValueError, match="apex 25 outside"):
        _clip(apex=25)


def test_au_name_and_unknown():
    assert ActionUnit(10, side="L").name == "upper lip raiser"
    assert ActionUnit(99).name is None


def test_label_maps():
    assert normalise_fine(" Happy ") == "happiness"
    assert coarse_of("casme3", "sad") == "negative"
    assert coarse_of("samm", "Other") is None
    assert coarse_of("smic", "po") == "positive"


@pytest.mark.parametrize("module_name", ["megc_vqa.labels", "megc_vqa.qa.templates", "megc_vqa.frame_names"])
def test_doctests(module_name):
    import doctest
    import importlib

    result = doctest.testmod(importlib.import_module(module_name))
    assert result.failed == 0 and result.attempted > 0
