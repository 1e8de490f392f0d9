"""Second process for the DDS tests: receive one message, print a description of it, exit.

    python test/ros_peer.py PACKAGE/msg/TYPE TOPIC reliable|best_effort

Prints `READY` once its subscription exists, then one JSON line: `describe(message)` of the first
message received. `describe` is also what the tests apply to the message they sent.
"""
import array
import hashlib
import importlib
import json
import sys
from typing import Any

import numpy as np


def describe(value: Any) -> Any:
    """A message as plain JSON-able data: nested fields by name, numbers exact, byte-like
    sequences (array.array, bytes) as length + sha256 so large clouds compare cheaply."""
    if hasattr(value, "get_fields_and_field_types"):
        return {name: describe(getattr(value, name)) for name in value.get_fields_and_field_types()}
    if isinstance(value, (array.array, bytes, bytearray)):
        raw = memoryview(value).cast("B")
        return {"len": len(value), "sha256": hashlib.sha256(raw).hexdigest()}
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [describe(item) for item in value]
    return value


def message_class(type_name: str) -> type:
    """`vision_msgs/msg/Detection3DArray` -> the generated Python class."""
    package, kind, name = type_name.split("/")
    return getattr(importlib.import_module(f"{package}.{kind}"), name)


def main(type_name: str, topic: str, reliability: str, timeout: float = 120.0) -> int:
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy

    rclpy.init()
    node = rclpy.create_node("ros_peer")
    received = []
    qos = QoSProfile(depth=1, reliability=ReliabilityPolicy[reliability.upper()])
    node.create_subscription(message_class(type_name), topic, received.append, qos)
    print("READY", flush=True)
    deadline = node.get_clock().now().nanoseconds + int(timeout * 1e9)
    while not received and node.get_clock().now().nanoseconds < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    if received:
        print(json.dumps(describe(received[0])), flush=True)
    node.destroy_node()
    rclpy.shutdown()
    return 0 if received else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
