"""One cloud -> detections, as the node runs it: sweep stacking, the detector, output selection.

The node (ros/node.py) and the offline replay evaluation (eval/replay.py) both go through here,
so a bag replayed offline gives the node's detections. Settings carry the node's parameter names.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .ego_motion import EgoMotion
from .selection import class_thresholds, select
from .sweeps import SweepAccumulator

if TYPE_CHECKING:
    from ..model import Detections, Detector

MODEL_BOX_BOUND = 100_000  # above any preset's nms_pre x classes


@dataclass(frozen=True)
class OutputFilter:
    """The node's live output parameters: score_threshold, class_score_thresholds (parsed),
    max_detections."""

    score_threshold: float
    class_thresholds: dict[str, float] = field(default_factory=dict)
    max_detections: int = 500


@dataclass(frozen=True)
class SweepSettings:
    """The node's fixed multi-sweep and ego-motion parameters (num_sweeps -1 = the preset's;
    sweep_max_age_s bounds the stacked sweeps' time span)."""

    num_sweeps: int = -1
    missing_ego_motion: str = "single"
    sweep_max_age_s: float = 2.5
    sweep_frame: str = "odom"
    ego_motion_source: str = "tf"
    tf_tolerance_s: float = 0.1
    tf_wait_s: float = 0.2

    def ego_motion(self) -> EgoMotion:
        return EgoMotion(self.sweep_frame, self.tf_tolerance_s, self.tf_wait_s)

    def accumulator(self, preset_sweeps: int, ego: EgoMotion | None = None) -> SweepAccumulator:
        """Sweeps compensated with ``ego``'s poses, unless ego_motion_source is 'none'."""
        return SweepAccumulator(preset_sweeps if self.num_sweeps < 0 else self.num_sweeps,
                                self.missing_ego_motion, self.sweep_max_age_s or None,
                                ego if self.ego_motion_source != "none" else None)


def detect(detector: "Detector", points: np.ndarray, out: OutputFilter) -> "Detections":
    """Run ``detector`` on stacked ``points`` and keep what ``out`` lets through."""
    thresholds = class_thresholds(detector.preset.class_names, out.score_threshold,
                                  out.class_thresholds)
    # The model caps its boxes by score over all classes; with per-class thresholds the
    # cap must come after them, so the model's cap is lifted to its candidate bound. Both go
    # with the call, not into the detector, which more than one thread may use.
    limit = MODEL_BOX_BOUND if out.class_thresholds else out.max_detections
    return select(detector(points, float(thresholds.min()), limit), thresholds, out.max_detections)
