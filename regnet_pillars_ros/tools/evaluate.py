"""``regnet-pillars eval BAG --preset P [--checkpoint C] [--live] -o report/``.

Replays scene bags written by `regnet-pillars bag-from-dataset` through the detector node's
pipeline and scores the key frames with the official metric of the bags' dataset: nuScenes
(nuscenes-devkit's DetectionEval: mAP, NDS, TP errors) or Lyft (lyft-dataset-sdk's mAP over 3D
IoU 0.5:0.05:0.95, over the key frames of the bags' scenes). Offline (default), the bags are read
with rosbags and every cloud goes through the node's own sweep stacking (ego motion from the
bag's /tf), detector and output selection in this process; --live starts detector_node, plays
the bags into it over DDS with /clock and use_sim_time, and scores what it published (latency and
dropped frames included).

--streaming scores, at each key frame, the newest output published by then, moved into the key
frame (`tools.streaming_eval`): the node's scheduling simulated at given frame times, or with
--live the node's own outputs.

Every key frame (/sample_token) is accounted for: scored, dropped (with the reason; it enters the
metric with no boxes) or not in the evaluated split. Output folder: frames.json (per key frame:
status, reason, latency, number of boxes), detections.npz (the boxes in the LiDAR frame), with
--dataroot results_nusc.json and the
devkit's metrics_summary.json / metrics_details.json (nuScenes) or metrics_lyft.json (Lyft), and
the report index.md / index.html with its PNGs.

Scaling: the bags are sharded by scene. --workers N replays them in N processes; under torchrun
(torch.distributed, gloo on the CPU, nccl with --device cuda) rank r takes scenes r::world and
rank 0 gathers, merges (sorted by sample token), scores and writes the report. Scenes are
replayed independently, so the score does not depend on the number of processes.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import yaml

from ..eval.replay import FrameResult, ReplayConfig, key_cloud, scene_bags, scene_name
from ..eval.report import BevFrame, bev_choice, lyft_blocks, nuscenes_blocks, write_report
from ..eval.scoring import (
    Accounting,
    account,
    filled_detections,
    frame_records,
    write_detections,
    write_frames,
)
from ..eval.shard import replay_sharded, world
from ..model import PRESET_NAMES, get_preset
from ..pipeline.frame import OutputFilter, SweepSettings
from ..ros.launch_config import params_files
from ..ros.params import parse_class_thresholds

PROG = "regnet-pillars eval"


def node_parameters(preset: str) -> dict:
    """The node's parameters from config/common.yaml and the preset's YAML (dotted names)."""
    values: dict = {}

    def flatten(tree: dict, prefix: str = "") -> None:
        for key, value in tree.items():
            if isinstance(value, dict):
                flatten(value, f"{prefix}{key}.")
            else:
                values[prefix + key] = value

    for path in params_files(preset):
        flatten(yaml.safe_load(path.read_text())["/**"]["ros__parameters"])
    return values


def replay_config(args: argparse.Namespace) -> ReplayConfig:
    """The node's YAML parameters with the evaluation's output thresholds on top."""
    params = node_parameters(args.preset)
    sweeps = SweepSettings(**{k: params[k] for k in SweepSettings.__dataclass_fields__})
    score = (get_preset(args.preset).test_cfg.score_thr if args.score_threshold is None
             else args.score_threshold)
    output = OutputFilter(score, parse_class_thresholds(args.class_score_thresholds),
                          args.max_detections)
    return ReplayConfig(args.preset, str(args.checkpoint) if args.checkpoint else None,
                        args.device, output, sweeps)


def scene_bag_names(args: argparse.Namespace) -> dict[str, Path]:
    """Scene name (recorded by bag-from-dataset, else the folder name) -> bag."""
    return {scene_name(bag): bag for bag in scene_bags(args.bag)}


def find_split(nusc, scenes: set[str]) -> str:
    """The devkit split (predefined, or custom in ``<version>/splits.json``) whose scenes are
    exactly ``scenes``."""
    from nuscenes.utils.splits import create_splits_scenes

    splits = create_splits_scenes()
    custom = Path(nusc.dataroot) / nusc.version / "splits.json"
    if custom.is_file():
        splits.update(json.loads(custom.read_text()))
    matches = [name for name, names in splits.items() if set(names) == scenes]
    if not matches:
        raise ValueError(f"no devkit split holds exactly the bags' {len(scenes)} scene(s); name "
                         "one with --split (its key frames missing from the bags count as dropped)")
    return matches[0]


def _box_dim(preset: str) -> int:
    return 9 if get_preset(preset).dataset == "nuscenes" else 7


def nuscenes_scores(frames: list[FrameResult], args: argparse.Namespace, nusc, out: Path):
    """Accounting and the nuScenes devkit's scores: (accounting, NuScenesScores, split)."""
    from ..eval.nuscenes_metrics import evaluate, split_sample_tokens, write_results

    preset = get_preset(args.preset)
    if preset.dataset != "nuscenes":
        raise ValueError(f"{args.preset} predicts Lyft classes; the nuScenes metric needs a "
                         "nuScenes preset")
    split = args.split or find_split(nusc, set(scene_bag_names(args)))
    tokens = split_sample_tokens(nusc, split)
    acc = account(frames, tokens)
    detections = filled_detections(frames, tokens, preset.class_names, _box_dim(args.preset))
    results = write_results(nusc, detections, split, out / "results_nusc.json")
    scores = evaluate(nusc, results, split, out)
    print(f"split {split}: mAP {scores.mean_ap:.4f}, NDS {scores.nds:.4f}")
    return acc, scores, split


