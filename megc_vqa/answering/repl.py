"""``megc-vqa ask``: ask a model about a clip, interactively or once.

    megc-vqa ask --model tiny-qwen2.5-vl --clip data/test/frames/SAMM-1
    megc-vqa ask --model qwen2.5-vl-3b --adapter runs/lora --clip clip.mp4 --onset 10 --apex 30 --offset 60 \
        --question "What is the coarse expression class?"

The model loads once; each answer shows its latency. Commands at the prompt: ``:help``, ``:clip PATH
[ONSET APEX OFFSET]`` to switch clips, ``:frames`` to show which frames (and flow image) the model sees
and save them as a contact sheet, ``:save [FILE]`` to write the transcript, ``:quit``. Line editing and
history come from readline when the terminal has it. This module imports only light modules at load
time; the model stack is imported inside ``run``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from megc_vqa.annotations.long_videos import check_fps
from megc_vqa.answering.run_vqa import VisualSettings
from megc_vqa.errors import MegcError, UsageError, check_number, cut
from megc_vqa.fileio import (
    atomic_write_bytes,
    atomic_write_text,
    check_writable_file,
    dumps_jsonl,
    is_regular_file,
)
from megc_vqa.records import Clip, FrameSource

HELP = """\
Type a question and press Enter, for example:
  What is the coarse expression class?
  What are the action units?
  Is the action unit lip corner puller shown on the face?
