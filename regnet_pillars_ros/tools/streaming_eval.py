"""``regnet-pillars eval BAGS --streaming``: score, at each key frame, the newest output the
detector had published by then (streaming perception, Li, Wang and Ramanan, ECCV 2020).

Simulated (default): the offline replay runs first (the offline scores, and the detector's
median frame time on this machine for ``--latency-ms measured``); then, for each frame time, the
node's latest-only scheduling decides which clouds run and when each output is published (input
stamp + wait in the slot + frame time, on the bag's clock), the detector runs on the clouds whose
outputs key frames take (`eval.streaming_replay`), and each key frame gets the newest output
moved into its LiDAR frame with the bag's /tf, forecast by velocity or not. Deterministic for
given frame times.

Live (``--live --streaming``): the node's own outputs, each published at its input stamp plus
its latency x the playback rate on the bag's clock, beside the simulated runs at the measured
frame time (x the rate), which run first.

Output: the offline report in OUT/ with a streaming section (offline and streaming side by side,
ages of the outputs used, clouds skipped, the score against the frame time as
``streaming_latency.png``), OUT/streaming.json, and per run OUT/streaming/<frame time>-<forecast>/
(results_nusc.json or metrics_lyft.json, the devkit's metric files, frames.json with each key
frame's output age).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
from pathlib import Path

import numpy as np

from ..eval.replay import FrameResult, ReplayConfig, replay_scene, replay_scenes, scene_bags
from ..eval.scoring import frame_records, merge, write_frames
from ..eval.shard import world
from ..eval.streaming import FORECASTS, schedule
from ..eval.streaming_replay import (
    SceneTimeline,
    needed_clouds,
    read_timeline,
    scheduled_outputs,
    stream_scene,
)
from ..eval.streaming_report import StreamingRun, headline, streaming_blocks, summary_record
from ..model import Detector, get_preset

MEASURED = "measured"
NS_PER_MS = 1_000_000


def parse_frame_times(text: str) -> list[float | str]:
    """``--latency-ms``: comma-separated frame times in ms, or 'measured'."""
    values: list[float | str] = []
    for part in (p.strip() for p in text.split(",")):
        if part == MEASURED:
            values.append(MEASURED)
            continue
        try:
            value = float(part)
        except ValueError:
            value = -1.0
        if not (0.0 <= value < float("inf")):
            raise ValueError(f"--latency-ms: '{part}' is neither a frame time in ms (>= 0) nor "
                             f"'{MEASURED}'")
        values.append(value)
    return values


def forecasts(args: argparse.Namespace) -> tuple[str, ...]:
    """The forecasts to run: --forecast, 'both' = none and velocity (velocity needs vx, vy)."""
    velocity = get_preset(args.preset).dataset == "nuscenes"
    if args.forecast == "both":
        return FORECASTS if velocity else ("none",)
    if args.forecast == "velocity" and not velocity:
        raise ValueError(f"--forecast velocity: {args.preset} predicts no velocities (Lyft)")
    return (args.forecast,)


def median_frame_ms(frames: list[FrameResult]) -> float:
    """The detector's median frame time over the offline replay's key frames, to 0.1 ms."""
    times = [f.latency_ms for f in frames if f.latency_ms is not None]
    if not times:
        raise ValueError("--latency-ms measured: no key frame ran offline")
    return round(float(np.median(times)), 1)


def simulated_runs(timelines: list[SceneTimeline], detector: Detector, config: ReplayConfig,
                   offline: list[FrameResult], frame_times_ms: list[float],
                   forecast_names: tuple[str, ...]) -> list[StreamingRun]:
    """Every (frame time, forecast) run over the scenes; the detector runs once per needed
    cloud (the offline key frames are reused)."""
    ran = {(f.key.scene, f.key.stamp_ns): f for f in offline}
    plans = {(t.scene, ms): schedule(t.arrivals_ns, round(ms * NS_PER_MS))
             for t in timelines for ms in frame_times_ms}
    for timeline in timelines:
        needed = set().union(*(needed_clouds(timeline, plans[timeline.scene, ms])
                               for ms in frame_times_ms))
        needed -= {stamp for scene, stamp in ran if scene == timeline.scene}
        if needed:
            for result in replay_scene(timeline.bag, detector, config, run_at=needed):
                ran[timeline.scene, result.key.stamp_ns] = result
    runs = []
    for ms in frame_times_ms:
        for forecast in forecast_names:
            frames, processed, skipped = [], 0, 0
            for timeline in timelines:
                plan = plans[timeline.scene, ms]
                results = {stamp: f for (scene, stamp), f in ran.items()
                           if scene == timeline.scene}
                frames += stream_scene(timeline, scheduled_outputs(timeline, plan, results),
                                       forecast)
                processed += len(plan.processed)
                skipped += len(plan.skipped)
            runs.append(StreamingRun(ms, forecast, frames, processed, skipped))
    return runs


def run_folder(run: StreamingRun) -> str:
    frame = "live" if run.frame_ms is None else f"{run.frame_ms:g}ms"
    return f"{frame}-{run.forecast}"


def score_run(run: StreamingRun, args: argparse.Namespace, dataset, out: Path) -> StreamingRun:
    """Score one run with the bags' metric into ``out``; the devkit's printout is kept out of
    the console (one line per run instead)."""
    from .evaluate import lyft_scores, nuscenes_scores

    out.mkdir(parents=True, exist_ok=True)
    results = [f.result for f in run.frames]
    if not any(r.detections is not None and len(r.detections) for r in results):
        # The devkits cannot score a run without a single box.
        print(f"streaming, {run.label}: not scored, no box reached any key frame")
        return run
    scorer = lyft_scores if dataset.kind == "lyft" else nuscenes_scores
    with contextlib.redirect_stdout(io.StringIO()):
        acc, scores, _ = scorer(results, args, dataset.db, out)
    records = frame_records(results, acc)
    for record, frame in zip(records, run.frames):
        record.update(source_stamp_ns=frame.source_stamp_ns, age_ms=frame.age_ms)
    write_frames(out / "frames.json", records, acc)
    name, value = headline(scores)
    print(f"streaming, {run.label}: mAP {scores.mean_ap:.4f}, {name} {value:.4f}, "
          f"{run.skipped} clouds skipped, {run.before_first_output} key frames before the "
          "first output")
    return dataclasses.replace(run, scores=scores)


def streaming_section(runs: list[StreamingRun], args: argparse.Namespace, how: str,
                      baseline: str, headline_runs: int, measured_ms: float | None):
    """The report hook: scores every run, writes streaming.json and returns the blocks (the
    first ``headline_runs`` runs beside the report's own scores, named ``baseline``; the
    measured frame time marked in the plot)."""
    def section(base_scores, dataset) -> list:
        scored = [score_run(r, args, dataset, args.output / "streaming" / run_folder(r))
                  for r in runs]
        (args.output / "streaming.json").write_text(
            json.dumps(summary_record(baseline, base_scores, scored), indent=1))
        marks = {} if measured_ms is None else {measured_ms: "measured here"}
        return streaming_blocks(args.output, base_scores, baseline, scored[:headline_runs],
                                scored, how, marks)

    return section


HOW = ("Each key frame takes the newest output published by its stamp, moved into its LiDAR "
       "frame with the ego motion from the bag's /tf; forecast velocity advances each box by "
       "(vx, vy) x the output's age (key stamp - input stamp). Key frames before the first "
       "output count as empty.")


def simulate(args: argparse.Namespace, requested: list[float | str], rate: float = 1.0):
    """The offline replay and the simulated runs at the ``requested`` frame times, in one
    process with one detector (the offline frame times give 'measured', scaled by the playback
    ``rate`` of a live run to compare with: its frame times on the bag's clock): (offline
    key-frame results, runs, the scenes' timelines, the measured frame time or None, what the
    runs are)."""
    from .evaluate import replay_config

    if args.workers > 1 or world()[1] > 1:
        raise ValueError("--streaming replays in one process: no --workers or torchrun")
    bags, config = scene_bags(args.bag), replay_config(args)
    names = forecasts(args)
    detector = config.detector()
    detector.warmup()  # as the node warms its model: 'measured' counts no start-up cost
    offline = merge([replay_scenes(bags, config, not args.no_progress, detector)])
    measured = round(median_frame_ms(offline) * rate, 1) if MEASURED in requested else None
    frame_times = list(dict.fromkeys(measured if v == MEASURED else v for v in requested))
    timelines = [read_timeline(bag, config.sweeps) for bag in bags]
    runs = simulated_runs(timelines, detector, config, offline, frame_times, names)
    how = ("Simulated: the node's latest-only scheduling (one inference thread; a cloud "
           "arriving while a frame runs waits in a one-cloud slot, replaced by newer ones) at "
           f"the frame time {frame_times[0]:g} ms"
           + (f" (measured: the detector's median frame time over the {len(offline)} offline "
              "key frames here" + (f", x {rate:g} as played" if rate != 1 else "") + ")"
              if frame_times[0] == measured else "")
           + "; an output is published at its input stamp plus its wait and frame time (bag "
           "clock).")
    return offline, runs, timelines, measured, how


def run_simulated(args: argparse.Namespace):
    """``--streaming``: the offline key-frame results and the report hook of the simulated runs
    (the first frame time beside offline)."""
    offline, runs, _, measured, how = simulate(args, parse_frame_times(args.latency_ms))
    headline = sum(r.frame_ms == runs[0].frame_ms for r in runs)
    return offline, streaming_section(runs, args, f"{how} {HOW}", "offline", headline, measured)


def live_runs(timelines: list[SceneTimeline], live, forecast_names: tuple[str, ...]
              ) -> list[StreamingRun]:
    """The streaming runs of a live replay (a `live_eval.LiveRun`): its outputs as published."""
    runs = []
    for forecast in forecast_names:
        frames = []
        for timeline in timelines:
            stamps = set(timeline.stamps_ns)
            frames += stream_scene(timeline, [o for o in live.outputs if o.stamp_ns in stamps],
                                   forecast)
        runs.append(StreamingRun(None, forecast, frames, len(live.outputs),
                                 live.clouds - len(live.outputs)))
    return runs


def run_live_streaming(args: argparse.Namespace):
    """``--live --streaming``: the live node's key-frame results and the report hook of its
    streaming runs, beside the simulated runs at the measured frame time (run first, offline)."""
    from .evaluate import live_run

    if args.paced:
        raise ValueError("--streaming --live plays at --rate: no --paced (nothing would be "
                         "skipped)")
    _, simulated, timelines, measured, how = simulate(args, [MEASURED], args.rate)
    live = live_run(args)
    runs = live_runs(timelines, live, forecasts(args)) + simulated
    how = (f"Live: detector_node over DDS at {args.rate:g}x; an output is published at its "
           "input stamp plus its latency (cloud published -> detections received) x the rate, "
           f"on the bag's clock. {how} {HOW}")
    return live.frames, streaming_section(runs, args, how, "live, each key frame's own output",
                                          len(runs), measured)
