"""The Lyft 3D detection metric: lyft-dataset-sdk 0.0.8's mAP over 3D IoU 0.5:0.05:0.95.

`score` runs the SDK's own ``lyft_dataset_sdk.eval.detection.mAP_evaluation`` (pinned in
requirements.txt) once per IoU threshold and averages, as the Lyft challenge did; nothing of the
metric is reimplemented here. What the SDK does, so the numbers can be read:

- a box is {sample_token, translation (gravity centre), size (w, l, h), rotation (w, x, y, z),
  name[, score]} in the global frame; 3D IoU = BEV polygon intersection x height overlap over the
  union of the volumes;
- per class, predictions in descending score order (stable on ties) each take the GT box of their
  sample with the highest IoU: a TP when that IoU is strictly above the threshold and the box is
  still free, otherwise an FP (a prediction never falls back to its second-best GT box);
- AP = area under the PR curve with the precision envelope (VOC 2010+ style, no 11-point
  sampling), with recall sentinels 0 and 1 at precision 0;
- the classes are the names present in the ground truth: a GT class without predictions scores
  AP 0, predictions of a class without GT are not scored (`LyftScores.unscored_classes`).
- SDK quirk, kept because it is the official number: its BEV footprint takes sin(yaw) from
  ``rotation_matrix[0, 1]`` (= -sin yaw), i.e. every box is drawn at -yaw about its own centre.
  Same-centre or 90-degree-multiple cases are unaffected; offset boxes at other headings overlap
  as if the offset were mirrored relative to the box axes.

`evaluate` is the glue for the eval command: per-sample detections (project `Detections` in the
key LiDAR frame, converted to the global frame like the nuScenes results, or devkit result
records already in the global frame) and the GT of a devkit-layout dataset in, `LyftScores` out.
"""
from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Union

import numpy as np
from lyft_dataset_sdk.eval.detection import mAP_evaluation as sdk

from .nuscenes_frames import key_lidar_poses, to_global

if TYPE_CHECKING:
    from ..model.detections import Detections

IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))
Record = dict
SampleDetections = Union["Detections", Sequence[Mapping]]


@dataclass(frozen=True)
class LyftScores:
    """mAP (mean over thresholds of the mean over classes), the mean over classes per threshold,
    per-class AP (mean over thresholds, and per threshold), and the predicted names that the SDK
    leaves unscored because the ground truth has none."""

    mean_ap: float
    map_at: dict[float, float]
    class_ap: dict[str, float]
    class_ap_at: dict[str, dict[float, float]]
    unscored_classes: tuple[str, ...]


def score(gt: Sequence[Mapping], predictions: Sequence[Mapping],
          thresholds: Iterable[float] = IOU_THRESHOLDS, workers: int = 1) -> LyftScores:
    """Score SDK-shaped prediction records against SDK-shaped GT records. The SDK redoes every
    (shapely) IoU per threshold; ``workers`` > 1 scores the thresholds in that many forked
    processes (the children run only the SDK: shapely and numpy, no torch or CUDA)."""
    gt, predictions = list(gt), list(predictions)
    classes = sdk.get_class_names(gt)
    if not classes:
        raise ValueError("no ground truth boxes: the Lyft mAP is undefined")
    thresholds = tuple(float(t) for t in thresholds)
    args = ([gt] * len(thresholds), [predictions] * len(thresholds), [classes] * len(thresholds),
            thresholds)
    if workers > 1:
        with ProcessPoolExecutor(min(workers, len(thresholds)),
                                 mp_context=multiprocessing.get_context("fork")) as pool:
            aps = np.array(list(pool.map(sdk.get_average_precisions, *args)))
    else:
        aps = np.array(list(map(sdk.get_average_precisions, *args)))
    return LyftScores(
        mean_ap=float(aps.mean()),
        map_at={t: float(row.mean()) for t, row in zip(thresholds, aps)},
        class_ap={c: float(aps[:, i].mean()) for i, c in enumerate(classes)},
        class_ap_at={c: {t: float(a) for t, a in zip(thresholds, aps[:, i])}
                     for i, c in enumerate(classes)},
        unscored_classes=tuple(sorted({p["name"] for p in predictions} - set(classes))))


def prediction_records(nusc, sample_token: str, detections: "Detections") -> list[Record]:
    """One key frame's detections (key LiDAR frame) as SDK prediction records, global frame."""
    if len(detections.boxes) == 0:
        return []
    global_ego, ego_sensor = key_lidar_poses(nusc, sample_token)
    glob = to_global(np.asarray(detections.boxes, np.float64), global_ego @ ego_sensor)
    return [{"sample_token": sample_token, "translation": glob.translation[i].tolist(),
             "size": glob.size[i].tolist(), "rotation": glob.rotation[i].tolist(),
             "name": detections.class_names[int(label)], "score": float(detections.scores[i])}
            for i, label in enumerate(detections.labels)]


def sdk_record(record: Mapping) -> Record:
    """A devkit result record (``detection_name``/``detection_score`` as nuScenes results name
    them, or ``name``/``score``) as an SDK prediction record."""
    return {"sample_token": record["sample_token"], "translation": list(record["translation"]),
            "size": list(record["size"]), "rotation": list(record["rotation"]),
            "name": record.get("name", record.get("detection_name")),
            "score": float(record.get("score", record.get("detection_score")))}


def gt_records(nusc, sample_tokens: Iterable[str],
               class_of: Callable[[str], str | None] = lambda category: category) -> list[Record]:
    """The annotations of the key frames as SDK GT records. ``class_of`` maps a category name to
    its detection class (None drops the box); Lyft's categories are its classes already."""
    records = []
    for token in sample_tokens:
        for ann in (nusc.get("sample_annotation", a) for a in nusc.get("sample", token)["anns"]):
            name = class_of(ann["category_name"])
            if name is not None:
                records.append({"sample_token": token, "translation": list(ann["translation"]),
                                "size": list(ann["size"]), "rotation": list(ann["rotation"]),
                                "name": name})
    return records


def evaluate(nusc, detections: Mapping[str, SampleDetections],
             sample_tokens: Sequence[str] | None = None,
             class_of: Callable[[str], str | None] = lambda category: category,
             thresholds: Iterable[float] = IOU_THRESHOLDS, workers: int = 1) -> LyftScores:
    """Score per-sample detections against a devkit dataset (``nusc``: a NuScenes/LyftDataset-like
    object with ``get`` and ``sample``). ``sample_tokens`` (default: every sample) are the key
    frames scored; a missing or foreign token is an error, as for the nuScenes results."""
    if sample_tokens is None:
        sample_tokens = [sample["token"] for sample in nusc.sample]
    expected = list(sample_tokens)
    missing = sorted(set(expected) - set(detections))
    foreign = sorted(set(detections) - set(expected))
    if missing or foreign:
        raise ValueError(f"detections: {len(missing)} key frames missing {missing[:3]}, "
                         f"{len(foreign)} not among the scored frames {foreign[:3]}")
    predictions = []
    for token in expected:
        frame = detections[token]
        records = (prediction_records(nusc, token, frame) if hasattr(frame, "boxes")
                   else [sdk_record(r) for r in frame])
        if any(r["sample_token"] != token for r in records):
            raise ValueError(f"a record listed under key frame {token!r} names another sample")
        predictions += records
    return score(gt_records(nusc, expected, class_of), predictions, thresholds, workers)
