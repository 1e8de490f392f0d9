"""The synthetic nuScenes-layout dataset and scoring through the real nuscenes-devkit (no mocks)."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from nuscenes import NuScenes
from nuscenes.eval.detection.utils import category_to_detection_name
from nuscenes.utils.data_classes import Box
from nuscenes.utils.splits import is_predefined_split
from pyquaternion import Quaternion

from regnet_pillars_ros.eval import nuscenes_frames as frames
from regnet_pillars_ros.eval import nuscenes_metrics as metrics
from regnet_pillars_ros.eval import synthetic_nuscenes as synthetic
from regnet_pillars_ros.pipeline.transforms import Transform
from regnet_pillars_ros.sim.scene import NUSCENES_CLASSES
from regnet_pillars_ros.sim.sweeps import make_sample, simulate_sweep

SEED, SCENES, KEY_FRAMES = 5, 2, 5  # seed 5: every class present, same-class boxes > 3.5 m apart
SPLIT = synthetic.VAL_SPLIT


@pytest.fixture(scope="module")
def nusc(tmp_path_factory) -> NuScenes:
    data = synthetic.write_dataset(tmp_path_factory.mktemp("nuscenes"), seed=SEED,
                                   num_scenes=SCENES, num_key_frames=KEY_FRAMES)
    return NuScenes(data.version, str(data.dataroot), verbose=False)


def evaluated_gt(nusc: NuScenes) -> dict[str, frames.SensorFrameAnnotations]:
    """Per key frame, the annotations the devkit scores (with points, inside the class range)."""
    ranges = metrics.config_factory(metrics.CONFIG).class_range
    out = {}
    for token in metrics.split_sample_tokens(nusc, SPLIT):
        gt = frames.annotations_in_sensor_frame(nusc, token)
        _, ego_sensor = frames.key_lidar_poses(nusc, token)
        centres = gt.boxes[:, :3] + np.outer(gt.boxes[:, 5] / 2, [0, 0, 1])
        radius = np.linalg.norm(ego_sensor.apply(centres)[:, :2], axis=1)
        keep = (gt.num_points > 0) & (radius < np.array([ranges[n] for n in gt.names]))
        out[token] = frames.SensorFrameAnnotations(
            gt.boxes[keep], [n for n, k in zip(gt.names, keep) if k], gt.num_points[keep],
            [t for t, k in zip(gt.tokens, keep) if k])
    return out


def as_detections(gt: frames.SensorFrameAnnotations, boxes: np.ndarray | None = None):
    boxes = gt.boxes if boxes is None else boxes
    return SimpleNamespace(boxes=boxes, scores=np.ones(len(boxes)), class_names=NUSCENES_CLASSES,
                           labels=np.array([NUSCENES_CLASSES.index(n) for n in gt.names], np.int64))


def score(nusc: NuScenes, detections: dict, out: Path) -> metrics.NuScenesScores:
    path = metrics.write_results(nusc, detections, SPLIT, out / "results.json")
    return metrics.evaluate(nusc, path, SPLIT, out)


def test_tables_are_consistent(nusc):
    assert len(nusc.scene) == SCENES and len(nusc.sample) == SCENES * KEY_FRAMES
    assert not is_predefined_split(SPLIT)
    assert metrics.split_sample_tokens(nusc, SPLIT) == [s["token"] for s in nusc.sample]
    for scene in nusc.scene:
        samples = [nusc.get("sample", scene["first_sample_token"])]
        while samples[-1]["next"]:
            samples.append(nusc.get("sample", samples[-1]["next"]))
        assert [s["token"] for s in samples][-1] == scene["last_sample_token"]
        assert len(samples) == scene["nbr_samples"] == KEY_FRAMES
        assert np.all(np.diff([s["timestamp"] for s in samples]) == 500_000)  # 2 Hz
        # The sweep chain: 10 before the first key frame, then 9 between key frames (20 Hz).
        first_key = nusc.get("sample_data", samples[0]["data"]["LIDAR_TOP"])
        chain = [first_key]
        while chain[0]["prev"]:
            chain.insert(0, nusc.get("sample_data", chain[0]["prev"]))
        while chain[-1]["next"]:
            chain.append(nusc.get("sample_data", chain[-1]["next"]))
        keys = [i for i, sd in enumerate(chain) if sd["is_key_frame"]]
        assert keys == [10 * (k + 1) for k in range(KEY_FRAMES)]
        assert [chain[i]["sample_token"] for i in keys] == [s["token"] for s in samples]
        assert np.all(np.diff([sd["timestamp"] for sd in chain]) == 50_000)
        for sd in chain:
            folder = "samples" if sd["is_key_frame"] else "sweeps"
            assert sd["filename"].startswith(f"{folder}/LIDAR_TOP/")
            assert Path(nusc.get_sample_data_path(sd["token"])).is_file()
            pose = nusc.get("ego_pose", sd["ego_pose_token"])
            assert pose["timestamp"] == sd["timestamp"]
    for instance in nusc.instance:
        anns = [nusc.get("sample_annotation", instance["first_annotation_token"])]
        while anns[-1]["next"]:
            anns.append(nusc.get("sample_annotation", anns[-1]["next"]))
        assert anns[-1]["token"] == instance["last_annotation_token"]
        assert len(anns) == instance["nbr_annotations"]
        assert {a["instance_token"] for a in anns} == {instance["token"]}
    assert {category_to_detection_name(c["name"]) for c in nusc.category} == set(NUSCENES_CLASSES)
    assert all(a["num_radar_pts"] == 0 and a["visibility_token"] in ("1", "4")
               for a in nusc.sample_annotation)


def test_key_frame_matches_simulator(nusc):
    """Points, poses and ground truth read back through the devkit equal the simulator's."""
    scene_index, key = 1, 2
    scene = synthetic.dataset_scene(SEED, scene_index, KEY_FRAMES)
    sweep = simulate_sweep(scene, 10 * key, seed=SEED + scene_index)
    sample = nusc.get("sample", nusc.scene[scene_index]["first_sample_token"])
    for _ in range(key):
        sample = nusc.get("sample", sample["next"])
    path = nusc.get_sample_data_path(sample["data"]["LIDAR_TOP"])
    assert np.array_equal(np.fromfile(path, np.float32).reshape(-1, 5), sweep.points)

    global_ego, ego_sensor = frames.key_lidar_poses(nusc, sample["token"])
    offset = Transform.from_xyz_yaw(synthetic.GLOBAL_OFFSET, 0.0)
    expected = (offset @ sweep.sensor_pose).matrix()
    np.testing.assert_allclose((global_ego @ ego_sensor).matrix(), expected, atol=1e-9)

    truth = make_sample(scene, sweep, ())
    gt = frames.annotations_in_sensor_frame(nusc, sample["token"])
    assert gt.names == [scene.class_names[i] for i in truth.gt_labels]
    assert np.array_equal(gt.num_points, truth.gt_num_points)
    dyaw = (gt.boxes[:, 6] - truth.gt_boxes[:, 6] + np.pi) % (2 * np.pi) - np.pi
    np.testing.assert_allclose(dyaw, 0, atol=1e-5)
    # Velocities: the devkit's finite differences of global centres equal the true ones.
    columns = [0, 1, 2, 3, 4, 5, 7, 8]
    np.testing.assert_allclose(gt.boxes[:, columns], truth.gt_boxes[:, columns], atol=1e-4)


