"""The demo: a moving scene, its rosbag2, and one short run into detector_node."""
import subprocess
import sys

import numpy as np
import pytest

from regnet_pillars_ros.pipeline.transforms import Transform
from regnet_pillars_ros.tools.demo import LIDAR_IN_BASE, moving_scene, world_points

SEC = 1_000_000_000


def test_the_moving_scene_is_one_static_world_seen_from_a_moving_sensor():
    world = np.random.default_rng(0).uniform(-30, 30, (100, 3))
    frames = moving_scene(world, num_frames=3, rate_hz=2.0, start_ns=5 * SEC)
    assert [f.stamp_ns for f in frames] == [5 * SEC, 5 * SEC + SEC // 2, 6 * SEC]
    assert np.linalg.norm(frames[2].base_in_odom.translation) == pytest.approx(6.0, rel=1e-3)
    for f in frames:
        back = (f.base_in_odom @ LIDAR_IN_BASE).apply(f.points.astype(np.float64))
        np.testing.assert_allclose(back, world, atol=1e-4)
    assert not np.allclose(frames[0].points, frames[2].points)
    assert frames[0].base_in_odom.translation == pytest.approx(Transform.identity().translation)


def test_without_shared_the_world_is_a_simulated_scan_seen_from_the_roof(tmp_path):
    world, source = world_points(tmp_path / "clone")  # no ../shared beside this one
    assert source.startswith("simulated LiDAR scan") and str(tmp_path / "shared") in source
    in_lidar = LIDAR_IN_BASE.inverse().apply(world)
    # Most returns are ground, 1.84 m below the sensor as in the model's training scans.
    assert np.mean(np.abs(in_lidar[:, 2] + 1.84) < 0.1) > 0.5
    assert len(world) > 10_000 and np.ptp(in_lidar[:, 0]) > 80


def test_bag_holds_clouds_and_tf_in_order(tmp_path):
    pytest.importorskip("rclpy", reason="rclpy not installed (scripts/setup_env.sh)")
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from sensor_msgs.msg import PointCloud2

    from regnet_pillars_ros.messages.cloud import read_points
    from regnet_pillars_ros.tools.demo import write_bag

    world = np.random.default_rng(1).uniform(-30, 30, (50, 3))
    frames = moving_scene(world, num_frames=2, rate_hz=4.0, start_ns=7 * SEC)
    write_bag(tmp_path / "bag", frames)
    assert len(list((tmp_path / "bag").glob("*.mcap"))) == 1
    with Reader(tmp_path / "bag") as reader:
        topics = [(c.topic, t) for c, t, _ in reader.messages()]
        clouds = [raw for c, _, raw in reader.messages() if c.topic == "/points"]
    assert topics == [("/tf_static", 7 * SEC), ("/tf", 7 * SEC), ("/points", 7 * SEC),
                      ("/tf", 7 * SEC + SEC // 4), ("/points", 7 * SEC + SEC // 4)]
    cloud = deserialize_message(bytes(clouds[1]), PointCloud2)
    assert cloud.header.frame_id == "lidar_top"
    np.testing.assert_array_equal(read_points(cloud), frames[1].points)


def test_demo_plays_into_the_node_and_draws_a_birds_eye_view(tmp_path):
    pytest.importorskip("vision_msgs.msg", reason="vision_msgs not generated")
    pytest.importorskip("matplotlib", reason="matplotlib not installed")
    run = subprocess.run([sys.executable, "-m", "regnet_pillars_ros.tools.demo", "--frames", "2",
                          "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert any(line.startswith("frame 1/2: ") and "latency" in line for line in lines), lines
    assert any(line.startswith("frame 2/2: ") and "boxes" in line for line in lines), lines
    png = tmp_path / "bev.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
