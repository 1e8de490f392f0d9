"""Ego motion: /tf, /tf_static and odometry messages into one transform buffer, and the lookups
of sweep poses and output frames.

Messages are read by field name (tf2_msgs/TFMessage, nav_msgs/Odometry), so rclpy's and rosbags'
messages both work. Thread-safe: the node feeds it from its executor and looks poses up from its
inference thread; the offline replay feeds and looks up from one thread.
"""
from __future__ import annotations

import threading
import time

from .stamps import stamp_ns
from .transforms import Transform, TransformBuffer, TransformError


class EgoMotion:
    """A transform buffer fed with messages; poses are T_``sweep_frame``_sensor.

    A lookup first wants the stamp inside the buffered history (interpolated, as tf2 answers);
    /tf may arrive after the cloud, so it waits up to ``wait_s`` for /tf to reach the stamp, and
    only then takes the nearest transform within ``tolerance_s``. Taking the tolerance at once
    would use a stale pose whenever a cloud is ahead of its /tf.
    """

    def __init__(self, sweep_frame: str = "odom", tolerance_s: float = 0.1, wait_s: float = 0.0,
                 cache_s: float = 10.0):
        self.sweep_frame = sweep_frame
        self.wait_s = wait_s
        self._buffer = TransformBuffer(cache_s=cache_s, tolerance_s=tolerance_s)
        self._arrived = threading.Condition()

    def add_tf(self, msg, static: bool = False) -> list[str]:
        """Store a TFMessage's transforms; returns why any of them was refused."""
        refused = []
        for t in msg.transforms:
            reason = self._store(t.header.frame_id, t.child_frame_id, t.header.stamp,
                                 t.transform.translation, t.transform.rotation, static)
            if reason:
                refused.append(reason)
        return refused

    def add_odometry(self, msg) -> list[str]:
        """Store an Odometry's pose as header.frame_id -> child_frame_id; returns why it was
        refused, if it was."""
        pose = msg.pose.pose
        reason = self._store(msg.header.frame_id, msg.child_frame_id, msg.header.stamp,
                             pose.position, pose.orientation, False)
        return [reason] if reason else []

    def _store(self, parent: str, child: str, stamp, t, q, static: bool) -> str:
        try:
            value = Transform.from_xyz_quat((t.x, t.y, t.z), (q.x, q.y, q.z, q.w))
            with self._arrived:
                self._buffer.set_transform(parent, child, stamp_ns(stamp), value, static)
                self._arrived.notify_all()
        except ValueError as exc:
            return f"transform {parent} -> {child} refused: {exc}"
        return ""

    def lookup(self, target: str, source: str, stamp: int, wait: bool = True) -> Transform:
        """T_target_source at ``stamp`` (ns); raises TransformError when none can be given.
        ``wait`` False skips the wait (past sweeps: /tf has passed their stamps already)."""
        deadline = time.monotonic() + (self.wait_s if wait else 0.0)
        with self._arrived:
            while True:
                try:
                    return self._buffer.lookup(target, source, stamp, exact=True)
                except TransformError:
                    left = deadline - time.monotonic()
                    if left <= 0.0 or not self._arrived.wait(left):
                        return self._buffer.lookup(target, source, stamp)

    def pose(self, frame: str, stamp: int, wait: bool = True) -> Transform:
        """T_sweepframe_frame at ``stamp``: where the sensor ``frame`` was."""
        return self.lookup(self.sweep_frame, frame, stamp, wait)

    def reached(self, frame: str, stamp: int) -> bool:
        """Whether :meth:`pose` would answer without waiting (the buffer reached ``stamp``)."""
        with self._arrived:
            try:
                self._buffer.lookup(self.sweep_frame, frame, stamp, exact=True)
            except TransformError:
                return False
            return True