def test_ground_truth_as_predictions_scores_the_maximum(nusc, tmp_path):
    gt = evaluated_gt(nusc)
    present = {n for frame in gt.values() for n in frame.names}
    assert present == set(NUSCENES_CLASSES), "the test data must hold every class for mAP 1"
    scores = score(nusc, {t: as_detections(g) for t, g in gt.items()}, tmp_path)
    assert scores.mean_ap == pytest.approx(1.0, abs=1e-12)
    # Every TP error is 0 up to rounding (ATE ~1e-13 m from the frame round trip); the devkit
    # leaves AOE/AVE/AAE undefined for traffic cones and AVE/AAE for barriers, which the class
    # means skip, so NDS reaches 1 only because every class is present.
    for name, errors in scores.class_tp_errors.items():
        undefined = {"traffic_cone": {"orient_err", "vel_err", "attr_err"},
                     "barrier": {"vel_err", "attr_err"}}.get(name, set())
        for metric, value in errors.items():
            assert np.isnan(value) if metric in undefined else value < 1e-9, (name, metric, value)
    assert scores.tp_errors["scale_err"] == scores.tp_errors["attr_err"] == 0.0
    assert scores.nds == pytest.approx(1.0, abs=1e-9)
    summary = json.loads((tmp_path / "metrics_summary.json").read_text())
    assert summary["nd_score"] == scores.nds


