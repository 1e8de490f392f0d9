"""Test-side helpers for detector_node: start it in another process, talk to it over DDS.

The probe is a real rclpy node in the test process: it publishes clouds and /tf, collects what
the detector publishes, and sets its parameters through the parameter service.
"""
from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import rclpy
import rclpy.time
import torch
import yaml
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import TransformStamped
from rcl_interfaces.srv import GetParameters, SetParameters, SetParametersAtomically
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter, parameter_value_to_python
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import PointCloud2
from std_msgs.msg import Header, String
from tf2_msgs.msg import TFMessage
from vision_msgs.msg import Detection3DArray, LabelInfo
from visualization_msgs.msg import MarkerArray

from regnet_pillars_ros.messages.cloud import to_msg
from regnet_pillars_ros.model import get_preset
from regnet_pillars_ros.model.checkpoint import random_state_dict, write_checkpoint
from regnet_pillars_ros.model.network import PointPillarsNet

NODE = "/detector_node"
LATCHED = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                     durability=DurabilityPolicy.TRANSIENT_LOCAL)
WAIT_S = 120.0  # bound on any wait; generous because the CI machine has 2 shared cores


def flat_scores_checkpoint(path: Path, preset_name: str, scores: dict[str, float]) -> Path:
    """A checkpoint whose head ignores its input: every anchor scores ``scores[class]`` (zero
    classifier weights, bias = logit(score)) and decodes to the anchor itself (zero box and
    direction convolutions). Tests then know each class's score and every box's shape."""
    preset = get_preset(preset_name)
    state = random_state_dict(PointPillarsNet(preset), seed=1)
    for key in [k for k in state if ".conv_" in k and "bbox_head" in k]:
        state[key].zero_()
    (bias,) = [v for k, v in state.items() if k.endswith("conv_cls.bias")]
    logits = torch.tensor([np.log(s / (1 - s)) for s in
                           (scores[name] for name in preset.class_names)], dtype=bias.dtype)
    bias.copy_(logits.repeat(bias.numel() // len(logits)))  # channel = anchor * K + class
    return write_checkpoint(path, state, preset, "v1")


class NodeProcess:
    """``python -m regnet_pillars_ros.ros.node ...`` in its own process, output in a log file."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        """``env``: variables added to this process's environment for the node."""
        self.log = log
        self._log_file = open(log, "w")
        self.proc = subprocess.Popen([sys.executable, *args], stdout=self._log_file,
                                     stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})

    def check(self) -> None:
        """Fail with the node's log when the process has ended."""
        if self.proc.poll() is not None:
            raise AssertionError(f"detector_node exited with {self.proc.returncode}:\n"
                                 f"{self.log.read_text()[-4000:]}")

    def rss_anon_kib(self) -> int:
        """Private resident memory (excludes the DDS shared-memory segments)."""
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines()
                        if line.startswith("RssAnon:")))

    def interrupt(self, times: int = 1) -> float:
        """SIGINT (Ctrl-C) ``times`` times, 5 ms apart (as a terminal and then `ros2 launch`
        deliver it); seconds until the process has exited (bounded by WAIT_S)."""
        t0 = time.monotonic()
        for k in range(times):
            if k:
                time.sleep(0.005)  # the gap that hit the node's cleanup before it ignored a 2nd
            self.proc.send_signal(signal.SIGINT)
        self.proc.wait(WAIT_S)
        return time.monotonic() - t0

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()  # rclpy shuts down cleanly on SIGTERM
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log_file.close()


def node_args(tmp: Path, preset: str, **params) -> list[str]:
    """Arguments of ``python -m regnet_pillars_ros.ros.node``: the preset's YAML files plus
    ``params`` as one more YAML file."""
    extra = tmp / "test_params.yaml"
    extra.write_text(yaml.safe_dump({"/**": {"ros__parameters": params}}))
    return ["-m", "regnet_pillars_ros.ros.node", "--preset", preset, "--params-file", str(extra)]


