"""Message stamps as integer nanoseconds, the time unit of the pipeline."""
from __future__ import annotations

NS_PER_S = 1_000_000_000


def stamp_ns(stamp) -> int:
    """A builtin_interfaces/Time (``sec``, ``nanosec``: rclpy's, rosbags', any look-alike) in
    nanoseconds."""
    return stamp.sec * NS_PER_S + stamp.nanosec
