"""Ray casting of the simulated LiDAR against plain references: analytic distances, a per-face
reference, the ground plane, occlusion, points on surfaces and determinism."""
import math

import numpy as np
import pytest
from sim_helpers import surface_distance

from regnet_pillars_ros.sim.lidar import GROUND, NO_HIT, LidarConfig, cast_rays, scan
from regnet_pillars_ros.sim.scene import generate_scene
from regnet_pillars_ros.sim.sweeps import hit_boxes_in_frame, simulate_sweep


def unit(*v):
    v = np.array(v, float)
    return v / np.linalg.norm(v)


def face_reference(d: np.ndarray, box: np.ndarray) -> float:
    """Nearest positive hit of the ray t * d with the six faces of a box, face by face."""
    x, y, z, l, w, h, yaw = box
    axes = [np.array([math.cos(yaw), math.sin(yaw), 0.0]),
            np.array([-math.sin(yaw), math.cos(yaw), 0.0]), np.array([0.0, 0.0, 1.0])]
    half = [l / 2, w / 2, h / 2]
    centre = np.array([x, y, z + h / 2])
    best = math.inf
    for i in range(3):
        for sign in (-1.0, 1.0):
            denom = float(d @ axes[i])
            if abs(denom) < 1e-12:
                continue
            t = float((centre + sign * half[i] * axes[i]) @ axes[i]) / denom
            p = t * d - centre
            if t > 0 and all(abs(float(p @ axes[j])) <= half[j] + 1e-9 for j in range(3) if j != i):
                best = min(best, t)
    return best


def test_analytic_hit_distances():
    box = np.array([[10.0, 0.0, -1.0, 4.0, 2.0, 2.0, 0.0]])  # x from 8 to 12, z from -1 to 1
    rays = np.array([unit(1, 0, 0), unit(8, 0.5, 0.5), unit(0, 1, 0), unit(1, 0, 0.2)])
    hits = cast_rays(rays, box, None)
    np.testing.assert_allclose(hits.ranges[:2], [8.0, math.sqrt(64.5)])
    assert hits.hit.tolist() == [0, 0, NO_HIT, NO_HIT]  # beside it, above it
    np.testing.assert_allclose(hits.cos_incidence[0], 1.0)

    # Turned by 45 degrees: the ray along +x meets the long face w/2 = 1 m from the centre.
    turned = box.copy()
    turned[0, 6] = math.pi / 4
    hits = cast_rays(rays[:1], turned, None)
    np.testing.assert_allclose(hits.ranges, [10 - math.sqrt(2)])
    np.testing.assert_allclose(hits.cos_incidence, [math.sqrt(0.5)])

    # Length along the heading: at yaw pi/2 a ray along +y meets the face l/2 = 2 m before the
    # centre.
    ahead = np.array([[0.0, 10.0, -1.0, 4.0, 2.0, 2.0, math.pi / 2]])
    np.testing.assert_allclose(cast_rays(rays[2:3], ahead, None).ranges, [8.0])

    # Behind the sensor, across the azimuth seam at +-pi.
    behind = np.array([[-10.0, 0.0, -1.0, 2.0, 4.0, 2.0, 0.0]])
    seam = [unit(-1, 0, 0), unit(-9, 0.5, 0), unit(-9, -0.5, 0), unit(-9, 2.5, 0)]
    hits = cast_rays(np.array(seam), behind, None)
    np.testing.assert_allclose(hits.ranges[:3], [9.0, math.hypot(9, 0.5), math.hypot(9, 0.5)])
    assert hits.hit.tolist() == [0, 0, 0, NO_HIT]


def test_matches_face_reference_on_random_rays():
    rng = np.random.default_rng(1)
    boxes = np.array([[8.0, 3.0, -1.8, 4.5, 1.9, 1.7, 0.4], [-6.0, -5.0, -1.8, 0.7, 0.7, 1.8, 2.0],
                      [-12.0, 4.0, -1.8, 11.0, 2.9, 3.5, -1.2],
                      [0.5, -9.0, -1.8, 0.5, 2.5, 1.0, 3.1]])
    rays = rng.standard_normal((1000, 3)) * [1, 1, 0.15]
    rays /= np.linalg.norm(rays, axis=1, keepdims=True)
    hits = cast_rays(rays, boxes, None)
    expected = np.array([[face_reference(d, b) for b in boxes] for d in rays])
    nearest = expected.min(axis=1)
    assert np.isfinite(nearest).sum() > 100, "the random rays should hit the boxes often"
    np.testing.assert_allclose(hits.ranges, nearest)
    hit_rays = np.isfinite(nearest)
    assert (hits.hit[hit_rays] == expected[hit_rays].argmin(axis=1)).all()
    assert (hits.hit[~hit_rays] == NO_HIT).all()


