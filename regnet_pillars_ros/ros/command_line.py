"""detector_node's command line: its own options, then the ROS arguments."""
from __future__ import annotations

import argparse

from . import params as P


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
