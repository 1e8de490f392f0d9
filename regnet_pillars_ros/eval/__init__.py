"""Evaluation: datasets in the devkit layout (a synthetic one from the simulator), their conversion
to rosbag2, the replay of those bags through the node's pipeline, scoring with the official
nuScenes and Lyft devkits, and the report. ROS-free except the rosbag2 messages it writes and
reads; the live replay through a running node lives in `tools.live_eval`."""