Commands:
  :help                          this text
  :clip PATH [ONSET APEX OFFSET]  switch to another frame folder or video
  :frames                        which frames (and flow image) the model sees; saves a contact sheet PNG
  :info                          the model and the prompt/visual settings it answers with
  :save [FILE]                   write the transcript (JSON lines) to FILE (default ask_transcript.jsonl)
  :quit                          leave (Ctrl-D works too)"""

HISTORY_FILE = Path.home() / ".megc_vqa_ask_history"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", required=True, help="registry name (tiny-qwen2.5-vl, qwen2.5-vl-3b), hub id or folder"
    )
    parser.add_argument("--adapter", type=Path, help="PEFT adapter folder trained on --model")
    parser.add_argument("--clip", type=Path, required=True, help="a frame folder or a video file")
    parser.add_argument("--onset", type=int, help="onset frame (default: first frame)")
    parser.add_argument("--apex", type=int, help="apex frame (default: estimated)")
    parser.add_argument("--offset", type=int, help="offset frame (default: last frame)")
    parser.add_argument("--fps", type=float, help="frame rate (default: the video's, or 30 for a folder)")
    parser.add_argument("--question", help="answer this one question and exit (for scripts)")
    parser.add_argument("--visual-spec", help="sampler spec (default: what training recorded, else oao+flow)")
    parser.add_argument("--image-size", type=int, help="frame size in pixels (default: training's, else 224)")
    parser.add_argument("--free-decoding", action="store_true", help="no label-constrained decoding")
    parser.add_argument(
        "--sheet", type=Path, default=Path("ask_frames.png"), help="where :frames saves its PNG"
    )


@dataclass
class ClipRequest:
    path: Path
    onset: int | None = None
    apex: int | None = None
    offset: int | None = None


@dataclass
class Session:
    """The REPL loop, independent of any model: ``answer(visual, question) -> str`` and
    ``load_visual(ClipRequest) -> VisualInputs`` are given, so tests drive it with fakes."""

    answer: Callable[[Any, str], str]
    load_visual: Callable[[ClipRequest], Any]
    clip: ClipRequest
    sheet_path: Path = Path("ask_frames.png")
    out: TextIO = sys.stdout
    info: Callable[[], dict[str, Any]] | None = None  # the settings in use (``Engine.settings``)
    transcript: list[dict[str, Any]] = field(default_factory=list)
    _visual: Any = None

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)

    @property
    def visual(self) -> Any:
        if self._visual is None:
            self._visual = self.load_visual(self.clip)
        return self._visual

    def ask(self, question: str) -> str:
        t = time.perf_counter()
        answer = self.answer(self.visual, question)
        latency = time.perf_counter() - t
        self.transcript.append(
            {
                "clip": str(self.clip.path),
                "question": question,
                "answer": answer,
                "latency_s": round(latency, 3),
            }
        )
        self.say(f"{answer}\n  ({latency:.2f} s)")
        return answer

    def handle(self, line: str) -> bool:
        """Run one input line; False means leave."""
        line = line.strip()
        if not line:
            return True
        if not line.startswith(":"):
            self.ask(line)
            return True
        cmd, *rest = line.split()
        if cmd in (":quit", ":q", ":exit"):
            return False
        if cmd == ":help":
            self.say(HELP)
        elif cmd == ":clip":
            self._switch(rest)
        elif cmd == ":frames":
            if rest:  # it takes nothing; an argument would otherwise be ignored without a word
                self.say(
                    f":frames takes no argument (got {' '.join(rest)}); it shows the current clip's frames"
                )
            else:
                self._frames()
        elif cmd == ":info":
            self.say(json.dumps(self.info() if self.info else {}, indent=2, default=str))
        elif cmd == ":save":
            if len(rest) > 1:
                self.say("usage: :save [FILE] (one file name, no spaces)")
            else:
                self._save(Path(rest[0]) if rest else Path("ask_transcript.jsonl"))
        else:
            self.say(f"unknown command {cmd}; :help lists the commands")
        return True

    def _save(self, path: Path) -> None:
        if not path.parent.is_dir():
            self.say(
                f"cannot save to {path}: folder {path.parent} does not exist (create it, or name another file)"
            )
            return
        try:
            check_writable_file(path)  # a FIFO, device, folder or link there: refused, never replaced
        except MegcError as err:
            self.say(f"cannot save: {err}")
            return
        if is_regular_file(path) and not is_transcript(path):  # a frame, the user's notes: never replaced
            self.say(
                f"cannot save to {path}: it exists and is not a transcript written by :save; "
                "name another file (or move that one away)"
            )
            return
        if not self.transcript:
            self.say(f"nothing saved to {path}: the transcript is empty (ask a question first)")
            return
        try:
            atomic_write_text(path, dumps_jsonl(self.transcript))
        except MegcError as err:
            self.say(f"cannot save: {err}")
            return
        except OSError as err:
            self.say(f"cannot save to {path}: {err.strerror or err}")
            return
        self.say(f"transcript ({len(self.transcript)} answers) saved to {path}")

    def _switch(self, rest: list[str]) -> None:
        if not rest or len(rest) not in (1, 4):
            self.say("usage: :clip PATH [ONSET APEX OFFSET]")
            return
        try:
            numbers = [int(x) for x in rest[1:]]
        except ValueError:
            self.say("ONSET APEX OFFSET must be frame numbers")
            return
        request = ClipRequest(Path(rest[0]), *numbers)
        try:
            if numbers:  # named as the user typed them here, not as the command line's options
                check_clip_options(*numbers, names=("ONSET", "APEX", "OFFSET"))
            visual = self.load_visual(request)
        except Exception as err:  # keep the session alive, say what was wrong
            self.say(f"cannot open {request.path}: {_describe(err)}")
            return
        self.clip, self._visual = request, visual
        self.say(f"clip: {request.path}\n{getattr(visual, 'description', '')}")

    def _frames(self) -> None:
        visual = self.visual
        self.say(f"the model sees: {visual.description}")
        self.say(f"key frames: {list(visual.frame_indices)}; {len(visual.images)} image(s)")
        try:
            save_contact_sheet(visual, self.sheet_path)
            self.say(f"contact sheet: {self.sheet_path}")
        except Exception as err:
            self.say(f"could not save the contact sheet: {err}")

    def loop(self, lines: Callable[[], str]) -> int:
        """Read lines until :quit or end of input; Ctrl-C cancels the line, a second one leaves."""
        self.say(f"megc-vqa ask: clip {self.clip.path}. :help for commands, :quit to leave.")
        while True:
            try:
                line = lines()
            except EOFError:
                self.say("")
                return 0
            except KeyboardInterrupt:
                self.say("\n(Ctrl-C: press Ctrl-D or type :quit to leave)")
                continue
            try:
                if not self.handle(line):
                    return 0
            except KeyboardInterrupt:
                self.say("\n(interrupted)")
            except Exception as err:  # never lose the session: say what went wrong and prompt again
                self.say(
                    f"error: {_describe(err)}\n(the session goes on: :clip PATH opens another clip, :help)"
                )


TRANSCRIPT_KEYS = frozenset({"clip", "question", "answer", "latency_s"})


def is_transcript(path: Path, limit: int = 1 << 16) -> bool:
    """Whether ``path`` holds a transcript of an earlier ``:save`` (its first line is a JSON object with
    exactly the transcript's keys), so ``:save`` may replace it; any other file (a frame, the user's notes,
    an empty file) is kept. Only the first line (at most ``limit`` bytes) is read."""
    try:
        with open(path, "rb") as fh:
            row = json.loads(fh.readline(limit))
    except (OSError, ValueError):
        return False
    return isinstance(row, dict) and set(row) == TRANSCRIPT_KEYS


def _describe(err: Exception) -> str:
    """One line for an error at the prompt: the project's message as it is, else the type too."""
    text = " ".join(str(err).split())
    if isinstance(err, (MegcError, OSError)):
        return text if len(text) <= 500 else text[:500] + "..."
    return f"{type(err).__name__}: {cut(text, 300)}"


def check_clip_options(
    onset: int | None,
    apex: int | None,
    offset: int | None,
    names: Sequence[str] = ("--onset", "--apex", "--offset"),
) -> None:
    """Frame numbers given on the command line or to ``:clip``: non-negative, onset <= apex <= offset.
    ``names``: how the user gave them (the options, or ``:clip``'s ONSET APEX OFFSET)."""
    n_on, n_apex, n_off = names
    for name, value in zip(names, (onset, apex, offset), strict=True):
        check_number(name, value, minimum=0)
    problems = []
    if onset is not None and offset is not None and onset > offset:
        problems.append(f"{n_on} {onset} is after {n_off} {offset}")
    if apex is not None and onset is not None and apex < onset:
        problems.append(f"{n_apex} {apex} is before {n_on} {onset}")
    if apex is not None and offset is not None and apex > offset:
        problems.append(f"{n_apex} {apex} is after {n_off} {offset}")
    if problems:
        raise UsageError("; ".join(problems) + "; the onset comes first, then the apex, then the offset")


