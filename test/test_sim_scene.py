"""Synthetic scenes: classes as the presets name them, sizes, motion, no overlaps, ego
trajectory."""
import json
from pathlib import Path

import numpy as np
import pytest
import shapely
from shapely import STRtree

import regnet_pillars_ros
from regnet_pillars_ros.model.boxes import bev_corners
from regnet_pillars_ros.sim.scene import (
    EGO_CLEARANCE_M,
    NUSCENES_CLASSES,
    NUSCENES_SPECS,
    EgoTrajectory,
    generate_scene,
)

# Read directly: importing regnet_pillars_ros.model would load torch.
PRESETS_FILE = Path(regnet_pillars_ros.__file__).parent / "model" / "presets.json"


def test_classes_follow_the_nuscenes_presets():
    presets = json.loads(PRESETS_FILE.read_text())
    nuscenes = {tuple(p["class_names"]) for p in presets.values() if p["dataset"] == "nuscenes"}
    assert nuscenes == {NUSCENES_CLASSES}
    assert tuple(NUSCENES_SPECS) == NUSCENES_CLASSES


def test_scene_is_deterministic_by_seed():
    a, b, c = generate_scene(3), generate_scene(3), generate_scene(4)
    np.testing.assert_array_equal(a.boxes, b.boxes)
    np.testing.assert_array_equal(a.velocities, b.velocities)
    assert a.ego == b.ego and a.ego != c.ego
    assert a.boxes.shape != c.boxes.shape or not np.array_equal(a.boxes, c.boxes)


def test_sizes_motion_and_placement():
    scene = generate_scene(seed=11, num_objects=60, duration=10.0)
    assert len(scene.boxes) == 60 and len(set(scene.names)) >= 6
    for box, velocity, name in zip(scene.boxes, scene.velocities, scene.names):
        spec = NUSCENES_SPECS[name]
        ratio = box[3:6] / np.array(spec.size)
        assert ratio.min() >= 0.7 and ratio.max() <= 1.3, (name, box)
        speed = np.hypot(*velocity)
        assert speed <= spec.max_speed + 1e-9, (name, speed)
        if speed > 0:  # movers drive forwards along their heading
            np.testing.assert_allclose(velocity / speed, [np.cos(box[6]), np.sin(box[6])])
    np.testing.assert_array_equal(scene.boxes[:, 2], scene.ground_z)


def test_objects_never_overlap_each_other_or_the_ego():
    scene = generate_scene(seed=12, num_objects=60, duration=10.0)
    for t in np.arange(-1.0, 10.01, 0.25):
        polygons = shapely.polygons(bev_corners(scene.boxes_at(t)))
        pairs = STRtree(polygons).query(polygons, predicate="intersects")
        assert (pairs[0] == pairs[1]).all(), (
            f"boxes {pairs[:, pairs[0] != pairs[1]].T} touch at t={t}")
        ego = shapely.points(*scene.ego.pose(t)[:2])
        assert shapely.distance(polygons, ego).min() > EGO_CLEARANCE_M - 1e-6


@pytest.mark.parametrize("yaw_rate", [0.0, 0.25, -0.4])
def test_ego_moves_at_constant_speed_and_yaw_rate(yaw_rate):
    ego = EgoTrajectory(speed=7.0, yaw_rate=yaw_rate, x0=3.0, y0=-2.0, yaw0=0.7)
    t = np.linspace(0.0, 10.0, 2001)
    pose = ego.pose(t)
    np.testing.assert_allclose(pose[0], [3.0, -2.0, 0.7])
    np.testing.assert_allclose(pose[:, 2], 0.7 + yaw_rate * t)
    step = np.diff(pose[:, :2], axis=0) / np.diff(t)[:, None]
    np.testing.assert_allclose(np.hypot(step[:, 0], step[:, 1]), 7.0, rtol=1e-4)
    mid_yaw = 0.5 * (pose[1:, 2] + pose[:-1, 2])
    np.testing.assert_allclose(step / 7.0, np.stack([np.cos(mid_yaw), np.sin(mid_yaw)], 1),
                               atol=1e-5)
