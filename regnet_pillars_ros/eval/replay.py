"""Offline replay: an evaluation bag (`bag_topics` layout) through the node's own pipeline.

The bag is read with `rosbags`; /tf and /tf_static go into a `TransformBuffer`, every cloud
through `pipeline.frame` (sweep stacking with the ego motion from the bag's tf, the detector,
the output selection), exactly what detector_node does with the same parameters. Messages are
taken in bag order, one timestamp at a time, transforms first (the node waits for /tf to reach a
cloud's stamp). Detections of the clouds whose stamp carries a /sample_token are kept.

`bag-from-dataset` writes one bag per scene; each scene is replayed with fresh sweep and
transform state, so any split of the scenes over processes gives the same detections.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from ..messages.cloud import CloudError, read_points
from ..model import Detections, Detector
from ..pipeline.frame import OutputFilter, SweepSettings, detect
from ..pipeline.transforms import Transform, TransformBuffer, TransformError
from ..runtime.factory import build_detector
from . import bag_topics as topics

NO_CLOUD = "no cloud at the key frame's stamp"


@dataclass(frozen=True)
class ReplayConfig:
    """The model and the node parameters of the replay."""

    preset: str
    checkpoint: str | None = None
    device: str = "cpu"
    output: OutputFilter = OutputFilter(0.05)
    sweeps: SweepSettings = SweepSettings()

    def detector(self) -> Detector:
        return build_detector(self.preset, self.checkpoint, device=self.device)


@dataclass(frozen=True)
class KeyFrame:
    """A /sample_token of a scene bag and its stamp."""

    sample_token: str
    stamp_ns: int
    scene: str


@dataclass
class FrameResult:
    """What became of one key frame: detections (None when dropped, with the reason) and the
    frame's processing time."""

    key: KeyFrame
    detections: Detections | None = None
    reason: str = ""
    latency_ms: float | None = None


_TYPES = get_typestore(Stores.ROS2_KILTED)


def _deserialize(raw: bytes, msgtype: str):
    return _TYPES.deserialize_cdr(raw, msgtype)


def _connections(reader: Reader, names: Iterable[str]) -> list:
    return [c for c in reader.connections if c.topic in set(names)]


def scene_bags(path: str | Path) -> list[Path]:
    """The scene bags of ``path`` (one bag, or a folder of them as `bag-from-dataset` writes)."""
    from .bag_from_dataset import scene_bags as found

    path = Path(path)
    bags = found(path) if path.is_dir() else []
    if not bags:
        raise ValueError(f"{path}: no rosbag2 (a folder with metadata.yaml, or a folder of them "
                         "as `regnet-pillars bag-from-dataset` writes)")
    for bag in bags:
        with Reader(bag) as reader:
            names = {c.topic for c in reader.connections}
        missing = [t for t in (topics.POINTS, topics.TF, topics.SAMPLE_TOKEN) if t not in names]
        if missing:
            raise ValueError(f"{bag}: no {', '.join(missing)} topic (topics: "
                             f"{', '.join(sorted(names))}); not a `bag-from-dataset` bag")
    return bags


def scene_name(bag: Path) -> str:
    """The scene name bag-from-dataset recorded in the bag's metadata (else the folder name)."""
    from .bag_from_dataset import read_scene_metadata

    return read_scene_metadata(bag).get("scene_name", bag.name)


def cloud_count(bag: Path) -> int:
    with Reader(bag) as reader:
        return sum(c.msgcount for c in reader.connections if c.topic == topics.POINTS)


def key_cloud(bag: Path, stamp_ns: int) -> np.ndarray:
    """float32 [N, 3]: the points of the bag's cloud stamped ``stamp_ns``."""
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages(_connections(reader, (topics.POINTS,)),
                                            start=stamp_ns, stop=stamp_ns + 1):
            return read_points(_deserialize(raw, conn.msgtype))
    raise ValueError(f"{bag}: no cloud at {stamp_ns} ns")


def ego_pose(buffer: TransformBuffer, settings: SweepSettings, frame: str,
             stamp_ns: int) -> Transform | None:
    """T_sweepframe_frame at ``stamp_ns`` (None without ego motion), as the node looks it up."""
    if settings.ego_motion_source == "none":
        return None
    try:
        return buffer.lookup(settings.sweep_frame, frame, stamp_ns)
    except TransformError:
        return None


