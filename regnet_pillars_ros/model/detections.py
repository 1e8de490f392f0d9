"""The detector's output record, in the mmdet3d 1.x LiDAR box convention."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Detections:
    """Boxes of one frame in the input cloud's frame.

    boxes: float32 [M, 7] or [M, 9] = x, y, z_bottom, l, w, h, yaw (, vx, vy); yaw is
        counter-clockwise from +x, l lies along the heading, z is the bottom of the box.
    scores: float32 [M] in [0, 1].
    labels: int64 [M], index into ``class_names``.
    timings_ms: wall time of each stage of the frame that produced them.
    stats: frame counters (points in, points dropped as non-finite, pillars, pillar overflow).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    timings_ms: dict[str, float] = field(default_factory=dict)
    stats: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.boxes.shape[0])

    @property
    def has_velocity(self) -> bool:
        return self.boxes.shape[1] == 9

    @property
    def velocities(self) -> np.ndarray | None:
        """[M, 2] (vx, vy) in m/s, or None when the head predicts no velocity."""
        return self.boxes[:, 7:9] if self.has_velocity else None

    def gravity_centers(self) -> np.ndarray:
        """[M, 3] geometric box centres: z_bottom + h / 2."""
        centers = self.boxes[:, :3].copy()
        centers[:, 2] += self.boxes[:, 5] / 2
        return centers

    def names(self) -> list[str]:
        return [self.class_names[i] for i in self.labels]

    @classmethod
    def empty(cls, class_names: tuple[str, ...], box_dim: int) -> "Detections":
        return cls(
            boxes=np.zeros((0, box_dim), np.float32),
            scores=np.zeros((0,), np.float32),
            labels=np.zeros((0,), np.int64),
            class_names=tuple(class_names),
        )
