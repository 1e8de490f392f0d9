"""ament_python package: works with `pip install -e .` and with `colcon build`."""
from glob import glob
from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "regnet_pillars_ros"
SHARE = f"share/{PACKAGE}"


def files(pattern: str) -> list[str]:
    """Plain files matching a glob, sorted (data_files takes no directories)."""
    return sorted(p for p in glob(pattern) if Path(p).is_file())


setup(
    name=PACKAGE,
    version="0.1.0",
    description="ROS 2 node running mmdetection3d's RegNetX PointPillars LiDAR detectors",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    package_data={"": ["*.json"], f"{PACKAGE}.model": ["weights/*.pth"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (SHARE, ["package.xml"]),
        (f"{SHARE}/launch", files("launch/*.launch.py")),
        (f"{SHARE}/config", files("config/*")),
    ],
    zip_safe=False,
    entry_points={
        "console_scripts": [
            f"detector_node = {PACKAGE}.ros.node:main",
            f"regnet-pillars = {PACKAGE}.cli:console_main",
        ],
    },
)
