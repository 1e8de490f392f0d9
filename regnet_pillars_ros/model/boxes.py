"""Box geometry in numpy (no torch: the simulator's data-loader workers use it too)."""
from __future__ import annotations

import numpy as np

# Corner order: bottom 0-3 counter-clockwise (seen from above) from front-left, top 4-7 above them.
_CORNER_SIGNS = np.array([[1, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0],
                          [1, 1, 1], [-1, 1, 1], [-1, -1, 1], [1, -1, 1]], np.float64)


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """[M, 8, 3] corners of boxes [M, >= 7] (x, y, z_bottom, l, w, h, yaw, ...)."""
    half = boxes[:, None, 3:6] * np.array([0.5, 0.5, 1.0])
    local = _CORNER_SIGNS[None] * half
    cos, sin = np.cos(boxes[:, 6])[:, None], np.sin(boxes[:, 6])[:, None]
    x = local[..., 0] * cos - local[..., 1] * sin
    y = local[..., 0] * sin + local[..., 1] * cos
    return np.stack([x, y, local[..., 2]], axis=-1) + boxes[:, None, :3]


def bev_corners(boxes: np.ndarray) -> np.ndarray:
    """[M, 4, 2] ground-plane corners of boxes [M, >= 7], counter-clockwise from front-left."""
    return box_corners(boxes)[:, :4, :2]
