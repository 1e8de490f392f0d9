"""detector_node's publishers: a frame's messages, the class map, timings, the model status and
/diagnostics."""
from __future__ import annotations

from typing import Any

from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float64, Header, String
from vision_msgs.msg import Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

from ..messages.detections import detection_array, label_info, velocity_cloud
from ..messages.markers import MarkerOptions, detection_markers
from ..model import Detections
from . import params as P
from .diagnostics import Health
from .serving import Generation

STAGES = ("preprocess", "inference", "postprocess", "total")
RELIABLE = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


def marker_options(live: dict[str, Any]) -> MarkerOptions:
    return MarkerOptions(show_labels=live["markers.show_labels"],
                         show_heading=live["markers.show_heading"],
                         show_velocity=live["markers.show_velocity"],
                         line_width=live["markers.line_width"],
                         colors=P.parse_class_colors(live["markers.class_colors"]))


class Outputs:
    """Every topic the node publishes; frame messages are built first and sent later, so the
    sending can wait for the model generation check without the building."""

    def __init__(self, node: Node, health: Health) -> None:
        self._node, self._health = node, health
        self.objects = node.create_publisher(Detection3DArray, "~/output/objects", RELIABLE)
        self.markers = node.create_publisher(MarkerArray, "~/output/markers", RELIABLE)
        self.labels = node.create_publisher(LabelInfo, "~/output/label_info", LATCHED)
        self.velocities = node.create_publisher(PointCloud2, "~/output/velocities", RELIABLE)
        self.model_status = node.create_publisher(String, "~/output/model_status", LATCHED)
        self.timing = {s: node.create_publisher(Float64, f"~/debug/processing_time/{s}_ms", 1)
                       for s in STAGES}
        self.latency = node.create_publisher(Float64, "~/debug/pipeline_latency_ms", 1)
        self.diagnostics = node.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._markers: tuple[int, MarkerOptions] = (-1, MarkerOptions())

    def frame(self, gen: Generation, dets: Detections,
              header: Header) -> list[tuple[Publisher, Any]]:
        """One frame's messages. Markers are slow to build in Python (per box): built only
        while someone (RViz) subscribes."""
        out: list[tuple[Publisher, Any]] = [
            (self.objects, detection_array(dets, header, gen.live["class_id_format"]))]
        if self.markers.get_subscription_count():
            if self._markers[0] != gen.number:
                self._markers = (gen.number, marker_options(gen.live))
            out.append((self.markers, detection_markers(dets, header, self._markers[1])))
        else:
            self._health.count("frames_without_marker_subscriber")
        if dets.has_velocity:
            out.append((self.velocities, velocity_cloud(dets, header)))
        return out

    @staticmethod
    def send(messages: list[tuple[Publisher, Any]]) -> None:
        for publisher, msg in messages:
            publisher.publish(msg)

    def serving(self, gen: Generation) -> None:
        """A generation starts serving: its class map (and threshold) goes out before any of
        its frames; /diagnostics names its model."""
        header = Header(stamp=self._node.get_clock().now().to_msg())
        self.labels.publish(label_info(gen.class_names, header, gen.live["score_threshold"]))
        self._health.set(**gen.summary())

    def timings(self, timings_ms: dict[str, float], stamp_ns: int) -> None:
        """Per-stage times and the latency from the cloud's stamp to now."""
        for stage in STAGES:
            # With a CUDA graph the detector times "graph" (filter to decoded candidates).
            fallback = timings_ms.get("graph", 0.0) if stage == "inference" else 0.0
            ms = timings_ms.get(stage, fallback)
            self.timing[stage].publish(Float64(data=float(ms)))
        latency = (self._node.get_clock().now().nanoseconds - stamp_ns) * 1e-6
        self.latency.publish(Float64(data=latency))
        self._health.set(last_pipeline_latency_ms=f"{latency:.1f}")

    def report(self, hardware_id: str) -> None:
        """The /diagnostics report of the node's counters."""
        report = self._health.report(f"{self._node.get_name()}: detector", hardware_id)
        report.header.stamp = self._node.get_clock().now().to_msg()
        self.diagnostics.publish(report)
