"""The append-only answer log: one JSON line per answered row, flushed to disk as it is written.

A run that is killed (or interrupted with Ctrl-C) keeps every answer it had written; the next run with
the same output folder reads the log and answers only the rows it lacks. The first line records what
produced the answers (model, adapter, decoding options), so a resume with a different configuration is
refused instead of mixing answers of two models in one submission.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from megc_vqa.errors import MegcError
from megc_vqa.errors import cut as cut_text
from megc_vqa.fileio import atomic_write_text, settings_differences

log = logging.getLogger(__name__)


class LogMismatchError(MegcError, RuntimeError):
    """The log in the output folder was written by another configuration, or is not an answer log."""


class AnswerLog:
    """``AnswerLog(path, fingerprint)``: ``done`` holds the logged rows by key; ``append`` adds one."""

    def __init__(self, path: Path, fingerprint: dict[str, Any]) -> None:
        self.path = Path(path)
        self.fingerprint = fingerprint
        self.done: dict[str, dict[str, Any]] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size:
            self._load()
        else:
            self._write_line({"_fingerprint": fingerprint})

    def _load(self) -> None:
        raw = self.path.read_bytes()
        if not raw.endswith(b"\n"):
            # Killed in the middle of a line: drop the partial line so appends start clean.
            cut = raw.rfind(b"\n") + 1
            log.warning("%s: dropping a partly written last line (the run was killed mid-write)", self.path)
            with self.path.open("r+b") as fh:
                fh.truncate(cut)
            raw = raw[:cut]
        lines = raw.decode("utf-8").splitlines()
        if not lines:
            self._write_line({"_fingerprint": self.fingerprint})
            return
        try:
            first = json.loads(lines[0])
        except json.JSONDecodeError:
            first = None
        if not isinstance(first, dict) or "_fingerprint" not in first:
            raise LogMismatchError(
                f"{self.path}, line 1: not the answer log's header line (a JSON object with _fingerprint); "
                "this file was not written by run_vqa: use another --out folder, or delete the file to start over"
            )
        if first.get("_fingerprint") != self.fingerprint and len(lines) == 1:
            # No answer was logged (the earlier run failed before answering): start over quietly.
            atomic_write_text(
                self.path, json.dumps({"_fingerprint": self.fingerprint}, ensure_ascii=False) + "\n"
            )
            return
        if first.get("_fingerprint") != self.fingerprint:
            logged = first.get("_fingerprint")
            differences = settings_differences(logged if isinstance(logged, dict) else {}, self.fingerprint)
            raise LogMismatchError(
                f"{self.path} holds {len(lines) - 1} answer(s) from another configuration "
                f"({'; '.join(differences) or 'format'}): resuming would mix them into this run's files. "
                "Use another --out folder, or delete the log to start over."
            )
        for n, line in enumerate(lines[1:], start=2):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                entry = err
            if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
                why = (
                    f"not JSON ({entry.msg})"
                    if isinstance(entry, json.JSONDecodeError)
                    else "no answer entry"
                )
                raise LogMismatchError(
                    f"{self.path}, line {n}: {why}: {cut_text(line, 80)}; delete that line (its row is answered "
                    "again) or the whole file, then rerun to resume"
                )
            self.done[entry["key"]] = entry
        log.info("%s: resuming, %d rows already answered", self.path, len(self.done))

    def _write_line(self, obj: dict[str, Any]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(obj, ensure_ascii=False) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def append(self, entry: dict[str, Any]) -> None:
        """Write one row (must carry a ``key``) and keep it in ``done``."""
        self._write_line(entry)
        self.done[entry["key"]] = entry

    def extend(self, entries: list[dict[str, Any]]) -> None:
        """Write several rows with one flush; each line is complete, so a kill loses at most the last."""
        with self.path.open("a", encoding="utf-8") as fh:
            for entry in entries:
                fh.write(json.dumps(entry, ensure_ascii=False) + "\n")
                self.done[entry["key"]] = entry
            fh.flush()
            os.fsync(fh.fileno())
