"""Launch files, their logic in launch_config, and the YAML files generated from the table."""
import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from regnet_pillars_ros.model.presets import PRESET_NAMES
from regnet_pillars_ros.ros import launch_config as cfg
from regnet_pillars_ros.ros.params import PARAMS_BY_NAME, config_files, defaults, validate

REPO = Path(__file__).resolve().parents[1]
LAUNCH = REPO / "launch"
HAS_LAUNCH = importlib.util.find_spec("launch") is not None \
    and importlib.util.find_spec("launch_ros") is not None


def ros_parameters(path: Path) -> dict:
    """Flatten a `/**: ros__parameters:` YAML into dotted names."""
    doc = yaml.safe_load(path.read_text())
    assert list(doc) == ["/**"], f"{path.name}: parameters must apply to any node name"

    def flat(d, prefix=""):
        for key, value in d.items():
            if isinstance(value, dict):
                yield from flat(value, f"{prefix}{key}.")
            else:
                yield f"{prefix}{key}", value
    return dict(flat(doc["/**"]["ros__parameters"]))


def test_config_yaml_files_are_generated_from_the_table():
    generated = config_files()
    assert sorted(generated) == sorted(p.name for p in (REPO / "config").glob("*.yaml"))
    for name, text in generated.items():
        assert (REPO / "config" / name).read_text() == text, \
            f"config/{name} differs from the table: run `.venv/bin/python scripts/write_config.py`"


@pytest.mark.parametrize("preset", PRESET_NAMES)
def test_each_preset_yaml_holds_the_defaults_the_node_derives(preset):
    files = cfg.params_files(preset)
    assert [f.name for f in files] == ["common.yaml", f"{preset}.yaml"]
    merged = {}
    for f in files:
        merged.update(ros_parameters(f))
    for name, value in merged.items():
        assert name in PARAMS_BY_NAME, f"{name} in YAML is not a parameter of the node"
        validate(name, value)
    # Lists: YAML cannot type an empty one, the files hold [""] (blank entries are ignored).
    blanks_dropped = {k: [e for e in v if e] if isinstance(v, list) else v
                      for k, v in merged.items()}
    assert blanks_dropped == defaults(preset)
    assert ros_parameters(files[1]).keys() == {"preset", "num_sweeps", "max_detections",
                                               "markers.show_velocity"}


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="choose one of: nus-secfpn"):
        cfg.params_files("nus-regnetx-9000gf")


def test_node_parameters_and_remappings_follow_the_arguments():
    args = {"preset": "lyft-fpn", "checkpoint": "/tmp/x.pth", "device": "", "use_sim_time": "true",
            "params_file": "/tmp/extra.yaml", "input_topic": "/lidar/top"}
    assert cfg.node_parameters(args) == [
        "/tmp/extra.yaml", {"preset": "lyft-fpn", "use_sim_time": True, "checkpoint": "/tmp/x.pth"}]
    assert cfg.remappings(args) == [("~/input/pointcloud", "/lidar/top")]
    # No YAML unless asked for: the node derives its defaults from the preset.
    assert cfg.node_parameters({}) == [{"preset": cfg.DEFAULT_PRESET, "use_sim_time": False}]
    with pytest.raises(ValueError, match="preset must be one of"):
        cfg.node_parameters({"preset": "nus-huge"})


def launch_arguments(path: Path) -> set[str]:
    """Names the launch file declares or hands to an include, read from its syntax tree."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "DeclareLaunchArgument":
            names.add(node.args[0].value if isinstance(node.args[0], ast.Constant) else "*")
    return names


def test_launch_files_parse_and_take_their_arguments_from_the_package():
    assert launch_arguments(LAUNCH / "detector.launch.py") == {"*"}  # all of LAUNCH_ARGUMENTS
    assert "LAUNCH_ARGUMENTS" in (LAUNCH / "detector.launch.py").read_text()
    for dataset in cfg.DATASET_PRESETS:
        path = LAUNCH / f"{dataset}.launch.py"
        assert launch_arguments(path) == {"preset"}
        assert "detector.launch.py" in path.read_text()
    assert set(cfg.LAUNCH_ARGUMENTS) == {"preset", "checkpoint", "input_topic", "device",
                                         "backend", "params_file", "use_sim_time", "log_level"}
    assert set(cfg.DATASET_PRESETS.values()) <= set(PRESET_NAMES)


def package_imports(path: Path) -> set[str]:
    """Modules of this package a file imports (``from a.b import c`` counts as ``a.b.c``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if (isinstance(node, ast.ImportFrom)
                and (node.module or "").startswith("regnet_pillars_ros")):
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names if a.name.startswith("regnet_pillars_ros")}
    return names


def test_launch_files_take_nothing_from_the_package_but_launch_config():
    for path in sorted(LAUNCH.glob("*.launch.py")):
        assert package_imports(path) <= {"regnet_pillars_ros.ros.launch_config"}, path.name


# Run in a fresh interpreter: what the launch side imports, then the heavy modules it pulled in.
LIGHT_IMPORTS = """
import importlib.util, sys
from regnet_pillars_ros.ros import launch_config, params
launch_config.node_parameters({})
params.config_files()
for path in sys.argv[1:]:  # the launch files, where `launch` is installed
    spec = importlib.util.spec_from_file_location("launch_file", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.generate_launch_description()
print(sorted(m for m in ("torch", "onnxruntime") if m in sys.modules))
"""


def test_launch_config_and_the_parameter_table_import_without_torch():
    launch_files = [str(p) for p in sorted(LAUNCH.glob("*.launch.py"))] if HAS_LAUNCH else []
    result = subprocess.run([sys.executable, "-c", LIGHT_IMPORTS, *launch_files], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip() == "[]"


def test_rviz_config_shows_cloud_and_markers():
    rviz = yaml.safe_load((REPO / "config" / "detector.rviz").read_text())
    displays = {d["Class"]: d for d in rviz["Visualization Manager"]["Displays"]}
    assert displays["rviz_default_plugins/MarkerArray"]["Topic"]["Value"] == \
        f"/{cfg.NODE_NAME}/output/markers"
    assert "rviz_default_plugins/PointCloud2" in displays


@pytest.mark.skipif(not HAS_LAUNCH, reason="ROS 2 `launch`/`launch_ros` are not installed "
                    "(not on PyPI); the files are checked by parsing above")
@pytest.mark.parametrize("name", ["detector", "nuscenes", "lyft"])
def test_launch_description_builds(name):
    spec = importlib.util.spec_from_file_location(name, LAUNCH / f"{name}.launch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities
