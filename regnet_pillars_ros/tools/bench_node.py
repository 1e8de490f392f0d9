"""Node-level latency benchmark (not a test): cloud published -> Detection3DArray received, in
another process over real DDS, per preset and point count, with dropped frames, next to the
detector's own time per frame (the node's ~/debug/processing_time/total_ms): the difference is
what transport, cloud conversion, sweep stacking and message building add.

Clouds come from the demo's moving scene (real nuScenes geometry, resampled to the point
count) with /tf, so the node stacks its preset's past sweeps as in service.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..ros.params import DEFAULT_PRESET
from .demo import Player, moving_scene, ros_environment, start_node, stop_node, world_points

INPUT_FRAME = "lidar_top"
TIMING_TOPIC = "/detector_node/debug/processing_time/total_ms"


def latency_stats(latencies_ms: list[float], published: int,
                  detector_ms: Sequence[float] = ()) -> dict[str, float | int]:
    """p50/p90/p99/max of the answered frames, how many frames got no answer, and the median of
    the detector's own frame times with what the rest of the path added to the p50."""
    out: dict[str, float | int] = {"published": published, "answered": len(latencies_ms),
                                   "dropped": published - len(latencies_ms)}
    if latencies_ms:
        p50, p90, p99 = np.percentile(latencies_ms, [50, 90, 99])
        out.update(p50_ms=round(float(p50), 1), p90_ms=round(float(p90), 1),
                   p99_ms=round(float(p99), 1), max_ms=round(max(latencies_ms), 1))
    if latencies_ms and len(detector_ms):
        detector = float(np.median(detector_ms))
        out.update(detector_p50_ms=round(detector, 1),
                   rest_p50_ms=round(out["p50_ms"] - detector, 1))
    return out


def resample(world: np.ndarray, n: int, seed: int = 0) -> np.ndarray:
    """``n`` points of the world (with replacement and 2 cm jitter when growing it)."""
    rng = np.random.default_rng(seed)
    idx = rng.choice(len(world), n, replace=n > len(world))
    return world[idx] + (rng.normal(0, 0.02, (n, 3)) if n > len(world) else 0.0)


def run_stream(player: Player, node, world: np.ndarray, frames: int, rate_hz: float
               ) -> tuple[list[float], list[float]]:
    """Publish ``frames`` clouds at ``rate_hz`` (the sensor does not wait for the node);
    returns the latencies of the answered ones and the detector's times it reported."""
    from std_msgs.msg import Float64

    detector_ms: list[float] = []
    timing = player.node.create_subscription(Float64, TIMING_TOPIC,
                                             lambda m: detector_ms.append(m.data), 100)
    try:
        latencies = _stream(player, node, world, frames, rate_hz)
        # Each frame's timing follows its detections: wait briefly for the last ones.
        deadline = time.monotonic() + 2.0
        player.spin_until(
            lambda: len(detector_ms) >= len(latencies) or time.monotonic() > deadline, node)
    finally:
        player.node.destroy_subscription(timing)
    return latencies, detector_ms


def _stream(player: Player, node, world: np.ndarray, frames: int, rate_hz: float) -> list[float]:
    from std_msgs.msg import Header
    from tf2_msgs.msg import TFMessage

    from ..messages.cloud import to_msg
    from .demo import LIDAR_IN_BASE, transform_msg

    player.pubs["/tf_static"].publish(TFMessage(transforms=[
        transform_msg("base_link", INPUT_FRAME, 0, LIDAR_IN_BASE)]))
    scene = moving_scene(world, frames, rate_hz, time.time_ns())
    sent: dict[int, float] = {}
    start = time.monotonic()
    for k, f in enumerate(scene):
        player.spin_until(lambda: time.monotonic() >= start + k / rate_hz, node)
        header = Header(frame_id=INPUT_FRAME)
        header.stamp.sec, header.stamp.nanosec = divmod(f.stamp_ns, 1_000_000_000)
        msg = to_msg(header, f.points)  # built before the clock starts: the sensor's cost
        player.pubs["/tf"].publish(TFMessage(transforms=[
            transform_msg("odom", "base_link", f.stamp_ns, f.base_in_odom)]))
        sent[f.stamp_ns] = time.monotonic()
        player.pubs["/points"].publish(msg)
    player.spin_until(lambda: scene[-1].stamp_ns in player.results, node)
    return [(player.results[s][1] - t) * 1e3 for s, t in sent.items() if s in player.results]


def table(rows: list[dict]) -> str:
    cols = ("preset", "points", "published", "dropped", "p50_ms", "p90_ms", "p99_ms", "max_ms",
            "detector_p50_ms", "rest_p50_ms")
    lines = [" | ".join(cols), " | ".join("---" for _ in cols)]
    lines += [" | ".join(str(r.get(c, "-")) for c in cols) for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="regnet-pillars bench-node", description=__doc__)
    parser.add_argument("--presets", nargs="+", default=[DEFAULT_PRESET])
    parser.add_argument("--points", nargs="+", type=int, default=[20_000, 60_000])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--rate", type=float, default=10.0, help="cloud rate (Hz)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=Path("results/bench_node.json"))
    parser.add_argument("--timeout", type=float, default=300.0)
    args = parser.parse_args(argv)

    ros_environment()
    world, source = world_points(Path(__file__).resolve().parents[2])
    player = Player(args.timeout)
    rows = []
    try:
        for preset in args.presets:
            node = start_node(preset, {"device": args.device})
            try:
                if not player.wait_ready(node):
                    print(f"error: detector_node with {preset} did not start", file=sys.stderr)
                    return 1
                for n in args.points:
                    player.results.clear()
                    latencies, detector_ms = run_stream(player, node, resample(world, n),
                                                        args.frames, args.rate)
                    rows.append({"preset": preset, "points": n,
                                 **latency_stats(latencies, args.frames, detector_ms)})
                    print(table(rows[-1:]).splitlines()[-1], flush=True)
            finally:
                stop_node(node)
    finally:
        player.close()
    report = {"what": "cloud published -> Detection3DArray received (other process, DDS)",
              "scene": source, "rate_hz": args.rate, "device": args.device,
              "host": platform.node(), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(table(rows))
    print(f"written: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
