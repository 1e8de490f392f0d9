"""``regnet-pillars demo``: a small rosbag2 of a moving scene, played into detector_node.

1. builds a few seconds of LiDAR frames: the real nuScenes key frame (../shared/realdata), or
   else a scan of the project's LiDAR simulator (the kind of scan the bundled model was trained
   on), as a static world seen from an ego vehicle that drives through it, with /tf
   (odom -> base_link) and /tf_static (base_link -> lidar_top);
2. writes them as rosbag2 (mcap) with ``rosbags``;
3. starts detector_node in another process, plays the bag into it over DDS, prints one line
   per frame (boxes per class, latency) and draws a bird's-eye view of the last frame (PNG).
"""
from __future__ import annotations

import argparse
import math
import os
import random
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..messages.bag_writer import BagWriter, header, transform_msg
from ..pipeline.stamps import stamp_ns
from ..pipeline.transforms import Transform
from ..ros.launch_config import config_dir
from ..ros.params import DEFAULT_PRESET
from ..sim.scene import generate_scene
from ..sim.sweeps import simulate_sweep

REALDATA_FRAME = ("shared/realdata/nuscenes/demo/"
                  "n015-2018-07-24-11-22-45+0800__LIDAR_TOP__1532402927647951.pcd.bin")
LIDAR_IN_BASE = Transform.from_xyz_yaw((0.94, 0.0, 1.84), 0.0)  # roughly nuScenes' roof LiDAR
# A held-out simulated scene (training scenes have seeds below train.data.VAL_SEED_BASE = 10^6)
# and a sweep one second into it.
SIM_SCENE_SEED = 1_000_770
SIM_SWEEP = 20
INPUT_TOPIC = "/detector_node/input/pointcloud"
OBJECTS_TOPIC = "/detector_node/output/objects"


@dataclass(frozen=True)
class Frame:
    stamp_ns: int
    points: np.ndarray  # float32 [N, 3] in the LiDAR frame at stamp_ns
    base_in_odom: Transform


def world_points(repo: Path) -> tuple[np.ndarray, str]:
    """The static world in odom and where it came from: the real nuScenes key frame if present,
    else a simulated scan; either is seen from the LiDAR at LIDAR_IN_BASE of the ego at the
    origin."""
    path = repo.parent / REALDATA_FRAME
    if path.is_file():
        xyz = np.fromfile(path, np.float32).reshape(-1, 5)[:, :3]
        return LIDAR_IN_BASE.apply(xyz.astype(np.float64)), f"real nuScenes frame {path.name}"
    sweep = simulate_sweep(generate_scene(SIM_SCENE_SEED), SIM_SWEEP, seed=SIM_SCENE_SEED)
    return (LIDAR_IN_BASE.apply(sweep.points[:, :3].astype(np.float64)),
            f"simulated LiDAR scan (held-out scene {SIM_SCENE_SEED}, sweep {SIM_SWEEP}); "
            f"no real frame at {path}")


def moving_scene(world: np.ndarray, num_frames: int, rate_hz: float, start_ns: int,
                 speed: float = 6.0, yaw_rate: float = 0.05) -> list[Frame]:
    """The world seen from an ego vehicle driving at ``speed`` m/s while turning slowly."""
    frames = []
    for k in range(num_frames):
        t = k / rate_hz
        yaw = yaw_rate * t
        base = Transform.from_xyz_yaw((speed * t * math.cos(yaw / 2),
                                       speed * t * math.sin(yaw / 2), 0.0), yaw)
        lidar_in_odom = base @ LIDAR_IN_BASE
        frames.append(Frame(start_ns + int(t * 1e9),
                            lidar_in_odom.inverse().apply(world).astype(np.float32), base))
    return frames


def write_bag(path: Path, frames: list[Frame], lidar_frame: str = "lidar_top") -> None:
    """rosbag2 (mcap): /points, /tf per frame, /tf_static once (rclpy CDR, rosbags container)."""
    from tf2_msgs.msg import TFMessage

    from ..messages.cloud import to_msg

    first = frames[0].stamp_ns
    with BagWriter(path) as bag:
        bag.write("/tf_static", first, TFMessage(transforms=[
            transform_msg("base_link", lidar_frame, first, LIDAR_IN_BASE)]))
        for f in frames:
            bag.write("/tf", f.stamp_ns, TFMessage(transforms=[
                transform_msg("odom", "base_link", f.stamp_ns, f.base_in_odom)]))
            bag.write("/points", f.stamp_ns, to_msg(header(lidar_frame, f.stamp_ns), f.points))


