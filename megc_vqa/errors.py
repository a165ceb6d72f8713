"""The one error boundary every command runs behind, and the base of the project's own errors.

A *project error* is a mistake the user can fix (a missing file, a bad value, a file in the wrong format):
its message names the file, row, key or option and says what to change. Every command (the ``megc-vqa``
sub-commands and the scripts under ``eval/``, ``data_prep/`` and ``recipes/``) runs its ``main`` through
:func:`run_command`, which turns

- a project error into one line on stderr (``error: <message>``) and exit status 2;
- an ``OSError`` about the disk or a chosen path (full, read-only, forbidden, name too long) into one line
  naming the file and what to change, and exit status 2;
- any other exception into one line saying where its full traceback was written (:func:`log_folder`: a
  private per-user folder or the run's output folder, a new file never opened through a link), and
  exit status 1;
- Ctrl-C into ``interrupted`` and exit status 130.

Under ``accelerate launch`` the line is printed again once the launcher has exited (after the launcher's own
traceback), so the project's message is the last thing the user reads.

Project errors are :class:`MegcError`: the boundary recognises every one by that base, so there is no list
to keep. Here: :class:`UsageError` (options) and :class:`InputError` (input files). Each layer defines its
own subclasses where it raises them, keeping the built-in base callers catch (``ValueError`` or
``RuntimeError``): annotations ``AnnotationError``; visual ``FrameError`` (``FaceSkip``),
``FaceDetectorUnavailable``; qa ``QAFileError``, ``TrainingFileError``, ``PrepError``; models
``VisualInputError``, ``ModelLoadError``, ``ServingError``; training ``ConfigError``, ``TrainingError``; answering
``EngineError``, ``RunError``, ``LogMismatchError``; metrics ``StrInputError``; spotting
``CheckpointError``, ``NoFramesError``; synth ``QuestionFileError``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import secrets
import stat
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

log = logging.getLogger(__name__)


class MegcError(Exception):
    """A mistake the user can fix; the message names what to change."""


class UsageError(MegcError, ValueError):
    """A bad option value or combination of options."""


class InputError(MegcError, ValueError):
    """An input file (recipe, CSV, question file, checkpoint, frames) that cannot be used as it is."""


# --- shared validation helpers ----------------------------------------------------------------------------


def cut(value: object, limit: int = 120) -> str:
    """``repr``-like text of a value, cut to ``limit`` characters so one bad cell never floods a message.

    >>> cut("x" * 300, 5)
    "'xxxxx'... (300 characters)"
    """
    if isinstance(value, str):
        return repr(value) if len(value) <= limit else f"{value[:limit]!r}... ({len(value)} characters)"
    text = str(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def check_number(
    name: str,
    value: float | int | None,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    where: str | None = None,
) -> None:
    """Raise :class:`UsageError` unless ``minimum <= value <= maximum`` (and ``value > above``); ``None`` passes.

    The message names the option (``--batch-size``, ``train.epochs``), the allowed range and the value.

    >>> check_number("--votes", 0, minimum=1)
    Traceback (most recent call last):
    ...
    megc_vqa.errors.UsageError: --votes must be at least 1 (got 0)
    """
    if value is None:
        return
    import math

    bounds = []
    if above is not None:
        bounds.append(f"greater than {above:g}")
    if minimum is not None:
        bounds.append(f"at least {minimum:g}")
    if maximum is not None:
        bounds.append(f"at most {maximum:g}")
    bad = (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or (isinstance(value, float) and not math.isfinite(value))
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
        or (above is not None and value <= above)
    )
    if bad:
        prefix = f"{where}: " if where else ""
        raise UsageError(f"{prefix}{name} must be {' and '.join(bounds) or 'a number'} (got {cut(value)})")


_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def check_device(name: str, value: str) -> None:
    """Raise :class:`UsageError` unless ``value`` is ``cpu`` or ``cuda[:N]`` with that GPU present (checked
    before any work, so a typo never surfaces as torch's list of device types after the data was read)."""
    if not _DEVICE.fullmatch(str(value)):
        raise UsageError(f"{name} {str(value)[:60]}: use cpu or cuda[:N]")
    if value != "cpu":
        import torch  # only for a GPU request: the command is about to use torch anyway

        index = int(value.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            found = (
                f"{torch.cuda.device_count()} CUDA device(s)"
                if torch.cuda.is_available()
                else "no CUDA device"
            )
            raise UsageError(
                f"{name} {value}: this machine has {found}; use cpu (--device cpu) or a cuda:N it has"
            )


def unknown_keys_error(keys: object, known: object, where: str, kind: str = "key") -> InputError:
    """The error for keys nobody reads, each with its closest known spelling (difflib)."""
    import difflib

    known_list = sorted(map(str, known))  # type: ignore[call-overload]
    hints = []
    for key in sorted(map(str, keys)):  # type: ignore[call-overload]
        close = difflib.get_close_matches(key, known_list, n=2, cutoff=0.6)
        hints.append(f"{key!r}" + (f" (did you mean {' or '.join(close)}?)" if close else ""))
    return InputError(f"{where}: unknown {kind}(s) {'; '.join(hints)}; known: {', '.join(known_list)}")


def reject_unknown_keys(data: object, known: object, where: str, kind: str = "key") -> None:
    """Raise :func:`unknown_keys_error` when ``data`` (a mapping) has keys outside ``known``."""
    if not isinstance(data, dict):
        raise InputError(f"{where}: expected a mapping of {kind}: value, got {type(data).__name__}")
    unknown = set(map(str, data)) - set(map(str, known))  # type: ignore[call-overload]
    if unknown:
        raise unknown_keys_error(unknown, known, where, kind)


def _one_line(err: BaseException, limit: int = 2000) -> str:
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the machine's answer, not the program's fault: a full disk, a read-only or forbidden path -----------

# errno -> what it means and what to change; such an error is the user's to fix (exit status 2, no crash log)
_STORAGE_ERRNOS = {
    errno.ENOSPC: ("no space left on the device", "free some space or write the output to another disk"),
    errno.EDQUOT: ("the disk quota is used up", "free some space or write the output to another disk"),
    errno.EFBIG: ("the file is too large for that file system", "write the output to another disk"),
    errno.EROFS: ("the file system is read-only", "choose a writable folder"),
    errno.EACCES: ("permission denied", "make it readable/writable for you, or choose another path"),
    errno.EPERM: ("operation not permitted", "make it readable/writable for you, or choose another path"),
    errno.ENAMETOOLONG: ("the file name is too long", "choose a shorter name or path"),
    errno.ELOOP: ("a symbolic link loop on the path", "give the real path"),
}


def storage_problem(err: OSError) -> str | None:
    """The message for an ``OSError`` that says something about the disk or a path the user chose (full,
    read-only, forbidden, name too long), naming the file and what to change; ``None`` for any other."""
    meaning = _STORAGE_ERRNOS.get(err.errno) if err.errno is not None else None
    if meaning is None:
        return None
    what, change = meaning
    if err.filename is not None:
        target = f"{cut(str(err.filename), 200)}: "
    else:  # ENOSPC names no file: the run's output folder, when the command said which it is
        target = f"writing under {_output_folder}: " if _output_folder is not None else ""
    code = errno.errorcode.get(err.errno, str(err.errno))
    return f"{target}{what} ({code}); {change}, then run the command again"


# --- crash logs ---------------------------------------------------------------------------------------------

# The output folder of the command now running (set by the command once it exists, reset by run_command):
# a crash log goes there, beside the run's other files, rather than into a folder shared with others.
_output_folder: Path | None = None


def set_output_folder(path: str | os.PathLike[str] | None) -> None:
    """Let an unexpected error of this run write its traceback into ``path`` (the command's output folder,
    which must exist); ``None`` forgets it. ``MEGC_VQA_LOG_DIR`` still wins."""
    global _output_folder
    _output_folder = Path(path) if path is not None else None


def _private_folder(folder: Path) -> Path:
    """``folder``, created with mode 0700 where missing, and checked to be a real folder of this user that
    nobody else may write or read (mode fixed to 0700 where it is ours); ``OSError`` otherwise."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(folder)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise OSError(f"{folder}: not a folder of this user")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(folder, 0o700)
    return folder


def log_folder() -> Path:
    """Where crash logs go: ``$MEGC_VQA_LOG_DIR``; else the running command's output folder
    (:func:`set_output_folder`); else a private per-user folder (``$XDG_STATE_HOME/megc-vqa/logs``,
    default ``~/.local/state/megc-vqa/logs``, or, where home cannot be written, a 0700 folder of this
    user under the temp folder), never a predictable path that others could plant a link at."""
    given = os.environ.get("MEGC_VQA_LOG_DIR")
    if given:
        folder = Path(given)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder
    if _output_folder is not None and _output_folder.is_dir():
        return _output_folder
    state = os.environ.get("XDG_STATE_HOME")
    base = Path(state) if state and os.path.isabs(state) else Path.home() / ".local" / "state"
    candidates = [base / "megc-vqa" / "logs", Path(tempfile.gettempdir()) / f"megc-vqa-{os.getuid()}"]
    for folder in candidates:
        try:
            return _private_folder(folder)
        except OSError:
            continue
    # Both taken (e.g. someone else made the temp one): a fresh private folder of our own.
    return Path(tempfile.mkdtemp(prefix="megc-vqa-logs-"))


def _write_traceback(err: BaseException) -> Path:
    """Write the traceback into a new file of :func:`log_folder`: a fresh name opened with O_EXCL and
    O_NOFOLLOW (mode 0600), so an existing file or a planted link is never written through."""
    folder = log_folder()
    text = "".join(traceback.format_exception(err)).encode("utf-8")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    for _ in range(20):
        name = f"traceback-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}-{secrets.token_hex(4)}.txt"
        path = folder / name
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            continue
        with os.fdopen(fd, "wb") as handle:
            handle.write(text)
        return path
    raise FileExistsError(f"{folder}: no free name for a crash log")


# Re-prints the project's message once the `accelerate launch` process (pid argv[1]) has exited, so that it
# comes after the launcher's own CalledProcessError traceback.
_REPRINT = """
import os, select, sys, time
pid = int(sys.argv[1])
try:
    fd = os.pidfd_open(pid)
except (OSError, AttributeError):
    fd = None
if fd is not None:
    select.select([fd], [], [], 120)
else:
    deadline = time.time() + 120
    while os.path.exists(f"/proc/{pid}") and time.time() < deadline:
        time.sleep(0.02)
sys.stderr.write(sys.argv[2] + chr(10))
sys.stderr.flush()
"""


def _parent_pid(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def accelerate_launcher_pid() -> int | None:
    """The ``accelerate launch`` process this one runs under (parent or a few levels up), on Linux."""
    if not any(k.startswith("ACCELERATE_") for k in os.environ):
        return None
    pid: int | None = os.getppid()
    for _ in range(4):
        if not pid or pid <= 1:
            return None
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        if any(b"accelerate" in a for a in argv) and any(a.endswith(b"launch") for a in argv):
            return pid
        pid = _parent_pid(pid)
    return None


def _say_last(line: str) -> None:
    """Print ``line`` on stderr now and, under ``accelerate launch`` (rank 0), again after the launcher exits.

    The launcher answers a failed child with its own traceback, which would otherwise be the last thing the
    user reads; the exit status stays non-zero (the launcher's)."""
    print(line, file=sys.stderr, flush=True)
    if os.environ.get("RANK", "0") != "0":
        return
    launcher = accelerate_launcher_pid()
    if launcher is None:
        return
    import contextlib
    import subprocess

    with contextlib.suppress(OSError):  # the message was printed once already
        subprocess.Popen(
            [sys.executable, "-c", _REPRINT, str(launcher), line],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            close_fds=True,
        )


def run_command(main: Callable[[Sequence[str] | None], int | None], argv: Sequence[str] | None = None) -> int:
    """Run ``main(argv)`` behind the boundary and return the exit status (see the module docstring)."""
    set_output_folder(None)  # a folder of an earlier command in this process is not this run's
    try:
        return int(main(argv) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except SystemExit:
        raise
    except MegcError as err:
        _say_last(f"error: {_one_line(err)}")
        return 2
    except FileNotFoundError as err:  # an input that is not there: a user mistake, the message names it
        _say_last(f"error: {_one_line(err)}")
        return 2
    except OSError as err:
        problem = storage_problem(err)
        if problem is None:
            return _unexpected(err)
        _say_last(f"error: {problem}")
        return 2
    except Exception as err:
        return _unexpected(err)
    finally:
        set_output_folder(None)


def _unexpected(err: BaseException) -> int:
    """An error nobody foresaw: keep the traceback, say where it is (exit status 1)."""
    try:
        where = f"full traceback in {_write_traceback(err)}"
    except OSError as log_err:
        where = f"its traceback could not be written: {_one_line(log_err, 200)}; set MEGC_VQA_LOG_DIR"
    _say_last(f"error: unexpected {type(err).__name__}: {_one_line(err, 300)} ({where})")
    return 1
