"""Messages between two processes over Fast DDS with the shipped profile (real rclpy, no mocks).

This process publishes; `ros_peer.py` receives in a second process and prints what it got.
"""
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
from conftest import PythonProcess
from ros_peer import describe

PEER = str(Path(__file__).with_name("ros_peer.py"))
# Bound on each wait (peer start, discovery, delivery): generous for a loaded 2-core machine.
TIMEOUT = 120.0


def detections() -> Any:
    """A Detection3DArray with three boxes, two hypotheses each, covariances all different."""
    from vision_msgs.msg import Detection3D, Detection3DArray, ObjectHypothesisWithPose

    msg = Detection3DArray()
    msg.header.frame_id = "lidar_top"
    msg.header.stamp.sec, msg.header.stamp.nanosec = 1_700_000_123, 456_789_012
    for i in range(3):
        det = Detection3D(header=msg.header)
        yaw = 0.3 * i - 0.7
        det.bbox.center.position.x, det.bbox.center.position.y = 10.25 + i, -3.5 * i
        det.bbox.center.position.z = -0.8 + 0.1 * i
        det.bbox.center.orientation.z, det.bbox.center.orientation.w = (math.sin(yaw / 2),
                                                                        math.cos(yaw / 2))
        det.bbox.size.x, det.bbox.size.y, det.bbox.size.z = 4.6 - i, 1.9, 1.7 + 0.01 * i
        for rank, class_id in enumerate(("car", "truck")):
            hyp = ObjectHypothesisWithPose()
            hyp.hypothesis.class_id = class_id
            hyp.hypothesis.score = 0.9 / (1 + rank + i)
            hyp.pose.pose = det.bbox.center
            hyp.pose.covariance = np.linspace(0.0, 1.0, 36) * (i + 1) + rank
            det.results.append(hyp)
        msg.detections.append(det)
    return msg


def cloud(points: int = 300_000) -> Any:
    """A PointCloud2 of random x, y, z, intensity float32 points (16 bytes each: 4.8 MB)."""
    from sensor_msgs.msg import PointCloud2, PointField

    xyzi = np.random.default_rng(7).normal(size=(points, 4)).astype(np.float32)
    msg = PointCloud2(height=1, width=points, point_step=16, row_step=16 * points, is_dense=True)
    msg.header.frame_id = "lidar_top"
    msg.header.stamp.sec = 1_700_000_124
    msg.fields = [PointField(name=name, offset=4 * k, datatype=PointField.FLOAT32, count=1)
                  for k, name in enumerate(("x", "y", "z", "intensity"))]
    msg.data = xyzi.tobytes()
    return msg


def send_until_received(context: Any, peer: PythonProcess, msg: Any, topic: str,
                        reliability: str) -> Any:
    """Publish `msg` every 0.2 s until the peer reports what it received (bounded wait)."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    assert peer.readline(TIMEOUT) == "READY", peer.report()
    node = rclpy.create_node("dds_sender", context=context)
    try:
        qos = QoSProfile(depth=1, reliability=ReliabilityPolicy[reliability.upper()])
        publisher = node.create_publisher(type(msg), topic, qos)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline and peer.proc.poll() is None:
            publisher.publish(msg)
            line = peer.readline(0.2)
            if line is not None:
                return json.loads(line)
        raise AssertionError(f"{topic}: nothing arrived within {TIMEOUT} s; {peer.report()}")
    finally:
        node.destroy_node()


def test_detections_arrive_with_equal_fields(ros_context, python_process):
    msg = detections()
    peer = python_process(PEER, "vision_msgs/msg/Detection3DArray", "detections", "reliable")
    received = send_until_received(ros_context, peer, msg, "detections", "reliable")
    assert received == describe(msg)
    assert received["detections"][2]["results"][1]["hypothesis"]["class_id"] == "truck"
    assert peer.proc.wait(TIMEOUT) == 0


def test_large_cloud_arrives_best_effort(ros_context, python_process):
    """4.8 MB best-effort: only arrives when the profile's 32 MB shared-memory segment is in use."""
    msg = cloud()
    peer = python_process(PEER, "sensor_msgs/msg/PointCloud2", "points", "best_effort")
    received = send_until_received(ros_context, peer, msg, "points", "best_effort")
    assert received == describe(msg)
    assert received["data"]["len"] == 300_000 * 16
    assert peer.proc.wait(TIMEOUT) == 0
