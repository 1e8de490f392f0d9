"""Sweep history and stacking: a reference built from real Lyft ego poses, slow consumers, the
time-span bound and ego-motion lookups at stacking time."""
import json
from pathlib import Path
from types import SimpleNamespace as Msg

import numpy as np
import pytest

from regnet_pillars_ros.pipeline.ego_motion import EgoMotion
from regnet_pillars_ros.pipeline.sweeps import SweepAccumulator
from regnet_pillars_ros.pipeline.transforms import Transform, TransformBuffer

REALDATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "realdata"
SEC = 1_000_000_000


def wxyz(q):
    return (q[1], q[2], q[3], q[0])


@pytest.mark.skipif(not (REALDATA / "composite_10sweeps_lyft_val_poses.npy").exists(),
                    reason=f"real data not found under {REALDATA}")
def test_accumulation_matches_the_reference_on_real_lyft_ego_poses():
    """Reference: the same cloud used as key frame and 10 past sweeps placed with the sweep ->
    key transforms of a Lyft validation sample (built offline as p' = R p + t). We replay the
    ego trajectory as a /tf-like tree (map -> base dynamic, base -> lidar static)."""
    info = json.loads((REALDATA / "sweeps_lyft_val_sample0_transforms_only.json").read_text())
    reference = np.load(REALDATA / "composite_10sweeps_lyft_val_poses.npy")
    cloud = np.load(REALDATA / "composite_demo_cloud_every4th.npy")[:, :3]
    # The reference dropped points within 1 m (|x| and |y|) of the sensor from past sweeps.
    past_cloud = cloud[~((np.abs(cloud[:, 0]) < 1) & (np.abs(cloud[:, 1]) < 1))]

    buf = TransformBuffer()
    buf.set_transform("base", "lidar", 0, Transform.from_xyz_quat(
        info["lidar2ego_translation"], wxyz(info["lidar2ego_rotation_wxyz"])), static=True)
    frames = [(s, past_cloud) for s in reversed(info["sweeps"])] + [(info, cloud)]
    for s, _ in frames:
        assert s["lidar2ego_translation" if s is info else "sensor2ego_translation"] == \
            info["lidar2ego_translation"]  # one sensor mounting: a static edge is right
        buf.set_transform("map", "base", round(s["timestamp_us"] * 1000), Transform.from_xyz_quat(
            s["ego2global_translation"], wxyz(s["ego2global_rotation_wxyz"])))

    acc = SweepAccumulator(num_sweeps=10)
    for s, pts in frames:
        stamp = round(s["timestamp_us"] * 1000)
        out = acc.add(pts, stamp, buf.lookup("map", "lidar", stamp))
    assert out.sweeps == 11 and not out.ego_motion_missing
    assert out.points.shape == (reference.shape[0], 4)
    np.testing.assert_allclose(out.points[:, :3], reference[:, :3], atol=1e-4)
    np.testing.assert_allclose(out.points[:, 3], reference[:, 4], atol=1e-5)


def straight_line_pose(t_s: float) -> Transform:
    """Ego driving along +x at 10 m/s while turning at 0.5 rad/s."""
    return Transform.from_xyz_yaw((10.0 * t_s, 0.0, 0.0), 0.5 * t_s)