def scene(n: int = 2000, seed: int = 0) -> np.ndarray:
    """float32 [n, 3]: a ground plane with a few car-sized blobs, inside every preset's range."""
    rng = np.random.default_rng(seed)
    ground = np.c_[rng.uniform(-40, 40, (n // 2, 2)), np.full(n // 2, -1.8)]
    centres = rng.uniform(-30, 30, (5, 2))
    blobs = np.c_[centres.repeat(n // 10, 0) + rng.normal(0, 1.0, (n // 2, 2)),
                  rng.uniform(-1.8, -0.3, n // 2)]
    return np.vstack([ground, blobs]).astype(np.float32)


def stamp_of(ns: int):
    return Header(stamp=rclpy.time.Time(nanoseconds=ns).to_msg()).stamp


def cloud_msg(xyz_or_structured: np.ndarray, stamp_ns: int, frame: str = "lidar") -> PointCloud2:
    """The points as a PointCloud2 stamped ``stamp_ns`` in ``frame``."""
    return to_msg(Header(stamp=stamp_of(stamp_ns), frame_id=frame), xyz_or_structured)


def transform(parent: str, child: str, stamp_ns: int, x: float = 0.0,
              yaw: float = 0.0) -> TransformStamped:
    t = TransformStamped()
    t.header.frame_id, t.child_frame_id = parent, child
    t.header.stamp = stamp_of(stamp_ns)
    t.transform.translation.x = x
    t.transform.rotation.z, t.transform.rotation.w = math.sin(yaw / 2), math.cos(yaw / 2)
    return t


class Probe:
    """Publishes to and collects from detector_node; every wait is bounded by WAIT_S."""

    def __init__(self, context, watch: Callable[[], None] = lambda: None,
                 markers: bool = True) -> None:
        self.watch = watch  # raises when the node under test has died
        self.node = rclpy.create_node("detector_probe", context=context)
        n = self.node
        self.cloud_pub = n.create_publisher(PointCloud2, f"{NODE}/input/pointcloud",
                                            qos_profile_sensor_data)
        self.tf_pub = n.create_publisher(TFMessage, "/tf", 100)
        self.tf_static_pub = n.create_publisher(TFMessage, "/tf_static", LATCHED)
        self.objects: list[Detection3DArray] = []
        self.markers: list[MarkerArray] = []
        self.labels: list[LabelInfo] = []
        self.velocities: list[PointCloud2] = []
        self.diagnostics: list[DiagnosticArray] = []
        self.model_status: list[str] = []
        self._lock = threading.Lock()
        reliable = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for kind, topic, store, qos in (
                (Detection3DArray, f"{NODE}/output/objects", self.objects, reliable),
                (MarkerArray, f"{NODE}/output/markers", self.markers if markers else None,
                 reliable),
                (LabelInfo, f"{NODE}/output/label_info", self.labels, LATCHED),
                (PointCloud2, f"{NODE}/output/velocities", self.velocities, reliable),
                (DiagnosticArray, "/diagnostics", self.diagnostics, reliable)):
            if store is not None:
                sub = n.create_subscription(kind, topic, self._collector(store), qos)
                if store is self.objects:
                    self.objects_sub = sub
        status = self._collector(self.model_status)
        n.create_subscription(String, f"{NODE}/output/model_status",
                              lambda msg: status(msg.data), LATCHED)
        self._get = n.create_client(GetParameters, f"{NODE}/get_parameters")
        self._set = n.create_client(SetParameters, f"{NODE}/set_parameters")
        self._set_atomic = n.create_client(SetParametersAtomically,
                                           f"{NODE}/set_parameters_atomically")
        self.executor = SingleThreadedExecutor(context=context)
        self.executor.add_node(n)
        self._stop = threading.Event()
        self._spinner = threading.Thread(target=self._spin, daemon=True)
        self._spinner.start()
        self.tf_static_pub.publish(TFMessage(transforms=[
            transform("base_link", frame, 0, x=1.0) for frame in ("lidar", "lidar_top")]))

    def _collector(self, store: list) -> Callable:
        def collect(msg):
            with self._lock:
                store.append(msg)
        return collect

    def _spin(self) -> None:
        # Our own loop rather than executor.spin(): that one, shut down from another thread
        # around the context's shutdown, was once seen busy-looping in its wait and starving
        # the test thread of the GIL for minutes.
        while not self._stop.is_set():
            self.executor.spin_once(timeout_sec=0.05)

    def close(self) -> None:
        self._stop.set()
        self._spinner.join(timeout=10)
        self.executor.shutdown()
        self.node.destroy_node()

    def wait(self, predicate: Callable[[], object], what: str, timeout: float = WAIT_S):
        """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.watch()
            with self._lock:
                value = predicate()
            if value:
                return value
            time.sleep(0.02)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")

    def publish_cloud(self, xyz_or_structured: np.ndarray, stamp_ns: int,
                      frame: str = "lidar", with_tf: bool = True) -> Header:
        """Publish a cloud; ``with_tf`` first publishes a standing ego pose (odom -> base_link)
        at its stamp, as a live sensor stack would (base_link -> ``frame`` must be static)."""
        msg = cloud_msg(xyz_or_structured, stamp_ns, frame)
        if with_tf:
            self.tf_pub.publish(TFMessage(transforms=[transform("odom", "base_link", stamp_ns)]))
        self.publish_raw(msg)
        return msg.header

    def publish_raw(self, msg: PointCloud2) -> None:
        # A best-effort cloud sent before discovery matched the node's subscription is lost
        # (LabelInfo arriving says only that the node's publisher was matched).
        self.wait(self.cloud_pub.get_subscription_count, "the node's cloud subscription")
        self.cloud_pub.publish(msg)

    def result_for(self, stamp_ns: int, timeout: float = WAIT_S) -> Detection3DArray:
        def match():
            return next((m for m in self.objects if stamp_ns_of(m.header.stamp) == stamp_ns),
                        None)
        return self.wait(match, f"detections of the cloud stamped {stamp_ns}", timeout)

    def resend_until_answered(self, publish: Callable[[], None], stamp_ns: int,
                              every_s: float = 5.0) -> Detection3DArray:
        """Call ``publish`` (a best-effort cloud stamped ``stamp_ns``) again every ``every_s``
        until its detections arrive. For a publisher created after the node started: its first
        messages may leave once it has matched the node's subscription but before the node has
        matched it, and the node then drops them."""
        deadline = time.monotonic() + WAIT_S
        while True:
            publish()
            try:
                return self.result_for(stamp_ns, max(0.1, min(every_s,
                                                             deadline - time.monotonic())))
            except AssertionError:
                self.watch()  # the node died: say so rather than resend
                if time.monotonic() >= deadline:
                    raise

    def detect(self, xyz: np.ndarray, stamp_ns: int, frame: str = "lidar",
               with_tf: bool = True) -> Detection3DArray:
        self.publish_cloud(xyz, stamp_ns, frame, with_tf)
        return self.result_for(stamp_ns)

    def fresh_counters(self) -> dict[str, str]:
        """Diagnostics values from a report made after this call."""
        return {kv.key: kv.value for kv in self.fresh_status().values}

    def fresh_status(self):
        """The node's DiagnosticStatus from a report made after this call."""
        now = self.node.get_clock().now().nanoseconds

        def fresh():
            if self.diagnostics and stamp_ns_of(self.diagnostics[-1].header.stamp) > now:
                return self.diagnostics[-1].status[0]
            return None
        return self.wait(fresh, "a diagnostics report")

    def _last_report(self) -> dict[str, str]:
        if not self.diagnostics:
            return {}
        return {kv.key: kv.value for kv in self.diagnostics[-1].status[0].values}

    def latest_counters(self) -> dict[str, str]:
        """Diagnostics values of the last report received so far (empty before the first)."""
        with self._lock:
            return self._last_report()

    def wait_counter(self, name: str, at_least: int) -> dict[str, str]:
        """Diagnostics values once counter ``name`` reached ``at_least``."""
        def reached():
            values = self._last_report()
            return values if int(values.get(name, 0)) >= at_least else None
        return self.wait(reached, f"diagnostics counter {name} >= {at_least}")

    def set_parameters(self, atomically: bool = False, **values):
        """SetParametersResult list (or one result when atomically), like ``ros2 param set``;
        a value may be a `Parameter` (to give its type)."""
        client = self._set_atomic if atomically else self._set
        request = client.srv_type.Request(parameters=[
            (value if isinstance(value, Parameter) else
             Parameter(name.replace("__", "."), value=value)).to_parameter_msg()
            for name, value in values.items()])
        response = self._call(client, request, f"the answer to setting {sorted(values)}")
        return response.result if atomically else response.results

    def get_parameters(self, *names: str) -> list:
        """The parameters' values (rclpy Python values), like ``ros2 param get``."""
        response = self._call(self._get, GetParameters.Request(names=list(names)),
                              f"the values of {names}")
        return [parameter_value_to_python(v) for v in response.values]

    def wait_parameters(self, **expected) -> None:
        """Poll the parameter service until the parameters hold ``expected``."""
        deadline = time.monotonic() + WAIT_S
        while (values := dict(zip(expected, self.get_parameters(*expected)))) != expected:
            assert time.monotonic() < deadline, f"parameters {values}, expected {expected}"
            time.sleep(0.05)

    def _call(self, client, request, what: str):
        assert client.wait_for_service(timeout_sec=WAIT_S), "parameter service not available"
        future = client.call_async(request)
        self.wait(future.done, what)
        return future.result()

    def status(self, state: str, after: int = 0) -> str:
        """The first model status from index ``after`` on that starts with ``state``."""
        return self.wait(lambda: next((s for s in self.model_status[after:]
                                       if s.startswith(state + ":")), None),
                         f"model status '{state}' (so far: {self.model_status[after:]})")


def stamp_ns_of(stamp) -> int:
    return stamp.sec * 1_000_000_000 + stamp.nanosec


@contextmanager
def probe_of(node: "NodeProcess", markers: bool = True) -> Iterator["Probe"]:
    """A Probe in its own rclpy context once `node` has published LabelInfo; stops both after.
    `markers=False`: no subscription to the markers, which the node then does not build."""
    context = rclpy.Context()
    rclpy.init(context=context)
    probe = Probe(context, watch=node.check, markers=markers)
    try:
        probe.wait(lambda: probe.labels, "LabelInfo from the starting node")
        # Detections published before discovery matched the probe's subscription would be lost.
        probe.wait(probe.objects_sub.get_publisher_count, "the node's objects publisher")
        yield probe
    finally:
        probe.close()
        context.try_shutdown()
        node.stop()
