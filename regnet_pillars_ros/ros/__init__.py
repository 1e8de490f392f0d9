"""The ROS 2 layer: converts messages and schedules inference; no model math here."""