def test_a_static_world_point_lands_on_itself_in_every_sweep():
    world_point = np.array([20.0, 5.0, 1.0])
    acc = SweepAccumulator(num_sweeps=3)
    for k in range(6):
        pose = straight_line_pose(0.1 * k)
        local = pose.inverse().apply(world_point[None]).astype(np.float32)
        out = acc.add(local, k * SEC // 10, pose)
    assert out.sweeps == 4
    np.testing.assert_allclose(out.points[:, :3], np.repeat(local, 4, axis=0), atol=1e-4)
    np.testing.assert_allclose(out.points[:, 3], [0.0, 0.1, 0.2, 0.3], atol=1e-6)


def test_extra_columns_are_carried_and_dt_is_last():
    acc = SweepAccumulator(num_sweeps=2)
    acc.add(np.array([[1, 2, 3, 50]], np.float32), 0, Transform.identity())
    out = acc.add(np.array([[4, 5, 6, 60]], np.float32), SEC // 20, Transform.identity())
    np.testing.assert_allclose(out.points, [[4, 5, 6, 60, 0], [1, 2, 3, 50, 0.05]])


@pytest.mark.parametrize("policy, expected_rows", [("single", 1), ("uncompensated", 2)])
def test_missing_ego_motion_follows_the_policy(policy, expected_rows):
    acc = SweepAccumulator(num_sweeps=2, missing_policy=policy)
    acc.add(np.ones((1, 3), np.float32), 0, None)
    out = acc.add(np.zeros((1, 3), np.float32), SEC // 10, Transform.from_xyz_yaw((5, 0, 0), 0))
    assert out.ego_motion_missing
    assert out.points.shape[0] == expected_rows
    if policy == "uncompensated":
        np.testing.assert_allclose(out.points[1], [1, 1, 1, 0.1], atol=1e-6)


def test_time_going_back_or_too_old_sweeps_are_not_stacked():
    acc = SweepAccumulator(num_sweeps=5, max_age_s=0.25)
    for k in range(4):
        out = acc.add(np.full((2, 3), k, np.float32), k * SEC // 10, Transform.identity())
    assert out.sweeps == 3  # dt 0.1 and 0.2 kept, 0.3 too old
    out = acc.add(np.zeros((2, 3), np.float32), 0, Transform.identity())  # bag looped
    assert out.sweeps == 1 and len(acc) == 1


def test_zero_sweeps_keeps_nothing_and_bad_arguments_are_refused():
    acc = SweepAccumulator(num_sweeps=0)
    acc.add(np.zeros((3, 3), np.float32), 0, None)
    assert len(acc) == 0
    with pytest.raises(ValueError, match="missing_policy"):
        SweepAccumulator(2, missing_policy="guess")
    with pytest.raises(ValueError, match=r"\[N, >=3\]"):
        acc.add(np.zeros((3, 2), np.float32), 1, None)


def stream_poses(rate_hz: float, clouds: int) -> list[tuple[int, Transform]]:
    """(stamp, sensor pose) of a sensor at ``rate_hz`` on the ego of `straight_line_pose`."""
    return [(round(k * SEC / rate_hz), straight_line_pose(k / rate_hz)) for k in range(clouds)]


def tf_message(parent: str, child: str, stamp: int, value: Transform) -> Msg:
    """A tf2_msgs/TFMessage look-alike (EgoMotion reads messages by field name)."""
    t, q = value.translation, value.rotation
    return Msg(transforms=[Msg(
        header=Msg(frame_id=parent, stamp=Msg(sec=stamp // SEC, nanosec=stamp % SEC)),
        child_frame_id=child, transform=Msg(translation=Msg(x=t[0], y=t[1], z=t[2]),
                                            rotation=Msg(x=q[0], y=q[1], z=q[2], w=q[3])))])


def test_a_consumer_slower_than_the_sensor_stacks_the_clouds_it_skipped():
    """20 Hz clouds all received, one in 7 stacked (a node 7x slower than its sensor): each
    frame stacks its 10 predecessors, lags 0.05 .. 0.5 s, poses looked up when stacked."""
    world = np.array([[20.0, 5.0, 1.0], [-3.0, 8.0, 0.5]])
    ego = EgoMotion("odom", tolerance_s=0.0)
    acc = SweepAccumulator(num_sweeps=10, poses=ego)
    stacked = []
    for k, (stamp, pose) in enumerate(stream_poses(20, 40)):
        local = pose.inverse().apply(world).astype(np.float32)
        window = acc.receive(local, stamp, "lidar")  # before its pose is known
        ego.add_tf(tf_message("odom", "lidar", stamp, pose))
        if k % 7 == 6:
            stacked.append((local, acc.stack(window)))
    assert [s.sweeps for _, s in stacked] == [7, 11, 11, 11, 11]
    for local, s in stacked[1:]:
        assert not s.ego_motion_missing and s.max_lag_s == pytest.approx(0.5)
        np.testing.assert_allclose(np.unique(s.points[:, 3]), np.arange(11) * 0.05, atol=1e-6)
        # A static world point lands on itself in every sweep.
        np.testing.assert_allclose(s.points[:, :3], np.tile(local, (11, 1)), atol=1e-4)


@pytest.mark.parametrize("rate_hz, max_age_s, sweeps, max_lag_s", [
    (20, 2.5, 11, 0.5), (10, 2.5, 11, 1.0), (10, 0.55, 6, 0.5), (20, 0.55, 11, 0.5)])
def test_the_time_span_bound_keeps_a_10hz_sensor_within_nuscenes_lags(rate_hz, max_age_s,
                                                                       sweeps, max_lag_s):
    acc = SweepAccumulator(num_sweeps=10, max_age_s=max_age_s)
    for stamp, pose in stream_poses(rate_hz, 15):
        out = acc.add(np.zeros((1, 3), np.float32), stamp, pose)
    assert out.sweeps == sweeps and out.max_lag_s == pytest.approx(max_lag_s)


def test_a_lookup_failure_is_reported_and_follows_the_policy():
    ego = EgoMotion("odom")  # nothing buffered: every lookup fails
    acc = SweepAccumulator(num_sweeps=2, missing_policy="uncompensated", poses=ego)
    acc.receive(np.ones((1, 3), np.float32), 0, "lidar")
    out = acc.stack(acc.receive(np.zeros((1, 3), np.float32), SEC // 10, "lidar"))
    assert out.ego_motion_missing and "unknown" in out.ego_motion_error
    assert out.stamps_ns == (SEC // 10, 0)
    np.testing.assert_allclose(out.points[1], [1, 1, 1, 0.1], atol=1e-6)
