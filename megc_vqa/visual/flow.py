"""Motion between two frames drawn as an image a vision-language model can look at.

``flow_image`` computes dense optical flow (OpenCV Farneback by default, TV-L1 when
opencv-contrib's ``cv2.optflow`` is installed) and draws it in the usual HSV coding: hue = direction,
saturation = full, value = magnitude. The magnitude is normalised robustly: first ``noise`` pixels are
subtracted (flow estimated on a still face with sensor noise stays below about 0.1 px on 200-px
frames), then the result is divided by its 99th percentile so one outlier pixel does not darken the
image, but never by less than ``min_magnitude`` pixels: without that floor the leftover noise of a still
face would be stretched to full brightness. A still face gives a (near) black image; a 1-px movement
is already bright.

``diff_image`` is the cheaper alternative: the absolute difference of the lightly blurred grey frames,
normalised the same way (``noise`` and ``min_level`` in grey levels).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

from megc_vqa.visual.spec import FLOW_METHODS

FlowMethod = Literal["farneback", "tvl1"]


def _grey(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 3:
        return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    raise ValueError(f"expected an HxW or HxWx3 image, got shape {image.shape}")


def _check_pair(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape[:2] != b.shape[:2]:
        raise ValueError(f"frames differ in size: {a.shape} vs {b.shape}")


def optical_flow(a: np.ndarray, b: np.ndarray, method: str = "farneback") -> np.ndarray:
    """Dense flow from frame ``a`` to frame ``b`` (RGB or grey uint8) as an HxWx2 float32 array (dx, dy)."""
    _check_pair(a, b)
    grey_a, grey_b = _grey(a), _grey(b)
    if method == "farneback":
        # Parameters from OpenCV's sample, finer pyramid (0.5) and a small window: micro-expressions
        # move a few pixels over small facial regions.
        return cv2.calcOpticalFlowFarneback(
            grey_a,
            grey_b,
            None,
            pyr_scale=0.5,
            levels=3,
            winsize=9,
            iterations=3,
            poly_n=5,
            poly_sigma=1.1,
            flags=0,
        )
    if method == "tvl1":
        optflow = getattr(cv2, "optflow", None)
        if optflow is None or not hasattr(optflow, "DualTVL1OpticalFlow_create"):
            raise RuntimeError(
                f"TV-L1 optical flow needs OpenCV's contrib modules (cv2.optflow), which this OpenCV "
                f"{cv2.__version__} lacks: install opencv-contrib-python-headless instead of "
                "opencv-python-headless, or use method='farneback'"
            )
        return optflow.DualTVL1OpticalFlow_create().calc(grey_a, grey_b, None)
    raise ValueError(f"unknown optical flow method {method!r}; choose one of {', '.join(FLOW_METHODS)}")


def _normalise(values: np.ndarray, noise: float, floor: float) -> np.ndarray:
    """Map values to 0..255: minus ``noise``, divided by max(99th percentile, ``floor``) minus noise."""
    scale = max(float(np.percentile(values, 99)), floor) - noise
    return np.clip((values.astype(np.float32) - noise) * (255.0 / scale), 0, 255).astype(np.uint8)


def flow_to_image(flow: np.ndarray, *, noise: float = 0.1, min_magnitude: float = 1.0) -> np.ndarray:
    """Draw an HxWx2 flow field as HxWx3 uint8 RGB: hue = direction, value = robustly normalised magnitude."""
    magnitude, angle = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
    hsv = np.empty((*flow.shape[:2], 3), np.uint8)
    hsv[..., 0] = (angle / 2).astype(np.uint8)  # OpenCV's 8-bit hue runs 0..179
    hsv[..., 1] = 255
    hsv[..., 2] = _normalise(magnitude, noise, min_magnitude)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def flow_image(
    a: np.ndarray, b: np.ndarray, method: str = "farneback", *, noise: float = 0.1, min_magnitude: float = 1.0
) -> np.ndarray:
    """Optical flow from ``a`` to ``b`` drawn as an HxWx3 uint8 RGB image (see the module docstring)."""
    return flow_to_image(optical_flow(a, b, method), noise=noise, min_magnitude=min_magnitude)


def diff_image(a: np.ndarray, b: np.ndarray, *, noise: float = 2.0, min_level: float = 12.0) -> np.ndarray:
    """Absolute grey-level difference ``|b - a|`` as HxWx3 uint8, stretched so its 99th percentile is white.

    Both frames are blurred (5x5 Gaussian) first to quieten sensor noise; differences of ``noise`` grey
    levels or less stay black and the stretch never exceeds 255 / (``min_level`` - ``noise``).
    """
    _check_pair(a, b)
    blur_a = cv2.GaussianBlur(_grey(a), (5, 5), 0)
    blur_b = cv2.GaussianBlur(_grey(b), (5, 5), 0)
    return cv2.cvtColor(_normalise(cv2.absdiff(blur_a, blur_b), noise, min_level), cv2.COLOR_GRAY2RGB)
