"""detector_node with ego motion from nav_msgs/Odometry and boxes published in target_frame,
on each inference backend (another process, real DDS; after test_node.py's node has stopped)."""
from __future__ import annotations

import math
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (scripts/setup_env.sh)")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not generated (scripts/setup_env.sh)")

from nav_msgs.msg import Odometry  # noqa: E402
from node_probe import (  # noqa: E402
    NODE,
    NodeProcess,
    flat_scores_checkpoint,
    node_args,
    probe_of,
    scene,
    stamp_of,
)

from regnet_pillars_ros.model import get_preset  # noqa: E402
from regnet_pillars_ros.model.head import level_anchors  # noqa: E402

NUS = get_preset("nus-regnetx-400mf-fpn")
SEC = 1_000_000_000
EGO_X, EGO_YAW, LIDAR_X = 100.0, 0.3, 1.0  # LIDAR_X: the probe's static base_link -> lidar_top


@pytest.fixture(scope="module", params=["torch", "onnxruntime"])
def running(request, tmp_path_factory):
    """(probe, backend) with a node on that backend, one per backend for the module."""
    tmp = tmp_path_factory.mktemp(f"node_{request.param}")
    ckpt = flat_scores_checkpoint(tmp / "flat.pth", NUS.name,
                                  {n: 0.9 if n == "car" else 0.01 for n in NUS.class_names})
    with pytest.MonkeyPatch.context() as env:
        env.setenv("REGNET_PILLARS_CACHE", str(tmp / "cache"))  # ONNX exports
        node = NodeProcess(node_args(tmp, NUS.name, checkpoint=str(ckpt), max_detections=10,
                                     num_sweeps=2, ego_motion_source="odometry",
                                     target_frame="odom", tf_wait_s=5.0, backend=request.param),
                           tmp / "node.log")
    with probe_of(node, markers=False) as probe:  # stops the node after the module
        yield probe, request.param


def odometry(stamp_ns: int, x: float, yaw: float) -> Odometry:
    msg = Odometry()
    msg.header.frame_id, msg.child_frame_id = "odom", "base_link"
    msg.header.stamp = stamp_of(stamp_ns)
    msg.pose.pose.position.x = x
    msg.pose.pose.orientation.z, msg.pose.pose.orientation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    return msg


def odometry_publisher(probe):
    """A publisher to the node's odometry input, once matched: a message sent before discovery
    matched it with the node's subscription would be lost."""
    pub = probe.node.create_publisher(Odometry, f"{NODE}/input/odometry", 10)
    probe.wait(pub.get_subscription_count, "the node's odometry subscription")
    return pub


def test_odometry_stacks_sweeps_and_boxes_come_out_in_the_target_frame(running):
    probe, backend = running
    odom_pub = odometry_publisher(probe)
    stamps = [50 * SEC, 50 * SEC + SEC // 10]
    for k, s in enumerate(stamps):
        odom_pub.publish(odometry(s, EGO_X + 0.5 * k, EGO_YAW))
        msg = probe.detect(scene(), s, frame="lidar_top", with_tf=False)
    assert msg.header.frame_id == "odom" and msg.header.stamp == stamp_of(stamps[-1])
    assert len(msg.detections) == 10
    inverse = np.array([[math.cos(EGO_YAW), math.sin(EGO_YAW)],
                        [-math.sin(EGO_YAW), math.cos(EGO_YAW)]])
    for det in msg.detections:
        c, q, size = det.bbox.center.position, det.bbox.center.orientation, det.bbox.size
        yaw = 2 * math.atan2(q.z, q.w)
        # Boxes are anchors in the LiDAR frame: yaw 0 or 1.57 there, plus the ego's yaw here.
        assert min(abs(math.remainder(yaw - EGO_YAW - r, math.pi))
                   for r in NUS.anchors.rotations) < 1e-4
        in_lidar = inverse @ np.array([c.x - EGO_X - 0.5, c.y]) - (LIDAR_X, 0.0)
        assert np.abs(in_lidar).max() <= 50.0 + 1e-3  # inside the preset's range, ego-relative
        assert c.z == pytest.approx(NUS.anchors.ranges[0][2] + size.z / 2, abs=1e-4)
    values = probe.fresh_counters()
    assert values["backend"] == backend
    assert values["last_sweeps"] == "2"
    assert values.get("ego_motion_missing", "0") == "0" and values.get("tf_failures", "0") == "0"
    # Nobody subscribes to the markers here: the node did not build them.
    assert int(values["frames_without_marker_subscriber"]) >= len(stamps)


@pytest.mark.parametrize("running", ["torch"], indirect=True)
def test_a_cloud_ahead_of_its_pose_waits_for_it_rather_than_take_an_older_one(running):
    probe, _ = running
    odom_pub = odometry_publisher(probe)
    s0, s1 = 60 * SEC, 60 * SEC + SEC // 20  # 50 ms apart: the older pose is within tf_tolerance_s
    odom_pub.publish(odometry(s0, EGO_X, EGO_YAW))
    probe.detect(scene(), s0, frame="lidar_top", with_tf=False)
    probe.publish_cloud(scene(), s1, frame="lidar_top", with_tf=False)
    # The pose comes after the cloud and, on this CPU, after its inference (1.5-2 s): the node must
    # wait for it (tf_wait_s = 5 s) rather than take the pose at s0 for stacking and output.
    time.sleep(3.0)
    odom_pub.publish(odometry(s1, EGO_X + 0.3, EGO_YAW))
    msg = probe.result_for(s1)
    # Flat-score boxes are anchors: back in the LiDAR frame through the pose at s1 they sit on the
    # anchor grid; through the stale pose at s0 they would be 0.3 m off it.
    grid = np.unique(np.concatenate([
        level_anchors(NUS.anchors, level, (n, n), "v1")[:, :2].numpy().ravel()
        for level, n in enumerate((200, 100, 50))]))
    inverse = np.array([[math.cos(EGO_YAW), math.sin(EGO_YAW)],
                        [-math.sin(EGO_YAW), math.cos(EGO_YAW)]])
    assert len(msg.detections) == 10
    for det in msg.detections:
        c = det.bbox.center.position
        in_lidar = inverse @ np.array([c.x - EGO_X - 0.3, c.y]) - (LIDAR_X, 0.0)
        assert np.abs(grid[:, None] - in_lidar[None, :]).min(axis=0).max() < 1e-3
