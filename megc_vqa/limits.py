"""Every resource limit on what the project reads, in one place.

A file a user hands the toolkit (a submission zip, a frame image, a recipe, a question file, a sidecar) and
every count on the command line is bounded here, so a small hostile or broken input cannot drive a command
to gigabytes of memory or hours of work. Each limit has a name, a default well above what the MEGC
releases and the project's own outputs need, and an environment variable that raises it for a user who
really has more (``MEGC_VQA_MAX_<NAME>``, e.g. ``MEGC_VQA_MAX_IMAGE_PIXELS=200000000``). Every error names
the limit, the value met and that variable, so the fix is in the message.

The limits are read when checked (not at import), so a test or a wrapper can set the variable at any time.

Defaults and why:

========================  ==================  ========================================================
limit                     default             what it bounds, and the real size it leaves room for
========================  ==================  ========================================================
``zip_members``           1 000               files in a submission zip (the official ones hold <= 6)
``zip_member_bytes``      256 MiB             one unpacked zip member (a prediction file is < 10 MB)
``zip_total_bytes``       1 GiB               all unpacked members of one zip together
``image_pixels``          50 000 000          one frame image (SAMM frames are 2040x1088 = 2.2 Mpx), and a
                                              training recipe's ``min_pixels``/``max_pixels``
``yaml_bytes``            1 MiB               a recipe file (the shipped ones are < 4 KB)
``json_bytes``            64 MiB              a JSON object file (``videos.json``, configs, records)
``jsonl_bytes``           1 GiB               a JSONL or CSV file (questions, predictions, STR)
``jsonl_line_bytes``      64 MiB              one JSONL line (a QA row is < 10 KB; see below)
``synth_count``           10 000              synthetic subjects, clips per subject, long videos
``workers``               256                 worker processes of a command
``votes``                 256                 sampled answers per question (``run_vqa --votes``)
``batch_size``            65 536              rows per batch (``--batch-size``)
``epochs``                100 000             training epochs (``spot-train --epochs``, recipes)
``train_steps``           10 000 000          a training recipe's ``max_steps`` (thousands in use)
``samples``               100 000 000         spotter training samples per epoch (a recipe's key)
``sampled_frames``        1 024               frames sampled per clip (``uniform:N``) or spotter window
``spotter_crop``          512                 a spotting recipe's ``model.size`` (64-128 px in use)
``spotter_width``         4 096               a spotting recipe's ``model.hidden`` and ``widths``
``lora_rank``             4 096               a training recipe's ``lora_r`` (8-64 in use)
``report_rows``           1 000               wrong rows of each kind in ``report.html`` (24 by default)
========================  ==================  ========================================================

``jsonl_line_bytes`` is generous because the validator reads, and warns on, a prediction whose answer is an
absurd 27 MB (the leaderboard accepts the file; the user should hear about it, not get a refusal).
"""

from __future__ import annotations

import io
import os
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from megc_vqa.errors import InputError, MegcError, UsageError, check_number

MIB = 1 << 20
GIB = 1 << 30


@dataclass(frozen=True)
class Limit:
    """A named limit; its value is the default unless ``MEGC_VQA_MAX_<NAME>`` raises (or lowers) it."""

    name: str
    default: int
    what: str

    @property
    def env(self) -> str:
        return f"MEGC_VQA_MAX_{self.name.upper()}"

    @property
    def value(self) -> int:
        """The limit in force: the environment variable when set to a positive integer, else the default."""
        text = os.environ.get(self.env, "").strip().replace("_", "")
        if not text:
            return self.default
        try:
            value = int(text)
        except ValueError:
            raise UsageError(f"{self.env}={os.environ[self.env]!r}: expected a positive integer") from None
        if value < 1:
            raise UsageError(f"{self.env}={value}: expected a positive integer")
        return value

    def hint(self) -> str:
        """``limit NAME = VALUE UNIT; set ENV to raise it`` (the tail of every error about this limit)."""
        return f"limit {self.name} = {self.value:,} {self.what}; set {self.env} to raise it"

    def exceeded(self, where: str, found: str, error: type[Exception] = InputError) -> Exception:
        """The error for ``where`` holding ``found`` (e.g. ``'a member of 300 MB'``), over this limit."""
        return error(f"{where}: {found}, over the {self.hint()}")


