"""Scenes: oriented boxes moving at constant velocity on a flat ground, and an ego trajectory.

World frame: x, y on the ground plane, z up. Boxes are rows ``(x, y, z_bottom, l, w, h, yaw)`` with
yaw counter-clockwise from +x and the length along the heading (mmdet3d 1.x convention).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# Same order as the nuScenes presets' class_names (a test checks it against presets.json).
NUSCENES_CLASSES = ("car", "truck", "trailer", "bus", "construction_vehicle", "bicycle",
                    "motorcycle", "pedestrian", "traffic_cone", "barrier")


@dataclass(frozen=True)
class ClassSpec:
    """Mean size (l, w, h) in m, relative frequency, and the speed range (m/s) of the movers."""

    size: tuple[float, float, float]
    weight: float
    max_speed: float
    moving_fraction: float


# Mean sizes: the published nuScenes per-class statistics (also mmdet3d's nuScenes anchors).
NUSCENES_SPECS: dict[str, ClassSpec] = {
    "car": ClassSpec((4.607, 1.950, 1.723), 0.34, 12.0, 0.6),
    "truck": ClassSpec((6.738, 2.456, 2.730), 0.07, 10.0, 0.5),
    "trailer": ClassSpec((12.013, 2.874, 3.815), 0.03, 8.0, 0.3),
    "bus": ClassSpec((11.189, 2.940, 3.470), 0.03, 10.0, 0.5),
    "construction_vehicle": ClassSpec((6.384, 2.731, 3.133), 0.03, 3.0, 0.2),
    "bicycle": ClassSpec((1.685, 0.601, 1.272), 0.05, 6.0, 0.6),
    "motorcycle": ClassSpec((2.100, 0.763, 1.444), 0.05, 10.0, 0.6),
    "pedestrian": ClassSpec((0.726, 0.663, 1.757), 0.22, 1.8, 0.7),
    "traffic_cone": ClassSpec((0.404, 0.397, 1.062), 0.08, 0.0, 0.0),
    "barrier": ClassSpec((0.486, 2.490, 0.983), 0.10, 0.0, 0.0),
}

# Unannotated static structures (kind: (l range, w range, h range) in m) that the detector must
# learn to ignore: building walls, poles and vegetation.
CLUTTER_SIZES: dict[str, tuple[tuple[float, float], ...]] = {
    "wall": ((4.0, 20.0), (0.3, 1.0), (2.0, 6.0)),
    "pole": ((0.15, 0.4), (0.15, 0.4), (3.0, 8.0)),
    "vegetation": ((0.8, 3.0), (0.8, 3.0), (0.5, 2.0)),
}

EGO_CLEARANCE_M = 4.0  # radius kept free around the ego origin (a car footprint plus margin)


@dataclass(frozen=True)
class EgoTrajectory:
    """Ego pose moving at constant speed (m/s) and yaw rate (rad/s) from (x0, y0, yaw0) at t = 0."""

    speed: float = 0.0
    yaw_rate: float = 0.0
    x0: float = 0.0
    y0: float = 0.0
    yaw0: float = 0.0

    def pose(self, t: float | np.ndarray) -> np.ndarray:
        """``(x, y, yaw)`` at time(s) ``t`` in seconds: shape ``[..., 3]``, float64."""
        t = np.asarray(t, np.float64)
        turn = self.yaw_rate * t
        # The chord of a circular arc: length v t sinc(turn / 2), direction yaw0 + turn / 2.
        chord = self.speed * t * np.sinc(turn / (2 * np.pi))
        heading = self.yaw0 + 0.5 * turn
        return np.stack([self.x0 + chord * np.cos(heading), self.y0 + chord * np.sin(heading),
                         self.yaw0 + turn], axis=-1)


@dataclass(frozen=True)
class Scene:
    """Annotated boxes at t = 0 (world frame, float64 [M, 7]) with velocities (m/s, [M, 2]) and
    class labels (indices into ``class_names``), the ego trajectory, the ground height, and
    unannotated static clutter boxes [K, 7] (``clutter_names``) that only occlude and reflect."""

    boxes: np.ndarray
    velocities: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    ego: EgoTrajectory
    ground_z: float = 0.0
    clutter: np.ndarray = field(default_factory=lambda: np.zeros((0, 7)))
    clutter_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        m, k = len(self.boxes), len(self.clutter)
        if (self.boxes.shape != (m, 7) or self.velocities.shape != (m, 2)
                or self.labels.shape != (m,) or self.clutter.shape != (k, 7)
                or len(self.clutter_names) != k):
            raise ValueError(
                f"expected boxes [M, 7], velocities [M, 2], labels [M], clutter [K, 7] "
                f"and K clutter names; got {self.boxes.shape}, {self.velocities.shape}, "
                f"{self.labels.shape}, {self.clutter.shape}, {len(self.clutter_names)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.class_names[i] for i in self.labels)

    def boxes_at(self, t: float) -> np.ndarray:
        """Annotated world boxes [M, 7] at time ``t`` (s): centres moved by velocity * t."""
        boxes = self.boxes.copy()
        boxes[:, :2] += self.velocities * t
        return boxes


def generate_scene(seed: int, num_objects: int = 80, num_clutter: int = 20, duration: float = 20.0,
                   radius: float = 50.0, ego_max_speed: float = 10.0, ego_max_yaw_rate: float = 0.1,
                   specs: dict[str, ClassSpec] | None = None, size_jitter: float = 0.07,
                   ground_z: float = 0.0, max_tries: int = 50) -> Scene:
    """A random scene, the same for the same arguments.

    Objects, then clutter, are placed within ``radius`` m of the ego path over ``[0, duration]`` s,
    with random headings; movers drive along their heading. No two boxes' bounding circles ever
    touch and none comes within `EGO_CLEARANCE_M` of the ego, over the whole duration and one
    second before. Object sizes vary by a factor ``1 + N(0, size_jitter)`` per dimension. Fewer
    boxes are placed when ``max_tries`` candidates in a row find no free spot.
    """
    specs = NUSCENES_SPECS if specs is None else specs
    class_names = tuple(specs)
    rng = np.random.default_rng(seed)
    ego = EgoTrajectory(speed=rng.uniform(0.0, ego_max_speed),
                        yaw_rate=rng.uniform(-ego_max_yaw_rate, ego_max_yaw_rate),
                        yaw0=rng.uniform(-np.pi, np.pi))
    layout = _Layout(ego, duration, radius, rng)
    weights = np.array([s.weight for s in specs.values()])
    labels = []
    tries = 0
    while len(labels) < num_objects and tries < max_tries:
        tries += 1
        label = int(rng.choice(len(specs), p=weights / weights.sum()))
        spec = specs[class_names[label]]
        size = np.array(spec.size) * np.clip(1 + size_jitter * rng.standard_normal(3), 0.7, 1.3)
        speed = (rng.uniform(0.2, 1.0) * spec.max_speed if rng.random() < spec.moving_fraction
                 else 0.0)
        if layout.place(size, speed):
            labels.append(label)
            tries = 0
    clutter_names = []
    tries = 0
    while len(clutter_names) < num_clutter and tries < max_tries:
        tries += 1
        kind = str(rng.choice(list(CLUTTER_SIZES)))
        if layout.place(np.array([rng.uniform(*r) for r in CLUTTER_SIZES[kind]]), 0.0):
            clutter_names.append(kind)
            tries = 0
    boxes = np.array(layout.boxes, np.float64).reshape(-1, 7)
    boxes[:, 2] = ground_z
    velocities = np.array(layout.velocities, np.float64).reshape(-1, 2)
    m = len(labels)
    return Scene(boxes[:m], velocities[:m], np.array(labels, np.int64), class_names, ego,
                 ground_z, boxes[m:], tuple(clutter_names))


class _Layout:
    """Boxes placed so far; `place` finds a free spot near the ego path for one more."""

    def __init__(self, ego: EgoTrajectory, duration: float, radius: float,
                 rng: np.random.Generator) -> None:
        self.times = np.arange(-1.0, duration + 0.05, 0.1)
        self.ego_xy = ego.pose(self.times)[:, :2]
        self.radius, self.rng = radius, rng
        self.boxes: list[list[float]] = []
        self.velocities: list[np.ndarray] = []

    def place(self, size: np.ndarray, speed: float) -> bool:
        """Try one random pose for a box of ``size`` driving forwards at ``speed``; keep it if
        free."""
        yaw = self.rng.uniform(-np.pi, np.pi)
        velocity = speed * np.array([np.cos(yaw), np.sin(yaw)])
        anchor = self.ego_xy[self.rng.integers(len(self.ego_xy))]
        r, phi = self.radius * np.sqrt(self.rng.random()), self.rng.uniform(-np.pi, np.pi)
        xy = anchor + r * np.array([np.cos(phi), np.sin(phi)])
        reach = 0.5 * np.hypot(size[0], size[1])
        path = xy + velocity * self.times[:, None]
        if np.min(np.linalg.norm(path - self.ego_xy, axis=1)) < reach + EGO_CLEARANCE_M:
            return False
        if self.boxes and not _clear_of(xy, velocity, reach, np.array(self.boxes),
                                        np.array(self.velocities), self.times[0], self.times[-1]):
            return False
        self.boxes.append([xy[0], xy[1], 0.0, *size, yaw])
        self.velocities.append(velocity)
        return True


def _clear_of(xy: np.ndarray, velocity: np.ndarray, reach: float, boxes: np.ndarray,
              velocities: np.ndarray, t0: float, t1: float, margin: float = 0.3) -> bool:
    """Whether a circle of radius ``reach`` moving from ``xy`` at ``velocity`` stays clear of every
    placed box's bounding circle between t0 and t1 (closest approach of two linear motions)."""
    dp = xy - boxes[:, :2]
    dv = velocity - velocities
    dv2 = np.maximum(np.einsum("ij,ij->i", dv, dv), 1e-12)
    t = np.clip(-np.einsum("ij,ij->i", dp, dv) / dv2, t0, t1)
    closest = np.linalg.norm(dp + dv * t[:, None], axis=1)
    return bool(np.all(closest > reach + 0.5 * np.hypot(boxes[:, 3], boxes[:, 4]) + margin))
