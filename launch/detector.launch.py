"""Run detector_node; arguments and YAML choice live in regnet_pillars_ros.ros.launch_config."""
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from launch import LaunchDescription
from regnet_pillars_ros.ros import launch_config as cfg


def _node(context):
    args = {name: LaunchConfiguration(name).perform(context) for name in cfg.LAUNCH_ARGUMENTS}
    return [Node(package=cfg.PACKAGE, executable=cfg.EXECUTABLE, name=cfg.NODE_NAME,
                 output="screen", parameters=cfg.node_parameters(args),
                 remappings=cfg.remappings(args),
                 arguments=["--ros-args", "--log-level", args["log_level"]])]


def generate_launch_description():
    return LaunchDescription(
        [DeclareLaunchArgument(name, default_value=default, description=text)
         for name, (default, text) in cfg.LAUNCH_ARGUMENTS.items()]
        + [OpaqueFunction(function=_node)])