def test_shift_toward_the_ego_lowers_the_scores_as_defined(nusc, tmp_path):
    """Every box moved 1.5 m towards the ego (BEV, so none leaves its class range): matches exist
    at the 2 and 4 m thresholds only, ATE = 1.5, the other TP errors stay 0."""
    shift = 1.5
    gt = evaluated_gt(nusc)
    detections = {}
    for token, frame in gt.items():
        _, ego_sensor = frames.key_lidar_poses(nusc, token)
        boxes = frame.boxes.copy()
        centres_ego = ego_sensor.apply(boxes[:, :3])
        towards = -centres_ego[:, :2] / np.linalg.norm(centres_ego[:, :2], axis=1, keepdims=True)
        step = np.hstack([shift * towards, np.zeros((len(boxes), 1))])
        boxes[:, :3] += step @ ego_sensor.matrix()[:3, :3]  # the ego-frame step in the sensor frame
        # Precondition for exact expectations: no shifted box comes within 2 m of another
        # same-class box, so every match is with its own ground truth.
        names = np.array(frame.names)
        gaps = np.linalg.norm(boxes[:, None, :2] - frame.boxes[None, :, :2], axis=2)
        same = (names[:, None] == names[None]) & ~np.eye(len(names), dtype=bool)
        assert np.all(gaps[same] > 2.0), "test data too dense for exact expectations"
        detections[token] = as_detections(frame, boxes)
    scores = score(nusc, detections, tmp_path)
    for name in NUSCENES_CLASSES:
        assert scores.class_ap_at[name] == pytest.approx({0.5: 0.0, 1.0: 0.0, 2.0: 1.0, 4.0: 1.0})
        assert scores.class_tp_errors[name]["trans_err"] == pytest.approx(shift, abs=1e-6)
    assert scores.mean_ap == pytest.approx(0.5)
    assert scores.tp_errors["trans_err"] == pytest.approx(shift, abs=1e-6)
    assert all(scores.tp_errors[m] < 1e-9
               for m in ("scale_err", "orient_err", "vel_err", "attr_err"))
    # NDS = (5 mAP + (1 - min(1, ATE)) + 4 perfect TP scores) / 10
    assert scores.nds == pytest.approx((5 * 0.5 + 0 + 4) / 10)


def test_yaw_and_size_errors_lower_only_their_metrics(nusc, tmp_path):
    dyaw, scale = 0.3, 1.1
    detections = {}
    for token, frame in evaluated_gt(nusc).items():
        boxes = frame.boxes.copy()
        boxes[:, 6] += dyaw
        boxes[:, 3:6] *= scale
        detections[token] = as_detections(frame, boxes)
    scores = score(nusc, detections, tmp_path)
    ase = 1 - 1 / scale**3  # aligned boxes: IoU = volume ratio
    assert scores.mean_ap == pytest.approx(1.0)
    assert scores.tp_errors["trans_err"] < 1e-9
    assert scores.tp_errors["scale_err"] == pytest.approx(ase)
    assert scores.tp_errors["orient_err"] == pytest.approx(dyaw)  # barrier (period pi) too
    assert scores.nds == pytest.approx((5 + 1 + (1 - ase) + (1 - dyaw) + 1 + 1) / 10)


def test_results_cover_every_key_frame(nusc, tmp_path):
    gt = evaluated_gt(nusc)
    detections = {t: as_detections(g) for t, g in gt.items()}
    path = metrics.write_results(nusc, detections, SPLIT, tmp_path / "results.json")
    results = json.loads(path.read_text())["results"]
    assert set(results) == {s["token"] for s in nusc.sample}
    missing = dict(list(detections.items())[1:])
    with pytest.raises(ValueError, match="1 key frames missing"):
        metrics.write_results(nusc, missing, SPLIT, tmp_path / "partial.json")


