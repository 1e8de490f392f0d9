"""``regnet-pillars eval --live``: scene bags played into a running detector_node over DDS.

Starts detector_node (use_sim_time, the evaluation's output thresholds), publishes each bag's
/clock, /tf, /tf_static and clouds in bag order, either at ``rate`` times the recorded speed (a
node slower than that drops clouds, as deployed) or ``paced`` (each cloud waits for the node's
output before the next cloud: nothing dropped), records the node's Detection3DArray and velocity
outputs into a new bag and turns those of the key frames' stamps into the same per-key-frame
results as the offline replay. Latency: cloud published -> detections received (wall clock).
Every output also gets its publication time on the bags' clock, input stamp + latency x rate,
for the streaming evaluation.
"""
from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..eval import bag_topics as topics
from ..eval.replay import FrameResult, KeyFrame, ReplayConfig, scene_name
from ..eval.streaming import Output
from ..model import Detections, get_preset
from ..pipeline.stamps import stamp_ns
from .demo import OBJECTS_TOPIC, Player, ros_environment, start_node, stop_node

VELOCITIES_TOPIC = "/detector_node/output/velocities"
NOT_RECEIVED = "no detections received for the key frame's cloud (dropped by the node or lost)"


@dataclass(frozen=True)
class LiveOptions:
    rate: float = 1.0  # playback speed (x recorded)
    paced: bool = False  # wait for each cloud's output instead
    timeout_s: float = 300.0


def detections_from_msgs(objects, velocities, class_names: tuple[str, ...]) -> Detections:
    """A node's Detection3DArray (class names as class_id) and its velocity cloud (same order)
    back to Detections: (x, y, z_bottom, l, w, h, yaw[, vx, vy]) in the cloud's frame."""
    from ..messages.cloud import read_points
    from ..messages.detections import detection_boxes

    boxes = detection_boxes(objects).astype(np.float32)
    if velocities is not None:
        speeds = read_points(velocities, ("vx", "vy")) if len(boxes) else np.zeros((0, 2))
        boxes = np.hstack([boxes, speeds])
    return Detections(
        boxes=boxes,
        scores=np.array([d.results[0].hypothesis.score for d in objects.detections], np.float32),
        labels=np.array([class_names.index(d.results[0].hypothesis.class_id)
                         for d in objects.detections], np.int64),
        class_names=class_names)


def node_parameters(config: ReplayConfig) -> dict[str, str]:
    """The node's command-line parameters for an evaluation run."""
    out = config.output
    params = {"use_sim_time": "true", "device": config.device,
              "score_threshold": str(out.score_threshold),
              "max_detections": str(out.max_detections)}
    if config.checkpoint:
        params["checkpoint"] = config.checkpoint
    if out.class_thresholds:
        params["class_score_thresholds"] = (
            "[" + ",".join(f"'{k}={v}'" for k, v in out.class_thresholds.items()) + "]")
    return params


class LivePlayer(Player):
    """The demo's player plus /clock, the evaluation bag's cloud topic and the velocities."""

    def __init__(self, timeout_s: float) -> None:
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock
        from sensor_msgs.msg import PointCloud2

        super().__init__(timeout_s)
        self.pubs[topics.POINTS] = self.pubs.pop("/points")
        self.pubs[topics.CLOCK] = self.node.create_publisher(Clock, topics.CLOCK, 10)
        self.velocities: dict[int, object] = {}
        self.node.create_subscription(
            PointCloud2, VELOCITIES_TOPIC,
            lambda m: self.velocities.__setitem__(stamp_ns(m.header.stamp), m),
            QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE))

    def wait_matched(self, node: subprocess.Popen) -> bool:
        """Every publisher the node listens to has matched its subscription."""
        needed = (self.pubs[topics.POINTS], self.pubs[topics.TF], self.pubs[topics.TF_STATIC])
        return self.spin_until(lambda: all(p.get_subscription_count() for p in needed), node)

    def spin_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.rclpy.spin_once(self.node, timeout_sec=min(0.05, left))


def play_scene(bag: Path, player: LivePlayer, node: subprocess.Popen, options: LiveOptions,
               sent: dict[int, float], bar: tqdm) -> list[KeyFrame]:
    """Publish one scene bag; returns its key frames. ``sent``: cloud stamp -> wall time."""
    from rclpy.serialization import deserialize_message
    from rosbags.rosbag2 import Reader
    from std_msgs.msg import String

    keys, scene = [], scene_name(bag)
    wanted = (topics.POINTS, topics.TF, topics.TF_STATIC, topics.CLOCK, topics.SAMPLE_TOKEN)
    with Reader(bag) as reader:
        start_wall, start_bag = time.monotonic(), reader.start_time
        for conn, stamp, raw in reader.messages([c for c in reader.connections
                                                 if c.topic in wanted]):
            if conn.topic == topics.SAMPLE_TOKEN:
                keys.append(KeyFrame(deserialize_message(bytes(raw), String).data, stamp, scene))
                continue
            if not options.paced:
                player.spin_for((stamp - start_bag) * 1e-9 / options.rate
                                - (time.monotonic() - start_wall))
            elif conn.topic == topics.POINTS and sent:
                wait_for_output(player, node, next(reversed(sent)), options)
            player.pubs[conn.topic].publish(bytes(raw))
            if conn.topic == topics.POINTS:
                sent[stamp] = time.monotonic()
                bar.update()
    return keys


