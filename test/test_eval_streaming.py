"""Streaming evaluation: the node's scheduling, the choice of output at each key frame, the boxes
carried into the key frame, and what that does to the devkit's scores.

The scoring tests feed `stream_key_frames` with oracle outputs: the simulator's true boxes at each
cloud's time in that cloud's LiDAR frame, as a perfect detector would publish them. Scores then
move only through what streaming does to the boxes, with no scan-to-scan noise.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from eval_helpers import SPARSE
from nuscenes import NuScenes

from regnet_pillars_ros.eval import nuscenes_frames as frames
from regnet_pillars_ros.eval import nuscenes_metrics as metrics
from regnet_pillars_ros.eval import scoring
from regnet_pillars_ros.eval import synthetic_nuscenes as synthetic
from regnet_pillars_ros.eval.replay import FrameResult, KeyFrame
from regnet_pillars_ros.eval.streaming import (
    NO_OUTPUT_YET,
    Output,
    carry_boxes,
    newest_published,
    schedule,
    stream_key_frames,
)
from regnet_pillars_ros.model import Detections
from regnet_pillars_ros.pipeline.transforms import Transform, TransformError
from regnet_pillars_ros.sim.scene import NUSCENES_CLASSES, NUSCENES_SPECS
from regnet_pillars_ros.sim.sweeps import boxes_in_frame, ego_pose, mount_transform

MS = 1_000_000  # ns
STATIC = {name: dataclasses.replace(spec, moving_fraction=0.0)
          for name, spec in NUSCENES_SPECS.items()}
SEED, KEY_FRAMES = 5, 3  # seed 5: the ego drives at 8 m/s


# -- scheduling ---------------------------------------------------------------------------------


def test_latest_only_scheduling_skips_exactly_the_replaced_clouds():
    """20 Hz clouds, 120 ms frames: while a frame runs, the slot keeps only the newest cloud."""
    arrivals = [50 * MS * i for i in range(8)]  # 0, 50, ..., 350 ms
    s = schedule(arrivals, 120 * MS)
    # 0 runs 0-120; 1 waits, replaced by 2 at 100; 2 runs 120-240; 3 waits, replaced by 4 at 200;
    # 4 runs 240-360; 5 (250) waits, replaced by 6 (300), replaced by 7 (350); 7 runs 360-480.
    assert s.processed == (0, 2, 4, 7)
    assert s.published_ns == (120 * MS, 240 * MS, 360 * MS, 480 * MS)
    assert s.skipped == (1, 3, 5, 6)
    assert sorted(s.processed + s.skipped) == list(range(8))


def test_scheduling_edge_cases():
    arrivals = [0, 100, 200, 300]
    fast = schedule(arrivals, 0)
    assert fast.processed == (0, 1, 2, 3) and fast.published_ns == (0, 100, 200, 300)
    assert fast.skipped == ()
    # 0 runs 0-150, 1 (waiting since 100) runs 150-300; 2 waits, and 3 arrives as that frame
    # ends: 3 replaces 2 and starts at once.
    tie = schedule(arrivals, 150)
    assert tie.processed == (0, 1, 3) and tie.skipped == (2,)
    assert tie.published_ns == (150, 300, 450)
    # Per-cloud frame times (the live node's): each processed cloud takes its own.
    varying = schedule(arrivals, [250, 10, 10, 10])
    assert varying.processed == (0, 2, 3) and varying.skipped == (1,)
    assert varying.published_ns == (250, 260, 310)
    assert schedule([], 5) == schedule([], [])


# -- choosing and carrying an output ------------------------------------------------------------


def dets(boxes) -> Detections:
    boxes = np.asarray(boxes, np.float32).reshape(-1, 9)
    return Detections(boxes, np.ones(len(boxes), np.float32), np.zeros(len(boxes), np.int64),
                      NUSCENES_CLASSES)


def test_carry_boxes_forecasts_then_moves():
    box = np.array([[10.0, 0.0, -1.0, 4.0, 2.0, 1.5, 0.0, 2.0, 1.0]])
    np.testing.assert_array_equal(carry_boxes(box, 0.5, "none", None), box)
    ahead = carry_boxes(box, 0.5, "velocity", None)
    np.testing.assert_allclose(ahead[0, :2], [11.0, 0.5])
    # The key frame's sensor 2 m further along +x and turned by 90 degrees: a point at x = 11 of
    # the old frame is 9 m ahead, which the key frame sees at y = -9 (its x axis is old +y).
    motion = Transform.from_xyz_yaw((2.0, 0.0, 0.0), np.pi / 2).inverse()
    moved = carry_boxes(box, 0.5, "velocity", motion)
    np.testing.assert_allclose(moved[0, :3], [0.5, -9.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(moved[0, 6], -np.pi / 2)
    np.testing.assert_allclose(moved[0, 7:9], [1.0, -2.0], atol=1e-12)
    with pytest.raises(ValueError, match="velocities"):
        carry_boxes(box[:, :7], 0.5, "velocity", None)
    with pytest.raises(ValueError, match="forecast"):
        carry_boxes(box, 0.5, "linear", None)


def test_each_key_frame_takes_the_newest_output_published_by_its_stamp():
    outputs = [Output(0, "lidar", 300 * MS, dets([[1, 0, 0, 1, 1, 1, 0, 0, 0]])),
               Output(100 * MS, "lidar", 500 * MS, dets([[2, 0, 0, 1, 1, 1, 0, 0, 0]])),
               Output(500 * MS, "lidar", 500 * MS, dets([[3, 0, 0, 1, 1, 1, 0, 0, 0]]))]
    stamps, published = [o.stamp_ns for o in outputs], [o.published_ns for o in outputs]
    # At 500 ms two outputs are published at once: the newer input wins.
    assert newest_published([299 * MS, 300 * MS, 499 * MS, 500 * MS, 10**12], stamps,
                            published) == [None, 0, 0, 2, 2]
    keys = [KeyFrame(token, stamp * MS, "scene") for token, stamp in
            (("a", 0), ("b", 400), ("c", 500))]
    pose = Transform.from_xyz_yaw((0.0, 0.0, 0.0), 0.0)
    streamed = stream_key_frames(keys, ["lidar"] * 3, outputs, "none", lambda f, s: pose)
    assert streamed[0].result.detections is None and streamed[0].result.reason == NO_OUTPUT_YET
    assert streamed[0].age_ms is None
    assert streamed[1].source_stamp_ns == 0 and streamed[1].age_ms == pytest.approx(400)
    assert streamed[1].result.latency_ms == pytest.approx(300)
    assert streamed[2].result.detections is outputs[2].detections  # its own cloud: as published
    assert streamed[2].age_ms == 0

    def unknown(frame, stamp):
        raise TransformError("no /tf yet")

    missing = stream_key_frames(keys[1:2], ["lidar"], outputs, "none", unknown)[0]
    assert missing.result.detections is None and "no /tf yet" in missing.result.reason


# -- scores with oracle outputs -----------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OracleScene:
    """A one-scene synthetic dataset, its key frames, every cloud's stamp and the oracle's
    detections of each cloud."""

    nusc: NuScenes
    keys: list[KeyFrame]
    stamps: list[int]
    detections: list[Detections]
    poses: dict[int, Transform]  # T_global_lidar by stamp

    def pose(self, frame_id: str, stamp: int) -> Transform:
        return self.poses[stamp]

    def outputs(self, frame_ms: float) -> list[Output]:
        s = schedule(self.stamps, round(frame_ms * MS))
        return [Output(self.stamps[i], "lidar", published, self.detections[i])
                for i, published in zip(s.processed, s.published_ns)]


def oracle_scene(root, specs) -> OracleScene:
    data = synthetic.write_dataset(root, seed=SEED, num_scenes=1, num_key_frames=KEY_FRAMES,
                                   lidar=SPARSE, specs=specs)
    nusc = NuScenes(data.version, str(data.dataroot), verbose=False)
    scene = synthetic.dataset_scene(SEED, 0, KEY_FRAMES, specs)
    record = nusc.get("sample_data", nusc.sample[0]["data"]["LIDAR_TOP"])
    while record["prev"]:
        record = nusc.get("sample_data", record["prev"])
    chain = [record]
    while chain[-1]["next"]:
        chain.append(nusc.get("sample_data", chain[-1]["next"]))
    stamps, detections, poses = [], [], {}
    for index, sd in enumerate(chain, start=-synthetic.SWEEPS_PER_KEY_FRAME):
        t = index / SPARSE.rate_hz
        sensor = ego_pose(scene, t) @ mount_transform(SPARSE)
        stamps.append(sd["timestamp"] * 1000)
        poses[stamps[-1]] = (frames.devkit_transform(nusc.get("ego_pose", sd["ego_pose_token"]))
                             @ frames.devkit_transform(nusc.get("calibrated_sensor",
                                                                sd["calibrated_sensor_token"])))
        boxes = boxes_in_frame(scene, t, sensor).astype(np.float32)
        detections.append(Detections(boxes, np.ones(len(boxes), np.float32), scene.labels.copy(),
                                     NUSCENES_CLASSES))
    keys = [KeyFrame(s["token"], s["timestamp"] * 1000, "scene") for s in nusc.sample]
    return OracleScene(nusc, keys, stamps, detections, poses)


def devkit_scores(oracle: OracleScene, results: list[FrameResult], out) -> metrics.NuScenesScores:
    tokens = [k.sample_token for k in oracle.keys]
    filled = scoring.filled_detections(results, tokens, NUSCENES_CLASSES, 9)
    path = metrics.write_results(oracle.nusc, filled, synthetic.VAL_SPLIT, out / "results.json")
    return metrics.evaluate(oracle.nusc, path, synthetic.VAL_SPLIT, out)


def streamed(oracle: OracleScene, frame_ms: float, forecast: str, ego_motion: bool = True):
    return stream_key_frames(oracle.keys, ["lidar"] * len(oracle.keys), oracle.outputs(frame_ms),
                             forecast, oracle.pose if ego_motion else None)


def test_static_world_from_a_moving_ego(tmp_path):
    """Static objects, the ego at 8 m/s: with the ego motion, latency leaves the scores as they are
    (the oracle's boxes carry no scan differences); without it, the boxes lag the ego's motion."""
    oracle = oracle_scene(tmp_path / "data", STATIC)
    assert not np.any(synthetic.dataset_scene(SEED, 0, KEY_FRAMES, STATIC).velocities)
    at_once = streamed(oracle, 0.0, "none")
    assert all(f.age_ms == 0 for f in at_once)
    late = streamed(oracle, 120.0, "none")
    ages = [f.age_ms for f in late]
    assert all(age >= 120 for age in ages)  # the ego moved >= 0.96 m since each output's cloud
    base = devkit_scores(oracle, [f.result for f in at_once], tmp_path / "now")
    moved = devkit_scores(oracle, [f.result for f in late], tmp_path / "late")
    # float32 boxes through float64 transforms: centres within ~1e-5 m of the same boxes.
    assert moved.mean_ap == pytest.approx(base.mean_ap, abs=1e-6)
    assert moved.nds == pytest.approx(base.nds, abs=1e-4)
    unmoved = devkit_scores(oracle, [f.result for f in streamed(oracle, 120.0, "none", False)],
                            tmp_path / "unmoved")
    assert unmoved.nds < base.nds - 0.05
    assert unmoved.tp_errors["trans_err"] > base.tp_errors["trans_err"] + 0.1


def test_forecast_with_velocity_reduces_the_translation_error(tmp_path):
    """Moving objects at their true velocity: carried forward by vx, vy over the output's age,
    the oracle's boxes land on the key frame's ground truth; kept where seen, movers lag."""
    oracle = oracle_scene(tmp_path / "data", None)
    velocities = synthetic.dataset_scene(SEED, 0, KEY_FRAMES).velocities
    assert np.linalg.norm(velocities, axis=1).max() > 5.0  # movers fast enough to lag > 0.5 m
    kept = devkit_scores(oracle, [f.result for f in streamed(oracle, 120.0, "none")],
                         tmp_path / "none")
    ahead = devkit_scores(oracle, [f.result for f in streamed(oracle, 120.0, "velocity")],
                          tmp_path / "velocity")
    present = [name for name, ap in ahead.class_ap.items() if ap > 0]  # absent: errors of 1
    assert len(present) >= 5
    assert max(ahead.class_tp_errors[name]["trans_err"] for name in present) < 1e-3
    assert max(kept.class_tp_errors[name]["trans_err"] for name in present) > 0.1
    assert ahead.tp_errors["trans_err"] < kept.tp_errors["trans_err"]
    assert ahead.nds > kept.nds
