"""Files on the ground floor: atomic writes and JSONL with line numbers, used by every writer and reader.

Everything above (annotations, QA records, visual caches, training, answering, spotting, the leaderboard
layer) writes through :func:`atomic_write_bytes` so that a kill at the wrong moment never leaves a half file
that the next command cannot read, and reads JSONL through :func:`parse_jsonl` so that every defect is
reported with its file and line.

Commands replace or delete only what they wrote: :func:`claim_outputs` (names in a shared ``--out``),
:func:`atomic_folder` (a folder built whole), :func:`check_outside` (an output never holds an input) and
:func:`check_cache_entry` and :func:`atomic_cache_folder` (cache entries: tiny and random models, synthetic
sets), with the marker file :data:`OUTPUT_MARKER`.

Every reader here is bounded by :mod:`megc_vqa.limits`: a JSONL file and each of its lines
(:func:`read_jsonl_bytes`, :func:`parse_jsonl`), a JSON object file (:func:`read_json_object`,
:func:`read_json_bytes`) and a YAML file (:func:`load_yaml_file`: size, and no aliases).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from megc_vqa.errors import InputError, UsageError, cut
from megc_vqa.limits import JSON_BYTES, JSONL_BYTES, JSONL_LINE_BYTES, YAML_BYTES, read_bounded


@dataclass(frozen=True)
class Problem:
    """One defect of an input file. ``line`` is 1-based, 0 for the file as a whole."""

    file: str
    line: int
    message: str
    level: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.where}: {self.level}: {self.message}"

    @property
    def where(self) -> str:
        return f"{self.file}:{self.line}" if self.line else self.file

    def located(self) -> str:
        """``file:line: message``, the form inside an exception: the error boundary prints ``error:``
        once before it (``str()`` would give ``error: file:line: error: message``)."""
        return f"{self.where}: {self.message}"


def problems_text(problems: Sequence[Problem], limit: int = 5) -> str:
    """The first ``limit`` problems for an exception's message (:meth:`Problem.located`), and how many
    more there are."""
    more = f" (and {len(problems) - limit} more problems)" if len(problems) > limit else ""
    return "; ".join(p.located() for p in problems[:limit]) + more


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
        twice = _KeysSeenTwice()
        try:
            obj = json.loads(line, object_pairs_hook=twice)
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
        if twice:  # JSON readers differ on which one wins (Python keeps the last): never guess
            keys = ("key " if len(twice) == 1 else "keys ") + ", ".join(repr(k[:60]) for k in twice[:5])
            problems.append(Problem(name, number, f"{keys} given twice in one object; keep one of each"))
        rows.append(JsonlRow(number, obj))
    first = lines[0].rstrip("\r") if lines else ""
    if not rows and "," in first and any(p.message.startswith("not valid JSON") for p in problems):
        # One message for a CSV given where JSONL is read, rather than "not valid JSON" on every line.
        return rows, [Problem(name, 0, _csv_given(first))]
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
    inside = " or ".join(dict.fromkeys(os.path.normpath(r) for r in roots))  # a root given twice: once
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


def read_yaml_mapping(
    path: str | os.PathLike[str], what: str, *, error: type[Exception] = InputError, hint: str = ""
) -> dict[str, Any]:
    """A recipe-like YAML file (:func:`load_yaml_file`) that must hold a mapping of ``key: value`` lines; an
    empty file is an empty mapping. A missing file, invalid YAML or another top-level value raise ``error``
    naming the file (``what``: ``"recipe"``; ``hint`` follows the missing-file message)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise error(f"{what} {path} does not exist{hint}")
    try:
        data = load_yaml_file(path, what) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise error(f"{path}: not a valid YAML {what} ({' '.join(str(err).split())[:300]})") from None
    if not isinstance(data, dict):
        raise error(f"{path}: a {what} is a mapping of key: value lines, got {type(data).__name__}")
    return data


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


