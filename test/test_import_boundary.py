"""The package's layers: imports flow one way (read from every source file's imports, also those
inside functions and under TYPE_CHECKING), and the ROS-free layers stay ROS-free (importing
every submodule, found with pkgutil, in a fresh interpreter loads neither rclpy nor any
generated message package)."""
import ast
import json
from pathlib import Path

import pytest
from conftest import REPO

PACKAGE = "regnet_pillars_ros"
# Layer (subpackage, or module at the package's top) -> the layers it may import. model and
# pointfiles sit at the bottom; pipeline (frames, sweeps, transforms) and runtime (backends,
# export, benchmark) build on model; messages (ROS message encoding, no node) serves eval and ros,
# which never import each other; tools and cli drive several layers from the top.
BELOW_TOOLS = {"model", "pointfiles", "pipeline", "runtime", "sim", "messages", "train", "eval",
               "ros"}
ALLOWED = {
    "model": set(),
    "pointfiles": set(),
    "pipeline": {"model"},
    "runtime": {"model", "pointfiles"},
    "sim": {"model", "pipeline"},
    "messages": {"model", "pipeline"},
    "train": {"model", "pipeline", "runtime", "sim"},
    "eval": {"model", "pipeline", "runtime", "sim", "messages", "pointfiles"},
    "ros": {"model", "pipeline", "runtime", "messages"},
    "tools": BELOW_TOOLS,
    "cli": BELOW_TOOLS | {"tools"},
}


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool = False) -> set[str]:
    """Absolute names of the modules ``source`` (the text of ``module``) imports anywhere in it."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = ".".join(package[:len(package) - node.level + 1]) if node.level else ""
            target = ".".join(part for part in (base, node.module) if part)
            # ``from . import x`` may name submodules: count each as its own module.
            found.update([f"{target}.{alias.name}" for alias in node.names]
                         if node.module is None else [target])
    return found


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == PACKAGE and len(parts) > 1 else None


def layer_imports() -> dict[str, dict[str, set[str]]]:
    """layer -> {imported layer -> the modules of the layer that import it}."""
    root = REPO
    graph: dict[str, dict[str, set[str]]] = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        module = module_name(path, root)
        layer = layer_of(module)
        if layer is None:  # the package's __init__
            continue
        for target in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            other = layer_of(target)
            if other is not None and other != layer:
                graph.setdefault(layer, {}).setdefault(other, set()).add(module)
    return graph


def test_imports_are_resolved_wherever_they_stand():
    source = ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
              "from ..model import Detector\nfrom . import params as P\n"
              "from .cloud import read_points\n"
              "if TYPE_CHECKING:\n    from ...other import Thing\n"
              "def f():\n    from ..eval.replay import replay_scene\n"
              "    import regnet_pillars_ros.tools.demo\n")
    found = imported_modules(source, "regnet_pillars_ros.ros.node")
    assert {"regnet_pillars_ros.model", "regnet_pillars_ros.ros.params",
            "regnet_pillars_ros.ros.cloud",
            "regnet_pillars_ros.eval.replay", "regnet_pillars_ros.tools.demo", "other"} <= found
    assert "regnet_pillars_ros.messages" in imported_modules("from .. import messages",
                                                             "regnet_pillars_ros.ros",
                                                             is_package=True)


def test_layers_import_only_the_layers_below_them():
    graph = layer_imports()
    assert set(graph) - set(ALLOWED) == set(), (
        f"layers missing from the map: {set(graph) - set(ALLOWED)}")
    assert graph["ros"].keys() >= {"messages", "model"}  # the graph is read, not empty
    wrong = [f"{layer} imports {other} ({', '.join(sorted(modules))})"
             for layer, targets in sorted(graph.items())
             for other, modules in sorted(targets.items())
             if other not in ALLOWED[layer]]
    assert wrong == []

# Layers that the architecture keeps free of ROS: the model runs offline and in exports,
# pipeline/ is shared by the node and offline evaluation; runtime/ (backends, bench), sim/,
# train/ and eval/ are ROS-free too.
ROS_FREE = ["regnet_pillars_ros.model", "regnet_pillars_ros.pipeline", "regnet_pillars_ros.runtime",
            "regnet_pillars_ros.sim", "regnet_pillars_ros.train", "regnet_pillars_ros.eval"]

PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
names = [package.__name__] + [m.name for m in pkgutil.walk_packages(package.__path__,
                                                                    package.__name__ + ".")]
for name in names:
    importlib.import_module(name)
ros = sorted(m for m in sys.modules
             if m.split(".")[0] == "rclpy" or m.split(".")[0].endswith("_msgs"))
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