def score_nuscenes(frames: list[FrameResult], args: argparse.Namespace, nusc, out: Path):
    """(accounting, report blocks, split, NuScenesScores)."""
    acc, scores, split = nuscenes_scores(frames, args, nusc, out)
    names = list(get_preset(args.preset).class_names)
    return acc, nuscenes_blocks(out, scores, names), split, scores


def lyft_scores(frames: list[FrameResult], args: argparse.Namespace, db, out: Path):
    """Accounting and lyft-dataset-sdk's mAP over the key frames of the bags' scenes:
    (accounting, LyftScores, description of the key frames scored)."""
    from ..eval.lyft_metrics import evaluate

    scenes = set(scene_bag_names(args))
    tokens = [s["token"] for s in db.sample if db.get("scene", s["scene_token"])["name"] in scenes]
    acc = account(frames, tokens)
    preset = get_preset(args.preset)
    scores = evaluate(db, filled_detections(frames, tokens, preset.class_names,
                                            _box_dim(args.preset)), tokens)
    (out / "metrics_lyft.json").write_text(json.dumps(dataclasses.asdict(scores), indent=1))
    print(f"Lyft mAP (3D IoU 0.5:0.95) {scores.mean_ap:.4f}")
    return acc, scores, "the key frames of the bags' scenes"


