"""`regnet-pillars`: the command line over the model, point-file and benchmark layers.

Each subcommand parses its arguments and calls one layer function; bad input ends with a
one-line message and exit code 1 (2 for usage errors), never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path

import numpy as np

from .model import PRESET_NAMES, Detections, get_preset
from .model.checkpoint import CONVENTIONS, random_state_dict, write_checkpoint
from .model.network import PointPillarsNet
from .model.pycls_convert import convert_file
from .pointfiles import read_points
from .runtime.backends import BACKENDS, PRECISIONS
from .runtime.bench import DEFAULT_POINTS, BenchConfig, markdown_table, run_bench, write_report
from .runtime.export import OPSET, export_onnx
from .runtime.factory import build_detector
from .runtime.heap import keep_freed_memory

PROG = "regnet-pillars"
# Commands whose options their own tools parse: name -> (module with main(argv), summary, epilog).
DELEGATED = {
    "demo": ("regnet_pillars_ros.tools.demo", "run the ROS 2 demo (needs rclpy)",
             f"example:\n  {PROG} demo --help"),
    "bench-node": (
        "regnet_pillars_ros.tools.bench_node", "node-level latency over real DDS (needs rclpy)",
        "Cloud published -> Detection3DArray received in another process: p50/p90/p99 and "
        "dropped frames.\n\n"
        f"example:\n  {PROG} bench-node --help"),
    "train": (
        "regnet_pillars_ros.train.cli",
        "train a preset (synthetic LiDAR scans; torchrun for several processes)",
        f"examples:\n  {PROG} train --help\n"
        f"  {PROG} train --preset nus-regnetx-400mf-fpn --device cuda --time-limit 600 "
        "--batch-size 8 --workers 14 -o run/\n"
        "  torchrun --nproc-per-node 2 -m regnet_pillars_ros.train.cli --preset nus-secfpn "
        "--iters 100 -o run/"),
    "bag-from-dataset": (
        "regnet_pillars_ros.eval.bag_from_dataset",
        "convert a nuScenes or Lyft dataset into rosbag2, one bag per scene (needs rclpy)",
        f"examples:\n  {PROG} bag-from-dataset --help\n"
        f"  {PROG} bag-from-dataset --dataroot data/nuscenes --version v1.0-mini "
        "--scenes scene-0103 -o bags/"),
    "eval": (
        "regnet_pillars_ros.tools.evaluate",
        "replay scene bags through the node's pipeline and score them (nuScenes devkit)",
        f"examples:\n  {PROG} eval --help\n"
        f"  {PROG} eval bags/ --preset nus-regnetx-400mf-fpn --checkpoint model.pth "
        "--dataroot data/nuscenes -o report/"),
}
DEVICES = ("cpu", "cuda", "auto")
POINTS_HELP = """\
points files (--points):
  .npy  [N, 5] x, y, z, intensity, dt: an already merged multi-sweep cloud (dt = time lag, s)
        [N, 4] x, y, z, dt
  .bin  float32 rows of --dims values, one key frame (dt = 0):
        --dims 4 (KITTI): x, y, z, intensity;  \
--dims 5 (nuScenes/Lyft .pcd.bin): x, y, z, intensity, ring
  .pcd  ascii, binary or binary_compressed with fields x y z [intensity] [t|time|timestamp]
        (the time field is taken as dt in seconds; 0 when absent)
