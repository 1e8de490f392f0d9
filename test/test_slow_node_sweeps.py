"""A node slower than its sensor stacks every cloud the sensor sent, as the models were trained:
detector_node (another process, real DDS) takes a 20 Hz stream it cannot keep up with, and each
cloud it ran on gets the detections of the offline replay (eval/replay.py) of the same stream as
a bag, which stacks every cloud with the 10 clouds before it."""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (scripts/setup_env.sh)")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not generated (scripts/setup_env.sh)")

from node_probe import NodeProcess, node_args, probe_of, stamp_ns_of  # noqa: E402
from std_msgs.msg import String  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402

from regnet_pillars_ros.eval import bag_topics as topics  # noqa: E402
from regnet_pillars_ros.eval import replay  # noqa: E402
from regnet_pillars_ros.messages.bag_writer import BagWriter, header, transform_msg  # noqa: E402
from regnet_pillars_ros.messages.cloud import to_msg  # noqa: E402
from regnet_pillars_ros.model import get_preset  # noqa: E402
from regnet_pillars_ros.model.placeholder import synthetic_cloud  # noqa: E402
from regnet_pillars_ros.pipeline.frame import OutputFilter, SweepSettings  # noqa: E402
from regnet_pillars_ros.pipeline.transforms import Transform  # noqa: E402
from regnet_pillars_ros.tools.live_eval import detections_from_msgs  # noqa: E402

PRESET = "nus-secfpn"  # the fastest preset here, still far slower than 20 Hz on a CPU
SEC = 1_000_000_000
T0 = 1_000 * SEC
CLOUDS, PERIOD = 26, SEC // 20
TF_AFTER = SEC // 100  # each /tf 10 ms after its cloud: the node waits for it, the replay reads on
TF_WAIT_S = 5.0  # bounds that wait; generous for a loaded machine
SCORE, MAX_BOXES = 0.05, 100
MOUNT = Transform.from_xyz_yaw((1.0, 0.0, 0.0), 0.0)  # the probe's static base_link -> lidar_top


def ego_pose(t_s: float) -> Transform:
    """odom -> base_link: 8 m/s forward while turning at 0.3 rad/s."""
    return Transform.from_xyz_yaw((8.0 * t_s, 0.0, 0.0), 0.3 * t_s)


def sensor_stream() -> list[tuple[int, str, object]]:
    """(record time, topic, message) of a 20 Hz LiDAR on the moving ego in a static world (the
    ground and clutter on which the placeholder weights were calibrated to give boxes)."""
    cloud = synthetic_cloud(get_preset(PRESET), 20_000)[:, :3].numpy().astype(np.float64)
    world = (ego_pose(0.0) @ MOUNT).apply(cloud)
    events: list[tuple[int, str, object]] = [(T0, topics.TF_STATIC, TFMessage(
        transforms=[transform_msg("base_link", "lidar_top", 0, MOUNT)]))]
    for k in range(CLOUDS):
        stamp, pose = T0 + k * PERIOD, ego_pose(k * PERIOD / SEC)
        local = (pose @ MOUNT).inverse().apply(world).astype(np.float32)
        events += [(stamp, topics.POINTS, to_msg(header("lidar_top", stamp), local)),
                   (stamp + TF_AFTER, topics.TF, TFMessage(
                       transforms=[transform_msg("odom", "base_link", stamp, pose)]))]
    return sorted(events, key=lambda e: e[0])


def write_bag(path: Path, events: list[tuple[int, str, object]], keys: list[int]) -> Path:
    """The stream as an evaluation bag whose key frames (/sample_token) are ``keys``."""
    tokens = [(stamp, topics.SAMPLE_TOKEN, String(data=str(stamp))) for stamp in keys]
    with BagWriter(path, latched=(topics.TF_STATIC,)) as bag:
        for record, topic, msg in sorted(events + tokens, key=lambda e: e[0]):
            bag.write(topic, record, msg)
    return path


def test_a_slow_node_stacks_the_skipped_clouds_as_the_offline_replay_does(tmp_path):
    events = sensor_stream()
    node = NodeProcess(node_args(tmp_path, PRESET, checkpoint="placeholder", device="cpu",
                                 score_threshold=SCORE, max_detections=MAX_BOXES,
                                 tf_wait_s=TF_WAIT_S), tmp_path / "node.log")
    with probe_of(node, markers=False) as probe:
        pubs = {topics.POINTS: probe.cloud_pub, topics.TF: probe.tf_pub,
                topics.TF_STATIC: probe.tf_static_pub}
        probe.wait(lambda: all(p.get_subscription_count() for p in pubs.values()),
                   "the node's subscriptions")
        start = time.monotonic()
        for record, topic, msg in events:
            if topic in pubs:
                # The sensor's schedule (20 Hz), not a wait for a result. A stall of this
                # process shifts the rest of the schedule: a burst of the clouds it held back
                # would overflow the node's queue, which no sensor driver does.
                due = start + (record - T0) / SEC
                start += max(0.0, time.monotonic() - due)
                time.sleep(max(0.0, due - time.monotonic()))
                pubs[topic].publish(msg)
        last = T0 + (CLOUDS - 1) * PERIOD
        probe.result_for(last)  # the newest cloud is never skipped
        counters = probe.fresh_counters()
        outputs = {stamp_ns_of(m.header.stamp): m for m in list(probe.objects)}
    assert counters["frames_received"] == str(CLOUDS), "a cloud was lost on the way"
    assert int(counters["frames_processed"]) == len(outputs) < CLOUDS
    assert int(counters.get("frames_dropped", 0)) > 0, "the node kept up: nothing was skipped"
    # The last frame: the newest cloud and its 10 predecessors, skipped or not, lags to 0.5 s.
    assert counters["last_sweeps"] == "11"
    assert float(counters["last_sweep_max_lag_s"]) == pytest.approx(0.5, abs=1e-3)
    assert counters.get("ego_motion_missing", "0") == "0"

    config = replay.ReplayConfig(PRESET, checkpoint="placeholder", device="cpu",
                                 output=OutputFilter(SCORE, {}, MAX_BOXES),
                                 sweeps=SweepSettings(tf_wait_s=TF_WAIT_S))
    # The clouds the node ran on are the bag's key frames: the replay detects on those.
    bag = write_bag(tmp_path / "stream", events, sorted(outputs))
    offline = {f.key.stamp_ns: f for f in replay.replay_scene(bag, config.detector(), config)}
    assert sorted(offline) == sorted(outputs)
    assert all(f.detections is not None for f in offline.values())
    assert len(offline[last].detections) > 0  # stacked sweeps that the boxes can tell apart
    class_names = get_preset(PRESET).class_names
    for stamp, msg in sorted(outputs.items()):
        live = detections_from_msgs(msg, None, class_names)
        expected = offline[stamp].detections
        assert len(live) == len(expected), f"cloud at {(stamp - T0) / SEC:.2f} s"
        np.testing.assert_array_equal(live.labels, expected.labels)
        # Placeholder weights decode sizes up to 1e7 m: relative tolerance, as for the scores.
        np.testing.assert_allclose(live.boxes[:, :6], expected.boxes[:, :6], rtol=1e-4, atol=1e-3)
        yaw_diff = np.angle(np.exp(1j * (live.boxes[:, 6] - expected.boxes[:, 6])))
        assert np.abs(yaw_diff).max() < 1e-3  # back from the quaternion
        np.testing.assert_allclose(live.scores, expected.scores, atol=1e-4)
