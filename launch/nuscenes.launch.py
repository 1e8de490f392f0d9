"""detector.launch.py with a nuscenes preset by default (other arguments pass through)."""
from pathlib import Path

from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration

from launch import LaunchDescription
from regnet_pillars_ros.ros import launch_config as cfg


def generate_launch_description():
    detector = str(Path(__file__).with_name("detector.launch.py"))
    return LaunchDescription([
        DeclareLaunchArgument("preset", default_value=cfg.DATASET_PRESETS["nuscenes"],
                              description=cfg.LAUNCH_ARGUMENTS["preset"][1]),
        IncludeLaunchDescription(
            PythonLaunchDescriptionSource(detector),
            launch_arguments={"preset": LaunchConfiguration("preset")}.items()),
    ])