The model itself uses x, y, z and dt.
"""


def keys_json(preset: str) -> str:
    """The preset's ordered [key, shape] list, one entry per line like the spec's
    checkpoint_keys files."""
    state = PointPillarsNet(get_preset(preset)).state_dict()
    return "[\n" + ",\n".join(json.dumps([k, list(v.shape)]) for k, v in state.items()) + "\n]"


def cmd_keys(args: argparse.Namespace) -> int:
    print(keys_json(args.preset))
    return 0


def detections_table(result: Detections, max_rows: int) -> str:
    """Fixed-width table: class, score, geometric centre, size, yaw (and velocity)."""
    header = (f"{'#':>3} {'class':<22} {'score':>6} {'x':>8} {'y':>8} {'z':>7} "
              f"{'l':>6} {'w':>6} {'h':>6} {'yaw':>7}")
    header += f" {'vx':>6} {'vy':>6}" if result.has_velocity else ""
    lines = [header]
    centres = result.gravity_centers()
    for i, (name, score, box, centre) in enumerate(zip(result.names(), result.scores,
                                                       result.boxes, centres)):
        if i == max_rows:
            lines.append(f"... and {len(result) - max_rows} more "
                         "(all of them are in the output file)")
            break
        row = f"{i:>3} {name:<22} {score:6.3f} {centre[0]:8.2f} {centre[1]:8.2f} {centre[2]:7.2f} "
        row += f"{box[3]:6.2f} {box[4]:6.2f} {box[5]:6.2f} {box[6]:7.3f}"
        row += f" {box[7]:6.2f} {box[8]:6.2f}" if result.has_velocity else ""
        lines.append(row)
    return "\n".join(lines)


def cmd_detect(args: argparse.Namespace) -> int:
    points = read_points(args.points, args.dims)
    detector = build_detector(
        args.preset, args.checkpoint, device=args.device, box_convention=args.box_convention,
        verify_sha256=not args.no_verify_sha256, backend=args.backend, precision=args.precision,
        cuda_graph=args.cuda_graph,
    )
    score_threshold = (detector.score_threshold if args.score_threshold is None
                       else args.score_threshold)
    result = detector(points, score_threshold)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    np.savez(
        output, boxes=result.boxes.astype(np.float32), scores=result.scores.astype(np.float32),
        labels=result.labels.astype(np.int64), class_names=np.array(result.class_names),
        box_convention=np.array(detector.box_convention), preset=np.array(args.preset),
    )
    how = ("as given" if args.box_convention != "auto"
           else "from the checkpoint" if args.checkpoint else "placeholder weights")
    print(f"preset {args.preset}; weights: {detector.source}; "
          f"{detector.backend.name} backend on {detector.device}")
    print(f"box convention of the weights: {detector.box_convention} ({how}); "
          "boxes are written in the mmdet3d 1.x convention")
    stats = result.stats
    print(
        f"points: {stats['points_in']} read, {stats['points_nonfinite']} non-finite dropped, "
        f"{stats['points_in_range']} in range, {stats['pillars']} pillars "
        f"({stats['pillar_overflow']} points over max_voxels)"
    )
    print("time (ms): " + ", ".join(f"{k} {v:.1f}" for k, v in result.timings_ms.items()))
    print(f"{len(result)} detections (score >= {score_threshold}); centre = geometric centre, "
          "z of the file's boxes is the bottom")
    print(detections_table(result, args.show))
    print(f"wrote {output if output.suffix == '.npz' else output.with_name(output.name + '.npz')}")
    return 0


def cmd_make_checkpoint(args: argparse.Namespace) -> int:
    preset = get_preset(args.preset)
    state = random_state_dict(PointPillarsNet(preset), args.seed)
    path = write_checkpoint(args.output, state, preset, args.convention, seed=args.seed)
    print(f"wrote {path}: preset {preset.name}, {len(state)} tensors, "
          f"seeded random weights (seed {args.seed}), "
          f"box convention {args.convention}")
    return 0


def cmd_synthetic_dataset(args: argparse.Namespace) -> int:
    # nuscenes-devkit's helpers are only needed here
    from .eval.synthetic_nuscenes import write_dataset

    dataset = write_dataset(args.output, seed=args.seed, num_scenes=args.scenes,
                            num_key_frames=args.key_frames, num_train_scenes=args.train_scenes)
    for split, scenes in dataset.splits.items():
        print(f"{split}: {len(scenes)} scenes {' '.join(scenes)}")
    print(f"wrote {dataset.dataroot} (tables in {dataset.version}/); next:\n"
          f"  {PROG} bag-from-dataset --dataroot {dataset.dataroot} "
          f"--version {dataset.version} -o BAGS/\n"
          f"  {PROG} eval BAGS/ --preset nus-regnetx-400mf-fpn "
          f"--dataroot {dataset.dataroot} -o report/")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    detector = build_detector(
        args.preset, args.checkpoint, box_convention=args.box_convention,
        verify_sha256=not args.no_verify_sha256
    )
    report = export_onnx(detector.net, detector.preset, detector.box_convention, args.output,
                         opset=args.opset)
    print(f"wrote {report.path}: preset {args.preset}, "
          f"box convention {detector.box_convention}, opset {report.opset}, "
          f"weights {detector.source}")
    print(f"checked against torch on a second cloud: max |difference| {report.max_abs_diff:.2e} "
          f"(outputs up to {report.max_abs_value:.1f})")
    return 0


def cmd_convert_regnet(args: argparse.Namespace) -> int:
    state = convert_file(args.input, args.output)
    print(f"wrote {args.output}: {len(state)} tensors renamed to mmdet RegNet keys "
          f"({{'state_dict': ...}})")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    presets = list(PRESET_NAMES) if "all" in args.preset else list(dict.fromkeys(args.preset))
    config = BenchConfig(
        presets=presets, device=args.device, num_points=args.points, repeats=args.repeats,
        warmup=args.warmup, cloud=args.cloud, checkpoint=args.checkpoint, threads=args.threads,
        score_threshold=args.score_threshold,
        backends=list(BACKENDS) if args.backend == "all" else [args.backend],
        precision=args.precision, cuda_graph=args.cuda_graph,
    )
    report = run_bench(config)
    json_path = args.json or (
        Path("results") / "bench" / f"bench-{'-'.join(args.preset)}-{args.device}.json"
    )
    written = write_report(report, Path(json_path))
    print(markdown_table(report))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_delegate(args: argparse.Namespace) -> int:
    """Hand the remaining arguments to a tool with its own parser (imported only now: the ROS
    tools need rclpy, which the rest of the CLI does without)."""
    try:
        tool = importlib.import_module(args.module)
    except ImportError as exc:
        print(f"{PROG} {args.command}: not available here ({exc}); it needs {args.module} "
              "and what it imports (rclpy for the ROS tools: run `make setup`)", file=sys.stderr)
        return 2
    return int(tool.main(args.extra_args) or 0)


def add_command(sub: argparse._SubParsersAction, name: str, summary: str, epilog: str,
                **kwargs) -> argparse.ArgumentParser:
    return sub.add_parser(
        name, help=summary, description=summary, epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs
    )


def add_weights_options(parser: argparse.ArgumentParser, convention_help: str) -> None:
    """--preset, --checkpoint, --box-convention and --no-verify-sha256: which model with which
    weights."""
    parser.add_argument("--preset", required=True, choices=PRESET_NAMES, metavar="PRESET",
                        help="one of the nine presets")
    parser.add_argument("--checkpoint", type=Path,
                        help="official or generated .pth, or an exported .onnx "
                        "(default: seeded random placeholder weights)")
    parser.add_argument("--box-convention", default="auto", choices=("auto", *CONVENTIONS),
                        help=convention_help)
    parser.add_argument("--no-verify-sha256", action="store_true",
                        help="skip the check of an official file name's sha256 prefix")


def add_backend_options(parser: argparse.ArgumentParser, allow_all: bool = False) -> None:
    choices = (*BACKENDS, "all") if allow_all else BACKENDS
    parser.add_argument("--backend", default="torch", choices=choices,
                        help="torch, or onnxruntime (a .pth is exported to ONNX once and cached; "
                        "an .onnx runs as is)"
                        + (", or all" if allow_all else "") + " (default torch)")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS,
                        help="fp32 (IEEE), or with the torch backend: tf32 (cuDNN TF32 "
                        "convolutions) or fp16 on CUDA, "
                        "bf16 on CUDA or CPU (autocast; the pillar encoder stays fp32) "
                        "(default fp32)")
    parser.add_argument("--cuda-graph", action="store_true",
                        help="torch on CUDA: replay range filter, voxelization, network and top-k "
                        "decoding as one CUDA graph (captured on the first frame, again for a "
                        "frame with more points than it has room for); NMS runs eagerly")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="mmdetection3d's RegNetX / PointPillars LiDAR detectors in plain PyTorch.",
        epilog=f"presets: {', '.join(PRESET_NAMES)}\n"
        f"Run `{PROG} COMMAND --help` for the options of a command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log at INFO level (default: warnings only)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    keys = add_command(sub, "keys", "print a preset's ordered checkpoint keys and shapes as JSON",
                       f"example:\n  {PROG} keys --preset nus-regnetx-400mf-fpn > keys.json")
    keys.add_argument("--preset", required=True, choices=PRESET_NAMES, metavar="PRESET",
                      help="one of the nine presets")
    keys.set_defaults(run=cmd_keys)

    detect = add_command(
        sub, "detect", "detect 3D boxes in one point file and write them to .npz",
        POINTS_HELP + "\noutput .npz: boxes float32 [M, 7|9] "
        "(x, y, z_bottom, l, w, h, yaw[, vx, vy]), scores [M],\n"
        "labels int64 [M], class_names, box_convention, preset.\n\nexamples:\n"
        f"  {PROG} detect --preset nus-regnetx-400mf-fpn "
        f"--checkpoint {get_preset('nus-regnetx-400mf-fpn').checkpoint_filename} \\\n"
        "      --points cloud.npy --output pred.npz\n"
        f"  {PROG} detect --preset nus-fpn "
        "--points n015-...__LIDAR_TOP__1532402927647951.pcd.bin --dims 5 --output pred.npz\n"
        "  (without --checkpoint: seeded random weights, for trying the pipeline only)",
    )
    add_weights_options(detect, "convention of the weights: auto reads the checkpoint's meta "
                        "(official v0.1.0 files: v0)")
    detect.add_argument("--points", required=True, type=Path,
                        help="the cloud: .npy, .bin or .pcd (see below)")
    detect.add_argument("--dims", type=int,
                        help="float32 values per point of a .bin file (4 KITTI, 5 nuScenes/Lyft)")
    detect.add_argument("--score-threshold", type=float,
                        help="minimum score (default: the preset's test_cfg, 0.05)")
    detect.add_argument("--device", default="cpu", choices=DEVICES,
                        help="cpu, cuda or auto (cuda when available)")
    add_backend_options(detect)
    detect.add_argument("--show", type=int, default=20, metavar="N",
                        help="table rows to print (default 20)")
    detect.add_argument("--output", "-o", required=True, type=Path, help="the .npz to write")
    detect.set_defaults(run=cmd_detect)

    make = add_command(
        sub, "make-checkpoint",
        "write a checkpoint with seeded random weights in the official format",
        "The file is {'meta', 'state_dict'} like the official ones; "
        "meta records the preset, classes,\n"
        "box convention and seed. For tests of the file path (its detections are meaningless, and\n"
        "uncalibrated random weights score most anchors high; without --checkpoint, "
        "detect and bench\n"
        "use the model layer's calibrated placeholder weights instead).\n\n"
        f"example:\n  {PROG} make-checkpoint --preset lyft-fpn --seed 1 "
        "-o /tmp/lyft-fpn-random.pth",
    )
    make.add_argument("--preset", required=True, choices=PRESET_NAMES, metavar="PRESET",
                      help="one of the nine presets")
    make.add_argument("--seed", type=int, default=0,
                      help="random seed (default 0); same seed, same weights")
    make.add_argument("--convention", default="v1", choices=CONVENTIONS,
                      help="box convention recorded in meta (default v1)")
    make.add_argument("--output", "-o", required=True, type=Path, help="the .pth to write")
    make.set_defaults(run=cmd_make_checkpoint)

    synthetic = add_command(
        sub, "synthetic-dataset",
        "simulate LiDAR scenes into a small dataset in the nuScenes devkit layout",
        "Scenes of the project's simulator (32-beam spinning LiDAR, moving ego vehicle, "
        "annotated cars,\n"
        "pedestrians and the other nuScenes classes): "
        "key frames at 2 Hz with their 10 sweeps at 20 Hz,\n"
        "ego poses, calibration and annotations as nuscenes-devkit reads them; "
        "the scenes are listed in\n"
        "<version>/splits.json as synthetic_train / synthetic_val. "
        "Deterministic in the arguments.\n"
        "Seeds from 1000000 are never used for training "
        "(`regnet-pillars train` stops below them),\n"
        "so the default seed gives held-out scenes for the bundled model.\n\n"
        f"example:\n  {PROG} synthetic-dataset -o data/synthetic --scenes 2 --key-frames 10\n"
        f"  {PROG} bag-from-dataset --dataroot data/synthetic --version v1.0-mini -o bags/\n"
        f"  {PROG} eval bags/ --preset nus-regnetx-400mf-fpn --dataroot data/synthetic -o report/",
    )
    synthetic.add_argument("--output", "-o", required=True, type=Path, help="dataroot to write")
    synthetic.add_argument("--scenes", type=int, default=2, help="number of scenes (default 2)")
    synthetic.add_argument("--key-frames", type=int, default=10,
                           help="key frames per scene (default 10)")
    synthetic.add_argument("--train-scenes", type=int, default=0,
                           help="how many of the scenes go to synthetic_train (default 0)")
    synthetic.add_argument("--seed", type=int, default=1_000_000,
                           help="scene i is simulated from seed + i (default 1000000: held out)")
    synthetic.set_defaults(run=cmd_synthetic_dataset)

    export = add_command(
        sub, "export", "export a preset's network (pillar encoder through head) to ONNX",
        "The graph takes the pillars (points [P, 4], point_pillar [P], coors [M, 3], "
        "num_points [M];\n"
        "P and M dynamic) and returns the raw head maps; "
        "voxelization and decoding/NMS stay in torch.\n"
        "The file records preset, box convention and opset in its metadata, "
        "and is checked against\n"
        "torch on a cloud it was not traced with. "
        "Run it with --backend onnxruntime (detect, bench,\n"
        "node); onnxruntime-gpu then picks TensorRT, CUDA or the CPU, whichever is available.\n\n"
        f"example:\n  {PROG} export --preset nus-regnetx-400mf-fpn --checkpoint model.pth "
        "-o model.onnx",
    )
    add_weights_options(export, "convention of the weights, recorded in the file "
                        "(auto: from the checkpoint)")
    export.add_argument("--opset", type=int, default=OPSET,
                        help=f"ONNX opset (default {OPSET}, the lowest that works)")
    export.add_argument("--output", "-o", required=True, type=Path, help="the .onnx to write")
    export.set_defaults(run=cmd_export)

    convert = add_command(
        sub, "convert-regnet", "rename a pycls RegNet checkpoint's keys to mmdet's (regnet2mmdet)",
        "Reads {'model_state': ...} (weights only, no code), maps stem.conv/bn -> conv1/bn1,\n"
        "s<S>.b1.proj/bn -> layer<S>.0.downsample.0/1, s<S>.b<B>.f.a/a_bn/b/b_bn/c/c_bn ->\n"
        "layer<S>.<B-1>.conv1/bn1/conv2/bn2/conv3/bn3, head.fc -> fc, "
        "and writes {'state_dict': ...}.\n"
        "Any other key is refused.\n\n"
        f"example:\n  {PROG} convert-regnet RegNetX-400MF_dds_8gpu.pyth -o regnetx_400mf-mmdet.pth",
    )
    convert.add_argument("input", type=Path, help="pycls checkpoint (.pyth)")
    convert.add_argument("--output", "-o", required=True, type=Path, help="the .pth to write")
    convert.set_defaults(run=cmd_convert_regnet)

    bench = add_command(
        sub, "bench", "time whole frames and each stage of one or all presets",
        "Times preprocess (range filter + voxelize), encoder+scatter, backbone, neck, head,\n"
        "postprocess (decode + NMS) and the total: median and p90 ms, fps, peak memory, "
        "points and\n"
        "pillars per frame, threads, versions and hardware. Default cloud: a deterministic\n"
        "nuScenes-like 10-sweep cloud of --points points "
        "(the shared real composite cloud tiled with\n"
        "jitter, or a synthetic scene when it is absent). "
        "Without --checkpoint the weights are the\n"
        "model layer's seeded random placeholder: the network stages take the same time with any\n"
        "weights; decode+NMS grows with the boxes above the score threshold (--score-threshold 0\n"
        "gives its worst case).\n"
        "Writes JSON, a markdown table and (with matplotlib) a PNG chart.\n\nexamples:\n"
        f"  {PROG} bench --preset nus-regnetx-400mf-fpn --device cpu --points 250000 --repeats 5\n"
        f"  {PROG} bench --preset all --device cuda --repeats 50 --warmup 5 "
        "--json results/gpu.json",
    )
    bench.add_argument("--preset", required=True, nargs="+", choices=(*PRESET_NAMES, "all"),
                       metavar="PRESET|all", help="one or more presets, or all nine")
    bench.add_argument("--device", default="cpu", choices=DEVICES,
                       help="cpu, cuda or auto (default cpu)")
    bench.add_argument("--points", type=int, default=DEFAULT_POINTS,
                       help=f"points per generated frame (default {DEFAULT_POINTS})")
    bench.add_argument("--repeats", type=int, default=5, help="timed frames (default 5)")
    bench.add_argument("--warmup", type=int, default=1, help="untimed frames first (default 1)")
    bench.add_argument("--cloud", type=Path,
                       help="time this merged cloud (.npy [N, 5] x, y, z, intensity, dt) instead")
    bench.add_argument("--checkpoint", type=Path,
                       help="weights for a single preset (default: seeded random)")
    add_backend_options(bench, allow_all=True)
    bench.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    bench.add_argument("--score-threshold", type=float,
                       help="override the preset's score threshold (0 stresses NMS)")
    bench.add_argument("--json", type=Path, help="JSON path; .md and .png go next to it "
                       "(default results/bench/bench-PRESET-DEVICE.json)")
    bench.set_defaults(run=cmd_bench)

    for name, (module, summary, epilog) in DELEGATED.items():
        tool = add_command(sub, name, f"{summary}; its own options follow", epilog, add_help=False)
        tool.set_defaults(run=cmd_delegate, module=module)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
        if extra and args.command not in DELEGATED:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:  # --help (0) and usage errors (2)
        return exc.code if isinstance(exc.code, int) else 2
    args.extra_args = extra
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args)
    except (ValueError, OSError) as exc:  # CheckpointError and PointFileError are ValueErrors
        print(f"{PROG} {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def console_main() -> int:
    """The `regnet-pillars` command: a process of its own, so its frames may keep their freed
    buffers in the heap (faster CPU frames); `main` leaves the calling process as it is."""
    keep_freed_memory()
    return main()


if __name__ == "__main__":
    raise SystemExit(console_main())
