"""Lens distortion models and image undistortion by remapping (numpy + scipy, no OpenCV).

Coefficients use one layout for every format: ``[k1, k2, p1, p2, k3, k4]``.
- ``"opencv"`` (COLMAP SIMPLE_RADIAL / RADIAL / OPENCV, nerfstudio OPENCV): on normalized
  coordinates (x, y) with r2 = x^2 + y^2, radial = 1 + k1 r2 + k2 r2^2 + k3 r2^3 + k4 r2^4,
  x_d = x radial + 2 p1 x y + p2 (r2 + 2 x^2), y_d = y radial + p1 (r2 + 2 y^2) + 2 p2 x y.
- ``"opencv_fisheye"`` (COLMAP / nerfstudio OPENCV_FISHEYE, equidistant): theta = atan(r),
  theta_d = theta (1 + k1 theta^2 + k2 theta^4 + k3 theta^6 + k4 theta^8), (x_d, y_d) =
  (theta_d / r) (x, y); p1, p2 must be 0.
Undistorted images keep the source's pinhole intrinsics K and size: each output pixel's ray is
pushed through the distortion model and the source image is sampled there (bilinear); rays
that land outside the source get the background color.
"""

from __future__ import annotations

import numpy as np

DistortionModel = str  # "pinhole" | "opencv" | "opencv_fisheye"


def distort(x: np.ndarray, y: np.ndarray, coeffs: np.ndarray, model: DistortionModel) -> tuple[np.ndarray, np.ndarray]:
    """Apply the distortion model to normalized image coordinates (any matching shapes)."""
    k1, k2, p1, p2, k3, k4 = (float(c) for c in np.asarray(coeffs, dtype=np.float64).reshape(6))
    if model == "pinhole":
        return x, y
    if model == "opencv":
        r2 = x * x + y * y
        radial = 1.0 + r2 * (k1 + r2 * (k2 + r2 * (k3 + r2 * k4)))
        xd = x * radial + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
        yd = y * radial + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
        return xd, yd
    if model == "opencv_fisheye":
        r = np.sqrt(x * x + y * y)
        theta = np.arctan(r)
        t2 = theta * theta
        theta_d = theta * (1.0 + t2 * (k1 + t2 * (k2 + t2 * (k3 + t2 * k4))))
        with np.errstate(invalid="ignore", divide="ignore"):
            s = np.where(r > 1e-12, theta_d / np.maximum(r, 1e-12), 1.0)
        return x * s, y * s
    raise ValueError(f"unknown distortion model {model!r}")


def needs_undistortion(coeffs: np.ndarray | None, model: DistortionModel) -> bool:
    """True when the model bends rays (non-zero coefficients, or any fisheye)."""
    if model == "opencv_fisheye":
        return True
    return model != "pinhole" and coeffs is not None and bool(np.any(np.asarray(coeffs) != 0.0))


def undistort_image(
    image: np.ndarray, K: np.ndarray, coeffs: np.ndarray, model: DistortionModel, *, fill: tuple[float, ...] = (0.0, 0.0, 0.0)
) -> np.ndarray:
    """Undistort [H, W, C] float32 ``image`` taken by camera K [3, 3] with ``coeffs`` [6].

    Returns [H, W, C] float32: the view of an ideal pinhole camera with the same K.
    """
    from scipy.ndimage import map_coordinates  # imported here: scipy.ndimage takes ~0.3 s to import

    assert image.ndim == 3 and K.shape == (3, 3), (image.shape, K.shape)
    H, W, C = image.shape
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    u, v = np.meshgrid(np.arange(W, dtype=np.float64) + 0.5, np.arange(H, dtype=np.float64) + 0.5)
    x = (u - cx) / fx - K[0, 1] * (v - cy) / (fx * fy)
    y = (v - cy) / fy
    xd, yd = distort(x, y, coeffs, model)
    ud = fx * xd + K[0, 1] * yd + cx - 0.5  # array index coordinates (pixel centers at +0.5)
    vd = fy * yd + cy - 0.5
    out = np.empty_like(image, dtype=np.float32)
    for c in range(C):
        out[..., c] = map_coordinates(image[..., c], [vd, ud], order=1, mode="constant", cval=fill[c % len(fill)])
    return out