def _check_in_clip(req: ClipRequest, first: int, last: int) -> None:
    """The requested frames must exist in the clip (``first..last``)."""
    for name, value in (("onset", req.onset), ("apex", req.apex), ("offset", req.offset)):
        if value is not None and not first <= value <= last:
            raise UsageError(f"{req.path}: {name} {value} is outside the clip's frames {first}..{last}")


def save_contact_sheet(visual: Any, path: Path) -> Path:
    """The images the model sees, side by side, each captioned (frame number, or flow/diff)."""
    from PIL import Image, ImageDraw

    images = [Image.fromarray(im) for im in visual.images]
    captions = [f"frame {i}" for i in visual.frame_indices] + ["flow/diff"] * (
        len(images) - len(visual.frame_indices)
    )
    h = max(im.height for im in images)
    sheet = Image.new("RGB", (sum(im.width for im in images), h + 16), "white")
    x = 0
    draw = ImageDraw.Draw(sheet)
    for im, cap in zip(images, captions, strict=True):
        sheet.paste(im.convert("RGB"), (x, 16))
        draw.text((x + 2, 2), cap, fill="black")
        x += im.width
    buffer = io.BytesIO()
    sheet.save(buffer, "PNG")
    return atomic_write_bytes(path, buffer.getvalue())  # never through a FIFO, device or link there


def make_clip_loader(args: argparse.Namespace, contract: Any) -> Callable[[ClipRequest], Any]:
    """``ClipRequest -> VisualInputs`` with the visual settings of ``contract`` (the engine's training
    record, with any explicit options applied)."""
    from dataclasses import replace

    from megc_vqa.visual.frames import clip_from_folder, open_frames

    def load(req: ClipRequest) -> Any:
        path = req.path
        if path.is_dir():
            clip = clip_from_folder(path, args.fps or 30.0, dataset="ask")
        elif path.is_file():
            source = FrameSource("video", path)
            with open_frames(source) as reader:
                first, last = reader.first, reader.last
            clip = Clip(
                "ask",
                path.parent.name,
                path.stem,
                path.stem,
                source,
                args.fps or _video_fps(path),
                first,
                last,
            )
        else:
            raise FileNotFoundError(f"{path}: no such frame folder or video")
        check_clip_options(req.onset, req.apex, req.offset)
        _check_in_clip(req, clip.onset, clip.offset)
        onset = req.onset if req.onset is not None else clip.onset
        offset = req.offset if req.offset is not None else clip.offset
        clip = replace(clip, onset=onset, offset=offset, apex=req.apex)
        return contract.sample(clip)

    return load


def _video_fps(path: Path) -> float:
    import cv2

    cap = cv2.VideoCapture(str(path))
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    cap.release()
    return float(fps)


def _readline_input(prompt: str = "ask> ") -> Callable[[], str]:
    """``input`` with readline history when stdin is a terminal; plain line reads otherwise."""
    if not sys.stdin.isatty():

        def read() -> str:
            line = sys.stdin.readline()
            if not line:
                raise EOFError
            return line

        return read
    try:
        import atexit
        import readline

        with contextlib.suppress(OSError):
            readline.read_history_file(HISTORY_FILE)
        atexit.register(readline.write_history_file, HISTORY_FILE)
    except ImportError:  # Windows without pyreadline: plain input
        pass
    return lambda: input(prompt)


def run(args: argparse.Namespace) -> int:
    from megc_vqa.answering.engine import Engine, EngineOptions

    if not args.clip.exists():
        raise UsageError(f"--clip {args.clip}: no such frame folder or video")
    check_clip_options(args.onset, args.apex, args.offset)  # before the model loads
    check_fps("--fps", args.fps)
    check_number("--image-size", args.image_size, minimum=16, maximum=4096)
    if not args.sheet.parent.is_dir():
        raise UsageError(f"--sheet {args.sheet}: folder {args.sheet.parent} does not exist")
    engine = Engine.load(
        args.model, args.adapter, EngineOptions(batch_size=1, constrained=not args.free_decoding)
    )
    engine.contract = VisualSettings(args.visual_spec, args.image_size).apply(engine.contract)
    session = Session(
        answer=lambda visual, q: _answer_text(engine.answer([q], [visual])[0]),
        load_visual=make_clip_loader(args, engine.contract),
        clip=ClipRequest(args.clip, args.onset, args.apex, args.offset),
        sheet_path=args.sheet,
        info=engine.settings,
    )
    try:
        if args.question:
            session.ask(args.question)
            return 0
        return session.loop(_readline_input())
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130


def _answer_text(answer: Any) -> str:
    """What the REPL shows: the answer, or the model's raw text marked as invalid."""
    if answer.fallback:
        return f"(no valid answer: {answer.reason})"
    return answer.text
