"""detector_node: PointCloud2 in, Detection3DArray + RViz markers out.

The wiring: the executor hands clouds to a latest-only slot; one inference thread takes the
newest, stacks past sweeps, runs the serving model generation and publishes. The parameter
callback only validates: a model swap loads on the model server's loader thread
(``serving.py``), so parameter services keep answering. A frame whose generation was replaced
while it ran is run again on the new one (or dropped for a newer cloud), so no frame of an old
model follows the new class map. Shutdown abandons a frame or load in flight.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import threading
from typing import NoReturn

import rclpy
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import (FloatingPointRange, IntegerRange, ParameterDescriptor,
                                SetParametersResult)
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header, String
from tf2_msgs.msg import TFMessage
import torch

from ..messages.cloud import CloudError, read_points
from ..model import Detections
from ..pipeline.frame import SweepSettings, detect
from ..pipeline.stamps import stamp_ns
from ..pipeline.sweeps import Accumulated, SweepWindow
from ..pipeline.transforms import TransformError, transform_boxes
from ..runtime.heap import keep_freed_memory
from . import params as P
from .diagnostics import Health
from .latest import LatestSlot
from .log_bridge import route_package_logs, unroute_package_logs
from .outputs import Outputs
from .param_glue import cleared_lists
from .serving import Generation, LoadOptions, ModelKey, ModelServer, Outcome


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
        self._running, self._busy = True, False
        self._log_bridge = route_package_logs(self.get_logger())  # library records -> /rosout
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
        self._out = Outputs(self, self.health)
        self._server = ModelServer(
            LoadOptions(**{f.name: self._param(f.name) for f in dataclasses.fields(LoadOptions)}),
            ModelKey(self._param("preset"), self._param("checkpoint")),
            {s.name: self._param(s.name) for s in P.PARAMS if not s.read_only},
            self._on_generation, self._on_swap)
        self.add_pre_set_parameters_callback(cleared_lists)
        self.add_on_set_parameters_callback(self._on_set_parameters)

        sweeps = SweepSettings(**{f.name: self._param(f.name)
                                  for f in dataclasses.fields(SweepSettings)})
        self._ego = sweeps.ego_motion()
        self._sweeps = sweeps.accumulator(self._server.current.detector.preset.sweeps_num,
                                          self._ego)

        self.create_subscription(PointCloud2, "~/input/pointcloud", self._on_cloud,
                                 qos_profile_sensor_data,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self._subscribe_ego_motion(MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0, lambda: self._out.report(self._server.current.key.preset),
                          callback_group=MutuallyExclusiveCallbackGroup())
        threading.Thread(target=self._work, name="inference", daemon=True).start()

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

    def _on_generation(self, gen: Generation) -> None:
        """A generation starts serving (under the server's lock): its class map first."""
        self._out.class_map(gen)
        d = gen.detector
        self.health.set(preset=gen.key.preset, checkpoint=d.source, backend=d.backend.name,
                        box_convention=d.box_convention, device=d.device, generation=gen.number)

    def _on_swap(self, outcome: Outcome) -> None:
        """A swap is loading, ready or failed: say so, and set the parameters back to what the
        serving model uses where the swap could not honour them."""
        self._out.model_status.publish(String(data=str(outcome)))
        self.health.set(model_status=str(outcome))
        if outcome.state == "loading":
            return
        self.health.count("model_swaps" if outcome.state == "ready" else "model_swaps_failed")
        serving = self._server.current
        wanted = {"class_score_thresholds": list(serving.live["class_score_thresholds"])}
        if outcome.state == "failed":
            wanted.update(preset=serving.key.preset, checkpoint=serving.key.checkpoint)
        changed = [Parameter(k, Parameter.Type.STRING_ARRAY if isinstance(v, list) else None, v)
                   for k, v in wanted.items() if self._param(k) != v]
        if changed:
            self.set_parameters_atomically(changed)
            self.get_logger().warning(f"parameters set back to what {serving.key} serves with: "
                                      + ", ".join(f"{p.name}={p.value}" for p in changed))

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate and hand over: a model swap loads in the background (its outcome on
        ~/output/model_status), so every parameter service answers at once."""
        # Only this node's own table; rclpy's parameters (use_sim_time, ...) pass through.
        values = {p.name: p.value for p in params if p.name in P.PARAMS_BY_NAME}
        try:
            for name, value in values.items():
                P.validate(name, value)
            self._server.change(values)
        except ValueError as exc:
            self.get_logger().warning(f"parameter change rejected: {exc}")
            return SetParametersResult(successful=False, reason=str(exc))
        return SetParametersResult(successful=True)

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
                self._busy = True
                self._process(*item)
            except Exception as exc:  # a frame may fail; the node must not
                if not self._running or not self.context.ok():
                    return  # shut down while this frame was in flight
                self.health.count("frames_failed")
                self.health.set(last_failure=f"{type(exc).__name__}: {exc}")
                self.get_logger().error(f"frame failed: {type(exc).__name__}: {exc}",
                                        throttle_duration_sec=5.0)
            finally:
                self._busy = False

    def _process(self, header: Header, window: SweepWindow) -> None:
        stacked = self._sweeps.stack(window)  # the cloud's pose may wait for /tf (tf_wait_s)
        self._server.warm_points = stacked.points
        if stacked.ego_motion_missing:
            self.health.count("ego_motion_missing")
        if stacked.ego_motion_error:
            self.health.set(last_ego_motion_error=stacked.ego_motion_error)
            self.get_logger().warning(f"no ego motion for the sweeps: {stacked.ego_motion_error}",
                                      throttle_duration_sec=5.0)
        stamp = window.current.stamp_ns
        while self._running:
            gen = self._server.current
            dets = detect(gen.detector, stacked.points, gen.output_filter)
            out_header = header
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
                out_header = Header(stamp=header.stamp, frame_id=target)
            messages = self._out.frame(gen, dets, out_header)
            # Counted before publishing: a reader of the output then sees the frame counted.
            if self._server.publish_if_current(gen, lambda: (self._count(gen, dets, stacked),
                                                             self._out.send(messages))):
                self._out.timings(dets.timings_ms, stamp)
                return
            if self._slot.waiting():  # the model changed meanwhile: a newer cloud goes first
                self.health.count("frames_superseded")
                return

    def _count(self, gen: Generation, dets: Detections, stacked: Accumulated) -> None:
        h = self.health
        h.count("frames_processed")
        h.count("points_nonfinite", dets.stats.get("points_nonfinite", 0))
        if dets.stats.get("pillar_overflow", 0):
            h.count("pillar_overflow_frames")
        total = dets.timings_ms.get("total", 0.0)
        if 0 < gen.live["processing_budget_ms"] < total:
            h.count("over_budget")
        h.set(last_sweeps=stacked.sweeps, last_sweep_max_lag_s=f"{stacked.max_lag_s:.3f}",
              last_boxes=len(dets), last_total_ms=f"{total:.1f}",
              last_pillars=dets.stats.get("pillars", 0))

    def close(self) -> None:
        """Stop the inference and loader threads; a frame or load in flight is abandoned."""
        self._running = False
        self._slot.close()
        load = self._server.close()
        # Not to /rosout: after a SIGINT its publisher's context has already shut down.
        rclpy.logging.get_logger(f"{self.get_name()}.shutdown").info(
            "shutting down" + (", abandoning the frame in flight" if self._busy else "")
            + (f", abandoning the load of {load}" if load else ""))
        unroute_package_logs(self._log_bridge)


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


def main(argv: list[str] | None = None) -> NoReturn:
    """``detector_node``: spin until SIGINT or SIGTERM, then end the process at once. A frame or
    model load in flight is abandoned, never waited for, and so is the interpreter's teardown,
    which would wait on (or trip over) those threads."""
    args = ros_arguments(sys.argv[1:] if argv is None else argv)
    rclpy.init(args=args)
    code = _spin()
    rclpy.try_shutdown()  # also flushes the ROS log
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _spin() -> int:
    try:
        node = DetectorNode()
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # bad parameter or model: say why and exit
        print(f"detector_node: could not start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    try:
        executor = MultiThreadedExecutor(num_threads=4)
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        node.close()
        node.destroy_node()
    return 0


if __name__ == "__main__":
    sys.exit(main())