def ros_environment() -> None:
    """Discovery on this host only, a domain of our own, the project's Fast DDS profile."""
    os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    os.environ.setdefault("ROS_DOMAIN_ID", str(random.SystemRandom().randint(100, 200)))
    profile = config_dir() / "fastdds_profile.xml"
    if profile.is_file():
        os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(profile))


def start_node(preset: str, params: dict[str, str]) -> subprocess.Popen:
    """detector_node with the preset's YAML files and ``params`` on top."""
    overrides = [a for k, v in params.items() for a in ("-p", f"{k}:={v}")]
    return subprocess.Popen([sys.executable, "-m", "regnet_pillars_ros.ros.node",
                             "--preset", preset, *(["--ros-args", *overrides] if params else [])])


def stop_node(node: subprocess.Popen) -> None:
    node.terminate()
    try:
        node.wait(20)
    except subprocess.TimeoutExpired:
        node.kill()
        node.wait()


class Player:
    """Publishes bag messages to the node and collects its Detection3DArray per stamp."""

    def __init__(self, timeout_s: float) -> None:
        import rclpy
        from rclpy.qos import (
            DurabilityPolicy,
            QoSProfile,
            ReliabilityPolicy,
            qos_profile_sensor_data,
        )
        from sensor_msgs.msg import PointCloud2
        from tf2_msgs.msg import TFMessage
        from vision_msgs.msg import Detection3DArray

        rclpy.init()
        self.rclpy, self.timeout_s = rclpy, timeout_s
        self.node = rclpy.create_node("demo_player")
        latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.pubs = {"/points": self.node.create_publisher(PointCloud2, INPUT_TOPIC,
                                                           qos_profile_sensor_data),
                     "/tf": self.node.create_publisher(TFMessage, "/tf", 100),
                     "/tf_static": self.node.create_publisher(TFMessage, "/tf_static", latched)}
        self.results: dict[int, tuple[object, float]] = {}
        self.node.create_subscription(Detection3DArray, OBJECTS_TOPIC, self._on_objects,
                                      QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))

    def wait_ready(self, node_process: subprocess.Popen) -> bool:
        """True once the node's LabelInfo (transient local) arrived: its model is serving."""
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from vision_msgs.msg import LabelInfo

        labels: list = []
        sub = self.node.create_subscription(
            LabelInfo, "/detector_node/output/label_info", labels.append,
            QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.TRANSIENT_LOCAL))
        ready = self.spin_until(lambda: labels, node_process)
        self.node.destroy_subscription(sub)
        return ready

    def _on_objects(self, msg) -> None:
        self.results[stamp_ns(msg.header.stamp)] = (msg, time.monotonic())

    def spin_until(self, done, node_process: subprocess.Popen) -> bool:
        deadline = time.monotonic() + self.timeout_s
        while not done() and time.monotonic() < deadline and node_process.poll() is None:
            self.rclpy.spin_once(self.node, timeout_sec=0.05)
        return bool(done())

    def close(self) -> None:
        self.node.destroy_node()
        self.rclpy.try_shutdown()


def box_corners_xy(msg) -> list[tuple[str, np.ndarray]]:
    """(class, [4, 2] footprint) of each finite box of a Detection3DArray."""
    from ..messages.detections import detection_boxes
    from ..model.boxes import bev_corners

    boxes = detection_boxes(msg)
    names = [d.results[0].hypothesis.class_id for d in msg.detections]
    return [(name, corners) for name, corners, finite
            in zip(names, bev_corners(boxes), np.isfinite(boxes).all(axis=1)) if finite]


