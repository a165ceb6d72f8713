"""Motion between two frames drawn as an image a vision-language model can look at.

``flow_image`` computes dense optical flow (OpenCV Farneback by default, TV-L1 when
opencv-contrib's ``cv2.optflow`` is installed) and draws it in the usual HSV coding: hue = direction,
saturation = full, value = magnitude. Magnitudes are divided by their 99th percentile so one outlier
pixel does not darken the whole image, but never by less than ``min_magnitude`` pixels: without that
floor the sensor noise of a still face would be stretched to full brightness, and a still face must
give a (near) black image.

``diff_image`` is the cheaper alternative: the absolute grey-level difference, normalised the same
way (with a floor of ``min_level`` grey levels).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np

FlowMethod = Literal["farneback", "tvl1"]
FLOW_METHODS: tuple[str, ...] = ("farneback", "tvl1")


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


def _robust_scale(values: np.ndarray, floor: float) -> float:
    return max(float(np.percentile(values, 99)), floor)


def flow_to_image(flow: np.ndarray, *, min_magnitude: float = 0.5) -> np.ndarray:
    """Draw an HxWx2 flow field as HxWx3 uint8 RGB: hue = direction, value = robustly normalised magnitude."""
    magnitude, angle = cv2.cartToPolar(flow[..., 0], flow[..., 1], angleInDegrees=True)
    scale = _robust_scale(magnitude, min_magnitude)
    hsv = np.empty((*flow.shape[:2], 3), np.uint8)
    hsv[..., 0] = (angle / 2).astype(np.uint8)  # OpenCV's 8-bit hue runs 0..179
    hsv[..., 1] = 255
    hsv[..., 2] = np.clip(magnitude * (255.0 / scale), 0, 255).astype(np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def flow_image(
    a: np.ndarray, b: np.ndarray, method: str = "farneback", *, min_magnitude: float = 0.5
) -> np.ndarray:
    """Optical flow from ``a`` to ``b`` drawn as an HxWx3 uint8 RGB image (see the module docstring)."""
    return flow_to_image(optical_flow(a, b, method), min_magnitude=min_magnitude)


def diff_image(a: np.ndarray, b: np.ndarray, *, min_level: float = 8.0) -> np.ndarray:
    """Absolute grey-level difference ``|b - a|`` as HxWx3 uint8, stretched so its 99th percentile is white.

    Differences below ``min_level`` grey levels are never stretched to full brightness (still faces
    stay dark).
    """
    _check_pair(a, b)
    diff = cv2.absdiff(_grey(a), _grey(b))
    scale = _robust_scale(diff, min_level)
    stretched = np.clip(diff.astype(np.float32) * (255.0 / scale), 0, 255).astype(np.uint8)
    return cv2.cvtColor(stretched, cv2.COLOR_GRAY2RGB)
