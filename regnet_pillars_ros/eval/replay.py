"""Offline replay: an evaluation bag (`bag_topics` layout) through the node's own pipeline.

The bag is read with `rosbags`; /tf and /tf_static go into the node's `EgoMotion`, every cloud
into its sweep history, and the clouds whose stamp carries a /sample_token through
`pipeline.frame` (sweep stacking, the detector, the output selection), exactly what
detector_node does with the same parameters. Messages are taken in bag order, one timestamp at a
time, transforms first. Where the node waits up to tf_wait_s for /tf to reach a cloud's stamp,
the replay reads on in the bag: a key frame is stacked once /tf reached its stamp, or once the
bag's time is tf_wait_s past the cloud.

`bag-from-dataset` writes one bag per scene; each scene is replayed with fresh sweep and
transform state, so any split of the scenes over processes gives the same detections.
"""
from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from rosbags.rosbag2 import Reader
from rosbags.typesys import Stores, get_typestore
from tqdm import tqdm

from ..messages.cloud import CloudError, read_points
from ..model import Detections, Detector
from ..pipeline.frame import OutputFilter, SweepSettings, detect
from ..pipeline.stamps import stamp_ns
from ..pipeline.sweeps import SweepWindow
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
    """A /sample_token of a scene bag and its stamp (a cloud run that is no key frame: token
    '', see `replay_scene`'s ``run_at``)."""

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


def bag_messages(bag: Path, names: Iterable[str]) -> Iterator[tuple[str, object, int]]:
    """(topic, message, bag time) of the bag's topics ``names``, in bag order."""
    with Reader(bag) as reader:
        for conn, stamp, raw in reader.messages(_connections(reader, names)):
            yield conn.topic, _deserialize(raw, conn.msgtype), stamp


def key_cloud(bag: Path, stamp_ns: int) -> np.ndarray:
    """float32 [N, 3]: the points of the bag's cloud stamped ``stamp_ns``."""
    with Reader(bag) as reader:
        for conn, _, raw in reader.messages(_connections(reader, (topics.POINTS,)),
                                            start=stamp_ns, stop=stamp_ns + 1):
            return read_points(_deserialize(raw, conn.msgtype))
    raise ValueError(f"{bag}: no cloud at {stamp_ns} ns")


class _SceneReplay:
    """One scene's sweep and transform state around a shared detector."""

    def __init__(self, detector: Detector, config: ReplayConfig, scene: str,
                 run_at: Collection[int] | None = None):
        self.detector, self.config, self.scene = detector, config, scene
        self.run_at = run_at
        self.keys: dict[int, KeyFrame] = {}
        self.ego = replace(config.sweeps, tf_wait_s=0.0).ego_motion()  # it reads on instead
        self.sweeps = config.sweeps.accumulator(detector.preset.sweeps_num, self.ego)
        self.waiting: list[tuple[int, SweepWindow, FrameResult]] = []  # (bag time, ...)
        self.frames: list[FrameResult] = []
        self.done: set[int] = set()

    def step(self, messages: list[tuple[str, object, int]]) -> None:
        """All messages of one bag timestamp: transforms and sample tokens first, then clouds."""
        for topic, msg, stamp in messages:
            if topic in (topics.TF, topics.TF_STATIC):
                self.ego.add_tf(msg, topic == topics.TF_STATIC)  # refused ones: as the node
            elif topic == topics.SAMPLE_TOKEN:
                self.keys[stamp] = KeyFrame(msg.data, stamp, self.scene)
        for topic, msg, stamp in messages:
            if topic == topics.POINTS:
                self.cloud(msg, stamp)
        self.run_waiting(messages[-1][2] if messages else None)

    def cloud(self, msg, bag_time: int) -> None:
        """Every cloud enters the sweep history as in the node; key frames wait for their
        frame (the detections of other clouds cannot change a key frame's)."""
        stamp = stamp_ns(msg.header.stamp)
        key = self.runs(stamp)
        try:
            window = self.sweeps.receive(read_points(msg), stamp, msg.header.frame_id)
        except CloudError as exc:
            if key is not None:
                self.finished(FrameResult(key, reason=f"bad cloud: {exc}"))
            return
        if key is not None:
            self.waiting.append((bag_time, window, FrameResult(key)))

    def runs(self, stamp: int) -> KeyFrame | None:
        """The record of a cloud the replay runs: a key frame, or one of ``run_at``."""
        if self.run_at is None:
            return self.keys.get(stamp)
        if stamp not in self.run_at:
            return None
        return self.keys.get(stamp, KeyFrame("", stamp, self.scene))

    def run_waiting(self, bag_time: int | None) -> None:
        """Stack and detect the waiting key frames whose ego motion arrived or whose wait ran
        out (all of them when ``bag_time`` is None: the bag ended)."""
        wait_ns = int(self.config.sweeps.tf_wait_s * 1e9)
        while self.waiting:
            arrived, window, frame = self.waiting[0]
            current = window.current
            if (bag_time is not None and bag_time - arrived < wait_ns
                    and self.sweeps.poses is not None
                    and not self.ego.reached(current.frame_id, current.stamp_ns)):
                return
            self.waiting.pop(0)
            self.finished(self.run(window, frame))

    def run(self, window: SweepWindow, frame: FrameResult) -> FrameResult:
        try:
            stacked = self.sweeps.stack(window)
            dets = detect(self.detector, stacked.points, self.config.output)
        except Exception as exc:  # the node counts a failed frame and goes on
            frame.reason = f"frame failed: {type(exc).__name__}: {exc}"
        else:
            frame.detections, frame.latency_ms = dets, float(dets.timings_ms.get("total", 0.0))
        return frame

    def finished(self, frame: FrameResult) -> None:
        self.done.add(frame.key.stamp_ns)
        self.frames.append(frame)

    def finish(self) -> list[FrameResult]:
        """Clouds still waiting run; key frames without a cloud are dropped with the reason."""
        self.run_waiting(None)
        if self.run_at is None:
            self.frames += [FrameResult(key, reason=NO_CLOUD)
                            for stamp, key in self.keys.items() if stamp not in self.done]
        return self.frames


def replay_scene(bag: Path, detector: Detector, config: ReplayConfig,
                 bar: tqdm | None = None,
                 run_at: Collection[int] | None = None) -> list[FrameResult]:
    """Replay one scene bag; its key frames' results in time order. ``run_at``: the stamps of
    the clouds to run instead (every cloud still enters the sweep history)."""
    replay = _SceneReplay(detector, config, scene_name(bag), run_at)
    wanted = (topics.POINTS, topics.TF, topics.TF_STATIC, topics.SAMPLE_TOKEN)
    group: list[tuple[str, object, int]] = []
    for topic, msg, stamp in bag_messages(bag, wanted):
        if group and stamp != group[-1][2]:
            replay.step(group)
            group = []
        group.append((topic, msg, stamp))
        if bar is not None and topic == topics.POINTS:
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
