"""Fixtures several test files use (plain helpers live in :mod:`tests.helpers`)."""

from __future__ import annotations

import os

import pytest

# The suite never reaches the Hub (as `make test`, which exports it too): set before any test module imports
# transformers or huggingface_hub, which read it at import.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture
def command_env(tmp_path, monkeypatch):
    """What a command under test runs in: crash logs under the test's ``tmp_path / "logs"`` (not the user's
    log folder) and no Hub access. Test files whose every test runs a command use it for all of them
    (``pytestmark = pytest.mark.usefixtures("command_env")``)."""
    monkeypatch.setenv("MEGC_VQA_LOG_DIR", str(tmp_path / "logs"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
