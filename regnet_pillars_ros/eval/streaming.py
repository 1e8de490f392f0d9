"""Streaming evaluation (Li, Wang and Ramanan, "Towards Streaming Perception", ECCV 2020): at each
key frame, the newest output the detector had published by then, moved into the key frame.

Two pieces, both free of ROS and of any detector:

- `schedule`: the node's scheduling of clouds at a given frame time. One inference thread and a
  latest-only slot: a cloud arriving while the thread is idle starts at once; one arriving while
  it is busy waits in the slot and is replaced (skipped) by any newer arrival; the finished
  thread takes the slot's cloud. An output's latency (publication - stamp) is its wait in the
  slot plus the frame time. Every cloud still enters the sweep history (the replay's job).
- `stream_key_frames`: for each key frame at stamp t, the newest output published at or before t,
  its boxes moved from their input's LiDAR frame into the key frame's with the ego motion between
  the two stamps and, with ``forecast='velocity'``, advanced by their velocity over the output's
  age (t - input stamp). Key frames before the first output have no detections.

Times are integer nanoseconds on the bag's clock.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from ..model import Detections
from ..pipeline.transforms import Transform, TransformError, transform_boxes
from .replay import FrameResult, KeyFrame

FORECASTS = ("none", "velocity")
NO_OUTPUT_YET = "no output published yet (before the detector's first output)"


@dataclass(frozen=True)
class Schedule:
    """Which clouds (indices into the arrivals) the node ran, when each output was published,
    and which clouds it skipped (replaced in the slot before the thread took them)."""

    processed: tuple[int, ...]
    published_ns: tuple[int, ...]
    skipped: tuple[int, ...]


def schedule(arrivals_ns: Sequence[int], frame_ns: int | Sequence[int]) -> Schedule:
    """The node's latest-only scheduling of clouds arriving at ``arrivals_ns`` (non-decreasing)
    with frame times ``frame_ns`` (one for all clouds, or one per cloud). A cloud arriving at
    the moment a frame ends counts as arrived before the thread looks at the slot."""
    frame = ((lambda i: int(frame_ns)) if np.ndim(frame_ns) == 0
             else (lambda i: int(frame_ns[i])))
    processed: list[int] = []
    published: list[int] = []
    skipped: list[int] = []
    busy_until = None  # the running frame's end
    waiting = None  # the slot's cloud

    def start(i: int, at: int) -> int:
        processed.append(i)
        published.append(at + frame(i))
        return published[-1]

    for i, arrival in enumerate(arrivals_ns):
        if waiting is not None and busy_until < arrival:
            busy_until, waiting = start(waiting, busy_until), None
        if busy_until is None or busy_until <= arrival:
            if waiting is not None:  # a frame ended just as this cloud arrived
                skipped.append(waiting)
                waiting = None
            busy_until = start(i, arrival)
        else:
            if waiting is not None:
                skipped.append(waiting)
            waiting = i
    if waiting is not None:
        start(waiting, busy_until)
    return Schedule(tuple(processed), tuple(published), tuple(skipped))


@dataclass(frozen=True)
class Output:
    """One published output: the input cloud's stamp and LiDAR frame, the publication time and
    the detections (in that cloud's frame)."""

    stamp_ns: int
    frame_id: str
    published_ns: int
    detections: Detections


@dataclass(frozen=True)
class StreamedFrame:
    """A key frame's streaming result and the output behind it: its input stamp and age (key
    stamp - input stamp), None before the first output."""

    result: FrameResult
    source_stamp_ns: int | None = None

    @property
    def age_ms(self) -> float | None:
        if self.source_stamp_ns is None:
            return None
        return (self.result.key.stamp_ns - self.source_stamp_ns) * 1e-6


PoseLookup = Callable[[str, int], Transform]
"""(LiDAR frame, stamp) -> T_fixed_lidar at that stamp; raises TransformError when unknown."""


def carry_boxes(boxes: np.ndarray, age_s: float, forecast: str,
                motion: Transform | None) -> np.ndarray:
    """Boxes (x, y, z_bottom, l, w, h, yaw[, vx, vy]) of an output ``age_s`` old, advanced by
    their velocity over the age (``forecast`` 'velocity'; 'none' keeps them where they were seen)
    and then moved by ``motion`` (T_key_source; None keeps the frame)."""
    if forecast not in FORECASTS:
        raise ValueError(f"forecast must be one of {FORECASTS}, got '{forecast}'")
    out = boxes
    if forecast == "velocity" and age_s:
        if boxes.shape[1] < 9:
            raise ValueError("forecast 'velocity' needs boxes with velocities (nuScenes presets)")
        out = boxes.copy()
        out[:, :2] += boxes[:, 7:9] * age_s  # velocity over ground, in the source frame's axes
    return out if motion is None else transform_boxes(out, motion)


def newest_published(key_stamps_ns: Sequence[int], stamps_ns: Sequence[int],
                     published_ns: Sequence[int]) -> list[int | None]:
    """For each key stamp, the index of the newest output (input stamps ``stamps_ns``, published
    at ``published_ns``) published at or before it (ties: the newer input); None before the
    first publication."""
    order = sorted(range(len(stamps_ns)), key=lambda i: (published_ns[i], stamps_ns[i]))
    times = [published_ns[i] for i in order]
    picks = []
    for stamp in key_stamps_ns:
        n = bisect.bisect_right(times, stamp)
        picks.append(order[n - 1] if n else None)
    return picks


def stream_key_frames(keys: Sequence[KeyFrame], key_frame_ids: Sequence[str],
                      outputs: Sequence[Output], forecast: str,
                      poses: PoseLookup | None) -> list[StreamedFrame]:
    """Each key frame (in the LiDAR frame ``key_frame_ids[i]``) with the newest output published
    by its stamp, moved into it: ego motion from ``poses`` (None: boxes stay in their input's
    frame), forecast as `carry_boxes`. An output of the key frame's own cloud is used as it is."""
    picks = newest_published([k.stamp_ns for k in keys], [o.stamp_ns for o in outputs],
                             [o.published_ns for o in outputs])
    streamed = []
    for key, frame_id, pick in zip(keys, key_frame_ids, picks, strict=True):
        if pick is None:
            streamed.append(StreamedFrame(FrameResult(key, reason=NO_OUTPUT_YET)))
            continue
        output = outputs[pick]
        latency_ms = (output.published_ns - output.stamp_ns) * 1e-6
        dets = output.detections
        if output.stamp_ns != key.stamp_ns or output.frame_id != frame_id:
            try:
                motion = None if poses is None else (
                    poses(frame_id, key.stamp_ns).inverse()
                    @ poses(output.frame_id, output.stamp_ns))
            except TransformError as exc:
                streamed.append(StreamedFrame(FrameResult(
                    key, reason=f"no ego motion to the key frame: {exc}", latency_ms=latency_ms),
                    output.stamp_ns))
                continue
            age_s = (key.stamp_ns - output.stamp_ns) * 1e-9
            dets = replace(dets, boxes=carry_boxes(dets.boxes, age_s, forecast, motion))
        streamed.append(StreamedFrame(FrameResult(key, dets, latency_ms=latency_ms),
                                      output.stamp_ns))
    return streamed
