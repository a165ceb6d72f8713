"""Visual inputs for a clip: frame decoding, key-frame samplers, optical flow, apex estimation, the face
pipeline (detection, alignment, registration, magnification), caching.

Importing this package pulls in OpenCV; CLI command modules import it inside ``run`` only.
"""

from megc_vqa.visual.apex import estimate_apex
from megc_vqa.visual.face import FaceDetectorUnavailable, FaceSettings, FaceSkip, face_box, locate_face
from megc_vqa.visual.flow import diff_image, flow_image
from megc_vqa.visual.frames import FrameError, FrameReader, clip_from_folder, list_frames, read_frames
from megc_vqa.visual.samplers import SamplerSpec, VisualInputs, parse_sampler, sample

__all__ = [
    "FaceDetectorUnavailable",
    "FaceSettings",
    "FaceSkip",
    "FrameError",
    "FrameReader",
    "SamplerSpec",
    "VisualInputs",
    "clip_from_folder",
    "diff_image",
    "estimate_apex",
    "face_box",
    "flow_image",
    "list_frames",
    "locate_face",
    "parse_sampler",
    "read_frames",
    "sample",
]
