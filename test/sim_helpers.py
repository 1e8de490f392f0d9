"""Plain references shared by the simulator tests (independent of the simulator's own code)."""
from __future__ import annotations

import numpy as np

from regnet_pillars_ros.sim.scene import EgoTrajectory, Scene


def surface_distance(points: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """Unsigned distance [N, M] of points [N, 3] to the surfaces of boxes [M, >= 7]
    (x, y, z_bottom, l, w, h, yaw)."""
    boxes = np.asarray(boxes, np.float64)
    rel = np.asarray(points, np.float64)[:, None, :] - boxes[None, :, :3]
    rel[..., 2] -= 0.5 * boxes[:, 5]
    c, s = np.cos(boxes[:, 6]), np.sin(boxes[:, 6])
    local = np.stack([c * rel[..., 0] + s * rel[..., 1], -s * rel[..., 0] + c * rel[..., 1],
                      rel[..., 2]], axis=-1)
    q = np.abs(local) - 0.5 * boxes[None, :, 3:6]
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
    inside = -np.minimum(q.max(axis=-1), 0.0)
    return outside + inside


def fixed_scene(boxes, velocities=None, names=None, ego: EgoTrajectory = EgoTrajectory(),
                clutter=None) -> Scene:
    """A scene of the given world boxes [M, 7] (cars unless ``names``), still unless ``velocities``,
    with optional clutter walls [K, 7]."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 7)
    velocities = np.zeros((len(boxes), 2)) if velocities is None else np.asarray(velocities, float)
    names = names or ["car"] * len(boxes)
    class_names = tuple(dict.fromkeys(names))
    labels = np.array([class_names.index(n) for n in names], np.int64)
    clutter = (np.zeros((0, 7)) if clutter is None
               else np.asarray(clutter, np.float64).reshape(-1, 7))
    return Scene(boxes, velocities.reshape(-1, 2), labels, class_names, ego, 0.0, clutter,
                 ("wall",) * len(clutter))