ZIP_MEMBERS = Limit("zip_members", 1000, "files in one zip")
ZIP_MEMBER_BYTES = Limit("zip_member_bytes", 256 * MIB, "bytes unpacked per zip member")
ZIP_TOTAL_BYTES = Limit("zip_total_bytes", GIB, "bytes unpacked per zip")
IMAGE_PIXELS = Limit("image_pixels", 50_000_000, "pixels per image")
YAML_BYTES = Limit("yaml_bytes", MIB, "bytes per YAML file")
JSON_BYTES = Limit("json_bytes", 64 * MIB, "bytes per JSON file")
JSONL_BYTES = Limit("jsonl_bytes", GIB, "bytes per JSONL or CSV file")
JSONL_LINE_BYTES = Limit("jsonl_line_bytes", 64 * MIB, "bytes per JSONL line")
SYNTH_COUNT = Limit("synth_count", 10_000, "(synthetic subjects, clips or videos)")
WORKERS = Limit("workers", 256, "worker processes")
VOTES = Limit("votes", 256, "votes per question")
GENERATIONS = Limit("generations", 256, "sampled answers per question (GRPO groups, rejection sampling)")
BATCH_SIZE = Limit("batch_size", 65_536, "rows per batch")
EPOCHS = Limit("epochs", 100_000, "epochs")
TRAIN_STEPS = Limit("train_steps", 10_000_000, "training steps")
SAMPLES = Limit("samples", 100_000_000, "samples per epoch")
SAMPLED_FRAMES = Limit("sampled_frames", 1024, "frames sampled per clip or window")
SPOTTER_CROP = Limit("spotter_crop", 512, "pixels per side of a spotter crop")
SPOTTER_WIDTH = Limit("spotter_width", 4096, "channels per spotter layer")
LORA_RANK = Limit("lora_rank", 4096, "LoRA rank")
REPORT_ROWS = Limit("report_rows", 1000, "wrong rows per kind in report.html")

ALL: tuple[Limit, ...] = (
    ZIP_MEMBERS,
    ZIP_MEMBER_BYTES,
    ZIP_TOTAL_BYTES,
    IMAGE_PIXELS,
    YAML_BYTES,
    JSON_BYTES,
    JSONL_BYTES,
    JSONL_LINE_BYTES,
    SYNTH_COUNT,
    WORKERS,
    VOTES,
    BATCH_SIZE,
    EPOCHS,
    TRAIN_STEPS,
    SAMPLES,
    SAMPLED_FRAMES,
    SPOTTER_CROP,
    SPOTTER_WIDTH,
    LORA_RANK,
    REPORT_ROWS,
)


def check_count(
    option: str,
    value: float | None,
    limit: Limit,
    *,
    minimum: float | None = 1,
    where: str | None = None,
    error: type[Exception] = UsageError,
) -> None:
    """A count (``--subjects``, a recipe's ``batch_size``): at least ``minimum`` and within ``limit``, else
    ``error`` naming the option, the value, the limit and its variable. ``None`` passes.

    >>> check_count("--votes", 3, VOTES)
    """
    if value is None:
        return
    try:
        check_number(option, value, minimum=minimum, where=where)
    except UsageError as err:
        raise error(str(err)) from None
    if value > limit.value:
        raise limit.exceeded(f"{where}: {option}" if where else option, f"{value:,} is too many", error)


# The side, in pixels, every frame is resized to (``--image-size``, a recipe's ``image_size``): the visual
# layer allocates frames of this size for every sampled image, so it is bounded like a decoded image.
MIN_IMAGE_SIDE = 16
MAX_IMAGE_SIDE = 4096


def check_image_size(option: str, value: int | None, where: str | None = None) -> None:
    """``--image-size`` / ``image_size`` within ``MIN_IMAGE_SIDE..MAX_IMAGE_SIDE`` (``None`` passes)."""
    check_number(option, value, minimum=MIN_IMAGE_SIDE, maximum=MAX_IMAGE_SIDE, where=where)


