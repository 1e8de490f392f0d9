"""Detector input handling: layouts, bad values, empty clouds, clear errors."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from shared_data import MMDET3D_FIXTURES, require

from regnet_pillars_ros.model import Detector
from regnet_pillars_ros.model.detector import as_model_points, resolve_device, usable_points
from regnet_pillars_ros.runtime.factory import build_detector

FIXTURE = MMDET3D_FIXTURES / "nus-regnetx-400mf-secfpn-s11"


@pytest.fixture(scope="module")
def detector() -> Detector:
    return build_detector("nus-regnetx-400mf-secfpn", require(FIXTURE) / "checkpoint.pth")


@pytest.fixture(scope="module")
def points() -> np.ndarray:
    return np.load(require(FIXTURE) / "points.npy")


@pytest.mark.kernels
def test_five_and_four_column_inputs_agree(detector, points):
    five = detector(points)
    four = detector(points[:, [0, 1, 2, 4]])
    np.testing.assert_array_equal(five.boxes, four.boxes)
    assert five.stats["points_in"] == len(points)


def test_nan_and_inf_rows_are_dropped_and_counted(detector, points):
    clean = detector(points)
    dirty_points = np.concatenate([points, np.array([[np.nan, 0, 0, 0, 0], [0, np.inf, 0, 0, 0],
                                                     [1, 2, 3, 4, -np.inf]], np.float32)])
    dirty = detector(dirty_points)
    assert dirty.stats["points_nonfinite"] == 3 and dirty.stats["points_in"] == len(points) + 3
    np.testing.assert_array_equal(clean.boxes, dirty.boxes)
    assert np.isfinite(dirty.boxes).all()


def test_float64_input_equals_float32(detector, points):
    np.testing.assert_array_equal(detector(points.astype(np.float64)).boxes, detector(points).boxes)


@pytest.mark.parametrize("cloud", [np.zeros((0, 4), np.float32),
                                   np.full((10, 4), np.nan, np.float32),
                                   np.full((7, 5), 500.0, np.float32)])
def test_empty_or_out_of_range_cloud_gives_no_boxes(detector, cloud):
    out = detector(cloud)
    assert len(out) == 0 and out.boxes.shape == (0, 9) and out.labels.dtype == np.int64
    assert "total" in out.timings_ms


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.zeros((10, 3), np.float32), r"\[N, 4\] \(x, y, z, dt\) or \[N, 5\]"),
        (np.zeros((10,), np.float32), "got shape"),
        (np.zeros((10, 4), np.int32), "float32 or float64"),
        (np.zeros((2, 4, 4), np.float32), "got shape"),
    ],
)
def test_wrong_shape_or_dtype_raises_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        as_model_points(bad)


def test_usable_points_are_finite_rows_strictly_inside_the_range_in_order():
    inf, nan = float("inf"), float("nan")
    pts = torch.tensor([[-50.0, 0, 0, 0], [-49.99, 0, 0, 0], [0, 50.0, 0, 0], [0, 0, 3.0, 0],
                        [0, 0, -4.99, 0],
                        [nan, 0, 0, 0], [1, 1, 1, inf], [2, 2, 2, 0.5]])
    kept, nonfinite = usable_points(pts, (-50, -50, -5, 50, 50, 3))
    torch.testing.assert_close(kept, pts[[1, 4, 7]])
    assert int(nonfinite) == 2
    five = torch.cat((pts[:, :3], torch.full((len(pts), 1), 9.0), pts[:, 3:]), dim=1).double()
    kept5, nonfinite5 = usable_points(five, (-50, -50, -5, 50, 50, 3))  # intensity column dropped
    assert kept5.dtype == torch.float32 and int(nonfinite5) == 2
    torch.testing.assert_close(kept5, kept)


def test_cuda_without_gpu_says_so():
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"


def test_thresholds_change_between_calls(points):
    """Threshold and box limit go with each call; the detector keeps its preset's defaults."""
    detector = build_detector("nus-regnetx-400mf-secfpn", FIXTURE / "checkpoint.pth")
    full = detector(points)
    high = detector(points, score_threshold=0.3)
    assert 0 < len(high) < len(full) and (high.scores > 0.3).all()
    top = detector(points, score_threshold=0.05, max_detections=5)
    np.testing.assert_allclose(np.sort(top.scores)[::-1], np.sort(full.scores)[::-1][:5])
    assert len(detector(points)) == len(full)


def test_detections_accessors(detector, points):
    out = detector(points)
    centres = out.gravity_centers()
    np.testing.assert_allclose(centres[:, 2], out.boxes[:, 2] + out.boxes[:, 5] / 2)
    assert out.velocities.shape == (len(out), 2)
    assert out.names()[0] in detector.preset.class_names
    assert set(out.timings_ms) >= {"preprocess", "inference", "postprocess", "total"}
    assert out.stats["pillars"] == 34958