class _KeysSeenTwice(list[str]):
    """``object_pairs_hook`` for one line: builds each object as ``json`` does and keeps the keys met twice
    in one object (``json`` itself silently keeps the last value)."""

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        obj: dict[str, Any] = {}
        for key, value in pairs:
            if key in obj and key not in self:
                self.append(key)
            obj[key] = value
        return obj


def _csv_given(first_line: str) -> str:
    columns = {c.strip().strip('"').lower() for c in first_line.split(",")}
    what = "a CSV file"
    if {"subject", "video", "onset", "offset"} <= columns:
        what = "an ME-STR CSV (intervals: STR ground truth or str_pred.csv)"
    head = first_line if len(first_line) <= 80 else first_line[:80] + "..."
    return (
        f"this looks like {what}, first line {head!r}, not JSONL (one JSON object per line); "
        "give the .jsonl file"
    )


def input_file_problem(
    path: str | os.PathLike[str], what: str = "file", suffix: str = ".jsonl"
) -> str | None:
    """Why ``path`` cannot be read as an input file (``None`` when it is a file, or a link to one): it is
    missing, a folder (``give the <suffix> file``) or a special file (a FIFO would block the read)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return f"no such {what}" + (" (a link to nothing)" if os.path.islink(path) else "")
    except OSError as err:
        return f"cannot read it ({err.strerror})"
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return f"is a folder, not a {what}; give the {suffix} file itself"
    kind = _KINDS.get(stat.S_IFMT(mode), "special file")
    return f"is a {kind}, not a {what}; give a regular {suffix} file"


def check_input_file(
    path: str | os.PathLike[str], what: str = "file", *, option: str = "", suffix: str = ".jsonl"
) -> None:
    """Raise :class:`megc_vqa.errors.InputError` naming ``option`` and ``path`` unless ``path`` is a
    readable regular file (see :func:`input_file_problem`)."""
    problem = input_file_problem(path, what, suffix)
    if problem:
        raise InputError(f"{option + ' ' if option else ''}{path}: {problem}")


def refuse_non_folder(path: str | os.PathLike[str], option: str = "--out") -> None:
    """:class:`UsageError` naming the option when the folder it names is a file (or a link to nothing); a
    missing folder passes (whoever writes creates it). For the check before any work: the folder itself is
    made only by what writes into it, so a refused command leaves nothing behind."""
    folder = Path(path)
    if os.path.lexists(folder) and not folder.is_dir():
        kind = "link to nothing" if not os.path.exists(folder) else "file"
        raise UsageError(
            f"{option} {folder}: is a {kind}, not a folder; give a folder (created when missing)"
        )


def check_folder_option(path: str | os.PathLike[str], option: str) -> Path:
    """The folder an option names (a cache, an output), created when missing; :class:`UsageError` naming
    the option when it is a file or cannot be created, before any work that would fail on it later."""
    folder = Path(path)
    refuse_non_folder(folder, option)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UsageError(
            f"{option} {folder}: cannot create the folder ({err.strerror}); give another"
        ) from None
    return folder


def read_jsonl(path: str | os.PathLike[str], *, strict: bool = False) -> list[dict[str, Any]]:
    """Rows of a JSONL file. Lenient by default (BOM, CRLF and blank lines are tolerated);
    a line that is not a JSON object always raises ``ValueError`` naming the file and line; a file over
    :data:`megc_vqa.limits.JSONL_BYTES` raises :class:`InputError` naming the limit."""
    rows, problems = parse_jsonl(read_jsonl_bytes(path), str(path))
    tolerated = ("BOM", "CRLF", "blank line")
    fatal = [p for p in problems if strict or not any(t in p.message for t in tolerated)]
    if fatal:
        raise ValueError(problems_text(fatal))
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


def check_writable_file(path: str | os.PathLike[str]) -> None:
    """Raise :class:`megc_vqa.errors.UsageError` unless ``path`` is absent or a regular file.

    A write renames a new file over its target: over a FIFO, a device, a socket or a symbolic link that
    would replace the special file (or the link) with a regular one, and over a folder it fails late. The
    target is checked with ``lstat``, so a link is refused, never followed."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    except NotADirectoryError:  # a folder on the way is a file: say which, rather than Errno 20 later
        parent = next(p for p in Path(path).parents if os.path.lexists(p))
        raise UsageError(
            f"{path}: cannot be written: {parent} is a file, not a folder; name a folder for the output"
        ) from None
    if stat.S_ISREG(mode):
        return
    kind = _KINDS.get(stat.S_IFMT(mode), "special file")
    raise UsageError(f"{path}: is a {kind}, not a regular file; refusing to replace it (name a regular file)")


