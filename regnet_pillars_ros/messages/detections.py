"""Detections -> vision_msgs/Detection3DArray, LabelInfo and the velocity side topic, and the
boxes of a Detection3DArray back."""
from __future__ import annotations

import math

import numpy as np
from geometry_msgs.msg import Point, Pose, Quaternion, Vector3
from vision_msgs.msg import (
    BoundingBox3D,
    Detection3D,
    Detection3DArray,
    LabelInfo,
    ObjectHypothesisWithPose,
    VisionClass,
)

from ..model.detections import Detections
from ..pipeline.transforms import yaw_quaternions
from .cloud import to_msg


def box_poses(dets: Detections) -> list[Pose]:
    """Geometric-centre poses of the boxes (z_bottom + h/2), heading from yaw."""
    return [Pose(position=Point(x=float(c[0]), y=float(c[1]), z=float(c[2])),
                 orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])))
            for c, q in zip(dets.gravity_centers(), yaw_quaternions(dets.boxes[:, 6]))]


def detection_array(dets: Detections, header, class_id_format: str = "name") -> Detection3DArray:
    """One Detection3D per box with the input header; results[0] holds class and score;
    bbox.size = (length, width, height); ``id`` stays empty (it is for trackers)."""
    msg = Detection3DArray(header=header)
    for pose, box, label, score in zip(box_poses(dets), dets.boxes, dets.labels, dets.scores):
        result = ObjectHypothesisWithPose()
        result.hypothesis.class_id = (dets.class_names[label] if class_id_format == "name"
                                      else str(int(label)))
        result.hypothesis.score = float(score)
        result.pose.pose = pose
        bbox = BoundingBox3D(center=pose, size=Vector3(x=float(box[3]), y=float(box[4]),
                                                       z=float(box[5])))
        msg.detections.append(Detection3D(header=header, results=[result], bbox=bbox))
    return msg


def detection_boxes(msg: Detection3DArray) -> np.ndarray:
    """float64 [M, 7] boxes (x, y, z_bottom, l, w, h, yaw) of a Detection3DArray whose
    orientations are rotations about +z, as `detection_array` writes them."""
    rows = []
    for d in msg.detections:
        c, s, q = d.bbox.center.position, d.bbox.size, d.bbox.center.orientation
        rows.append([c.x, c.y, c.z - s.z / 2, s.x, s.y, s.z, 2 * math.atan2(q.z, q.w)])
    return np.array(rows, np.float64).reshape(-1, 7)


def label_info(class_names: tuple[str, ...], header, threshold: float) -> LabelInfo:
    """The class map: index -> name, so ``class_id_format = index`` stays decodable."""
    return LabelInfo(header=header, threshold=float(threshold),
                     class_map=[VisionClass(class_id=i, class_name=name)
                                for i, name in enumerate(class_names)])


def velocity_cloud(dets: Detections, header):
    """sensor_msgs/PointCloud2 with one point per detection (same order as the
    Detection3DArray): box centre x, y, z and velocity vx, vy in m/s."""
    points = np.zeros(len(dets), np.dtype([(n, "<f4") for n in ("x", "y", "z", "vx", "vy")]))
    centers = dets.gravity_centers()
    for i, name in enumerate("xyz"):
        points[name] = centers[:, i]
    points["vx"], points["vy"] = dets.velocities[:, 0], dets.velocities[:, 1]
    return to_msg(header, points)
