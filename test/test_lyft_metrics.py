"""The Lyft mAP (lyft-dataset-sdk 0.0.8, wrapped): expected values computed by hand from the IoU
of known shifts and scalings and from the SDK's AP rule, plus the devkit glue on a hand-made
dataset."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from lyft_dataset_sdk.eval.detection.mAP_evaluation import Box3D

from regnet_pillars_ros.eval import lyft_metrics as lyft
from regnet_pillars_ros.model.detections import Detections
from regnet_pillars_ros.model.rotated_nms import rotated_iou_bev

T = lyft.IOU_THRESHOLDS
L, W, H = 4.0, 2.0, 2.0  # default box: length along the heading, width, height


def box(token="s0", xy=(0.0, 0.0), z=1.0, size=(W, L, H), yaw=0.0, name="car", score=None):
    """An SDK record: gravity centre (xy, z), size (w, l, h), heading yaw about +z."""
    record = {"sample_token": token, "translation": [xy[0], xy[1], z], "size": list(size),
              "rotation": [math.cos(yaw / 2), 0.0, 0.0, math.sin(yaw / 2)], "name": name}
    if score is not None:
        record["score"] = score
    return record


def along(distance: float, yaw: float) -> tuple[float, float]:
    return distance * math.cos(yaw), distance * math.sin(yaw)


def step_ap(iou: float, thresholds=T) -> list[float]:
    """A single matched box: AP 1 where its IoU is strictly above the threshold, else 0."""
    assert min(abs(iou - t) for t in thresholds) > 1e-3, "ambiguous test case"
    return [1.0 if iou > t else 0.0 for t in thresholds]


def test_thresholds_are_the_sdk_range():
    assert T == (0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95)


def test_ground_truth_as_predictions_scores_one():
    rng = np.random.default_rng(0)
    gt = [box(f"s{i % 3}", xy=tuple(rng.uniform(-50, 50, 2)), yaw=float(rng.uniform(-3, 3)),
              size=tuple(rng.uniform(0.5, 5, 3)), name=("car", "pedestrian", "truck")[i % 3])
          for i in range(12)]
    scores = lyft.score(gt, [{**g, "score": 0.5} for g in gt])
    assert scores.mean_ap == 1.0
    assert set(scores.class_ap) == {"car", "pedestrian", "truck"}
    assert all(ap == 1.0 for aps in scores.class_ap_at.values() for ap in aps.values())
    assert scores.unscored_classes == ()


# Hand-computed IoUs of one GT box (w 2, l 4, h 2) and one prediction:
# - shift 0.5 m along the heading: BEV (4 - 0.5) * 2, IoU = 3.5 / 4.5;
# - shift 0.4 m up: height overlap 1.6 of union 2.4 (same footprint), IoU = 1.6 / 2.4;
# - every side scaled by 1.1 about the same centre: IoU = 1 / 1.1 ** 3;
# - heading 90 degrees (the SDK's -yaw footprint is the same rectangle), 0.8 m along it: 3.2 / 4.8.
KNOWN_IOU = {
    "shift_along_heading": (dict(xy=(0.5, 0.0)), 3.5 / 4.5),
    "shift_up": (dict(z=1.4), 1.6 / 2.4),
    "scaled": (dict(size=(W * 1.1, L * 1.1, H * 1.1)), 1 / 1.1 ** 3),
    "yaw90_shift": (dict(yaw=math.pi / 2, xy=(0.0, 0.8)), 3.2 / 4.8),
}


@pytest.mark.parametrize("case", KNOWN_IOU)
def test_known_iou_gives_ap_one_below_it_and_zero_above(case):
    change, iou = KNOWN_IOU[case]
    gt_yaw = change.get("yaw", 0.0)
    scores = lyft.score([box(yaw=gt_yaw)], [box(**change, score=0.8)])
    expected = step_ap(iou)
    assert list(scores.class_ap_at["car"].values()) == expected
    assert list(scores.map_at.values()) == expected
    assert scores.mean_ap == pytest.approx(sum(expected) / len(T))


def test_iou_exactly_at_the_threshold_is_a_miss():
    # Shift 1 m along x: intersection 3 * 2 * 2 = 12, union 16 + 16 - 12 = 20, IoU exactly 0.6.
    scores = lyft.score([box()], [box(xy=(1.0, 0.0), score=0.9)], thresholds=(0.59, 0.6))
    assert scores.class_ap_at["car"] == {0.59: 1.0, 0.6: 0.0}


def test_sdk_draws_boxes_at_minus_yaw():
    # Heading 30 degrees, shift 0.5 m along it. The SDK's footprints point at -30 degrees, so
    # in their axes the shift is at 60 degrees: overlap (4 - 0.5 cos 60)(2 - 0.5 sin 60) * 2.
    yaw, d = math.radians(30), 0.5
    inter = (L - d * math.cos(2 * yaw)) * (W - d * math.sin(2 * yaw)) * H
    iou = inter / (2 * W * L * H - inter)
    assert iou == pytest.approx(0.5804, abs=1e-4)  # the true IoU would be 3.5 / 4.5
    scores = lyft.score([box(yaw=yaw)], [box(xy=along(d, yaw), yaw=yaw, score=0.7)])
    assert list(scores.class_ap_at["car"].values()) == step_ap(iou)


def test_sdk_iou_is_the_exact_iou_of_the_mirrored_footprints():
    """Cross-check on random boxes: SDK 3D IoU == project's exact rotated BEV intersection (of
    the boxes at -yaw) x height overlap over the union of the volumes."""
    rng = np.random.default_rng(1)
    n = 40
    centre = rng.uniform(-0.8, 0.8, (2, n, 3))
    size = rng.uniform(0.5, 4.0, (2, n, 3))  # w, l, h
    yaw = rng.uniform(-math.pi, math.pi, (2, n))
    bev = [torch.tensor(np.column_stack([centre[k, :, :2], size[k, :, 1], size[k, :, 0],
                                         -yaw[k]])) for k in range(2)]
    iou_bev = rotated_iou_bev(bev[0], bev[1]).diagonal().numpy()
    area = size[:, :, 0] * size[:, :, 1]
    inter_bev = iou_bev * (area[0] + area[1]) / (1 + iou_bev)
    top, bottom = centre[:, :, 2] + size[:, :, 2] / 2, centre[:, :, 2] - size[:, :, 2] / 2
    dz = np.clip(np.minimum(top[0], top[1]) - np.maximum(bottom[0], bottom[1]), 0, None)
    inter = inter_bev * dz
    expected = inter / (np.prod(size[0], axis=1) + np.prod(size[1], axis=1) - inter)
    sdk = [Box3D(**box(xy=centre[0, i, :2], z=centre[0, i, 2], size=size[0, i], yaw=yaw[0, i]))
           .get_iou(Box3D(**box(xy=centre[1, i, :2], z=centre[1, i, 2], size=size[1, i],
                                yaw=yaw[1, i]))) for i in range(n)]
    assert (expected > 0.1).sum() >= n // 3  # enough overlapping pairs to mean something
    np.testing.assert_allclose(sdk, expected, atol=1e-9)


def far_away(score: float, token="s0") -> dict:
    return box(token, xy=(50.0, 50.0), score=score)


@pytest.mark.parametrize("fp_score, ap", [(0.9, 1 / 2), (0.1, 1.0)])
def test_false_positive_above_the_true_positive_halves_ap(fp_score, ap):
    # FP first: precision 1/2 at recall 1, and the envelope carries it back to recall 0.
    scores = lyft.score([box()], [box(score=0.5), far_away(fp_score)])
    assert scores.mean_ap == pytest.approx(ap)


@pytest.mark.parametrize("order, ap", [
    ("FTT", 2 / 3),  # precisions 0, 1/2, 2/3: the envelope lifts recall 1/2 to 2/3
    ("TFT", 1 / 2 * 1 + 1 / 2 * 2 / 3),
    ("TFFT", 1 / 2 * 1 + 1 / 2 * 2 / 4),
    ("TTF", 1.0),
])
def test_ap_is_the_area_under_the_precision_envelope(order, ap):
    gt = [box(xy=(0.0, 0.0)), box(xy=(10.0, 0.0))]
    targets = iter(gt)
    predictions = [{**next(targets), "score": 1 - i / 10} if kind == "T" else far_away(1 - i / 10)
                   for i, kind in enumerate(order)]
    assert lyft.score(gt, predictions).mean_ap == pytest.approx(ap)


def test_a_prediction_never_falls_back_to_its_second_best_gt():
    # GT at x = 0 and x = 2; the second prediction at x = 0.8 overlaps the first GT with IoU
    # 3.2 / 4.8 (already taken) and the second with 2.8 / 5.2 > 0.5: still an FP.
    gt = [box(xy=(0.0, 0.0)), box(xy=(2.0, 0.0))]
    predictions = [box(xy=(0.0, 0.0), score=0.9), box(xy=(0.8, 0.0), score=0.8)]
    scores = lyft.score(gt, predictions, thresholds=(0.5,))
    assert scores.mean_ap == pytest.approx(1 / 2)  # recall 1/2 at precision 1, never more


def test_empty_predictions_score_zero():
    scores = lyft.score([box(), box(name="pedestrian", size=(0.6, 0.6, 1.7))], [])
    assert scores.mean_ap == 0.0
    assert scores.class_ap == {"car": 0.0, "pedestrian": 0.0}


def test_classes_are_those_of_the_ground_truth():
    gt = [box(), box("s1", name="pedestrian", size=(0.6, 0.6, 1.7))]
    predictions = [box(score=0.9), box("s1", name="animal", score=0.99)]
    scores = lyft.score(gt, predictions)
    # pedestrian: GT without predictions, AP 0; animal: no GT, not scored at all.
    assert scores.class_ap == {"car": 1.0, "pedestrian": 0.0}
    assert scores.mean_ap == 0.5
    assert scores.unscored_classes == ("animal",)


def test_no_ground_truth_is_an_error():
    with pytest.raises(ValueError, match="no ground truth"):
        lyft.score([], [box(score=0.5)])


class Devkit:
    """The part of a NuScenes/LyftDataset object that the glue reads: ``get`` and ``sample``."""

    def __init__(self, **tables: list[dict]) -> None:
        self.tables = {name: {r["token"]: r for r in rows} for name, rows in tables.items()}
        self.sample = tables["sample"]

    def get(self, table: str, token: str) -> dict:
        return self.tables[table][token]


def yaw_pose(token: str, xyz, yaw_deg: float) -> dict:
    half = math.radians(yaw_deg) / 2
    return {"token": token, "translation": list(xyz),
            "rotation": [math.cos(half), 0.0, 0.0, math.sin(half)]}


@pytest.fixture
def devkit() -> Devkit:
    # Ego at (100, 200, 0) heading 60 degrees, LiDAR 1 m ahead and 1.8 m up, turned 30 degrees:
    # the LiDAR's +x is global +y, its origin (100 + cos 60, 200 + sin 60, 1.8). Its car 10 m
    # ahead (bottom at LiDAR z -1.8, h 1.6) has its gravity centre at (100.5, 210.866, 0.8)
    # and heads along global +y.
    sin60 = math.sin(math.radians(60))
    annotation = {"token": "a0", "category_name": "car",
                  "translation": [100.5, 200 + sin60 + 10, 0.8], "size": [2.0, 4.0, 1.6],
                  "rotation": yaw_pose("", (0, 0, 0), 90)["rotation"]}
    return Devkit(
        sample=[{"token": "k0", "data": {"LIDAR_TOP": "sd0"}, "anns": ["a0"]},
                {"token": "k1", "data": {"LIDAR_TOP": "sd0"}, "anns": []}],
        sample_data=[{"token": "sd0", "ego_pose_token": "e0", "calibrated_sensor_token": "c0"}],
        ego_pose=[yaw_pose("e0", (100.0, 200.0, 0.0), 60)],
        calibrated_sensor=[yaw_pose("c0", (1.0, 0.0, 1.8), 30)],
        sample_annotation=[annotation])


def lidar_detections(x: float, names=("car", "pedestrian")) -> Detections:
    return Detections(boxes=np.array([[x, 0.0, -1.8, 4.0, 2.0, 1.6, 0.0]], np.float32),
                      scores=np.array([0.8], np.float32), labels=np.array([0]), class_names=names)


def test_glue_scores_lidar_frame_detections_in_the_global_frame(devkit):
    empty = Detections(np.zeros((0, 7), np.float32), np.zeros(0, np.float32),
                       np.zeros(0, np.int64), ("car",))
    perfect = lyft.evaluate(devkit, {"k0": lidar_detections(10.0), "k1": empty})
    assert perfect.mean_ap == pytest.approx(1.0)
    shifted = lyft.evaluate(devkit, {"k0": lidar_detections(10.5), "k1": empty})
    assert list(shifted.class_ap_at["car"].values()) == step_ap((4 - 0.5) / (4 + 0.5))


def test_glue_takes_global_frame_result_records(devkit):
    record = lyft.prediction_records(devkit, "k0", lidar_detections(10.0))[0]
    centre = [100.5, 200 + math.sin(math.radians(60)) + 10, 0.8]
    np.testing.assert_allclose(record["translation"], centre, atol=1e-5)
    nuscenes_style = {"sample_token": "k0", "translation": record["translation"],
                      "size": record["size"], "rotation": record["rotation"],
                      "detection_name": "car", "detection_score": 0.4, "velocity": [0.0, 0.0]}
    assert lyft.evaluate(devkit, {"k0": [nuscenes_style], "k1": []}).mean_ap == pytest.approx(1.0)
    with pytest.raises(ValueError, match="names another sample"):
        lyft.evaluate(devkit, {"k0": [], "k1": [nuscenes_style]})


def test_glue_rejects_missing_or_foreign_key_frames(devkit):
    with pytest.raises(ValueError, match="1 key frames missing"):
        lyft.evaluate(devkit, {"k0": []})
    with pytest.raises(ValueError, match="1 not among"):
        lyft.evaluate(devkit, {"k0": [], "x": []}, sample_tokens=["k0"])


def test_threshold_workers_give_the_same_scores():
    rng = np.random.default_rng(2)
    gt = [box(f"s{i % 4}", xy=tuple(rng.uniform(-8, 8, 2)), yaw=float(rng.uniform(-3, 3)))
          for i in range(16)]
    predictions = [{**g, "translation": list(np.add(g["translation"], rng.normal(0, 0.3, 3))),
                    "score": float(rng.random())} for g in gt]
    one = lyft.score(gt, predictions)
    assert 0 < one.mean_ap < 1
    assert lyft.score(gt, predictions, workers=3) == one
