"""Files on the ground floor: atomic writes and JSONL with line numbers, used by every writer and reader.

Everything above (annotations, QA records, visual caches, training, answering, spotting, the leaderboard
layer) writes through :func:`atomic_write_bytes` so that a kill at the wrong moment never leaves a half file
that the next command cannot read, and reads JSONL through :func:`parse_jsonl` so that every defect is
reported with its file and line.

Every reader here is bounded by :mod:`megc_vqa.limits`: a JSONL file and each of its lines
(:func:`read_jsonl_bytes`, :func:`parse_jsonl`), a JSON object file (:func:`read_json_object`,
:func:`read_json_bytes`) and a YAML file (:func:`load_yaml_file`: size, and no aliases).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from megc_vqa.errors import InputError
from megc_vqa.limits import JSON_BYTES, JSONL_BYTES, JSONL_LINE_BYTES, YAML_BYTES, read_bounded


@dataclass(frozen=True)
class Problem:
    """One defect of an input file. ``line`` is 1-based, 0 for the file as a whole."""

    file: str
    line: int
    message: str
    level: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        return f"{where}: {self.level}: {self.message}"


@dataclass(frozen=True)
class JsonlRow:
    line: int
    data: dict[str, Any]


def parse_jsonl(data: bytes, name: str) -> tuple[list[JsonlRow], list[Problem]]:
    """Parse JSONL bytes, keeping line numbers. Never raises: defects come back as problems.

    A BOM, CRLF line ends, blank lines, non-UTF-8 bytes, a line that is not one JSON object and an
    empty file are errors (the leaderboard parses strictly); the rows that did parse are returned. A line
    longer than :data:`megc_vqa.limits.JSONL_LINE_BYTES` is an error naming the limit (and not parsed).
    """
    problems: list[Problem] = []
    if not data.strip():
        return [], [Problem(name, 0, "empty file: expected one JSON object per line")]
    if data.startswith(b"\xef\xbb\xbf"):
        problems.append(Problem(name, 1, "file starts with a UTF-8 BOM; write plain UTF-8 without a BOM"))
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        problems.append(Problem(name, line, f"not valid UTF-8 ({err.reason})"))
        text = data.decode("utf-8", errors="replace")
    rows: list[JsonlRow] = []
    line_cap, line_hint = JSONL_LINE_BYTES.value, JSONL_LINE_BYTES.hint()
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline ends the last line, it does not start a new one
    crlf_reported = False
    for number, line in enumerate(lines, start=1):
        if line.endswith("\r"):
            if not crlf_reported:
                problems.append(Problem(name, number, "CRLF line ending; use LF ('\\n') only"))
                crlf_reported = True
            line = line[:-1]
        if len(line) > line_cap // 4 and len(line.encode("utf-8")) > line_cap:  # a character: <= 4 bytes
            problems.append(
                Problem(name, number, f"line of {len(line.encode('utf-8')):,} bytes, over the {line_hint}")
            )
            continue
        if not line.strip():
            problems.append(Problem(name, number, "blank line"))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(Problem(name, number, f"not valid JSON: {err.msg} (column {err.colno})"))
            continue
        except RecursionError:
            problems.append(Problem(name, number, "not valid JSON: nested too deeply"))
            continue
        except ValueError as err:  # e.g. an integer of more digits than Python converts
            problems.append(Problem(name, number, f"not valid JSON: {str(err).split(';')[0][:120]}"))
            continue
        if not isinstance(obj, dict):
            problems.append(Problem(name, number, f"expected a JSON object, got {type(obj).__name__}"))
            continue
        rows.append(JsonlRow(number, obj))
    return rows, problems


# The problems of parse_jsonl that lenient readers accept (their messages start so).
TOLERATED_PROBLEMS = ("file starts with a UTF-8 BOM", "CRLF line ending", "blank line", "empty file")


def is_plain_name(name: str) -> bool:
    """A single folder or file name: not empty, not ``.``/``..``, no separator or NUL (so joining it to a
    root cannot leave the root). Question files name clips and videos so."""
    return (
        bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name and "\0" not in name
    )


def is_inside(path: str | os.PathLike[str], root: str | os.PathLike[str]) -> bool:
    """Whether ``path`` lies in ``root`` (or is it), compared lexically after making both absolute.

    Lexical on purpose: a dataset laid out with symlinks by its owner still works, while a path *written
    in an input file* (``..``, an absolute path) cannot climb out. Links inside a root are the root
    owner's doing; a file's text is not."""
    target = os.path.normpath(os.path.abspath(path))
    base = os.path.normpath(os.path.abspath(root))
    return os.path.commonpath([target, base]) == base


def resolve_inside(
    value: str | os.PathLike[str], roots: Iterable[str | os.PathLike[str]], where: str, allow: str
) -> Path:
    """``value`` (a path written in an input file) resolved against the first of ``roots``; it must lie
    inside one of them, else :class:`InputError` naming ``where``, the value, the roots and ``allow`` (how
    to let the path in from the command line)."""
    roots = [Path(r) for r in roots]
    path = Path(value)
    path = path if path.is_absolute() else roots[0] / path
    if any(is_inside(path, root) for root in roots):
        return Path(os.path.normpath(path))
    inside = " or ".join(str(r) for r in roots)
    raise InputError(f"{where}: {str(value)!r} is outside {inside}; {allow}")


def read_jsonl_bytes(path: str | os.PathLike[str]) -> bytes:
    """The bytes of a JSONL file for :func:`parse_jsonl`, refused over :data:`megc_vqa.limits.JSONL_BYTES`
    (:class:`InputError` naming the file and the limit)."""
    return read_bounded(path, JSONL_BYTES, "JSONL file")


def read_json_bytes(path: str | os.PathLike[str], what: str = "JSON file") -> bytes:
    """The bytes of a JSON file, refused over :data:`megc_vqa.limits.JSON_BYTES`."""
    return read_bounded(path, JSON_BYTES, what)


def loads_json(data: bytes | str, where: str, what: str = "JSON file") -> Any:
    """``json.loads`` whose failures (bad JSON, bad UTF-8, nesting deep enough to exhaust the stack) are one
    :class:`InputError` naming ``where``."""
    try:
        return json.loads(data.decode("utf-8-sig") if isinstance(data, bytes) else data)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"{where}: not a valid {what} ({err})") from None
    except RecursionError:
        raise InputError(f"{where}: not a valid {what} (nested too deeply)") from None
    except ValueError as err:  # e.g. an integer of more digits than Python converts
        raise InputError(f"{where}: not a valid {what} ({str(err).split(';')[0][:120]})") from None


def load_yaml_file(path: str | os.PathLike[str], what: str = "YAML file") -> Any:
    """A YAML file parsed safely and with bounded work: at most :data:`megc_vqa.limits.YAML_BYTES`, and no
    aliases (``*name``), which let a 1 KB file expand to billions of nodes ("billion laughs"); recipes
    write each value out. A file over the limit raises :class:`InputError` naming it; a syntax error, an
    alias or nesting deep enough to exhaust the stack raise ``yaml.YAMLError`` for the caller to word
    (and ``UnicodeDecodeError`` for bytes that are not UTF-8)."""
    import yaml

    data = read_bounded(path, YAML_BYTES, what)
    try:
        return yaml.load(data.decode("utf-8-sig"), Loader=_no_alias_loader())  # a SafeLoader
    except RecursionError:
        raise yaml.YAMLError("nested too deeply") from None
    except yaml.YAMLError:
        raise
    except ValueError as err:  # a value the safe constructors cannot build, e.g. a 5000-digit integer
        raise yaml.YAMLError(str(err).split(";")[0][:120]) from None


@functools.cache
def _no_alias_loader() -> type:
    """The loader class, built on first use (importing this module does not import PyYAML)."""
    import yaml

    class NoAliasLoader(yaml.SafeLoader):
        """``yaml.SafeLoader`` that refuses aliases: the expansion they allow is unbounded."""

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(yaml.AliasEvent):
                event = self.peek_event()
                raise yaml.composer.ComposerError(
                    None,
                    None,
                    f"found the alias *{event.anchor}: aliases are not accepted (they let a small file expand "
                    "without bound); write the value out",
                    event.start_mark,
                )
            return super().compose_node(parent, index)

    return NoAliasLoader


def read_jsonl(path: str | os.PathLike[str], *, strict: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSONL file. Lenient by default (BOM, CRLF and blank lines are tolerated);
    a line that is not a JSON object always raises ``ValueError`` naming the file and line; a file over
    :data:`megc_vqa.limits.JSONL_BYTES` raises :class:`InputError` naming the limit."""
    rows, problems = parse_jsonl(read_jsonl_bytes(path), str(path))
    tolerated = ("BOM", "CRLF", "blank line")
    fatal = [p for p in problems if strict or not any(t in p.message for t in tolerated)]
    if fatal:
        raise ValueError("; ".join(str(p) for p in fatal))
    return [r.data for r in rows]