def test_frame_results_range_limit_and_attributes(nusc):
    token = nusc.sample[0]["token"]
    _, ego_sensor = frames.key_lidar_poses(nusc, token)
    mount_x = ego_sensor.translation[0]
    # Cars at ego distance 49.5 (kept) and 50.5 m (dropped: car range 50 m); one moving at 5 m/s;
    # 600 pedestrians at 10 m of which the 500 best-scored are kept.
    cars = np.array([[49.5 - mount_x, 0, 0, 4.6, 1.9, 1.7, 0, 5.0, 0],
                     [50.5 - mount_x, 0, 0, 4.6, 1.9, 1.7, 0, 0, 0],
                     [-20 - mount_x, 0, 0, 4.6, 1.9, 1.7, 0, 0, 0]])
    peds = np.tile([10.0, 0, 0, 0.7, 0.7, 1.7, 0, 0, 0], (600, 1))
    scores = np.concatenate([[0.9, 0.9, 0.9], np.linspace(0.01, 0.6, 600)])
    labels = np.array([0] * 3 + [NUSCENES_CLASSES.index("pedestrian")] * 600)
    detections = SimpleNamespace(boxes=np.vstack([cars, peds]), scores=scores, labels=labels,
                                 class_names=NUSCENES_CLASSES)
    rows = metrics.frame_results(nusc, token, detections)
    assert len(rows) == 500
    car_rows = [r for r in rows if r["detection_name"] == "car"]
    assert [r["attribute_name"] for r in car_rows] == ["vehicle.moving", "vehicle.parked"]
    assert min(r["detection_score"] for r in rows if r["detection_name"] == "pedestrian") \
        == pytest.approx(scores[3 + 600 - 498])
    assert {r["attribute_name"] for r in rows if r["detection_name"] == "pedestrian"} \
        == {"pedestrian.standing"}


def test_default_attributes():
    assert metrics.default_attribute("bus", 0.0) == "vehicle.stopped"
    assert metrics.default_attribute("bus", 3.0) == "vehicle.moving"
    assert metrics.default_attribute("bicycle", 0.21) == "cycle.with_rider"
    assert metrics.default_attribute("motorcycle", float("nan")) == "cycle.without_rider"
    assert metrics.default_attribute("pedestrian", 1.0) == "pedestrian.moving"
    assert metrics.default_attribute("barrier", 3.0) == ""


def test_global_round_trip_under_a_tilted_sensor():
    rng = np.random.default_rng(3)
    boxes = np.hstack([rng.uniform(-30, 30, (20, 3)), rng.uniform(0.5, 5, (20, 3)),
                       rng.uniform(-np.pi, np.pi, (20, 1)), rng.uniform(-5, 5, (20, 2))])
    tilt = Transform.from_xyz_quat((310.0, -42.0, 1.8), (0.02, -0.01, 0.4, 0.92))
    glob = frames.to_global(boxes, tilt)
    assert np.allclose(glob.size, boxes[:, [4, 3, 5]])
    assert np.allclose(np.linalg.norm(glob.rotation, axis=1), 1)
    back = frames.from_global(glob, tilt)
    np.testing.assert_allclose(back[:, :6], boxes[:, :6], atol=1e-9)
    np.testing.assert_allclose(np.cos(back[:, 6] - boxes[:, 6]), 1, atol=1e-12)
    # The velocity keeps only its ground-plane part, so it survives the trip only up to the tilt.
    np.testing.assert_allclose(back[:, 7:9], boxes[:, 7:9], atol=0.2)
    level = Transform.from_xyz_yaw((5.0, 6.0, 0.0), 0.7)
    np.testing.assert_allclose(frames.from_global(frames.to_global(boxes, level), level), boxes,
                               atol=1e-9)


def test_devkit_box_convention():
    """Spec i.1: gravity centre, size (w, l, h), rotation about +z by the yaw, velocity rotated."""
    box = np.array([[1.0, 2.0, 0.5, 4.0, 2.0, 1.5, 0.3, 1.0, 0.0]])
    pose = Transform.from_xyz_yaw((5.0, 6.0, 0.0), 0.7)
    glob = frames.to_global(box, pose)
    c, s = np.cos(0.7), np.sin(0.7)
    np.testing.assert_allclose(glob.translation, [[5 + c - 2 * s, 6 + s + 2 * c, 1.25]])
    np.testing.assert_allclose(glob.size, [[2.0, 4.0, 1.5]])
    np.testing.assert_allclose(glob.rotation, [[np.cos(0.5), 0, 0, np.sin(0.5)]])
    np.testing.assert_allclose(glob.velocity, [[c, s]])
    devkit_box = Box(glob.translation[0], glob.size[0], Quaternion(glob.rotation[0]))
    length_axis = devkit_box.corners()[:2, 0] - devkit_box.corners()[:2, 4]  # front - rear
    np.testing.assert_allclose(length_axis, 4.0 * np.array([np.cos(1.0), np.sin(1.0)]))