def _store_tf(buffer: TransformBuffer, msg, static: bool) -> None:
    for t in msg.transforms:
        tr, q = t.transform.translation, t.transform.rotation
        stamp = t.header.stamp.sec * 1_000_000_000 + t.header.stamp.nanosec
        buffer.set_transform(t.header.frame_id, t.child_frame_id, stamp,
                             Transform.from_xyz_quat((tr.x, tr.y, tr.z), (q.x, q.y, q.z, q.w)),
                             static)


class _SceneReplay:
    """One scene's sweep and transform state around a shared detector."""

    def __init__(self, detector: Detector, config: ReplayConfig, scene: str):
        self.detector, self.config, self.scene = detector, config, scene
        self.keys: dict[int, KeyFrame] = {}
        self.tf = config.sweeps.transform_buffer()
        self.sweeps = config.sweeps.accumulator(detector.preset.sweeps_num)
        self.frames: list[FrameResult] = []
        self.done: set[int] = set()

    def step(self, messages: list[tuple[str, object, int]]) -> None:
        """All messages of one timestamp: transforms and sample tokens first, then clouds."""
        for topic, msg, stamp in messages:
            if topic in (topics.TF, topics.TF_STATIC):
                _store_tf(self.tf, msg, topic == topics.TF_STATIC)
            elif topic == topics.SAMPLE_TOKEN:
                self.keys[stamp] = KeyFrame(msg.data, stamp, self.scene)
        for topic, msg, _ in messages:
            if topic == topics.POINTS:
                self.cloud(msg)

    def cloud(self, msg) -> None:
        """Stack every cloud as the node does; run the detector at key frames only (the
        detections of other clouds cannot change a key frame's)."""
        stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
        key = self.keys.get(stamp)
        frame = FrameResult(key) if key is not None else None
        try:
            stacked = self.sweeps.add(read_points(msg), stamp, ego_pose(
                self.tf, self.config.sweeps, msg.header.frame_id, stamp))
            if frame is None:
                return
            dets = detect(self.detector, stacked.points, self.config.output)
        except CloudError as exc:
            reason = f"bad cloud: {exc}"
        except Exception as exc:  # the node counts a failed frame and goes on
            reason = f"frame failed: {type(exc).__name__}: {exc}"
        else:
            frame.detections, frame.latency_ms = dets, float(dets.timings_ms.get("total", 0.0))
            reason = ""
        if frame is not None:
            frame.reason = reason
            self.done.add(stamp)
            self.frames.append(frame)

    def finish(self) -> list[FrameResult]:
        """Key frames without a cloud are dropped with the reason."""
        for stamp, key in self.keys.items():
            if stamp not in self.done:
                self.frames.append(FrameResult(key, reason=NO_CLOUD))
        return self.frames


def replay_scene(bag: Path, detector: Detector, config: ReplayConfig,
                 bar: tqdm | None = None) -> list[FrameResult]:
    """Replay one scene bag; its key frames' results in time order."""
    replay = _SceneReplay(detector, config, scene_name(bag))
    wanted = (topics.POINTS, topics.TF, topics.TF_STATIC, topics.SAMPLE_TOKEN)
    with Reader(bag) as reader:
        group: list[tuple[str, object, int]] = []
        for conn, stamp, raw in reader.messages(_connections(reader, wanted)):
            if group and stamp != group[-1][2]:
                replay.step(group)
                group = []
            group.append((conn.topic, _deserialize(raw, conn.msgtype), stamp))
            if bar is not None and conn.topic == topics.POINTS:
                bar.update()
        replay.step(group)
    return sorted(replay.finish(), key=lambda f: f.key.stamp_ns)


def replay_scenes(bags: list[Path], config: ReplayConfig, progress: bool = True,
                  detector: Detector | None = None) -> list[FrameResult]:
    """Replay scene bags one after the other with one detector."""
    detector = detector or config.detector()
    with tqdm(total=sum(map(cloud_count, bags)), unit="cloud", leave=False,
              desc=f"replay of {len(bags)} scene(s)", disable=not progress) as bar:
        return [f for bag in bags for f in replay_scene(bag, detector, config, bar)]