def is_regular_file(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a regular file itself (``lstat``: a link to one does not count)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


_KINDS = {
    stat.S_IFDIR: "folder",
    stat.S_IFLNK: "symbolic link",
    stat.S_IFIFO: "FIFO (named pipe)",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "character device",
    stat.S_IFBLK: "block device",
}


def _umask() -> int:
    """The process's umask (read by setting it back at once: there is no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write to a temporary file in the same folder, then rename: a reader never sees half a file.

    An existing target that is not a regular file (FIFO, device, socket, folder, symbolic link) is refused
    with :class:`megc_vqa.errors.UsageError` (see :func:`check_writable_file`)."""
    target = Path(path)
    check_writable_file(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        # mkstemp makes the file 0600: a replaced file keeps its mode, a new one gets the umask's (as open()
        # would), so outputs stay readable by whoever could read them before (a group's shared folder)
        mode = os.lstat(target).st_mode if is_regular_file(target) else 0o666 & ~_umask()
        os.fchmod(fd, stat.S_IMODE(mode))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        check_writable_file(target)  # again just before the rename: it may have appeared meanwhile
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def strict_json(value: Any, **dumps: Any) -> str:
    """``json.dumps`` that writes a non-finite number (an official STRS of 0/0, say) as ``null``: Python's
    default ``NaN``/``Infinity`` are not JSON, and strict readers (jq, browsers, other languages) reject them."""

    def finite(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, Mapping):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(value), allow_nan=False, **dumps)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


@contextlib.contextmanager
def atomic_text_writer(path: str | os.PathLike[str]) -> Iterator[io.StringIO]:
    """``with atomic_text_writer(p) as fh: fh.write(...)``: text gathered in memory (line ends kept as
    written, like ``open(p, "w", newline="")``) and written with :func:`atomic_write_text` at the end."""
    buffer = io.StringIO(newline="")
    yield buffer
    atomic_write_text(path, buffer.getvalue())


def dumps_jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    """One compact-but-spaced JSON object per line, UTF-8 characters kept, LF line ends."""
    return "".join(json.dumps(dict(row), ensure_ascii=False) + "\n" for row in rows)


def write_jsonl(path: str | os.PathLike[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    return atomic_write_text(path, dumps_jsonl(rows))


# --- outputs: a command replaces or deletes only what it wrote itself ------------------------------------

# Left by a writer in a folder it built whole (``atomic_folder``) or in an output folder where it owns only
# some names (``claim_outputs``): ``{"owners": {writer: [entries it wrote]}}`` (several writers may share
# a folder, e.g. run_vqa and score.py --report). Anything else there is the user's.
OUTPUT_MARKER = ".megc-vqa-output.json"


def _owners(folder: Path) -> dict[str, set[str]]:
    """The marker of ``folder``: writer -> the entries it wrote there (empty when there is none, or when it
    is not a regular file or not valid: then nothing there counts as written by anyone)."""
    marker = folder / OUTPUT_MARKER
    try:
        if not stat.S_ISREG(os.lstat(marker).st_mode):
            return {}
        data = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    owners = data.get("owners") if isinstance(data, dict) else None
    if not isinstance(owners, dict):
        return {}
    return {str(w): {str(e) for e in names} for w, names in owners.items() if isinstance(names, list)}


def _write_owners(folder: Path, owners: Mapping[str, Iterable[str]]) -> None:
    data = {"owners": {w: sorted(set(names) - {OUTPUT_MARKER}) for w, names in sorted(owners.items())}}
    atomic_write_text(folder / OUTPUT_MARKER, json.dumps(data, indent=1) + "\n")


def _listing(names: Sequence[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


def check_replaceable(
    target: str | os.PathLike[str],
    writer: str,
    *,
    what: str = "",
    legacy: Callable[[Path], bool] | None = None,
) -> None:
    """Raise :class:`UsageError` unless ``target`` may be replaced by ``writer``: it is absent, an empty
    folder, or a folder that ``writer`` built itself (its marker, and no entry added beside those it lists).

    ``legacy`` recognises a folder the writer made before it left markers. ``what`` names the option or
    role in the message (e.g. ``--out``). A link, a file or a foreign folder is never replaced; the message
    names what would have been deleted.
    """
    target = Path(target)
    label = f"{what} {target}" if what else str(target)
    try:
        mode = os.lstat(target).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISLNK(mode):
        raise UsageError(f"{label}: is a symbolic link; refusing to replace it (name a real folder)")
    if not stat.S_ISDIR(mode):
        raise UsageError(f"{label}: exists and is not a folder; refusing to replace it (name another folder)")
    entries = sorted(os.listdir(target))
    if not entries:
        return
    owners = _owners(target)
    if writer in owners:
        added = [e for e in entries if e not in {*owners[writer], OUTPUT_MARKER}]
        if not added:
            return
        raise UsageError(
            f"{label}: refusing to replace it: besides the output {writer} wrote there, it holds "
            f"{_listing(added)}, which {writer} did not write and would delete; move them out of it, "
            "or choose another folder"
        )
    if legacy is not None and legacy(target):
        return
    raise UsageError(
        f"{label}: refusing to replace it: {writer} did not write this folder (no {OUTPUT_MARKER} of "
        f"{writer} in it), and replacing it would delete {_listing(entries)}; choose a new or empty folder, "
        "or remove it yourself if it is disposable"
    )


def _folder_beside(target: Path, sep: str = ".") -> Path:
    """A new hidden temporary folder in ``target``'s folder (same file system: the final rename is atomic)."""
    folder = Path(tempfile.mkdtemp(prefix=f".{target.name}{sep}", dir=target.parent))
    folder.chmod(0o777 & ~_umask())  # mkdtemp makes it 0700; the folder it becomes gets the umask's mode
    return folder


@contextlib.contextmanager
def atomic_folder(
    target: str | os.PathLike[str],
    writer: str,
    *,
    what: str = "",
    legacy: Callable[[Path], bool] | None = None,
) -> Iterator[Path]:
    """Build a folder beside ``target`` and move it into place when the block succeeds: an interrupted
    build leaves no half folder (and the previous ``target``, if any, until the move).

    Only a previous output of the same ``writer`` is replaced (see :func:`check_replaceable`, checked
    before the block and again before the move); the new folder gets the writer's marker, listing its
    entries, so that the next run may replace it and nothing added to it since.
    """
    target = Path(os.path.abspath(target))
    check_replaceable(target, writer, what=what, legacy=legacy)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _folder_beside(target)
    old: Path | None = None
    try:
        yield tmp
        _write_owners(tmp, {writer: os.listdir(tmp)})
        check_replaceable(target, writer, what=what, legacy=legacy)
        if os.path.lexists(target):
            # Moved aside rather than deleted first: the old output stays whole until the new one is in.
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old.", dir=target.parent))
            os.replace(target, old / "x")
        tmp.rename(target)
    except BaseException:
        if old is not None and (old / "x").exists() and not os.path.lexists(target):
            os.replace(old / "x", target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None and os.path.lexists(target):  # never drop the old output with nothing in its place
            shutil.rmtree(old, ignore_errors=True)


# --- what a resumable run was started with ---------------------------------------------------------------


def file_digest(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """The SHA-256 of a file's bytes (hex), read in blocks: what identifies a checkpoint or an adapter's
    weights in a run's settings, wherever the file was moved and whatever its mtime (a copy made by
    ``cp`` without ``-p`` is the same weights; an edited one is not, even at the same size)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(block):
            digest.update(chunk)
    return digest.hexdigest()


# Above this size a file is identified by size and modification time instead of its bytes: a merged 3B
# model is ~7 GB (seconds of hashing at every start); an adapter, a spotter or a config is hashed whole.
DIGEST_LIMIT = 512 * 1024 * 1024
# The files of a model or adapter folder that change its outputs: weights, configs, the tokenizer and
# processor files, the training record; not logs, metrics or a run's outputs kept beside them.
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".model")
_MODEL_FILE_NAMES = ("vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json",
                     "special_tokens_map.json", "added_tokens.json", "megc_vqa_train.json")  # fmt: skip


def _shapes_outputs(name: str) -> bool:
    return (
        name.endswith(_WEIGHT_SUFFIXES)
        or name.endswith("config.json")
        or name.startswith("tokenizer")
        or name in _MODEL_FILE_NAMES
    )


def content_identity(path: str | os.PathLike[str] | None) -> str | dict[str, str] | None:
    """What a model, adapter or checkpoint *is*, for a run's settings: a file's SHA-256, a folder's
    per-file digests (the weights, configs, tokenizer files and training record at its top), or the name itself when it is not a path
    (a registry name or hub id). Files over :data:`DIGEST_LIMIT` count by size and modification time."""
    if path is None:
        return None
    p = Path(path)

    def one(f: Path) -> str:
        st = f.stat()
        if st.st_size > DIGEST_LIMIT:
            return f"size {st.st_size}, modified {st.st_mtime_ns}"
        return file_digest(f)

    if p.is_file():
        return one(p)
    if p.is_dir():
        # The folder's own files only (models and adapters keep theirs at the top; checkpoint-N folders and
        # whatever else lies below are not the model).
        return {f.name: one(f) for f in sorted(p.iterdir()) if _shapes_outputs(f.name) and f.is_file()}
    return str(path)


def settings_differences(recorded: Mapping[str, Any], now: Mapping[str, Any], prefix: str = "") -> list[str]:
    """One line per setting that differs between two runs' settings, ``key: earlier X, now Y`` (nested
    mappings by dotted key, values cut to 120 characters): what every resumable command says when it
    refuses to resume a run made with other settings (run_vqa's answer log, the demo, run_str/run_lvqa)."""
    lines: list[str] = []
    for key in sorted({*recorded, *now}, key=str):
        old, new = recorded.get(key, "(not recorded)"), now.get(key, "(not set)")
        name = f"{prefix}{key}"
        if isinstance(old, Mapping) and isinstance(new, Mapping):
            lines += settings_differences(old, new, f"{name}.")
        elif old != new:
            lines.append(f"{name}: earlier {cut(old)}, now {cut(new)}")
    return lines


class RunRecord:
    """``OUT/<name>``: the settings a resumable run was started with and what it wrote there.

    Written when the run starts (before any result), so a later run into the same folder can tell whether
    the results it finds were made with its own settings (:meth:`differences`), and a restart can remove
    exactly the files the run wrote (:meth:`own`, :attr:`files`) and nothing else of the folder.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.settings: dict[str, Any] | None = None
        self.files: list[str] = []
        if self.path.is_file():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                data = None  # cut by a kill or not ours: the settings are unknown
            if isinstance(data, dict) and isinstance(data.get("settings"), dict):
                self.settings = data["settings"]
                self.files = [f for f in data.get("files", []) if isinstance(f, str)]

    def differences(self, settings: Mapping[str, Any]) -> list[str]:
        """Which recorded settings differ from ``settings`` (all of them, said so, when none is recorded)."""
        if self.settings is None:
            return [f"no readable record of the earlier run's settings ({self.path})"]
        # JSON round trip: tuples and lists, ints and floats compare as they were written.
        return settings_differences(self.settings, json.loads(json.dumps(dict(settings), default=str)))

    def start(self, settings: Mapping[str, Any], files: Iterable[str] = ()) -> None:
        """Record ``settings`` (the folder's earlier files, when kept, stay listed)."""
        self.settings = json.loads(json.dumps(dict(settings), default=str))
        self.files = sorted(set(files))
        self._write()

    def own(self, *paths: str | os.PathLike[str]) -> None:
        """Note files the run wrote, by their paths relative to the record's folder."""
        names = {Path(p).as_posix() for p in paths}
        if not names <= set(self.files):
            self.files = sorted(set(self.files) | names)
            self._write()

    def _write(self) -> None:
        atomic_write_text(
            self.path, json.dumps({"settings": self.settings, "files": self.files}, indent=2) + "\n"
        )

    def discard(self, also: Iterable[str] = ()) -> list[Path]:
        """Remove the files the run wrote (recorded, plus ``also``: names it always writes) and the record,
        then the folders that became empty; nothing else. Returns what was removed."""
        folder = self.path.parent.resolve()
        removed: list[Path] = []
        parents: set[Path] = set()
        for name in sorted({*self.files, *also}):
            target = folder / name
            # Only plain files inside the folder: a recorded name never leads outside it or through a link.
            if not target.resolve().is_relative_to(folder) or target.is_symlink() or not target.is_file():
                continue
            target.unlink()
            removed.append(target)
            parents.update(p for p in target.parents if p != folder and p.is_relative_to(folder))
        for parent in sorted(parents, key=lambda p: len(p.parts), reverse=True):
            with contextlib.suppress(OSError):  # not empty: it holds something the run did not write
                parent.rmdir()
        if self.path.is_file():
            self.path.unlink()
            removed.append(self.path)
        self.settings, self.files = None, []
        return removed


def _claim_state(
    folder: Path, writer: str, names: list[str], what: str, legacy: Callable[[Path], bool] | None
) -> set[str]:
    mine = _owners(folder).get(writer, set()) if folder.is_dir() else set()
    foreign = []
    for name in names:
        path = folder / name
        if not os.path.lexists(path):
            continue
        mode = os.lstat(path).st_mode
        if name in mine and (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):  # a link is never ours
            continue
        if stat.S_ISDIR(mode) and (writer in _owners(path) or not os.listdir(path)):
            continue
        if legacy is not None and legacy(path):
            continue
        foreign.append(name)
    if foreign:
        raise UsageError(
            f"{what} {folder}: holds {_listing(foreign)}, which {writer} would replace but did not write "
            f"(no record of them in {folder / OUTPUT_MARKER}); move or rename them, or choose another {what}"
        )
    return mine


def check_claimable(
    folder: str | os.PathLike[str],
    writer: str,
    names: Iterable[str],
    *,
    what: str = "--out",
    legacy: Callable[[Path], bool] | None = None,
) -> None:
    """:func:`claim_outputs` without recording anything: raise if ``writer`` may not write ``names``."""
    _claim_state(Path(folder), writer, list(dict.fromkeys(names)), what, legacy)


def claim_outputs(
    folder: str | os.PathLike[str],
    writer: str,
    names: Iterable[str],
    *,
    what: str = "--out",
    legacy: Callable[[Path], bool] | None = None,
) -> None:
    """Let ``writer`` write ``names`` in ``folder``, a folder that may hold the user's own files too.

    Each name that already exists must be a file or folder the writer recorded there before (its marker
    in ``folder``; never a link), a folder the writer built whole (:func:`atomic_folder`'s marker), an
    empty folder, or be recognised by ``legacy`` (outputs of versions before markers); else
    :class:`UsageError` names them and nothing is written. Then the marker records ``names`` (with the earlier ones), before any of them
    is written, so a run cut short can be rerun.
    """
    folder = Path(folder)
    names = list(dict.fromkeys(names))
    mine = _claim_state(folder, writer, names, what, legacy)
    check_folder_option(folder, what)  # a file or a dangling link named as the folder: said, not Errno 17
    owners = _owners(folder)  # other writers' records in the same folder are kept
    owners[writer] = mine | set(names)
    _write_owners(folder, owners)


def cache_base() -> Path:
    """The project's cache folder: ``$MEGC_VQA_CACHE`` when set, else ``~/.cache/megc_vqa`` (built tiny models
    under ``models/``, synthetic sets under ``data/``). The one place the variable is read: a value that is a
    file, a link to nowhere, or under a file is a :class:`UsageError` naming it, before anything is built."""
    value = os.environ.get("MEGC_VQA_CACHE")
    if not value:
        return Path.home() / ".cache" / "megc_vqa"
    base = Path(value)
    # the folder itself, or (not made yet) its nearest existing parent, must be a folder
    probe = base
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        what = (
            "a link to nowhere"
            if probe.is_symlink() and not probe.exists()
            else ("a file" if probe.exists() else "not a folder")
        )
        where = "" if probe == base else f" ({probe} is {what})"
        raise UsageError(
            f"MEGC_VQA_CACHE={value}: {'is ' + what if probe == base else 'cannot be created'}{where}; "
            "point it at a folder (it is created when missing) or unset it"
        )
    return base


def check_cache_entry(target: str | os.PathLike[str], stamp: str, what: str) -> None:
    """Raise :class:`UsageError` unless ``target`` (a cache folder about to be rebuilt and replaced) is
    absent or an older entry of this cache: a real folder holding its ``stamp`` file. A folder of the
    user's (e.g. under a ``MEGC_VQA_CACHE`` pointed at their own files) or a link is never deleted."""
    target = Path(target)
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not is_regular_file(target / stamp):
        raise UsageError(
            f"{target}: is in the way of the {what} but holds no {stamp}, so it is not an earlier cache "
            f"entry; refusing to delete it. Move it away, or point MEGC_VQA_CACHE at another folder"
        )


@contextlib.contextmanager
def atomic_cache_folder(
    target: str | os.PathLike[str], stamp: str, what: str, *, is_current: Callable[[], bool] | None = None
) -> Iterator[Path]:
    """``with atomic_cache_folder(entry, "stamp.json", "tiny model cache") as tmp: build(tmp)``: a cache
    entry built in a temporary folder beside ``target`` and renamed into place when the block succeeds, so
    a concurrent reader never sees a half-built entry and a kill leaves none. Only an older entry of this
    cache (a folder holding ``stamp``, :func:`check_cache_entry`) is replaced. When the rename fails because
    another process put its entry there first, ``is_current()`` says whether that entry is good to use."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = _folder_beside(target, "-")
    try:
        yield tmp
        check_cache_entry(target, stamp, what)  # only an older entry of this cache is deleted
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        try:
            tmp.rename(target)
        except OSError:
            if is_current is None or not is_current():
                raise  # another process did not win the race either
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check_outside(
    path: str | os.PathLike[str], inputs: Iterable[tuple[str, Any]], label: str | None = None
) -> None:
    """Raise :class:`UsageError` when ``path`` (an output to be replaced or cleared) is, or holds, one of
    ``inputs`` (``(description, path)`` pairs such as ``("the current folder", Path.cwd())``; ``None``
    paths are skipped): writing it would destroy that input. Paths are compared resolved (links
    followed). ``label`` names the output in the message (default: the path)."""
    resolved = Path(path).resolve()
    for description, given in inputs:
        if given is None:
            continue
        p = Path(given).resolve()
        if p == resolved or resolved in p.parents:
            where = "is" if p == resolved else "holds"
            raise UsageError(
                f"{label or path}: {where} {description} ({p}); writing there would delete it. "
                "Choose an output outside it"
            )
