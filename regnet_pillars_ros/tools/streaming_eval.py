"""``regnet-pillars eval BAGS --streaming``: score, at each key frame, the newest output the
detector had published by then (streaming perception, Li, Wang and Ramanan, ECCV 2020).

Simulated (default): the offline replay runs first (the offline scores, and the detector's
median frame time on this machine for ``--latency-ms measured``); then, for each frame time, the
node's latest-only scheduling decides which clouds run and when each output is published (input
stamp + wait in the slot + frame time, on the bag's clock), the detector runs on the clouds whose
outputs key frames take (`eval.streaming_replay`), and each key frame gets the newest output
moved into its LiDAR frame with the bag's /tf, forecast by velocity or not. Deterministic for
given frame times.

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
from ..eval.streaming_replay import (SceneTimeline, needed_clouds, read_timeline,
                                     scheduled_outputs, stream_scene)
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


def streaming_section(runs: list[StreamingRun], args: argparse.Namespace, how: str):
    """The report hook: scores every run, writes streaming.json and returns the blocks."""
    def section(offline_scores, dataset) -> list:
        scored = [score_run(r, args, dataset, args.output / "streaming" / run_folder(r))
                  for r in runs]
        (args.output / "streaming.json").write_text(
            json.dumps(summary_record(offline_scores, scored), indent=1))
        first = scored[0].frame_ms
        return streaming_blocks(args.output, offline_scores,
                                [r for r in scored if r.frame_ms == first], scored, how)

    return section


def run_simulated(args: argparse.Namespace):
    """The offline replay's key-frame results and the simulated runs' report hook. One process
    and one detector for both (the offline frame times give 'measured')."""
    from .evaluate import replay_config

    if args.workers > 1 or world()[1] > 1:
        raise ValueError("--streaming replays in one process: no --workers or torchrun")
    requested = parse_frame_times(args.latency_ms)
    bags, config = scene_bags(args.bag), replay_config(args)
    names = forecasts(args)
    detector = config.detector()
    offline = merge([replay_scenes(bags, config, not args.no_progress, detector)])
    measured = median_frame_ms(offline) if MEASURED in requested else None
    frame_times = list(dict.fromkeys(measured if v == MEASURED else v for v in requested))
    timelines = [read_timeline(bag, config.sweeps) for bag in bags]
    runs = simulated_runs(timelines, detector, config, offline, frame_times, names)
    how = ("Simulated: the node's latest-only scheduling (one inference thread; a cloud "
           "arriving while a frame runs waits in a one-cloud slot, replaced by newer ones) at "
           f"the frame time {frame_times[0]:g} ms"
           + (f" (measured: the detector's median frame time over the {len(offline)} offline "
              f"key frames here)" if frame_times[0] == measured else "")
           + "; an output is published at its input stamp plus its wait and frame time (bag "
           "clock). Each key frame takes the newest output published by its stamp, moved into "
           "its LiDAR frame with the ego motion from the bag's /tf; forecast velocity advances "
           "each box by (vx, vy) x the output's age (key stamp - input stamp). Key frames "
           "before the first output count as empty.")
    return offline, streaming_section(runs, args, how)
