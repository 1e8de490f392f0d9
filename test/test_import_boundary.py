"""ROS-free layers stay ROS-free: importing them (every submodule, found with pkgutil) in a
fresh interpreter loads neither rclpy nor any generated message package."""
import json

import pytest

# Layers that the architecture keeps free of ROS: the model runs offline and in exports,
# pipeline/ is shared by the node and offline evaluation; runtime/ (backends, bench), sim/,
# train/ and eval/ are ROS-free too.
ROS_FREE = ["regnet_pillars_ros.model", "regnet_pillars_ros.pipeline", "regnet_pillars_ros.runtime",
            "regnet_pillars_ros.sim", "regnet_pillars_ros.train", "regnet_pillars_ros.eval"]

PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = [package.__name__] + [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
ros = sorted(m for m in sys.modules if m.split(".")[0] == "rclpy" or m.split(".")[0].endswith("_msgs"))
print(json.dumps({"imported": names, "ros": ros}))
"""


@pytest.mark.parametrize("package", ROS_FREE)
def test_layer_imports_without_ros(python_process, package):
    child = python_process("-c", PROBE, package)
    line = child.readline(timeout=120)
    assert line is not None, child.report()
    result = json.loads(line)
    assert len(result["imported"]) > 1, f"{package} has no submodules to check"
    assert result["ros"] == [], f"importing {package} loaded ROS modules: {result['ros']}"
