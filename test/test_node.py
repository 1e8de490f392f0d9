"""detector_node in another process, over real Fast DDS (conftest.py sets domain and profile).

One node serves the whole module (starting one costs seconds); tests run in file order and the
model swap comes last. The node loads checkpoints whose head ignores its input (see
``flat_scores_checkpoint``): every class has a known score and every box is an anchor.
"""
from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy not installed (scripts/setup_env.sh)")
pytest.importorskip("vision_msgs.msg", reason="vision_msgs not generated (scripts/setup_env.sh)")

from node_probe import (  # noqa: E402
    LATCHED,
    NodeProcess,
    flat_scores_checkpoint,
    node_args,
    probe_of,
    scene,
    stamp_ns_of,
    stamp_of,
    transform,
)
from std_msgs.msg import Header  # noqa: E402
from tf2_msgs.msg import TFMessage  # noqa: E402
from vision_msgs.msg import LabelInfo  # noqa: E402
from visualization_msgs.msg import Marker  # noqa: E402

from regnet_pillars_ros.messages.cloud import read_points, to_msg  # noqa: E402
from regnet_pillars_ros.model import get_preset  # noqa: E402

NUS, LYFT = get_preset("nus-regnetx-400mf-fpn"), get_preset("lyft-secfpn")  # Lyft: the quickest
SEC = 1_000_000_000
T0 = 1000 * SEC
MAX_BOXES = 20


TOP_CLASS = {NUS.name: "car", LYFT.name: "emergency_vehicle"}  # the second is Lyft-only


def flat_scores(preset) -> dict[str, float]:
    """The top class 0.9, pedestrian 0.6, every other class below any threshold used here."""
    scores = {TOP_CLASS[preset.name]: 0.9, "pedestrian": 0.6}
    return {name: scores.get(name, 0.01) for name in preset.class_names}


