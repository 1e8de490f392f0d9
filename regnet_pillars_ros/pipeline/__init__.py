"""ROS-free frame handling shared by the node and offline tools: transforms and sweeps."""
