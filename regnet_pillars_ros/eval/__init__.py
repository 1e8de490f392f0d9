"""Offline evaluation: a synthetic dataset in the nuScenes devkit layout and scoring with the
official nuScenes devkit (ROS-free)."""
