"""Multi-sweep samples of the simulator: layout and time lags, ego-motion compensation (static
points stay on their boxes, movers trail by velocity x dt) and the ground truth's box convention."""
import math

import numpy as np
import pytest
from sim_helpers import fixed_scene, surface_distance

from regnet_pillars_ros.sim.lidar import GROUND, LidarConfig
from regnet_pillars_ros.sim.scene import EgoTrajectory
from regnet_pillars_ros.sim.sweeps import simulate_sample, simulate_sweep, sweep_sequence

LIDAR = LidarConfig()
TOLERANCE = 5 * LIDAR.range_noise + 1e-3
TURNING_EGO = EgoTrajectory(speed=8.0, yaw_rate=0.3, yaw0=0.5)
WORLD_BOXES = [[15.0, -5.0, 0.0, 4.6, 1.9, 1.7, 0.3], [-10.0, 8.0, 0.0, 0.5, 2.5, 1.0, 1.0],
               [5.0, 12.0, 0.0, 6.7, 2.5, 2.7, -2.0], [-8.0, -10.0, 0.0, 0.7, 0.7, 1.8, 0.0]]


def sample_hits(sample):
    """Hit index of every row of a sample (key sweep first, then the past sweeps newest first)."""
    return np.concatenate([sample.key.hit] + [s.hit for s in sample.sweeps])


def test_layout_and_time_lags():
    sample = simulate_sample(fixed_scene(WORLD_BOXES, ego=TURNING_EGO), key_index=10)
    points = sample.points
    assert points.dtype == np.float32 and points.ndim == 2 and points.shape[1] == 5
    blocks = [sample.key] + list(sample.sweeps)
    assert [s.index for s in blocks] == list(range(10, -1, -1))
    assert len(points) == sum(len(s.points) for s in blocks)
    start = 0
    for lag, sweep in enumerate(blocks):
        rows = points[start:start + len(sweep.points)]
        start += len(sweep.points)
        np.testing.assert_allclose(rows[:, 4], lag * 0.05, atol=1e-6)
        np.testing.assert_array_equal(rows[:, 3], sweep.points[:, 3])  # intensity kept
    np.testing.assert_array_equal(points[:len(sample.key.points), :4], sample.key.points[:, :4])


def test_static_points_of_past_sweeps_land_on_key_frame_boxes():
    sample = simulate_sample(fixed_scene(WORLD_BOXES, ego=TURNING_EGO), key_index=10)
    hits = sample_hits(sample)
    past = (sample.points[:, 4] > 0) & (hits >= 0)
    assert past.sum() > 1000
    distance = surface_distance(sample.points[past, :3], sample.gt_boxes)
    assert distance[np.arange(past.sum()), hits[past]].max() < TOLERANCE
    ground = sample.points[hits == GROUND]
    np.testing.assert_allclose(ground[:, 2], -LIDAR.mount[2], atol=TOLERANCE)
    # Without the ego-motion transform (4 m and 8.6 degrees) the oldest sweep would be off.
    oldest = sample.sweeps[-1]
    on_box = oldest.hit >= 0
    raw = surface_distance(oldest.points[on_box, :3], sample.gt_boxes)
    assert np.median(raw[np.arange(on_box.sum()), oldest.hit[on_box]]) > 0.5


def test_moving_points_trail_by_velocity_times_lag():
    velocity = [6.0, -2.0]
    scene = fixed_scene(WORLD_BOXES[:1], velocities=[velocity], ego=TURNING_EGO)
    sample = simulate_sample(scene, key_index=10)
    hits = sample_hits(sample)
    old = (hits == 0) & (sample.points[:, 4] > 0.2)
    assert old.sum() > 100
    np.testing.assert_allclose(np.hypot(*sample.gt_boxes[0, 7:9]), np.hypot(*velocity), rtol=1e-5)
    moved_back = sample.points[old, :3].astype(np.float64)
    moved_back[:, :2] += sample.gt_boxes[0, 7:9] * sample.points[old, 4:5]
    assert surface_distance(moved_back, sample.gt_boxes[:1]).max() < TOLERANCE
    assert np.median(surface_distance(sample.points[old, :3], sample.gt_boxes[:1])) > 0.5


