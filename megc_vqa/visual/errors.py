"""The errors of the visual inputs, apart from the OpenCV modules that raise them so the commands that
report them (prep, run_vqa, the spotter) catch them without loading OpenCV."""

from __future__ import annotations

from megc_vqa.errors import MegcError


class FrameError(MegcError, RuntimeError):
    """A frame source cannot be read: the message names the offending path."""


class FaceSkip(FrameError):
    """A clip the face pipeline cannot use as it is (no face, two faces, a face cut by the border, a crop
    outside the frame, a face that leaves the frame, frames of another size or colour mode). The message
    names the clip and why; every consumer reports it as a skipped clip, never as a silent crop."""
