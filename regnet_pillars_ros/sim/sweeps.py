"""Sweeps along the ego trajectory and the multi-sweep model input with its ground truth.

Sweep ``i`` is taken at ``t = i / rate_hz`` seconds (negative indices are before the scene's t = 0).
Its noise comes from a generator seeded by (seed, i), so a sweep is the same whether it is
simulated as a key frame or as a past sweep of a later one.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ..pipeline.sweeps import SweepAccumulator
from ..pipeline.transforms import Transform
from .lidar import GROUND, LidarConfig, scan
from .scene import Scene


@dataclass(frozen=True)
class SimSweep:
    """One revolution as a nuScenes LIDAR_TOP file stores it, with its poses.

    points: float32 [N, 5] x, y, z, intensity, ring in the sensor frame at ``time``;
    hit: int64 [N] the scene box each point lies on (annotated boxes first, then clutter), or
    `GROUND`;
    ego_pose: T_world_ego; sensor_pose: T_world_sensor (= ego_pose @ mount).
    """

    index: int
    time: float
    points: np.ndarray
    hit: np.ndarray
    ego_pose: Transform
    sensor_pose: Transform

    @property
    def stamp_ns(self) -> int:
        return round(self.time * 1e9)


@dataclass(frozen=True)
class Sample:
    """A key frame as the model and its evaluation see it.

    points: float32 [N, 5] x, y, z, intensity, dt (s) in the key sensor frame: key sweep first
    (dt 0), then the past sweeps newest first; gt_boxes: float32 [M, 9] (x, y, z_bottom, l, w, h,
    yaw, vx, vy) in the key sensor frame, velocities over ground expressed in that frame;
    gt_labels: int64 [M] indices into the scene's class_names; gt_num_points: int64 [M] key-sweep
    points on each box (nuScenes' num_lidar_pts; the evaluation drops boxes with none).
    """

    points: np.ndarray
    gt_boxes: np.ndarray
    gt_labels: np.ndarray
    gt_num_points: np.ndarray
    key: SimSweep
    sweeps: tuple[SimSweep, ...]  # the past sweeps used, newest first

    @property
    def has_points(self) -> np.ndarray:
        """bool [M]: the boxes the nuScenes evaluation keeps."""
        return self.gt_num_points > 0


def ego_pose(scene: Scene, t: float) -> Transform:
    x, y, yaw = scene.ego.pose(t)
    return Transform.from_xyz_yaw((x, y, scene.ground_z), yaw)


def mount_transform(lidar: LidarConfig) -> Transform:
    """T_ego_sensor."""
    x, y, z, yaw = lidar.mount
    return Transform.from_xyz_yaw((x, y, z), yaw)


def to_frame(boxes: np.ndarray, pose: Transform) -> np.ndarray:
    """World boxes [M, >= 7] moved into the frame whose world pose is ``pose`` (columns 0-2 and 6
    change; velocity columns 7-8, if any, are rotated)."""
    inverse = pose.inverse()
    out = np.array(boxes, np.float64)
    out[:, :3] = inverse.apply(out[:, :3])
    out[:, 6] = (out[:, 6] - pose.yaw() + np.pi) % (2 * np.pi) - np.pi
    if out.shape[1] >= 9:
        out[:, 7:9] = out[:, 7:9] @ inverse.matrix()[:2, :2].T
    return out


def boxes_in_frame(scene: Scene, t: float, pose: Transform) -> np.ndarray:
    """The scene's annotated boxes at time ``t`` in the frame whose world pose is ``pose``:
    float64 [M, 9] (x, y, z_bottom, l, w, h, yaw, vx, vy), velocities over ground."""
    return to_frame(np.hstack([scene.boxes_at(t), scene.velocities]), pose)


def hit_boxes_in_frame(scene: Scene, t: float, pose: Transform) -> np.ndarray:
    """All boxes a ray can hit, annotated then clutter (the order of `SimSweep.hit`), at time
    ``t`` in the frame whose world pose is ``pose``: float64 [M + K, 7]."""
    return np.vstack([boxes_in_frame(scene, t, pose)[:, :7], to_frame(scene.clutter, pose)])


def simulate_sweep(scene: Scene, index: int, lidar: LidarConfig = LidarConfig(),
                   seed: int = 0) -> SimSweep:
    """Sweep ``index`` (at ``index / lidar.rate_hz`` s) of ``scene``; deterministic in
    (seed, index)."""
    t = index / lidar.rate_hz
    ego = ego_pose(scene, t)
    sensor = ego @ mount_transform(lidar)
    ground_z = scene.ground_z - sensor.translation[2]
    names = scene.names + scene.clutter_names
    # Seed entropy must be non-negative; the offset admits sweeps before t = 0.
    rng = np.random.default_rng([seed, index + 2**31])
    points, hit = scan(lidar, hit_boxes_in_frame(scene, t, sensor), names, ground_z, rng)
    return SimSweep(index, t, points, hit, ego, sensor)


def make_sample(scene: Scene, key: SimSweep, past: Sequence[SimSweep]) -> Sample:
    """Stack ``key`` and its ``past`` sweeps (newest first) into the model input as the test
    pipeline does (the node's `SweepAccumulator`), with the key frame's ground truth."""
    accumulator = SweepAccumulator(len(past))
    for sweep in reversed(past):
        accumulator.add(sweep.points[:, :4], sweep.stamp_ns, sweep.sensor_pose)
    points = accumulator.add(key.points[:, :4], key.stamp_ns, key.sensor_pose).points
    gt = boxes_in_frame(scene, key.time, key.sensor_pose).astype(np.float32)
    counts = np.bincount(key.hit[key.hit != GROUND], minlength=len(gt) + len(scene.clutter))
    return Sample(points, gt, scene.labels.copy(), counts[:len(gt)], key, tuple(past))


def simulate_sample(scene: Scene, key_index: int, lidar: LidarConfig = LidarConfig(),
                    num_sweeps: int = 10, seed: int = 0) -> Sample:
    """Key sweep ``key_index`` with its ``num_sweeps`` previous sweeps (11 frames by default)."""
    past = [simulate_sweep(scene, key_index - k, lidar, seed) for k in range(1, num_sweeps + 1)]
    return make_sample(scene, simulate_sweep(scene, key_index, lidar, seed), past)


def sweep_sequence(scene: Scene, first: int, stop: int, lidar: LidarConfig = LidarConfig(),
                   num_sweeps: int = 10, seed: int = 0) -> Iterator[Sample]:
    """Samples keyed on every sweep ``first <= i < stop``, each sweep cast once: the past sweeps
    of sweep ``first`` are simulated first, then reused as the window slides."""
    window = [simulate_sweep(scene, first - k, lidar, seed) for k in range(num_sweeps, 0, -1)]
    for index in range(first, stop):
        key = simulate_sweep(scene, index, lidar, seed)
        yield make_sample(scene, key, window[::-1])
        window = (window + [key])[-num_sweeps:] if num_sweeps else []