@pytest.fixture(scope="module")
def ctx(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("detector_node")
    ckpt = {p.name: flat_scores_checkpoint(tmp / f"flat-{p.dataset}.pth", p.name, flat_scores(p))
            for p in (NUS, LYFT)}
    node = NodeProcess(node_args(tmp, NUS.name, checkpoint=str(ckpt[NUS.name]),
                                 max_detections=MAX_BOXES, score_threshold=0.3,
                                 num_sweeps=2,  # keeps stacked clouds small and steady
                                 tf_wait_s=3.0),  # 2 shared cores: /tf may lag the cloud
                       tmp / "node.log",
                       # A fixed mmap threshold makes glibc return every freed cloud-sized block
                       # at once, so resident memory follows live memory (the overload test
                       # compares it before and after bursts). It costs time: page faults.
                       env={"MALLOC_MMAP_THRESHOLD_": "131072"})
    with probe_of(node) as probe:
        # Poses sent before discovery matched /tf would be lost, and the sweeps stacked on the
        # first clouds would miss them (ego_motion_missing).
        probe.wait(probe.tf_pub.get_subscription_count, "the node's /tf subscription")
        yield {"probe": probe, "node": node, "ckpt": ckpt}


def class_ids(msg) -> list[str]:
    return [d.results[0].hypothesis.class_id for d in msg.detections]


def test_outputs_carry_the_input_header_and_the_box_geometry(ctx):
    probe = ctx["probe"]
    header = probe.publish_cloud(scene(), T0, frame="lidar_top")
    msg = probe.result_for(T0)
    assert msg.header == header
    assert len(msg.detections) == MAX_BOXES
    anchor_sizes = {tuple(round(s * k, 4) for s in size)
                    for size in NUS.anchors.sizes_v1 for k in NUS.anchors.scales}
    z_bottom = NUS.anchors.ranges[0][2]
    for det in msg.detections:
        assert det.header == header and det.id == ""
        hyp = det.results[0].hypothesis
        assert (hyp.class_id, hyp.score) == ("car", pytest.approx(0.9))
        size = (det.bbox.size.x, det.bbox.size.y, det.bbox.size.z)
        assert tuple(round(v, 4) for v in size) in anchor_sizes  # (l, w, h) order
        assert det.bbox.center.position.z == pytest.approx(z_bottom + size[2] / 2, abs=1e-5)
        q = det.bbox.center.orientation
        yaw = 2 * math.atan2(q.z, q.w)
        assert (q.x, q.y) == (0.0, 0.0) and q.z ** 2 + q.w ** 2 == pytest.approx(1.0)
        assert min(abs(math.remainder(yaw - r, math.pi)) for r in NUS.anchors.rotations) < 1e-4
        assert det.results[0].pose.pose == det.bbox.center
    velocity = probe.wait(lambda: [v for v in probe.velocities if v.header == header],
                          "the velocity cloud")[0]
    assert read_points(velocity, ("vx", "vy")).shape == (MAX_BOXES, 2)


def test_markers_start_with_deleteall_and_share_the_header(ctx):
    probe = ctx["probe"]
    msg = probe.wait(lambda: [m for m in probe.markers
                              if stamp_ns_of(m.markers[0].header.stamp) == T0], "markers")[0]
    assert msg.markers[0].action == Marker.DELETEALL
    boxes = [m for m in msg.markers if m.ns == "boxes/car"]
    assert len(boxes) == 1 and len(boxes[0].points) == 24 * MAX_BOXES
    assert {m.ns for m in msg.markers[1:]} == {"boxes/car", "labels", "heading", "velocity"}
    assert all(m.header.frame_id == "lidar_top" for m in msg.markers)


def test_label_info_reaches_a_late_subscriber(ctx):
    probe = ctx["probe"]
    late: list[LabelInfo] = []
    probe.node.create_subscription(LabelInfo, "/detector_node/output/label_info",
                                   late.append, LATCHED)
    info = probe.wait(lambda: late, "LabelInfo on a subscription made after it was sent")[0]
    assert [c.class_name for c in info.class_map] == list(NUS.class_names)
    assert [c.class_id for c in info.class_map] == list(range(len(NUS.class_names)))


def test_thresholds_change_live_and_bad_values_are_rejected(ctx):
    probe = ctx["probe"]
    assert probe.set_parameters(score_threshold=0.95)[0].successful
    assert probe.detect(scene(), T0 + 1 * SEC).detections == []
    probe.wait(lambda: probe.labels[-1].threshold == pytest.approx(0.95), "LabelInfo at 0.95")
    results = probe.set_parameters(score_threshold=0.3, class_score_thresholds=["car=0.95"])
    assert all(r.successful for r in results)
    assert set(class_ids(probe.detect(scene(), T0 + 2 * SEC))) == {"pedestrian"}
    assert probe.set_parameters(class_id_format="index", class_score_thresholds=[""])[0].successful
    assert set(class_ids(probe.detect(scene(), T0 + 3 * SEC))) == {"0"}
    assert probe.set_parameters(class_id_format="name")[0].successful

    for values, reason in (({"score_threshold": 1.5}, "score_threshold"),
                           ({"class_score_thresholds": ["unicorn=0.5"]}, "unicorn"),
                           ({"class_score_thresholds": ["car=high"]}, "not a number"),
                           ({"class_id_format": "uuid"}, "name, index"),
                           ({"num_sweeps": 3}, "read-only")):
        (result,) = probe.set_parameters(**values)
        assert not result.successful and reason in result.reason, (values, result.reason)
    assert probe.set_parameters(use_sim_time=False)[0].successful  # rclpy's own parameter
    assert set(class_ids(probe.detect(scene(), T0 + 4 * SEC))) == {"car"}


def bad_clouds() -> dict[str, object]:
    header = Header(stamp=stamp_of(T0 + 5 * SEC), frame_id="lidar_top")
    no_z = to_msg(header, np.zeros(10, np.dtype([("x", "<f4"), ("y", "<f4"),
                                                ("intensity", "<f4")])))
    short_step = to_msg(header, scene(100))
    short_step.point_step = 8
    zero_width = to_msg(header, scene(100))
    zero_width.width = 0
    return {"no 'z' field": no_z, "point_step 8": short_step, "0x1 points carries": zero_width}


def test_bad_clouds_are_counted_and_never_kill_the_node(ctx):
    probe = ctx["probe"]
    bad = int(probe.fresh_counters().get("clouds_bad", 0))
    for reason, msg in bad_clouds().items():
        probe.publish_raw(msg)
        bad += 1
        values = probe.wait_counter("clouds_bad", bad)
        assert reason in values["last_bad_cloud"]
    # Stamps more than sweep_max_age_s apart: no past sweep adds points to these clouds.
    empty = probe.detect(np.zeros((0, 3), np.float32), T0 + 10 * SEC)
    assert empty.detections == []
    nan = np.full((50, 3), np.nan, np.float32)
    assert probe.detect(nan, T0 + 13 * SEC).detections == []
    values = probe.wait_counter("points_nonfinite", 50)
    assert int(values["clouds_empty"]) >= 1 and values.get("frames_failed", "0") == "0"
    assert len(probe.detect(scene(), T0 + 16 * SEC).detections) == MAX_BOXES


def test_past_sweeps_are_stacked_with_ego_motion_from_tf(ctx):
    probe = ctx["probe"]
    start = T0 + 20 * SEC  # past the sweep age limit: earlier clouds no longer count
    stamps = [start + k * SEC // 10 for k in range(3)]
    probe.tf_pub.publish(TFMessage(transforms=[
        transform("odom", "base_link", s, x=0.8 * k, yaw=0.02 * k)
        for k, s in enumerate(stamps)]))
    for s in stamps:
        probe.detect(scene(), s, frame="lidar_top", with_tf=False)
    values = probe.fresh_counters()
    assert values["last_sweeps"] == "3"
    assert values.get("ego_motion_missing", "0") == "0", values.get("last_ego_motion_error")


def test_a_burst_of_ten_clouds_enters_the_sweep_history_whole(ctx):
    """Ten clouds sent at once (a driver catching up): the input queue holds them all until the
    executor takes them, where a five-deep sensor-data queue would overwrite half."""
    probe = ctx["probe"]
    before = int(probe.fresh_counters()["frames_received"])
    stamps = [T0 + 25 * SEC + k * SEC // 100 for k in range(10)]
    cloud = scene()
    # Their poses first: a frame does not wait for them (tf_wait_s) to stack the past sweep.
    probe.tf_pub.publish(TFMessage(transforms=[transform("odom", "base_link", s) for s in stamps]))
    for stamp in stamps:
        probe.publish_cloud(cloud, stamp, with_tf=False)
    probe.result_for(stamps[-1])
    assert int(probe.fresh_counters()["frames_received"]) - before == len(stamps)


def test_overload_keeps_memory_bounded_and_processes_the_newest_cloud(ctx):
    probe, node = ctx["probe"], ctx["node"]
    big = scene(60_000)
    cloud_kib = big.nbytes // 1024
    for k in range(3):  # steady state first: past sweeps kept, buffers allocated
        probe.detect(big, T0 + 30 * SEC + k * SEC // 10)

    def burst(start: int) -> tuple[list[int], dict[str, int], int]:
        """~30 Hz, far faster than inference, until the node has taken 30 clouds (on a busy
        machine best-effort DDS drops part of the stream before the node sees it, which is not
        under test); returns the stamps, the counter deltas and the growth of private memory."""
        before = probe.fresh_counters()
        rss_before = node.rss_anon_kib()

        def received() -> int:
            return (int(probe.latest_counters().get("frames_received", 0))
                    - int(before.get("frames_received", 0)))

        stamps: list[int] = []
        while len(stamps) < 600 and (len(stamps) % 30 or received() < 30):
            stamps.append(start + len(stamps) * SEC // 100)
            probe.publish_cloud(big, stamps[-1])
            time.sleep(1 / 30)
        probe.result_for(stamps[-1])
        growth = node.rss_anon_kib() - rss_before
        values = probe.fresh_counters()
        delta = {k: int(values.get(k, 0)) - int(before.get(k, 0))
                 for k in ("frames_received", "frames_processed", "frames_dropped")}
        return stamps, delta, growth

    # A first burst settles the heap: the node's allocator keeps freed frame buffers, and how
    # clouds and tensors interleave in it may add up to about one frame's working set, once.
    burst(T0 + 31 * SEC)
    stamps, delta, rss_growth_kib = burst(T0 + 38 * SEC)
    with probe._lock:
        answered = [m for m in probe.objects if stamp_ns_of(m.header.stamp) in stamps]
    assert delta["frames_received"] >= 30, f"DDS delivered only {delta}: nothing to judge"
    assert delta["frames_dropped"] > 0 and len(answered) < len(stamps)
    assert delta["frames_processed"] + delta["frames_dropped"] == delta["frames_received"]
    backlog_kib = delta["frames_received"] * cloud_kib  # had every received cloud been kept
    assert rss_growth_kib < backlog_kib / 2, f"grew {rss_growth_kib} KiB, backlog {backlog_kib}"


def test_a_failed_swap_keeps_the_old_model_serving(ctx):
    probe = ctx["probe"]
    (result,) = probe.set_parameters(checkpoint="/nonexistent/model.pth")
    assert not result.successful and "no such file" in result.reason  # checked before loading
    statuses = len(probe.model_status)
    wrong = probe.set_parameters(atomically=True, preset=LYFT.name,
                                 checkpoint=str(ctx["ckpt"][NUS.name]))
    assert wrong.successful  # accepted: the load in the background finds out
    failed = probe.status("failed", statuses)
    assert "does not fit" in failed and f"still serving {NUS.name}" in failed
    probe.wait_parameters(preset=NUS.name, checkpoint=str(ctx["ckpt"][NUS.name]))
    assert set(class_ids(probe.detect(scene(), T0 + 46 * SEC))) == {"car"}
    values = probe.fresh_counters()
    assert values["preset"] == NUS.name and values["model_swaps_failed"] == "1"


def test_a_swap_under_a_stream_loses_no_frame_and_switches_the_class_set(ctx):
    probe = ctx["probe"]
    results: dict[int, list[str]] = {}
    swapped = threading.Event()
    after_swap: list[int] = []
    errors: list[BaseException] = []

    def stream() -> None:  # each cloud waits for its answer: a lost frame fails the wait
        try:
            k = 0
            while len(after_swap) < 2:
                stamp = T0 + 50 * SEC + k * SEC // 10
                if swapped.is_set():
                    after_swap.append(stamp)
                results[stamp] = class_ids(probe.detect(scene(), stamp))
                k += 1
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)
            swapped.set()

    streamer = threading.Thread(target=stream)
    streamer.start()
    probe.wait(lambda: results or errors, "a first frame of the stream")
    labels_before, statuses = len(probe.labels), len(probe.model_status)
    swap = probe.set_parameters(atomically=True, preset=LYFT.name,
                                checkpoint=str(ctx["ckpt"][LYFT.name]))
    probe.status("ready", statuses)  # the swap loads in the background
    swapped.set()
    streamer.join()
    assert not errors, errors
    assert swap.successful, swap.reason
    # A frame in flight during the switch may see either model, never a mix of both.
    before = [set(ids) for stamp, ids in sorted(results.items()) if stamp not in after_swap]
    assert before[0] == {"car"} and all(ids in ({"car"}, {"emergency_vehicle"}) for ids in before)
    assert all(set(results[stamp]) == {"emergency_vehicle"} for stamp in after_swap)
    info = probe.wait(lambda: probe.labels[labels_before:], "LabelInfo after the swap")[-1]
    assert [c.class_name for c in info.class_map] == list(LYFT.class_names)
    values = probe.fresh_counters()
    assert values["preset"] == LYFT.name and values.get("frames_failed", "0") == "0"
    assert values["model_swaps"] == "1"


def test_console_entry_passes_files_then_the_preset_then_the_ros_arguments():
    from regnet_pillars_ros.ros.command_line import ros_arguments

    args = ros_arguments(["--preset", "lyft-fpn", "--params-file", "/tmp/x.yaml",
                          "--ros-args", "-p", "device:=cpu"])
    assert args == ["--ros-args", "--params-file", "/tmp/x.yaml", "-p", "preset:=lyft-fpn",
                    "-p", "device:=cpu"]
    assert ros_arguments([]) == []  # no YAML: the node derives its defaults from the preset


def test_a_node_that_cannot_load_its_model_exits_with_the_reason(tmp_path):
    node = NodeProcess(node_args(tmp_path, NUS.name, checkpoint="/nonexistent/model.pth"),
                       tmp_path / "node.log")
    try:
        assert node.proc.wait(timeout=120) == 1
    finally:
        node.stop()
    assert "could not start: CheckpointError" in node.log.read_text()
    assert "no such file" in node.log.read_text()
