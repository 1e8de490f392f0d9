"""Streaming evaluation of scene bags with the node's scheduling at a simulated frame time.

A scene's timeline (every cloud's stamp, arrival and frame, the key frames, and the bag's whole
/tf for the ego motion between any two stamps) comes from one read of the bag. The schedule at a
frame time says which clouds the node would run and when each output is published; only the
outputs some key frame takes are needed, so the detector runs on those clouds alone (each one in
the offline replay with every earlier cloud in its sweep history, as in the node), and a latency
sweep runs each cloud once. A frame that fails publishes nothing: its key frames take the newest
older output among the clouds run.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..pipeline.ego_motion import EgoMotion
from ..pipeline.frame import SweepSettings
from ..pipeline.stamps import stamp_ns
from ..pipeline.transforms import Transform
from . import bag_topics as topics
from .replay import FrameResult, KeyFrame, bag_messages, scene_name
from .streaming import Output, Schedule, StreamedFrame, newest_published, stream_key_frames


@dataclass(frozen=True)
class SceneTimeline:
    """One scene bag (and its scene's name): its clouds (stamp, bag arrival time, LiDAR frame; bag
    order), key frames and ego motion (every /tf of the bag)."""

    bag: Path
    scene: str
    stamps_ns: tuple[int, ...]
    arrivals_ns: tuple[int, ...]
    frame_ids: tuple[str, ...]
    keys: tuple[KeyFrame, ...]
    ego: EgoMotion

    def pose(self, frame_id: str, stamp_ns: int) -> Transform:
        """T_fixed_lidar at ``stamp_ns`` (raises TransformError when the bag's /tf has none)."""
        return self.ego.pose(frame_id, stamp_ns, wait=False)

    def key_frame_ids(self) -> list[str]:
        """The LiDAR frame of each key frame's cloud."""
        by_stamp = dict(zip(self.stamps_ns, self.frame_ids))
        return [by_stamp.get(k.stamp_ns, "") for k in self.keys]


def read_timeline(bag: Path, settings: SweepSettings) -> SceneTimeline:
    """The timeline of one scene bag; poses in ``settings.sweep_frame`` (tf_tolerance_s)."""
    stamps, arrivals, frame_ids, keys = [], [], [], []
    scene = scene_name(bag)
    # The cache holds the whole scene: poses at any two of its stamps.
    ego = EgoMotion(settings.sweep_frame, settings.tf_tolerance_s, cache_s=1e6)
    for topic, msg, bag_time in bag_messages(bag, (topics.POINTS, topics.TF, topics.TF_STATIC,
                                                   topics.SAMPLE_TOKEN)):
        if topic in (topics.TF, topics.TF_STATIC):
            ego.add_tf(msg, topic == topics.TF_STATIC)
        elif topic == topics.SAMPLE_TOKEN:
            keys.append(KeyFrame(msg.data, bag_time, scene))
        else:
            stamps.append(stamp_ns(msg.header.stamp))
            arrivals.append(bag_time)
            frame_ids.append(msg.header.frame_id)
    return SceneTimeline(bag, scene, tuple(stamps), tuple(arrivals), tuple(frame_ids),
                         tuple(keys), ego)


def needed_clouds(timeline: SceneTimeline, plan: Schedule) -> set[int]:
    """Stamps of the processed clouds whose outputs some key frame takes."""
    stamps = [timeline.stamps_ns[i] for i in plan.processed]
    picks = newest_published([k.stamp_ns for k in timeline.keys], stamps, plan.published_ns)
    return {stamps[p] for p in picks if p is not None}


def scheduled_outputs(timeline: SceneTimeline, plan: Schedule,
                      results: Mapping[int, FrameResult]) -> list[Output]:
    """The outputs of the processed clouds that ran (``results`` by cloud stamp)."""
    outputs = []
    for index, published in zip(plan.processed, plan.published_ns):
        result = results.get(timeline.stamps_ns[index])
        if result is not None and result.detections is not None:
            outputs.append(Output(timeline.stamps_ns[index], timeline.frame_ids[index], published,
                                  result.detections))
    return outputs


def stream_scene(timeline: SceneTimeline, outputs: list[Output],
                 forecast: str) -> list[StreamedFrame]:
    """The scene's key frames with the newest of ``outputs`` moved into each."""
    return stream_key_frames(timeline.keys, timeline.key_frame_ids(), outputs, forecast,
                             timeline.pose)