def rotation(yaw):
    return np.array([[math.cos(yaw), -math.sin(yaw)], [math.sin(yaw), math.cos(yaw)]])


# Mount yaw -pi/2 is nuScenes' LIDAR_TOP (x to the right of the vehicle, y forwards).
@pytest.mark.parametrize("mount_yaw", [0.0, -math.pi / 2])
def test_ground_truth_uses_the_mmdet3d_1x_box_convention(mount_yaw):
    lidar = LidarConfig(mount=(0.94, 0.0, 1.84, mount_yaw))
    ego_yaw = 0.3
    sensor_yaw = ego_yaw + mount_yaw

    def world(x, y):  # a point given in the sensor frame, on the world ground plane
        return rotation(ego_yaw) @ (rotation(mount_yaw) @ [x, y] + [0.94, 0.0])

    boxes = [[*world(0.0, 10.0), 0.0, 6.0, 1.2, 1.5, sensor_yaw],  # left: its length shows along x
             [*world(-12.0, 0.0), 0.0, 6.0, 1.2, 1.5, sensor_yaw + math.pi / 2],  # behind: along y
             [*world(100.0, 0.0), 0.0, 4.6, 1.9, 1.7, sensor_yaw]]  # beyond the range
    heading = np.array([math.cos(sensor_yaw), math.sin(sensor_yaw)])
    scene = fixed_scene(boxes, velocities=[2 * heading, [0, 0], [0, 0]],
                        ego=EgoTrajectory(yaw0=ego_yaw))
    sample = simulate_sample(scene, key_index=0, lidar=lidar, num_sweeps=0)
    np.testing.assert_allclose(sample.gt_boxes[0], [0, 10, -1.84, 6, 1.2, 1.5, 0, 2, 0], atol=1e-5)
    np.testing.assert_allclose(sample.gt_boxes[1, :2], [-12, 0], atol=1e-5)
    np.testing.assert_allclose(sample.gt_boxes[1, 6], math.pi / 2, atol=1e-5)
    first = sample.points[sample.key.hit == 0]
    second = sample.points[sample.key.hit == 1]
    assert np.ptp(first[:, 0]) > 5.5 and np.ptp(first[:, 1]) < 1.3
    assert np.ptp(second[:, 1]) > 5.5 and np.ptp(second[:, 0]) < 1.3
    assert sample.gt_num_points[:2].min() > 50 and sample.gt_num_points[2] == 0


def test_sequence_matches_independent_samples():
    scene = fixed_scene(WORLD_BOXES, ego=TURNING_EGO)
    sequence = list(sweep_sequence(scene, first=4, stop=6, num_sweeps=3, seed=1))
    assert len(sequence) == 2
    alone = simulate_sample(scene, key_index=5, num_sweeps=3, seed=1)
    np.testing.assert_array_equal(sequence[1].points, alone.points)
    np.testing.assert_array_equal(sequence[1].gt_boxes, alone.gt_boxes)


@pytest.mark.parametrize("index", [-3, 7])
def test_sweep_reproducible_by_index(index):
    scene = fixed_scene(WORLD_BOXES, ego=TURNING_EGO)
    a, b = simulate_sweep(scene, index), simulate_sweep(scene, index)
    np.testing.assert_array_equal(a.points, b.points)
    assert a.time == pytest.approx(index / LIDAR.rate_hz)


def test_clutter_occludes_but_is_not_ground_truth():
    # Sensor at x = 0.94 m (mount); a 5 m tall wall 10 m ahead of it hides a car 25 m ahead.
    scene = fixed_scene([[25.94, 0.0, 0.0, 4.6, 1.9, 1.7, 0.0],
                         [0.94, 15.0, 0.0, 4.6, 1.9, 1.7, 0.0]],
                        clutter=[[10.94, 0.0, 0.0, 0.5, 12.0, 5.0, 0.0]])
    sample = simulate_sample(scene, key_index=0, num_sweeps=1)
    assert sample.gt_boxes.shape == (2, 9) and sample.gt_labels.shape == (2,)
    assert sample.gt_num_points[0] == 0 and sample.gt_num_points[1] > 50
    assert sample.has_points.tolist() == [False, True]
    assert (sample.key.hit == 2).sum() > 100  # the wall's points, after the annotated boxes
