"""The node's model server without ROS: generations, background swaps and their outcomes.

Real models (the flat-score checkpoints of node_probe) load on the server's loader thread.
"""
from __future__ import annotations

import threading

import pytest
from node_probe import WAIT_S, flat_scores_checkpoint

from regnet_pillars_ros.model import get_preset
from regnet_pillars_ros.ros.params import PARAMS
from regnet_pillars_ros.ros.serving import (
    Generation,
    LoadOptions,
    ModelKey,
    ModelServer,
    Outcome,
    split_by_class,
)

NUS, LYFT = get_preset("nus-regnetx-400mf-fpn"), get_preset("lyft-secfpn")  # Lyft: the quickest
LIVE = {p.name: p.default for p in PARAMS if not p.read_only and not callable(p.default)}
LIVE["max_detections"] = 50


class Recorder:
    """The two callbacks of a server: the generations it committed and the outcomes it reported."""

    def __init__(self) -> None:
        self.generations: list[Generation] = []
        self.outcomes: list[Outcome] = []
        self._changed = threading.Condition()

    def commit(self, gen: Generation) -> None:
        self.generations.append(gen)

    def outcome(self, outcome: Outcome) -> None:
        with self._changed:
            self.outcomes.append(outcome)
            self._changed.notify_all()

    def wait_for(self, state: str) -> Outcome:
        with self._changed:
            assert self._changed.wait_for(
                lambda: any(o.state == state for o in self.outcomes), WAIT_S), self.outcomes
            return next(o for o in self.outcomes if o.state == state)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("serving")
    return {p.name: str(flat_scores_checkpoint(tmp / f"{p.dataset}.pth", p.name,
                                               {n: 0.5 for n in p.class_names}))
            for p in (NUS, LYFT)}


@pytest.fixture
def served(checkpoints):
    recorder = Recorder()
    server = ModelServer(LoadOptions(device="cpu"), ModelKey(NUS.name, checkpoints[NUS.name]),
                         LIVE, recorder.commit, recorder.outcome)
    yield server, recorder
    server.close()


def test_live_changes_make_a_new_generation_of_the_same_model(served):
    server, recorder = served
    first = server.current
    assert recorder.generations == [first] and first.number == 0
    server.change({"score_threshold": 0.6, "class_score_thresholds": ["car=0.7"]})
    second = server.current
    assert (second.number, second.detector) == (1, first.detector)
    assert second.output_filter.score_threshold == 0.6
    assert second.output_filter.class_thresholds == {"car": 0.7}
    server.change({"score_threshold": 0.6})  # nothing changed: no new generation
    assert server.current is second and recorder.generations == [first, second]


def test_a_frame_of_a_replaced_generation_is_not_published(served, checkpoints):
    server, recorder = served
    old = server.current
    server.change({"preset": LYFT.name, "checkpoint": checkpoints[LYFT.name]})
    assert server.current is old  # the request returns before the load
    ready = recorder.wait_for("ready")
    assert ready.key == ModelKey(LYFT.name, checkpoints[LYFT.name])
    assert server.current.class_names == LYFT.class_names
    assert recorder.generations[-1] is server.current
    published = []
    assert not server.publish_if_current(old, lambda: published.append("old"))
    assert server.publish_if_current(server.current, lambda: published.append("new"))
    assert published == ["new"]


def test_thresholds_are_checked_against_the_requested_model_and_dropped_on_a_swap(served,
                                                                                  checkpoints):
    server, recorder = served
    with pytest.raises(ValueError, match=f"emergency_vehicle=0.2 not a class of {NUS.name}"):
        server.change({"class_score_thresholds": ["emergency_vehicle=0.2"]})
    server.change({"class_score_thresholds": ["traffic_cone=0.2", "car=0.4"]})
    # The same entries, given with a request for a Lyft model: traffic_cone is not a Lyft class.
    with pytest.raises(ValueError, match="traffic_cone=0.2 not a class of lyft"):
        server.change({"preset": LYFT.name, "checkpoint": checkpoints[LYFT.name],
                       "class_score_thresholds": ["traffic_cone=0.2", "car=0.4"]})
    server.change({"preset": LYFT.name, "checkpoint": checkpoints[LYFT.name]})
    ready = recorder.wait_for("ready")
    assert "class_score_thresholds traffic_cone=0.2 dropped" in ready.detail
    assert server.current.live["class_score_thresholds"] == ["car=0.4"]


def test_a_failed_swap_keeps_the_serving_model_and_falls_back_to_it(served, checkpoints):
    server, recorder = served
    serving = server.current
    with pytest.raises(ValueError, match="no such file"):
        server.change({"checkpoint": "/nonexistent/model.pth"})
    # The file exists but holds a nuScenes model: found out only when loading.
    server.change({"preset": LYFT.name})
    failed = recorder.wait_for("failed")
    assert failed.key == ModelKey(LYFT.name, checkpoints[NUS.name])
    assert "does not fit" in failed.detail and f"still serving {serving.key}" in failed.detail
    assert server.current is serving
    server.change({"score_threshold": 0.5})  # the request fell back: a change applies as usual
    assert server.current.key == serving.key and server.current.number == serving.number + 1


def test_split_by_class_keeps_blank_entries_and_known_classes():
    kept, dropped = split_by_class(["", "car = 0.3", "unicorn=0.1"], NUS.class_names)
    assert kept == ["", "car = 0.3"] and dropped == ["unicorn=0.1"]
