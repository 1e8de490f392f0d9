"""Write config/common.yaml and config/<preset>.yaml from the node's parameter table
(regnet_pillars_ros/ros/params.py); test/test_launch.py checks that they match it."""
from pathlib import Path

from regnet_pillars_ros.ros.params import config_files

CONFIG = Path(__file__).resolve().parents[1] / "config"

if __name__ == "__main__":
    for name, text in config_files().items():
        (CONFIG / name).write_text(text)
        print(CONFIG / name)
