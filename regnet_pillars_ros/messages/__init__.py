"""ROS message encoding and decoding below both the node and the evaluation: PointCloud2 <-> numpy,
detections -> vision_msgs and RViz markers, rosbag2 records. Message types only, no rclpy node."""
