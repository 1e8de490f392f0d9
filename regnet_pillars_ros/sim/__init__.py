"""Synthetic LiDAR scenes: boxes on a ground plane, a moving ego vehicle and a ray-cast spinning
LiDAR.

Plain NumPy (no ROS, no torch). Entry points: `scene.generate_scene`, `sweeps.simulate_sweep`,
`sweeps.simulate_sample` and `sweeps.SweepSequence`; `preview` draws a scene.
"""
