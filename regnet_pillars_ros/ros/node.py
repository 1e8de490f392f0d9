"""detector_node: PointCloud2 in, Detection3DArray + RViz markers out.

The executor only hands clouds to a latest-only slot; one inference thread takes the newest
cloud, stacks past sweeps, runs the detector and publishes. Model swaps load in the parameter
callback (its own thread) while the inference thread keeps serving the old model.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import threading
import time
from dataclasses import dataclass

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry
import numpy as np
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Float64, Header
from tf2_msgs.msg import TFMessage
import torch
from vision_msgs.msg import Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

from ..messages.cloud import CloudError, read_points
from ..messages.detections import detection_array, label_info, velocity_cloud
from ..messages.markers import MarkerOptions, detection_markers
from ..model import Detections, Detector
from ..pipeline.frame import OutputFilter, SweepSettings, detect
from ..pipeline.stamps import stamp_ns
from ..pipeline.sweeps import Accumulated, SweepWindow
from ..pipeline.transforms import TransformError, transform_boxes
from ..runtime.factory import build_detector
from ..runtime.heap import keep_freed_memory
from . import params as P
from .diagnostics import Health
from .latest import LatestSlot

STAGES = ("preprocess", "inference", "postprocess", "total")
RELIABLE = QoSProfile(depth=5, reliability=ReliabilityPolicy.RELIABLE)
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)


@dataclass(frozen=True)
class Model:
    """The serving model; replaced as a whole, so a frame sees one consistent model."""

    detector: Detector
    preset: str
    checkpoint: str


def _descriptor(spec: P.Param, default) -> ParameterDescriptor:
    d = ParameterDescriptor(description=spec.full_description, read_only=spec.read_only)
    if spec.range is not None and isinstance(default, int):
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]),
                                        to_value=int(spec.range[1]), step=1)]
    elif spec.range is not None:
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]),
                                                     to_value=float(spec.range[1]))]
    return d


class DetectorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("detector_node", **kwargs)
        self._slot: LatestSlot[tuple[Header, SweepWindow]] = LatestSlot()
        self._running = True
        self._worker: threading.Thread | None = None
        # The preset first: the other defaults follow it (YAML and -p values override them).
        defaults = P.defaults(self._declare(P.PARAMS_BY_NAME["preset"], P.DEFAULT_PRESET))
        for spec in P.PARAMS:
            if spec.name != "preset":
                self._declare(spec, defaults[spec.name])
        for spec in P.PARAMS:  # YAML values bypass the callback: check them once here
            P.validate(spec.name, self._param(spec.name))
        if self._param("torch_threads"):
            torch.set_num_threads(self._param("torch_threads"))
        if self._param("keep_freed_memory") and not keep_freed_memory():
            self.get_logger().warning("keep_freed_memory: this C library has no glibc mallopt; left as is")
        self.health = Health()
        self._last_cloud: np.ndarray | None = None  # a model swap warms the new model on it
        self._serve(self._load(self._param("preset"), self._param("checkpoint")))
        self._live: dict = {}
        self._apply_live({s.name: self._param(s.name) for s in P.PARAMS if not s.read_only},
                         self._model.detector.preset.class_names)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        sweeps = SweepSettings(**{f.name: self._param(f.name)
                                  for f in dataclasses.fields(SweepSettings)})
        self._ego = sweeps.ego_motion()
        self._sweeps = sweeps.accumulator(self._model.detector.preset.sweeps_num, self._ego)

        self._pub_objects = self.create_publisher(Detection3DArray, "~/output/objects", RELIABLE)
        self._pub_markers = self.create_publisher(MarkerArray, "~/output/markers", RELIABLE)
        self._pub_labels = self.create_publisher(LabelInfo, "~/output/label_info", LATCHED)
        self._pub_velocity = self.create_publisher(PointCloud2, "~/output/velocities", RELIABLE)
        self._pub_timing = {s: self.create_publisher(
            Float64, f"~/debug/processing_time/{s}_ms", 1) for s in STAGES}
        self._pub_latency = self.create_publisher(Float64, "~/debug/pipeline_latency_ms", 1)
        self._pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)

        self.create_subscription(PointCloud2, "~/input/pointcloud", self._on_cloud,
                                 qos_profile_sensor_data,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self._subscribe_ego_motion(MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0, self._publish_diagnostics,
                          callback_group=MutuallyExclusiveCallbackGroup())
        self._publish_label_info()
        self._worker = threading.Thread(target=self._work, name="inference", daemon=True)
        self._worker.start()

    # -- parameters and models ------------------------------------------------------------

    def _declare(self, spec: P.Param, default):
        """Declare ``spec`` typed by ``default``; returns its value (an override's if given).
        An empty list has no element type: string array is declared, then [] set if unset."""
        if default != []:
            return self.declare_parameter(spec.name, default, _descriptor(spec, default)).value
        declared = self.declare_parameter(spec.name, Parameter.Type.STRING_ARRAY,
                                          _descriptor(spec, default))
        if declared.type_ == Parameter.Type.NOT_SET:
            self.set_parameters([Parameter(spec.name, Parameter.Type.STRING_ARRAY, [])])
        return self._param(spec.name)

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _load(self, preset: str, checkpoint: str) -> Model:
        """Build, load and warm a model; raises with the reason (CheckpointError, ValueError)."""
        t0 = time.perf_counter()
        detector = build_detector(preset, checkpoint or None, device=self._param("device"),
                                  box_convention=self._param("box_convention"),
                                  backend=self._param("backend"),
                                  precision=self._param("precision"),
                                  cuda_graph=self._param("cuda_graph"))
        detector.warmup(self._last_cloud)
        self.get_logger().info(
            f"model ready: {preset} ({detector.source}), box convention "
            f"{detector.box_convention}, {detector.backend.name} on {detector.device}, "
            f"{(time.perf_counter() - t0):.1f} s to load and warm")
        return Model(detector, preset, checkpoint)

    def _serve(self, model: Model) -> None:
        """Make ``model`` the one the next frame uses (one reference assignment)."""
        self._model = model
        d = model.detector
        self.health.set(preset=model.preset, checkpoint=d.source, backend=d.backend.name,
                        box_convention=d.box_convention, device=d.device)

    def _apply_live(self, values: dict, class_names: tuple[str, ...]) -> None:
        """Parse live parameters into what the inference thread reads (one dict swap)."""
        live = {**self._live, **values}
        thresholds = P.parse_class_thresholds(live["class_score_thresholds"])
        unknown = sorted(set(thresholds) - set(class_names))
        if unknown and "class_score_thresholds" in values:
            raise ValueError(f"class_score_thresholds: {', '.join(unknown)} not a class of "
                             f"the model (classes: {', '.join(class_names)})")
        live["_thresholds"] = thresholds
        live["_markers"] = MarkerOptions(
            show_labels=live["markers.show_labels"], show_heading=live["markers.show_heading"],
            show_velocity=live["markers.show_velocity"], line_width=live["markers.line_width"],
            colors=P.parse_class_colors(live["markers.class_colors"]))
        self._live = live

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        # Only this node's own table; rclpy's parameters (use_sim_time, ...) pass through.
        values = {p.name: ([] if p.value is None else p.value) for p in params
                  if p.name in P.PARAMS_BY_NAME}
        try:
            for name, value in values.items():
                P.validate(name, value)
            model = self._model
            if {"preset", "checkpoint"} & values.keys():
                preset = values.get("preset", model.preset)
                checkpoint = values.get("checkpoint", model.checkpoint)
                try:
                    model = self._load(preset, checkpoint)
                except Exception as exc:  # any load failure leaves the old model serving
                    raise ValueError(f"model not loaded ({type(exc).__name__}: {exc}); "
                                     f"still serving {self._model.preset}") from exc
            live = {k: v for k, v in values.items() if not P.PARAMS_BY_NAME[k].read_only}
            self._apply_live(live, model.detector.preset.class_names)
        except ValueError as exc:
            self.get_logger().warning(f"parameter change rejected: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        swapped = model is not self._model
        if swapped:
            self._serve(model)
            self.health.count("model_swaps")
        if swapped or "score_threshold" in values:
            self._publish_label_info()  # it carries the class map and the threshold
        return SetParametersResult(successful=True)

    def _publish_label_info(self) -> None:
        header = Header(stamp=self.get_clock().now().to_msg())
        self._pub_labels.publish(label_info(self._model.detector.preset.class_names, header,
                                            self._live["score_threshold"]))

    # -- inputs -----------------------------------------------------------------------------

    def _on_cloud(self, msg: PointCloud2) -> None:
        """Every cloud enters the sweep history, as the models' past sweeps are consecutive
        clouds; the inference thread takes the newest."""
        self.health.count("frames_received")
        try:
            xyz = read_points(msg)  # intensity is not a model input (MODEL_SPEC b)
        except CloudError as exc:
            self.health.count("clouds_bad")
            self.health.set(last_bad_cloud=str(exc))
            self.get_logger().warning(f"bad cloud skipped: {exc}", throttle_duration_sec=5.0)
            return
        if xyz.shape[0] == 0:
            self.health.count("clouds_empty")
        window = self._sweeps.receive(xyz, stamp_ns(msg.header.stamp), msg.header.frame_id)
        if self._slot.put((msg.header, window)):
            self.health.count("frames_dropped")

    def _subscribe_ego_motion(self, group) -> None:
        source = self._param("ego_motion_source")
        static_qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                                durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(TFMessage, "/tf_static", lambda m: self._on_tf(m, True),
                                 static_qos, callback_group=group)
        if source == "tf":
            self.create_subscription(TFMessage, "/tf", lambda m: self._on_tf(m, False),
                                     QoSProfile(depth=100), callback_group=group)
        elif source == "odometry":
            self.create_subscription(Odometry, "~/input/odometry", self._on_odometry,
                                     QoSProfile(depth=100), callback_group=group)

    def _on_tf(self, msg: TFMessage, static: bool) -> None:
        for reason in self._ego.add_tf(msg, static):
            self.get_logger().warning(reason, throttle_duration_sec=5.0)

    def _on_odometry(self, msg: Odometry) -> None:
        for reason in self._ego.add_odometry(msg):
            self.get_logger().warning(reason, throttle_duration_sec=5.0)

    # -- the inference thread ---------------------------------------------------------------

    def _work(self) -> None:
        while self._running:
            item = self._slot.take(timeout=0.5)
            if item is None:
                continue
            try:
                self._process(*item)
            except Exception as exc:  # a frame may fail; the node must not
                if not self.context.ok():
                    return  # shut down while this frame was in flight
                self.health.count("frames_failed")
                self.health.set(last_failure=f"{type(exc).__name__}: {exc}")
                self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=5.0)

    def _process(self, header: Header, window: SweepWindow) -> None:
        stacked = self._sweeps.stack(window)  # the cloud's pose may wait for /tf (tf_wait_s)
        self._last_cloud = stacked.points
        if stacked.ego_motion_missing:
            self.health.count("ego_motion_missing")
        if stacked.ego_motion_error:
            self.health.set(last_ego_motion_error=stacked.ego_motion_error)
            self.get_logger().warning(f"no ego motion for the sweeps: {stacked.ego_motion_error}",
                                      throttle_duration_sec=5.0)
        live = self._live
        dets = detect(self._model.detector, stacked.points, OutputFilter(
            live["score_threshold"], live["_thresholds"], live["max_detections"]))
        stamp = window.current.stamp_ns
        target = self._param("target_frame")
        if target:
            try:
                motion = self._ego.lookup(target, header.frame_id, stamp)
            except TransformError as exc:
                self.health.count("tf_failures")
                self.get_logger().warning(f"frame dropped, no transform to {target}: {exc}",
                                          throttle_duration_sec=5.0)
                return
            dets = dataclasses.replace(dets, boxes=transform_boxes(dets.boxes, motion))
            header = Header(stamp=header.stamp, frame_id=target)
        self._count(dets, stacked)  # before publishing: a reader of the output
        self._publish(dets, header, live)  # then sees the frame in the counters
        self._publish_timing(dets, stamp)

    def _publish(self, dets: Detections, header: Header, live: dict) -> None:
        self._pub_objects.publish(detection_array(dets, header, live["class_id_format"]))
        # Building markers costs about 0.2 ms a box in Python (100 ms for 500 boxes on a 2-core
        # CPU): only while someone (RViz) subscribes.
        if self._pub_markers.get_subscription_count():
            self._pub_markers.publish(detection_markers(dets, header, live["_markers"]))
        else:
            self.health.count("frames_without_marker_subscriber")
        if dets.has_velocity:
            self._pub_velocity.publish(velocity_cloud(dets, header))

    def _count(self, dets: Detections, stacked: Accumulated) -> None:
        h = self.health
        h.count("frames_processed")
        h.count("points_nonfinite", dets.stats.get("points_nonfinite", 0))
        if dets.stats.get("pillar_overflow", 0):
            h.count("pillar_overflow_frames")
        total = dets.timings_ms.get("total", 0.0)
        if total > self._live["processing_budget_ms"]:
            h.count("over_budget")
        h.set(last_sweeps=stacked.sweeps, last_sweep_max_lag_s=f"{stacked.max_lag_s:.3f}",
              last_boxes=len(dets), last_total_ms=f"{total:.1f}",
              last_pillars=dets.stats.get("pillars", 0))

    def _publish_timing(self, dets: Detections, stamp: int) -> None:
        timings = dets.timings_ms
        for stage in STAGES:
            # With a CUDA graph the detector times "graph" (filter to decoded candidates) for "inference".
            ms = timings.get(stage, timings.get("graph", 0.0) if stage == "inference" else 0.0)
            self._pub_timing[stage].publish(Float64(data=float(ms)))
        latency = (self.get_clock().now().nanoseconds - stamp) * 1e-6
        self._pub_latency.publish(Float64(data=latency))
        self.health.set(last_pipeline_latency_ms=f"{latency:.1f}")

    def _publish_diagnostics(self) -> None:
        report = self.health.report(f"{self.get_name()}: detector", self._model.preset)
        report.header.stamp = self.get_clock().now().to_msg()
        self._pub_diag.publish(report)

    def destroy_node(self) -> None:
        self._running = False
        self._slot.close()
        if self._worker is not None:
            self._worker.join(timeout=30)
        super().destroy_node()


def ros_arguments(argv: list[str]) -> list[str]:
    """``detector_node [--preset NAME] [--params-file F ...] [ROS args]`` -> rclpy args: the
    files, then ``preset`` (it wins over them), then the ROS arguments given."""
    parser = argparse.ArgumentParser(
        prog="detector_node", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="PointCloud2 in, Detection3DArray and markers out. Every parameter has a\n"
        "default that follows the preset; parameter files only override.",
        epilog="example (quote remaps of ~/ names, or the shell expands ~ to $HOME):\n"
        "  detector_node --preset lyft-fpn --ros-args -r '~/input/pointcloud:=/lidar_top'")
    parser.add_argument("--preset", choices=P.PARAMS_BY_NAME["preset"].choices, metavar="NAME",
                        help=f"model preset (default {P.DEFAULT_PRESET}; same as "
                        "--ros-args -p preset:=NAME)")
    parser.add_argument("--params-file", action="append", default=[],
                        help="ROS parameter YAML overriding the defaults (repeatable)")
    args, rest = parser.parse_known_args(argv)
    ros = [a for f in args.params_file for a in ("--params-file", str(f))]
    ros += ["-p", f"preset:={args.preset}"] if args.preset else []
    if "--ros-args" in rest:
        i = rest.index("--ros-args")
        return rest[:i] + ["--ros-args", *ros, *rest[i + 1:]]
    return rest + (["--ros-args", *ros] if ros else [])


def main(argv: list[str] | None = None) -> int:
    args = ros_arguments(sys.argv[1:] if argv is None else argv)
    rclpy.init(args=args)
    node = None
    try:
        try:
            node = DetectorNode()
        except Exception as exc:  # bad parameter or model: say why and exit
            print(f"detector_node: could not start: {type(exc).__name__}: {exc}",
                  file=sys.stderr)
            return 1
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