def wait_for_output(player: LivePlayer, node: subprocess.Popen, stamp: int,
                    options: LiveOptions) -> None:
    """Paced playback: the node's output for the cloud at ``stamp`` before the next cloud. The
    next cloud's /tf is already out by then (it precedes the cloud in the bag): the node looks a
    cloud's pose up as soon as it takes the cloud, and a /tf still in flight would be bridged
    with the previous pose (within tf_tolerance_s), which the offline replay never does."""
    if not player.spin_until(lambda: stamp in player.results, node):
        raise RuntimeError(f"detector_node gave no output for the cloud at {stamp} ns within "
                           f"{options.timeout_s:.0f} s")


def record(path: Path, player: LivePlayer) -> None:
    """The node's outputs as a new bag (one topic each, at the cloud stamps)."""
    from ..messages.bag_writer import BagWriter

    with BagWriter(path) as bag:
        for stamp, (msg, _) in sorted(player.results.items()):
            bag.write(OBJECTS_TOPIC, stamp, msg)
            if stamp in player.velocities:
                bag.write(VELOCITIES_TOPIC, stamp, player.velocities[stamp])


@dataclass(frozen=True)
class LiveRun:
    """A live replay: per key frame its detections or the reason, every output the node
    published (publication = input stamp + latency x rate, on the bags' clock) and the number of
    clouds played."""

    frames: list[FrameResult]
    outputs: list[Output]
    clouds: int


def received(player: LivePlayer, stamp: int, class_names: tuple[str, ...],
             with_velocity: bool) -> tuple[Detections | None, str]:
    """The node's detections of the cloud at ``stamp``, or None and why there are none."""
    if stamp not in player.results:
        return None, NOT_RECEIVED
    velocities = player.velocities.get(stamp) if with_velocity else None
    if with_velocity and velocities is None:
        return None, "detections received without velocities"
    return detections_from_msgs(player.results[stamp][0], velocities, class_names), ""


def run_live(bags: list[Path], config: ReplayConfig, options: LiveOptions, record_to: Path,
             progress: bool = True) -> LiveRun:
    """Play ``bags`` into a fresh detector_node and collect what it published."""
    from rosbags.rosbag2 import Reader

    ros_environment()
    class_names = get_preset(config.preset).class_names
    with_velocity = get_preset(config.preset).dataset == "nuscenes"
    node = start_node(config.preset, node_parameters(config))
    player = LivePlayer(options.timeout_s)
    sent: dict[int, float] = {}
    keys: list[KeyFrame] = []
    try:
        if not player.wait_ready(node) or not player.wait_matched(node):
            raise RuntimeError("detector_node did not start (see its log above)")
        clouds = 0
        for bag in bags:
            with Reader(bag) as reader:
                clouds += sum(c.msgcount for c in reader.connections if c.topic == topics.POINTS)
        with tqdm(total=clouds, unit="cloud", desc="live replay", disable=not progress) as bar:
            for bag in bags:
                keys += play_scene(bag, player, node, options, sent, bar)
        last = next(reversed(sent))
        player.spin_until(lambda: last in player.results, node)  # never dropped: the newest
        if with_velocity:  # the velocity cloud follows its detections
            player.spin_until(lambda: set(player.results) <= set(player.velocities), node)
        record(record_to, player)
    finally:
        player.close()
        stop_node(node)
    def latency_s(stamp: int) -> float:
        return player.results[stamp][1] - sent[stamp]

    frames = []
    for key in keys:
        dets, reason = received(player, key.stamp_ns, class_names, with_velocity)
        frames.append(FrameResult(key, dets, reason,
                                  None if dets is None else latency_s(key.stamp_ns) * 1e3))
    outputs = []
    for stamp, (msg, _) in sorted(player.results.items()):
        dets, _ = received(player, stamp, class_names, with_velocity)
        if dets is not None:
            published = stamp + round(latency_s(stamp) * options.rate * 1e9)
            outputs.append(Output(stamp, msg.header.frame_id, published, dets))
    return LiveRun(frames, outputs, len(sent))
