"""detector_node started as a ROS user starts it, with no parameter file: bare, and with only
``-p preset:=...``. Every parameter then has the preset's own default, and the node answers a
cloud on its default topic ``~/input/pointcloud``.

nus-regnetx-400mf-fpn (the default preset) serves the weights shipped with the package; lyft-secfpn
has none and serves seeded placeholder weights, which still give boxes (model/placeholder.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (scripts/setup_env.sh)")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not generated (scripts/setup_env.sh)")

from node_probe import NODE, NodeProcess, probe_of, scene  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rcl_interfaces.srv import GetParameters  # noqa: E402
from rclpy.parameter import parameter_value_to_python  # noqa: E402

from regnet_pillars_ros.model.presets import get_preset  # noqa: E402
from regnet_pillars_ros.ros.params import DEFAULT_PRESET, PARAMS, defaults  # noqa: E402

# The console script pip installed next to this interpreter (what `ros2 run` runs).
DETECTOR_NODE = Path(sys.executable).parent / "detector_node"
T0 = 2000 * 1_000_000_000

STARTS = {
    "bare": ([], DEFAULT_PRESET),
    "preset lyft-secfpn": (["--ros-args", "-p", "preset:=lyft-secfpn"], "lyft-secfpn"),
}


def get_parameters(probe, names: list[str]) -> dict:
    """Name -> (ROS type, value), through the node's get_parameters service."""
    client = probe.node.create_client(GetParameters, f"{NODE}/get_parameters")
    assert client.wait_for_service(timeout_sec=60), "get_parameters service not available"
    future = client.call_async(GetParameters.Request(names=names))
    probe.wait(future.done, "the answer of get_parameters")
    return {name: (value.type, parameter_value_to_python(value))
            for name, value in zip(names, future.result().values)}


@pytest.mark.parametrize("start", list(STARTS))
def test_node_without_parameter_files_serves_its_preset_defaults(start, tmp_path):
    args, preset = STARTS[start]
    node = NodeProcess([str(DETECTOR_NODE), *args], tmp_path / "node.log")
    with probe_of(node) as probe:
        info = probe.labels[-1]
        assert [c.class_name for c in info.class_map] == list(get_preset(preset).class_names)
        header = probe.publish_cloud(scene(), T0)  # to /detector_node/input/pointcloud
        assert probe.result_for(T0).header == header

        names = [spec.name for spec in PARAMS]
        got = get_parameters(probe, names)
        assert {name: value for name, (_, value) in got.items()} == defaults(preset)
        assert got["class_score_thresholds"] == (ParameterType.PARAMETER_STRING_ARRAY, [])
        assert got["markers.show_velocity"][1] is (preset != "lyft-secfpn")
    assert "could not start" not in node.log.read_text()
