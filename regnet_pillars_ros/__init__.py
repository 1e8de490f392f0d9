"""ROS 2 node running the RegNetX PointPillars LiDAR detectors of mmdetection3d."""

__version__ = "0.1.0"