def draw_bev(path: Path, points: np.ndarray, msg, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..messages.markers import PALETTE

    fig, ax = plt.subplots(figsize=(8, 8), dpi=110)
    ax.scatter(points[:, 0], points[:, 1], s=0.5, c=points[:, 2], cmap="viridis",
               vmin=-3, vmax=3, linewidths=0)
    colours: dict[str, tuple] = {}
    for name, corners in box_corners_xy(msg):
        first = name not in colours
        colour = colours.setdefault(name, PALETTE[len(colours) % len(PALETTE)])
        ax.fill(corners[:, 0], corners[:, 1], fill=False, ec=colour, lw=1.0,
                label=name if first else None)
    ax.set(xlim=(-55, 55), ylim=(-55, 55), aspect="equal", xlabel="x (m)", ylabel="y (m)",
           title=title)
    if colours:
        ax.legend(loc="upper right", fontsize=8)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def play(bag: Path, player: Player, node: subprocess.Popen, frames: list[Frame],
         wait_each: bool) -> list[str]:
    """Publish the bag in order; with ``wait_each`` each cloud waits for its detections
    (nothing dropped on a slow CPU), otherwise at the recorded rate. Returns summary lines."""
    from rosbags.rosbag2 import Reader

    sent: dict[int, float] = {}
    lines = []
    with Reader(bag) as reader:
        start_wall, start_bag = time.monotonic(), None
        for conn, stamp, raw in reader.messages():
            start_bag = stamp if start_bag is None else start_bag
            if not wait_each:
                time.sleep(max(0.0, (stamp - start_bag) * 1e-9 - (time.monotonic() - start_wall)))
            player.pubs[conn.topic].publish(bytes(raw))
            if conn.topic == "/points":
                sent[stamp] = time.monotonic()
                if wait_each:
                    player.spin_until(lambda: stamp in player.results, node)
    player.spin_until(lambda: frames[-1].stamp_ns in player.results, node)
    for i, f in enumerate(frames):
        if f.stamp_ns not in player.results:
            lines.append(f"frame {i + 1}/{len(frames)}: no detections received (dropped)")
            continue
        msg, arrived = player.results[f.stamp_ns]
        counts = Counter(d.results[0].hypothesis.class_id for d in msg.detections)
        per_class = ", ".join(f"{name} {n}" for name, n in counts.most_common()) or "none"
        lines.append(f"frame {i + 1}/{len(frames)}: {len(f.points)} points, "
                     f"{len(msg.detections)} boxes ({per_class}), "
                     f"latency {(arrived - sent[f.stamp_ns]) * 1e3:.0f} ms")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="regnet-pillars demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default=DEFAULT_PRESET)
    parser.add_argument("--checkpoint", default="", help="empty = the project's default model")
    parser.add_argument("--frames", type=int, default=6, help="LiDAR frames in the bag")
    parser.add_argument("--rate", type=float, default=4.0, help="frame rate of the bag (Hz)")
    parser.add_argument("--out", type=Path, default=Path("demo_out"), help="output folder")
    parser.add_argument("--realtime", action="store_true", help="play at the bag's rate "
                        "(a node slower than the bag drops frames) instead of frame by frame")
    parser.add_argument("--timeout", type=float, default=300.0,
                        help="seconds to wait for the node to start or answer")
    args = parser.parse_args(argv)
    if args.frames < 1:
        parser.error("--frames must be at least 1")

    ros_environment()
    repo = Path(__file__).resolve().parents[2]
    world, source = world_points(repo)
    frames = moving_scene(world, args.frames, args.rate, time.time_ns())
    args.out.mkdir(parents=True, exist_ok=True)
    bag = args.out / "demo_bag"
    if bag.exists():
        for f in bag.iterdir():
            f.unlink()
        bag.rmdir()
    write_bag(bag, frames)
    print(f"scene: {source}")
    print(f"bag: {bag} ({args.frames} frames at {args.rate:g} Hz, with /tf)")

    node = start_node(args.preset, {"checkpoint": args.checkpoint} if args.checkpoint else {})
    player = Player(args.timeout)
    try:
        if not player.wait_ready(node):
            print("error: detector_node did not start (see its log above)", file=sys.stderr)
            return 1
        print(f"detector_node ready ({args.preset}); playing the bag into it")
        for line in play(bag, player, node, frames, wait_each=not args.realtime):
            print(line)
        last = frames[-1]
        if last.stamp_ns in player.results:
            png = args.out / "bev.png"
            draw_bev(png, last.points, player.results[last.stamp_ns][0],
                     f"{args.preset}: frame {len(frames)} (bird's-eye view, LiDAR frame)")
            print(f"bird's-eye view: {png}")
        return 0 if player.results else 1
    finally:
        player.close()
        stop_node(node)


if __name__ == "__main__":
    sys.exit(main())