def score_lyft(frames: list[FrameResult], args: argparse.Namespace, db, out: Path):
    """(accounting, report blocks, key frames scored, LyftScores)."""
    acc, scores, split = lyft_scores(frames, args, db, out)
    return acc, lyft_blocks(scores), split, scores


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Without --dataroot nothing is scored (the metric's ground truth comes from the "
        "devkit tables, as in the\nofficial evaluation): the key frames are still replayed, "
        "accounted for and written to frames.json,\nand the report shows accounting and latency "
        "only.\n\nexamples:\n"
        f"  regnet-pillars bag-from-dataset --dataroot data/nuscenes --version v1.0-mini -o bags/\n"
        f"  {PROG} bags/ --preset nus-regnetx-400mf-fpn --checkpoint model.pth "
        "--dataroot data/nuscenes -o report/\n"
        f"  torchrun --nproc-per-node 4 -m regnet_pillars_ros.tools.evaluate bags/ "
        "--preset nus-fpn --device cuda --dataroot data/nuscenes -o report/\n"
        f"  {PROG} bags/scene-0103 --preset nus-secfpn --live --dataroot data/nuscenes "
        "--split mini_val -o report/")
    p.add_argument("bag", type=Path, help="a scene bag, or a folder of them (bag-from-dataset -o)")
    p.add_argument("--preset", required=True, choices=PRESET_NAMES, metavar="PRESET",
                   help="one of the nine presets")
    p.add_argument("--checkpoint", type=Path,
                   help="weights (default: the preset's default, the bundled model for "
                   "nus-regnetx-400mf-fpn, else seeded random placeholder weights scoring near 0; "
                   "'placeholder' for those)")
    p.add_argument("-o", "--output", type=Path, required=True, help="report folder")
    p.add_argument("--dataroot", type=Path,
                   help="the devkit dataset the bags were made from (ground truth and poses)")
    p.add_argument("--version", help="devkit table folder (default: recorded in the bags)")
    p.add_argument("--split", help="nuScenes devkit split to score (default: the split whose "
                   "scenes are exactly the bags'; predefined or from <version>/splits.json)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda", "auto"),
                   help="offline inference device (default cpu)")
    p.add_argument("--score-threshold", type=float, help="minimum box score (default: the "
                   "preset's test_cfg score_thr, 0.05, as in mmdet3d's evaluation; the node's "
                   "own default 0.3 would cut the PR curves short)")
    p.add_argument("--class-score-thresholds", nargs="*", default=[], metavar="CLASS=SCORE",
                   help="per-class minimum scores, as the node parameter")
    p.add_argument("--max-detections", type=int, default=500,
                   help="boxes per frame (default 500, the nuScenes limit)")
    live = p.add_argument_group("live replay (--live)")
    live.add_argument("--live", action="store_true", help="evaluate a running detector_node: "
                      "start it (use_sim_time, --device), play the bags into it over DDS, record "
                      "its outputs to OUT/live_outputs/ and score them")
    live.add_argument("--rate", type=float, default=1.0,
                      help="playback speed, x the recorded one (default 1: real time; a slower "
                      "node drops clouds, and key frames it drops count as dropped)")
    live.add_argument("--paced", action="store_true", help="send each cloud only after the node "
                      "answered the previous one (nothing dropped; the offline results)")
    live.add_argument("--timeout", type=float, default=300.0,
                      help="seconds to wait for the node to start or answer (default 300)")
    streaming = p.add_argument_group("streaming (--streaming)")
    streaming.add_argument("--streaming", action="store_true", help="also score, at each key "
                           "frame, the newest output published by then, moved into the key "
                           "frame (needs --dataroot): with the node's scheduling simulated at "
                           "--latency-ms, or with --live the node's own outputs as published "
                           "(beside the simulated runs at the measured frame time)")
    streaming.add_argument("--latency-ms", default="measured", metavar="MS[,MS...]",
                           help="the detector's frame time the node's scheduling is simulated "
                           "with: 'measured' (default: the median offline frame time here) or "
                           "ms; a list (e.g. measured,0,25,50,100,200,400,800) adds a plot of "
                           "the score against it; the first one is set beside offline")
    streaming.add_argument("--forecast", default="both", choices=("none", "velocity", "both"),
                           help="carry boxes to the key frame by their velocity over the "
                           "output's age (velocity), keep them where seen (none), or both "
                           "(default; Lyft presets: none)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="replay the scenes in N processes (default 1); under torchrun, per rank")
    p.add_argument("--bev-frames", type=int, default=4, metavar="N",
                   help="key frames drawn as bird's-eye views in the report (default 4)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    return p


def run(args: argparse.Namespace) -> list[FrameResult] | None:
    """The key-frame results (None on torchrun ranks other than 0)."""
    if args.live:
        return live_run(args).frames
    return replay_sharded(scene_bags(args.bag), replay_config(args), args.workers,
                          progress=not args.no_progress)


def live_run(args: argparse.Namespace):
    """--live: detector_node started and the bags played into it (a `live_eval.LiveRun`)."""
    if args.workers > 1 or world()[1] > 1:
        raise ValueError("--live runs one node: no --workers or torchrun")
    try:
        from .live_eval import LiveOptions, run_live
    except ImportError as exc:
        raise ValueError(f"--live needs rclpy and the project's messages ({exc})") from exc
    record = args.output / "live_outputs"
    if record.exists():
        shutil.rmtree(record)  # the outputs of an earlier live run into this folder
    args.output.mkdir(parents=True, exist_ok=True)
    return run_live(scene_bags(args.bag), replay_config(args),
                    LiveOptions(args.rate, args.paced, args.timeout), record,
                    progress=not args.no_progress)


def weights_name(args: argparse.Namespace) -> str:
    from ..model.bundled import PLACEHOLDER, bundled_checkpoint

    if args.checkpoint and str(args.checkpoint) != PLACEHOLDER:
        return str(args.checkpoint)
    bundled = None if args.checkpoint else bundled_checkpoint(args.preset)
    return f"bundled default {Path(bundled).name}" if bundled else "placeholder (seeded random)"


def bev_frames(frames: list[FrameResult], args: argparse.Namespace,
               dataset) -> list[BevFrame]:
    """The drawn key frames: their cloud from the bag, the devkit's ground truth (``dataset``,
    a `bag_from_dataset.Dataset`, or None)."""
    from ..eval.bag_from_dataset import ground_truth

    bags = scene_bag_names(args)
    out = []
    for frame in bev_choice(frames, args.bev_frames):
        points = key_cloud(bags[frame.key.scene], frame.key.stamp_ns)
        boxes, names, _ = (ground_truth(dataset, frame.key.sample_token) if dataset
                           else (np.zeros((0, 7)), [], []))
        out.append(BevFrame(frame, points, boxes, names))
    return out


def score(frames: list[FrameResult], args: argparse.Namespace, out: Path):
    """(accounting, report blocks, split, scores, dataset) with the metric of the bags'
    dataset."""
    from ..eval.bag_from_dataset import open_dataset, read_scene_metadata

    metadata = read_scene_metadata(scene_bags(args.bag)[0])
    version = args.version or metadata.get("version")
    if not version:
        raise ValueError("the bags do not record the dataset version: give --version")
    lyft = metadata.get("dataset") == "lyft"
    dataset = open_dataset(args.dataroot, version, lyft)
    scorer = score_lyft if lyft else score_nuscenes
    return (*scorer(frames, args, dataset.db, out), dataset)


def report(frames: list[FrameResult], args: argparse.Namespace, mode: str,
           latency_what: str, section=None) -> Accounting:
    """Score (with --dataroot), write frames.json and the report, print the summary.
    ``section(scores, dataset)``: more report blocks after the scores (the streaming runs)."""
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    if args.dataroot is not None:
        acc, blocks, split, scores, dataset = score(frames, args, out)
        if section is not None:
            blocks += section(scores, dataset)
    else:
        acc, blocks, split, dataset = (account(frames, None), None,
                                       "all key frames of the bags (not scored)", None)
    write_frames(out / "frames.json", frame_records(frames, acc), acc)
    write_detections(out / "detections.npz", frames)
    settings = [("bags", str(args.bag)), ("preset", args.preset),
                ("weights", weights_name(args)),
                ("mode", mode), ("split", split),
                ("score threshold", str(replay_config(args).output.score_threshold))]
    page = write_report(out, f"{args.preset} on {args.bag.name}", settings, acc, frames,
                        latency_what, blocks, bev_frames(frames, args, dataset))
    print(acc.summary())
    for token, reason in acc.dropped.items():
        print(f"  dropped {token}: {reason}")
    print(f"report: {page}")
    return acc


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.streaming and args.dataroot is None:
            raise ValueError("--streaming scores against the devkit tables: give --dataroot")
        if args.streaming:
            from .streaming_eval import run_live_streaming, run_simulated

            if args.live:
                frames, section = run_live_streaming(args)
                report(frames, args, f"live at {args.rate:g}x, streaming (live and simulated)",
                       "cloud published -> detections received", section)
            else:
                frames, section = run_simulated(args)
                report(frames, args, "offline (in-process replay) and streaming (simulated)",
                       "detector time per key frame", section)
            return 0
        frames = run(args)
        if frames is not None and args.live:
            mode = "paced" if args.paced else f"at {args.rate:g}x the recorded speed"
            report(frames, args, f"live: detector_node over DDS, {mode}",
                   "cloud published -> detections received")
        elif frames is not None:
            report(frames, args, "offline (in-process replay)", "detector time per key frame")
    except (ValueError, OSError, RuntimeError) as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
