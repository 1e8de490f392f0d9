"""What the launch files decide (arguments, defaults, which YAML files), without `launch`.

The launch files and the ``detector_node`` console entry both call into here, so a run
without ROS launch gets the same parameters as ``ros2 launch``.
"""
from __future__ import annotations

from pathlib import Path

from ..model.presets import PRESET_NAMES
from .params import DEFAULT_PRESET

PACKAGE = "regnet_pillars_ros"
EXECUTABLE = "detector_node"
NODE_NAME = "detector_node"
DATASET_PRESETS = {"nuscenes": "nus-regnetx-400mf-fpn", "lyft": "lyft-regnetx-400mf-fpn"}

# name -> (default, description); an empty default leaves the YAML value in force.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "preset": (DEFAULT_PRESET, f"model preset ({', '.join(PRESET_NAMES)})"),
    "checkpoint": ("", "checkpoint path; empty = the project's default model"),
    "input_topic": ("/points", "PointCloud2 topic to detect in"),
    "device": ("", "auto|cpu|cuda; empty = the YAML value"),
    "backend": ("", "inference backend; empty = the YAML value"),
    "params_file": ("", "extra parameter YAML applied last"),
    "use_sim_time": ("false", "use /clock (bag replay)"),
    "log_level": ("info", "node log level"),
}


def config_dir() -> Path:
    """The installed share/<pkg>/config, or the source tree's config/ in a checkout."""
    source = Path(__file__).resolve().parents[2] / "config"
    if source.is_dir():
        return source
    from ament_index_python.packages import get_package_share_directory

    return Path(get_package_share_directory(PACKAGE)) / "config"


def params_files(preset: str) -> list[Path]:
    """common.yaml then the preset's YAML (later files win)."""
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESET_NAMES)}")
    return [config_dir() / "common.yaml", config_dir() / f"{preset}.yaml"]


def node_parameters(args: dict[str, str]) -> list:
    """The ``parameters`` list of the node: YAML files, then explicit launch arguments."""
    files: list = [str(p) for p in params_files(args.get("preset") or DEFAULT_PRESET)]
    if args.get("params_file"):
        files.append(args["params_file"])
    overrides: dict = {"use_sim_time": args.get("use_sim_time", "false").lower() == "true"}
    for name in ("checkpoint", "device", "backend"):
        if args.get(name):
            overrides[name] = args[name]
    return files + [overrides]


def remappings(args: dict[str, str]) -> list[tuple[str, str]]:
    return [("~/input/pointcloud", args.get("input_topic") or LAUNCH_ARGUMENTS["input_topic"][0])]
