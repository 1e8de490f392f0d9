"""The layout of the evaluation bags: what `bag-from-dataset` writes and `eval` reads.

One bag holds one or more scenes of a devkit dataset (nuScenes or Lyft layout):
- POINTS: every LiDAR sweep as sensor_msgs/PointCloud2 in LIDAR_FRAME, stamped with the sweep's
  timestamp; fields x, y, z, intensity (float32) and `time` (float32, seconds from the header
  stamp: 0 for devkit sweeps, which carry one timestamp each);
- TF: the ego pose of every sweep as MAP_FRAME -> ODOM_FRAME (identity) -> BASE_FRAME;
- TF_STATIC: BASE_FRAME -> LIDAR_FRAME (the calibrated sensor), once per scene;
- CLOCK: rosgraph_msgs/Clock at every sweep stamp (for `use_sim_time` replay);
- GROUND_TRUTH: vision_msgs/Detection3DArray at every key frame, in LIDAR_FRAME at the key sweep's
  stamp (centre of the box volume, size l, w, h, class name as class_id, instance token as id);
- SAMPLE_TOKEN: std_msgs/String at every key frame with the same stamp: the devkit sample token
  that the key sweep's results belong to.
"""
from __future__ import annotations

POINTS = "/lidar_top/points"
TF = "/tf"
TF_STATIC = "/tf_static"
CLOCK = "/clock"
GROUND_TRUTH = "/ground_truth"
SAMPLE_TOKEN = "/sample_token"

MAP_FRAME = "map"
ODOM_FRAME = "odom"
BASE_FRAME = "base_link"
LIDAR_FRAME = "lidar_top"

POINT_FIELDS = ("x", "y", "z", "intensity", "time")
