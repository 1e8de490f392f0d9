"""Frame counters of the node and their /diagnostics report."""
from __future__ import annotations

import threading
from collections import Counter
from typing import TYPE_CHECKING

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue

if TYPE_CHECKING:
    from ..model import Detections

# Counters that make the status WARN when they grew since the last report, and what they mean.
WARN_WHEN_GROWING = {
    "frames_dropped": "frames dropped (inference slower than the sensor)",
    "clouds_bad": "bad clouds",
    "frames_failed": "frames failed",
    "tf_failures": "target_frame transform failures",
    "ego_motion_missing": "ego motion missing (sweeps not compensated)",
    "pillar_overflow_frames": "pillar overflow",
    "over_budget": "processing time over processing_budget_ms",
    "model_swaps_failed": "model swap failed",
}


class Health:
    """Thread-safe counters and last values; ``report`` compares with the previous report."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._reported: Counter[str] = Counter()
        self._values: dict[str, str] = {}

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def set(self, **values: object) -> None:
        with self._lock:
            self._values.update({k: str(v) for k, v in values.items()})

    def count_frame(self, dets: "Detections", sweeps: int, max_lag_s: float,
                    budget_ms: float) -> None:
        """Count a processed frame and keep its figures; over budget only with a budget > 0."""
        self.count("frames_processed")
        self.count("points_nonfinite", dets.stats.get("points_nonfinite", 0))
        if dets.stats.get("pillar_overflow", 0):
            self.count("pillar_overflow_frames")
        total = dets.timings_ms.get("total", 0.0)
        if 0 < budget_ms < total:
            self.count("over_budget")
        self.set(last_sweeps=sweeps, last_sweep_max_lag_s=f"{max_lag_s:.3f}", last_boxes=len(dets),
                 last_total_ms=f"{total:.1f}", last_pillars=dets.stats.get("pillars", 0))

    def counts(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def report(self, name: str, hardware_id: str) -> DiagnosticArray:
        """One DiagnosticStatus: WARN naming what grew since the last report, else OK."""
        with self._lock:
            grown = [text for key, text in WARN_WHEN_GROWING.items()
                     if self._counts[key] > self._reported[key]]
            self._reported = Counter(self._counts)
            values = {**{k: str(v) for k, v in sorted(self._counts.items())}, **self._values}
        status = DiagnosticStatus(
            level=DiagnosticStatus.WARN if grown else DiagnosticStatus.OK, name=name,
            hardware_id=hardware_id, message="; ".join(grown) if grown else "ok",
            values=[KeyValue(key=k, value=v) for k, v in values.items()])
        return DiagnosticArray(status=[status])
