"""Writing rclpy messages into rosbag2 (mcap or sqlite3) with ``rosbags``, without rosbag2_py.

Messages are serialized by rclpy (CDR); ``rosbags`` writes the container and records each
topic's type definition and RIHS01 hash. Its built-in Kilted type store lacks vision_msgs, so
`typestore` adds the definitions installed next to the generated vision_msgs package.
"""
from __future__ import annotations

from collections.abc import Collection
from pathlib import Path
from typing import Any

from ..pipeline.transforms import Transform

STORAGES = ("mcap", "sqlite3")
EXTRA_PACKAGES = ("vision_msgs",)  # message packages the rosbags type store does not hold


def msg_share_dir(package: str) -> Path:
    """``<prefix>/share/<package>/msg`` of an installed message package: the nearest such
    folder above its Python module (venv, ``/opt/ros/<distro>`` or its ``local/`` layout)."""
    import importlib

    module = Path(importlib.import_module(package).__file__)
    for prefix in module.parents:
        if (prefix / "share" / package / "msg").is_dir():
            return prefix / "share" / package / "msg"
    raise FileNotFoundError(f"no share/{package}/msg folder above {module}")


def typestore():
    """rosbags' ROS 2 Kilted type store plus the `EXTRA_PACKAGES` message definitions."""
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    store = get_typestore(Stores.ROS2_KILTED)
    for package in EXTRA_PACKAGES:
        for path in sorted(msg_share_dir(package).glob("*.msg")):
            store.register(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    return store


def type_name(msg: Any) -> str:
    """'pkg/msg/Name' of an rclpy message instance."""
    return f"{type(msg).__module__.split('.')[0]}/msg/{type(msg).__name__}"


def header(frame_id: str, stamp_ns: int):
    """std_msgs/Header at ``stamp_ns`` (integer nanoseconds)."""
    from std_msgs.msg import Header

    msg = Header(frame_id=frame_id)
    msg.stamp.sec, msg.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def transform_msg(parent: str, child: str, stamp_ns: int, value: Transform):
    """geometry_msgs/TransformStamped: ``value`` = T_parent_child."""
    from geometry_msgs.msg import TransformStamped

    msg = TransformStamped(header=header(parent, stamp_ns), child_frame_id=child)
    (msg.transform.translation.x, msg.transform.translation.y,
     msg.transform.translation.z) = value.translation.tolist()
    (msg.transform.rotation.x, msg.transform.rotation.y, msg.transform.rotation.z,
     msg.transform.rotation.w) = value.rotation.tolist()
    return msg


def latched_qos():
    """The offered QoS recorded for ``latched`` topics (reliable, transient local, depth 1), so
    that ``ros2 bag play`` republishes them the way /tf_static is published."""
    from rosbags.interfaces import (
        Qos,
        QosDurability,
        QosHistory,
        QosLiveliness,
        QosReliability,
        QosTime,
    )

    unspecified = QosTime(0, 0)
    return Qos(QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
               unspecified, unspecified, QosLiveliness.AUTOMATIC, unspecified, False)


class BagWriter:
    """A rosbag2 being written: ``write(topic, stamp_ns, msg)`` adds a topic on first use.

    A context manager; the bag is a folder (``metadata.yaml`` + one storage file), created on
    entry: ``path`` must not exist yet. ``custom_data`` goes into the metadata; ``latched``
    topics are recorded as offered with `latched_qos`.
    """

    def __init__(self, path: Path, storage: str = "mcap", custom_data: dict[str, str] | None = None,
                 latched: Collection[str] = ()) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise ValueError(f"storage '{storage}' is not one of {', '.join(STORAGES)}")
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(path, version=9, storage_plugin=plugin)
        self._custom_data = custom_data or {}
        self._latched = frozenset(latched)
        self._typestore = typestore()
        self._connections: dict[str, Any] = {}

    def __enter__(self) -> "BagWriter":
        self._writer.open()
        for key, value in self._custom_data.items():
            self._writer.set_custom_data(key, value)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._writer.close()

    def write(self, topic: str, stamp_ns: int, msg: Any) -> None:
        from rclpy.serialization import serialize_message

        if topic not in self._connections:
            self._connections[topic] = self._writer.add_connection(
                topic, type_name(msg), typestore=self._typestore,
                offered_qos_profiles=[latched_qos()] if topic in self._latched else ())
        self._writer.write(self._connections[topic], stamp_ns, serialize_message(msg))