def read_bounded(path: str | os.PathLike[str], limit: Limit, what: str = "file") -> bytes:
    """The bytes of ``path``, refused (:class:`InputError` naming the file and ``limit``) when larger.

    Only a regular file is read (a FIFO would block the command, ``/dev/zero`` never end). The size is
    checked before reading and the read itself stops one byte past the limit, so a file that grows cannot
    slip past the ``stat``. A missing file raises ``FileNotFoundError`` as ``open`` does."""
    path = Path(path)
    cap = limit.value
    if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block, a device never end
        raise InputError(f"{path}: not a regular file (a folder, FIFO or device); give the {what} itself")
    with open(path, "rb") as handle:
        try:
            size = os.fstat(handle.fileno()).st_size
        except OSError:
            size = 0
        if size > cap:
            raise limit.exceeded(str(path), f"{what} of {size:,} bytes")
        data = handle.read(cap + 1)
    if len(data) > cap:
        raise limit.exceeded(str(path), f"{what} larger than {cap:,} bytes")
    return data


def read_stream_bounded(stream: BinaryIO, cap: int, chunk: int = MIB) -> bytes | None:
    """Up to ``cap`` bytes of ``stream``; ``None`` when it holds more (the read stops one chunk past)."""
    parts: list[bytes] = []
    total = 0
    while True:
        block = stream.read(min(chunk, cap + 1 - total))
        if not block:
            return b"".join(parts)
        parts.append(block)
        total += len(block)
        if total > cap:
            return None


def check_image_pixels(width: int, height: int, where: str, what: str = "image") -> None:
    """Refuse an image (or a video's frames) whose header declares more than :data:`IMAGE_PIXELS` pixels."""
    if width * height > IMAGE_PIXELS.value:
        raise IMAGE_PIXELS.exceeded(where, f"{what} of {width}x{height} = {width * height:,} pixels")


def open_image(source: str | os.PathLike[str] | BinaryIO, where: str):  # -> PIL.Image.Image
    """A Pillow image with only its header read, refused (:class:`InputError` naming ``where`` and
    :data:`IMAGE_PIXELS`) when the header declares too many pixels: nothing is decoded before the check
    (a 100 KB PNG can declare 30000x30000 pixels, 2.7 GB decoded). Pillow's errors for a file that is no
    image pass through (``UnidentifiedImageError``, ``OSError``) for the caller to word."""
    from PIL import Image

    limit = IMAGE_PIXELS.value  # first: a bad MEGC_VQA_MAX_IMAGE_PIXELS is a usage error, never a skip
    # Pillow's own decompression-bomb guard (a warning, then an error naming its own limit) is set aside
    # while the header is read, so that the refusal the user sees is this one, naming this limit; it is
    # left in step with ours for any other Pillow use.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = None
        try:
            image = Image.open(source)
        finally:
            Image.MAX_IMAGE_PIXELS = limit
    width, height = image.size
    if width * height > limit:
        image.close()
        check_image_pixels(width, height, where)
    return image


def image_header(source: str | os.PathLike[str] | BinaryIO, where: str) -> tuple[tuple[int, int], str] | None:
    """``((width, height), mode)`` from an image's header, the one reader of image headers: no pixel is
    decoded, and an image declaring more than :data:`IMAGE_PIXELS` pixels is refused (:func:`open_image`).
    ``None`` when Pillow cannot parse the header: decoding the image then says what is wrong."""
    try:
        with open_image(source, where) as image:
            return image.size, image.mode
    except MegcError:
        raise
    except Exception:  # Pillow raises many types for foreign or damaged files; the decoder words them
        return None


def check_image_header(data: bytes | bytearray | memoryview, where: str) -> tuple[int, int] | None:
    """(width, height) from an encoded image's header (:func:`image_header`), refused over
    :data:`IMAGE_PIXELS`; the OpenCV frame reader calls this before ``cv2.imdecode``. ``None`` when Pillow
    does not recognise the bytes: the decoder then reports the file as it always did."""
    header = image_header(io.BytesIO(data), where)
    return header[0] if header is not None else None
