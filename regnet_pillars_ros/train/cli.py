"""`python -m regnet_pillars_ros.train.cli`: train a preset on synthetic scans (or under torchrun).

    python -m regnet_pillars_ros.train.cli --preset nus-regnetx-400mf-fpn --data synthetic \\
        --iters 2000 -o run/
    torchrun --nproc-per-node 2 -m regnet_pillars_ros.train.cli --preset nus-secfpn \\
        --iters 100 -o run/
"""
from __future__ import annotations

import argparse
from pathlib import Path

import torch.distributed as dist

from ..model.presets import PRESET_NAMES
from ..sim.lidar import LidarConfig
from .data import SyntheticConfig
from .loop import TrainOptions, train


def build_parser(parser: argparse.ArgumentParser | None = None) -> argparse.ArgumentParser:
    """The train options; pass a sub-parser to mount them under another CLI."""
    p = parser or argparse.ArgumentParser(prog="regnet-pillars train",
                                          description=__doc__.splitlines()[0])
    p.add_argument("--preset", required=True, choices=PRESET_NAMES)
    p.add_argument("--data", default="synthetic", choices=["synthetic"],
                   help="training data source")
    p.add_argument("--iters", type=int, default=1000,
                   help="optimizer steps (the schedule scales to it)")
    p.add_argument("--time-limit", type=float, metavar="SECONDS",
                   help="stop after this much training time "
                        "(the schedule fits it; --iters is then a cap)")
    p.add_argument("--batch-size", type=int, default=2, help="samples per step and process")
    p.add_argument("--lr", type=float, default=0.001,
                   help="AdamW peak learning rate (config: 0.001)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (torchrun: cuda:LOCAL_RANK)")
    p.add_argument("--seed", type=int, default=0, help="first training scene seed and torch seed")
    p.add_argument("--init", metavar="CHECKPOINT",
                   help="start from these weights (official format; fine-tuning)")
    p.add_argument("--resume", action="store_true",
                   help="continue the schedule at the iteration stored in --init")
    p.add_argument("-o", "--run-dir", type=Path, required=True,
                   help="writes latest.pth, losses.csv, loss.png")
    p.add_argument("--workers", type=int, default=0, help="data loader processes simulating scans")
    p.add_argument("--save-every", type=int, default=500,
                   help="checkpoint, log and plot every N steps")
    p.add_argument("--fp16-storage", action="store_true",
                   help="store checkpoint tensors as float16 (half the file)")
    p.add_argument("--crop", type=float, metavar="M",
                   help="train on the +-M m square around the sensor "
                        "(faster; multiple of 2 m)")
    p.add_argument("--keys-per-scene", type=int, default=4,
                   help="key frames taken along each scene")
    p.add_argument("--scene-objects", type=int, default=80, help="annotated objects per scene")
    p.add_argument("--scene-radius", type=float, default=50.0,
                   help="objects lie within this many m of the ego path")
    p.add_argument("--azimuth-steps", type=int, default=1080,
                   help="LiDAR firings per revolution (fewer = sparser, faster)")
    return p


def options(args: argparse.Namespace) -> TrainOptions:
    data = SyntheticConfig(
        keys_per_scene=args.keys_per_scene,
        num_objects=args.scene_objects,
        radius=args.scene_radius,
        lidar=LidarConfig(azimuth_steps=args.azimuth_steps),
    )
    return TrainOptions(
        preset=args.preset, run_dir=args.run_dir, iters=args.iters, batch_size=args.batch_size,
        lr=args.lr, device=args.device, seed=args.seed, init=args.init, resume=args.resume,
        workers=args.workers, save_every=args.save_every,
        time_limit=args.time_limit, fp16_storage=args.fp16_storage,
        crop=args.crop, data=data,
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        rows = train(options(args))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    if rows:
        print(f"{args.preset}: {len(rows)} iterations, final loss {rows[-1]['loss']:.4f}; "
              f"files in {args.run_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
