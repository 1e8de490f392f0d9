"""What the launch files decide (arguments and the node's parameters), without `launch`.

Light on purpose: the launch files import it, and importing torch would slow every
``ros2 launch`` down. The node derives its defaults from ``preset``; the launch hands it the
preset, an optional parameter file and the arguments given.
"""
from __future__ import annotations

from pathlib import Path

from ..model.presets import PRESET_NAMES
from .params import DEFAULT_PRESET, validate

PACKAGE = "regnet_pillars_ros"
EXECUTABLE = "detector_node"
NODE_NAME = "detector_node"
DATASET_PRESETS = {"nuscenes": "nus-regnetx-400mf-fpn", "lyft": "lyft-regnetx-400mf-fpn"}

# name -> (default, description); an empty default leaves the YAML value in force.
LAUNCH_ARGUMENTS: dict[str, tuple[str, str]] = {
    "preset": (DEFAULT_PRESET, f"model preset ({', '.join(PRESET_NAMES)})"),
    "checkpoint": ("", "checkpoint path; empty = the project's default model"),
    "input_topic": ("/points", "PointCloud2 topic to detect in"),
    "device": ("", "auto|cpu|cuda; empty = the params_file's value or the node's default"),
    "backend": ("", "inference backend; empty = the params_file's value or the node's default"),
    "params_file": ("", "parameter YAML overriding the preset's defaults"),
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
    """The generated YAML files holding the node's defaults for ``preset`` (common.yaml, then
    the preset's; later files win). The node derives the same values without them."""
    if preset not in PRESET_NAMES:
        raise ValueError(f"unknown preset {preset!r}; choose one of: {', '.join(PRESET_NAMES)}")
    return [config_dir() / "common.yaml", config_dir() / f"{preset}.yaml"]


def node_parameters(args: dict[str, str]) -> list:
    """The ``parameters`` list of the node: the params_file if given, then the explicit launch
    arguments (they win). No YAML otherwise: the node derives its defaults from the preset."""
    preset = args.get("preset") or DEFAULT_PRESET
    validate("preset", preset)
    files: list = [args["params_file"]] if args.get("params_file") else []
    overrides: dict = {"preset": preset,
                       "use_sim_time": args.get("use_sim_time", "false").lower() == "true"}
    for name in ("checkpoint", "device", "backend"):
        if args.get(name):
            overrides[name] = args[name]
    return files + [overrides]


def remappings(args: dict[str, str]) -> list[tuple[str, str]]:
    return [("~/input/pointcloud", args.get("input_topic") or LAUNCH_ARGUMENTS["input_topic"][0])]