def read_json_object(path: str | os.PathLike[str], what: str = "JSON file") -> dict[str, Any]:
    """A JSON object from a file the project wrote (adapter config, training record, ...); an empty,
    cut or foreign file raises :class:`megc_vqa.errors.InputError` naming the file (never a bare
    ``JSONDecodeError``); a file over :data:`megc_vqa.limits.JSON_BYTES` is refused naming the limit."""
    path = Path(path)
    try:
        data = read_json_bytes(path, what)
    except FileNotFoundError:
        raise InputError(f"{path}: no such {what}") from None
    if not data.strip():
        raise InputError(f"{path}: empty {what} (a run killed while writing it?); rewrite or remove it")
    obj = loads_json(data, str(path), what)
    if not isinstance(obj, dict):
        raise InputError(f"{path}: not a valid {what} (expected a JSON object, got {type(obj).__name__})")
    return obj


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def dumps_jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    """One compact-but-spaced JSON object per line, UTF-8 characters kept, LF line ends."""
    return "".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows)


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    return atomic_write_text(path, dumps_jsonl(rows))


@contextlib.contextmanager
def atomic_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """Build a folder beside ``target`` and move it into place when the block succeeds: an interrupted
    build leaves no half folder (and the previous ``target``, if any, until the move)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
