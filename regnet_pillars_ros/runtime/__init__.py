"""Runtime tools around the model layer (benchmarks); no rclpy."""
