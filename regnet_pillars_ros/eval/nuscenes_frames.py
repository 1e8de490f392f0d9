"""Boxes between the key LiDAR frame and the nuScenes global frame, as mmdet3d converts them.

Project boxes are rows (x, y, z_bottom, l, w, h, yaw[, vx, vy]) in the sensor frame. Devkit boxes
are a gravity centre ``translation``, ``size`` = (w, l, h), ``rotation`` = quaternion (w, x, y, z)
and a ``velocity`` (vx, vy) over ground, all in the global frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..pipeline.transforms import Transform, quat_multiply, quat_to_matrix, yaw_quaternions


@dataclass(frozen=True)
class GlobalBoxes:
    """Devkit boxes: translation [M, 3], size [M, 3] (w, l, h), rotation [M, 4] (w, x, y, z),
    velocity [M, 2]; float64."""

    translation: np.ndarray
    size: np.ndarray
    rotation: np.ndarray
    velocity: np.ndarray

    def __len__(self) -> int:
        return len(self.translation)


def devkit_transform(record: dict) -> Transform:
    """A calibrated_sensor or ego_pose record (rotation w, x, y, z) as a Transform."""
    w, x, y, z = record["rotation"]
    return Transform.from_xyz_quat(record["translation"], (x, y, z, w))


def key_lidar_poses(nusc, sample_token: str,
                    channel: str = "LIDAR_TOP") -> tuple[Transform, Transform]:
    """(T_global_ego, T_ego_sensor) of the sample's key LiDAR sweep."""
    sample_data = nusc.get("sample_data", nusc.get("sample", sample_token)["data"][channel])
    return (devkit_transform(nusc.get("ego_pose", sample_data["ego_pose_token"])),
            devkit_transform(nusc.get("calibrated_sensor", sample_data["calibrated_sensor_token"])))


def to_global(boxes: np.ndarray, pose: Transform) -> GlobalBoxes:
    """Boxes [M, 7 or 9] in the frame whose global pose is ``pose`` as devkit boxes (velocity 0
    without velocity columns). Rotations compose in 3-D, so a tilted sensor tilts the box."""
    boxes = np.atleast_2d(np.asarray(boxes, np.float64))  # [0, C] stays [0, C]
    centre = boxes[:, :3].copy()
    centre[:, 2] += boxes[:, 5] / 2
    rotation = np.array([quat_multiply(pose.rotation, q) for q in yaw_quaternions(boxes[:, 6])])
    rotation = rotation.reshape(-1, 4)
    velocity = np.zeros((len(boxes), 3))
    if boxes.shape[1] >= 9:
        velocity[:, :2] = boxes[:, 7:9]
    return GlobalBoxes(translation=pose.apply(centre), size=boxes[:, [4, 3, 5]],
                       rotation=rotation[:, [3, 0, 1, 2]],
                       velocity=(velocity @ quat_to_matrix(pose.rotation).T)[:, :2])


def from_global(boxes: GlobalBoxes, pose: Transform) -> np.ndarray:
    """Devkit boxes back into the frame whose global pose is ``pose``: float64 [M, 9]; the yaw is
    the heading's angle in that frame's x-y plane."""
    inverse = pose.inverse()
    rot = quat_to_matrix(inverse.rotation)
    out = np.zeros((len(boxes), 9))
    out[:, :3] = inverse.apply(np.asarray(boxes.translation, np.float64).reshape(-1, 3))
    out[:, 3:6] = np.asarray(boxes.size, np.float64).reshape(-1, 3)[:, [1, 0, 2]]
    out[:, 2] -= out[:, 5] / 2
    # Heading = first column of each box rotation (w, x, y, z -> x, y, z, w).
    heading = np.array([quat_to_matrix(np.roll(q, -1))[:, 0] for q in boxes.rotation])
    heading = heading.reshape(-1, 3) @ rot.T
    out[:, 6] = np.arctan2(heading[:, 1], heading[:, 0])
    velocity = np.zeros((len(boxes), 3))
    velocity[:, :2] = np.asarray(boxes.velocity, np.float64).reshape(-1, 2)
    out[:, 7:9] = (velocity @ rot.T)[:, :2]
    return out


@dataclass(frozen=True)
class SensorFrameAnnotations:
    """A key frame's annotations of the detection classes in its LiDAR frame: boxes float64 [M, 9]
    (velocity: the devkit's finite-difference estimate, NaN where it has none), detection class
    names [M], LiDAR + radar point counts [M] and annotation tokens [M]."""

    boxes: np.ndarray
    names: list[str]
    num_points: np.ndarray
    tokens: list[str]


def annotations_in_sensor_frame(nusc, sample_token: str) -> SensorFrameAnnotations:
    """The devkit's ground truth of a key frame (what `DetectionEval` loads) in its LiDAR frame."""
    from nuscenes.eval.detection.utils import category_to_detection_name

    records = [nusc.get("sample_annotation", t) for t in nusc.get("sample", sample_token)["anns"]]
    records = [r for r in records if category_to_detection_name(r["category_name"]) is not None]
    boxes = GlobalBoxes(
        translation=np.array([r["translation"] for r in records], np.float64).reshape(-1, 3),
        size=np.array([r["size"] for r in records], np.float64).reshape(-1, 3),
        rotation=np.array([r["rotation"] for r in records], np.float64).reshape(-1, 4),
        velocity=np.array([nusc.box_velocity(r["token"])[:2] for r in records]).reshape(-1, 2))
    global_ego, ego_sensor = key_lidar_poses(nusc, sample_token)
    return SensorFrameAnnotations(
        boxes=from_global(boxes, global_ego @ ego_sensor),
        names=[category_to_detection_name(r["category_name"]) for r in records],
        num_points=np.array([r["num_lidar_pts"] + r["num_radar_pts"] for r in records], np.int64),
        tokens=[r["token"] for r in records])
