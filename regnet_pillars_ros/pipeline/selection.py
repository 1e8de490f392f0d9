"""Output selection after the detector: per-class score thresholds and a box cap."""
from __future__ import annotations

import dataclasses

import numpy as np

from ..model.detections import Detections


def class_thresholds(class_names: tuple[str, ...], default: float,
                     overrides: dict[str, float]) -> np.ndarray:
    """float32 [K]: each class's minimum score (``overrides`` by name, else ``default``)."""
    return np.array([overrides.get(name, default) for name in class_names], np.float32)


def select(dets: Detections, thresholds: np.ndarray, max_detections: int) -> Detections:
    """Boxes scoring at least their class's threshold, the ``max_detections`` best first."""
    keep = np.flatnonzero(dets.scores >= thresholds[dets.labels])
    keep = keep[np.argsort(-dets.scores[keep], kind="stable")[:max_detections]]
    return dataclasses.replace(dets, boxes=dets.boxes[keep], scores=dets.scores[keep],
                               labels=dets.labels[keep])
