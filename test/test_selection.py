"""Per-class thresholds and the box cap applied after the detector."""
import numpy as np

from regnet_pillars_ros.model.detections import Detections
from regnet_pillars_ros.pipeline.selection import class_thresholds, select


def test_per_class_thresholds_then_best_boxes_first():
    dets = Detections(boxes=np.arange(5 * 7, dtype=np.float32).reshape(5, 7),
                      scores=np.array([0.9, 0.35, 0.5, 0.8, 0.2], np.float32),
                      labels=np.array([0, 1, 1, 0, 1]), class_names=("car", "pedestrian"),
                      timings_ms={"total": 1.0})
    thr = class_thresholds(dets.class_names, 0.3, {"car": 0.85})
    np.testing.assert_allclose(thr, [0.85, 0.3])
    out = select(dets, thr, max_detections=2)
    np.testing.assert_allclose(out.scores, [0.9, 0.5])
    np.testing.assert_array_equal(out.labels, [0, 1])
    np.testing.assert_array_equal(out.boxes[:, 0], [0, 14])
    assert out.timings_ms == {"total": 1.0}
    assert len(select(dets, thr, max_detections=10)) == 3
