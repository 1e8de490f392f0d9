"""Statistics of the node-level benchmark (the benchmark itself is not a test)."""
import numpy as np

from regnet_pillars_ros.tools.bench_node import latency_stats, resample, table


def test_latency_stats_count_unanswered_frames_as_dropped():
    stats = latency_stats([10.0, 20.0, 30.0, 40.0], published=6)
    assert stats["dropped"] == 2 and stats["answered"] == 4
    assert stats["p50_ms"] == 25.0 and stats["max_ms"] == 40.0
    assert latency_stats([], published=3) == {"published": 3, "answered": 0, "dropped": 3}
    assert "| 2 |" in table([{"preset": "p", "points": 5, **stats}])


def test_latency_stats_split_off_the_detectors_own_time():
    stats = latency_stats([10.0, 20.0, 30.0, 40.0], published=4, detector_ms=[6.0, 8.0, 30.0])
    assert stats["detector_p50_ms"] == 8.0 and stats["rest_p50_ms"] == 17.0
    assert "detector_p50_ms" not in latency_stats([10.0], published=1)
    assert table([{"preset": "p", "points": 5, **stats}]).splitlines()[-1].endswith("| 8.0 | 17.0")


def test_resample_hits_the_point_count_either_way():
    world = np.random.default_rng(0).normal(size=(100, 3))
    assert resample(world, 40).shape == (40, 3)
    grown = resample(world, 250)
    assert grown.shape == (250, 3) and np.abs(grown).max() < np.abs(world).max() + 0.2
