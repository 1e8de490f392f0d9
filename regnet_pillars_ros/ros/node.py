"""detector_node: PointCloud2 in, Detection3DArray + RViz markers out.

The executor hands clouds to a latest-only slot; one inference thread takes the newest, stacks
past sweeps, runs the serving model generation (``serving.py``: swaps load on their own thread)
and publishes the frame only if that generation still serves. Shutdown abandons work in flight.
"""
from __future__ import annotations

import dataclasses
import os
import signal
import sys
import threading
from typing import NoReturn

import rclpy
from nav_msgs.msg import Odometry
from rcl_interfaces.msg import SetParametersResult
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header, String
from tf2_msgs.msg import TFMessage

from ..messages.cloud import CloudError, read_points
from ..pipeline.frame import SweepSettings, detect
from ..pipeline.stamps import stamp_ns
from ..pipeline.sweeps import SweepWindow
from ..pipeline.transforms import TransformError, transform_boxes
from . import params as P
from .command_line import ros_arguments
from .diagnostics import Health
from .latest import LatestSlot
from .log_bridge import route_package_logs, unroute_package_logs
from .outputs import Outputs
from .param_glue import apply_process_settings, cleared_lists, declare_all
from .serving import LoadOptions, ModelKey, ModelServer, Outcome

# Sensor-data QoS (best effort), but ten deep rather than five: every cloud enters the sweep
# history, so a burst of clouds, or a moment in which the executor runs late, must queue up to
# the ten past sweeps the models stack instead of overwriting them. Inference stays latest-only.
CLOUD_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT,
                       durability=DurabilityPolicy.VOLATILE)


class DetectorNode(Node):
    """The wiring; parameters in params.py, model serving in serving.py, topics in outputs.py."""

    def __init__(self, **kwargs) -> None:
        super().__init__("detector_node", **kwargs)
        self._slot: LatestSlot[tuple[Header, SweepWindow]] = LatestSlot()
        self._running, self._busy = True, False
        self._log_bridge = route_package_logs(self.get_logger())  # library records -> /rosout
        declare_all(self)  # the preset first: the other defaults follow it
        apply_process_settings(self)
        self.health = Health()
        self._out = Outputs(self, self.health)
        self._server = ModelServer(
            LoadOptions(**{f.name: self._param(f.name) for f in dataclasses.fields(LoadOptions)}),
            ModelKey(self._param("preset"), self._param("checkpoint")),
            {s.name: self._param(s.name) for s in P.PARAMS if not s.read_only},
            self._out.serving, self._on_swap)
        self.add_pre_set_parameters_callback(cleared_lists)
        self.add_on_set_parameters_callback(self._on_set_parameters)
        sweeps = SweepSettings(**{f.name: self._param(f.name)
                                  for f in dataclasses.fields(SweepSettings)})
        self._ego = sweeps.ego_motion()
        self._sweeps = sweeps.accumulator(self._server.current.detector.preset.sweeps_num,
                                          self._ego)

        self.create_subscription(PointCloud2, "~/input/pointcloud", self._on_cloud, CLOUD_QOS,
                                 callback_group=MutuallyExclusiveCallbackGroup())
        self._subscribe_ego_motion(MutuallyExclusiveCallbackGroup())
        self.create_timer(1.0, lambda: self._out.report(self._server.current.key.preset),
                          callback_group=MutuallyExclusiveCallbackGroup())
        threading.Thread(target=self._work, name="inference", daemon=True).start()

    # -- parameters and models ------------------------------------------------------------

    def _param(self, name: str):
        return self.get_parameter(name).value

    def _on_swap(self, outcome: Outcome) -> None:
        """A swap is loading, ready or failed: say so, and set the parameters the swap could
        not honour (a failed model, thresholds of a class it lacks) to what the model serves."""
        self._out.model_status.publish(String(data=str(outcome)))
        self.health.set(model_status=str(outcome))
        if outcome.state == "loading":
            return
        self.health.count("model_swaps" if outcome.state == "ready" else "model_swaps_failed")
        serving = self._server.current
        changed = [Parameter(name, value=value) for name, value in serving.parameters().items()
                   if self._param(name) != value]
        if changed:
            self.set_parameters_atomically(changed)  # empty lists typed by cleared_lists
            self.get_logger().warning(f"parameters set to what {serving.key} serves with: "
                                      + ", ".join(f"{p.name}={p.value}" for p in changed))

    def _on_set_parameters(self, params: list[Parameter]) -> SetParametersResult:
        """Validate and hand over: a model swap loads in the background (its outcome on
        ~/output/model_status). rclpy's own parameters (use_sim_time, ...) pass through."""
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
        """/tf_static, and /tf or ~/input/odometry as ego_motion_source says."""
        latched = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL)
        self.create_subscription(TFMessage, "/tf_static",
                                 lambda m: self._refused(self._ego.add_tf(m, True)), latched,
                                 callback_group=group)
        source = self._param("ego_motion_source")
        if source != "none":
            kind, topic, add = ((TFMessage, "/tf", self._ego.add_tf) if source == "tf" else
                                (Odometry, "~/input/odometry", self._ego.add_odometry))
            self.create_subscription(kind, topic, lambda m: self._refused(add(m)),
                                     QoSProfile(depth=100), callback_group=group)

    def _refused(self, reasons: list[str]) -> None:
        for reason in reasons:
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
            if target := self._param("target_frame"):
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
            if self._server.publish_if_current(gen, lambda: (
                    self.health.count_frame(dets, stacked.sweeps, stacked.max_lag_s,
                                            gen.live["processing_budget_ms"]),
                    self._out.send(messages))):
                self._out.timings(dets.timings_ms, stamp)
                return
            if self._slot.waiting():  # the model changed meanwhile: a newer cloud goes first
                self.health.count("frames_superseded")
                return

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


def main(argv: list[str] | None = None) -> NoReturn:
    """``detector_node``: spin until SIGINT or SIGTERM, then end the process at once, abandoning
    a frame or load in flight and the interpreter's teardown, which would wait on those threads."""
    args = ros_arguments(sys.argv[1:] if argv is None else argv)
    rclpy.init(args=args)
    code = _spin()
    rclpy.try_shutdown()  # also flushes the ROS log
    for stream in (sys.stdout, sys.stderr):
        stream.flush()
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
    finally:  # under launch, Ctrl-C comes twice (terminal and launch): the second must wait
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        node.close()
        node.destroy_node()
    return 0


if __name__ == "__main__":
    sys.exit(main())