def test_ground_range_at_known_elevation():
    elevation = math.radians(-10.0)
    ray = np.array([[math.cos(elevation), 0.0, math.sin(elevation)]])
    hits = cast_rays(ray, np.zeros((0, 7)), ground_z=-1.84)
    np.testing.assert_allclose(hits.ranges, [1.84 / math.sin(-elevation)])
    assert hits.hit.tolist() == [GROUND]
    np.testing.assert_allclose(hits.cos_incidence, [math.sin(-elevation)])
    # Up-going rays never reach the ground; beyond max_range nothing returns.
    assert cast_rays(-ray, np.zeros((0, 7)), -1.84).hit.tolist() == [NO_HIT]
    assert cast_rays(ray, np.zeros((0, 7)), -1.84, max_range=5.0).hit.tolist() == [NO_HIT]


def test_box_behind_another_is_occluded():
    # A 4 m tall wall 10 m ahead (taller than the sensor) hides a wider box 20 m ahead.
    front = [10.0, 0.0, -1.84, 1.0, 4.0, 4.0, 0.0]
    back = [20.0, 0.0, -1.84, 2.0, 16.0, 2.0, 0.0]
    points, hit = scan(LidarConfig(dropout=0.0), np.array([front, back]), ("barrier", "car"),
                       -1.84, np.random.default_rng(0))
    azimuth = np.abs(np.arctan2(points[:, 1], points[:, 0]))
    shadow = math.atan2(2.0, 9.5)  # half-angle subtended by the wall's near face
    assert (hit == 0).sum() > 100 and (hit == 1).sum() > 100
    assert azimuth[hit == 1].min() > shadow - 1e-3
    in_shadow = (azimuth < shadow - 0.01) & (hit == GROUND)
    assert np.hypot(points[in_shadow, 0], points[in_shadow, 1]).max() < 9.5


def test_points_lie_on_surfaces():
    config = LidarConfig()
    scene = generate_scene(seed=4)
    sweep = simulate_sweep(scene, 0, config)
    boxes = hit_boxes_in_frame(scene, 0.0, sweep.sensor_pose)
    assert len(boxes) == len(scene.boxes) + len(scene.clutter) and len(scene.clutter) > 0
    on_box = sweep.hit >= 0
    assert on_box.sum() > 500
    distance = surface_distance(sweep.points[on_box, :3], boxes)
    tolerance = 5 * config.range_noise + 1e-3
    assert distance.min(axis=1).max() < tolerance
    assert (distance.argmin(axis=1) == sweep.hit[on_box]).mean() > 0.99
    ground = sweep.points[~on_box]
    np.testing.assert_allclose(ground[:, 2], -config.mount[2], atol=tolerance)
    # nuScenes file layout: intensity 0-255, ring indices of the 32 beams.
    assert sweep.points.dtype == np.float32 and sweep.points.shape[1] == 5
    assert 0 <= sweep.points[:, 3].min() and sweep.points[:, 3].max() <= 255
    assert set(np.unique(sweep.points[:, 4]).astype(int)) <= set(range(32))
    ranges = np.linalg.norm(sweep.points[:, :3], axis=1)
    assert ranges.min() >= config.min_range and ranges.max() <= config.max_range


def test_dropout_rate():
    base = simulate_sweep(generate_scene(seed=2), 0, LidarConfig(dropout=0.0))
    dropped = simulate_sweep(generate_scene(seed=2), 0, LidarConfig(dropout=0.3))
    assert len(dropped.points) / len(base.points) == pytest.approx(0.7, abs=0.02)


def test_deterministic_by_seed():
    a = simulate_sweep(generate_scene(seed=5), 3, seed=7)
    b = simulate_sweep(generate_scene(seed=5), 3, seed=7)
    np.testing.assert_array_equal(a.points, b.points)
    other_noise = simulate_sweep(generate_scene(seed=5), 3, seed=8)
    other_scene = simulate_sweep(generate_scene(seed=6), 3, seed=7)
    for other in (other_noise, other_scene):
        assert a.points.shape != other.points.shape or not np.array_equal(a.points, other.points)
