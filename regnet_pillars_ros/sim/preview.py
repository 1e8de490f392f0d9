"""Bird's-eye view of a simulated sample:
``python -m regnet_pillars_ros.sim.preview --seed 0 -o sim.png``.

Also prints the simulator's speed (``--bench``).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..model.boxes import bev_corners
from .scene import Scene, generate_scene
from .sweeps import Sample, simulate_sample, simulate_sweep, sweep_sequence, to_frame


def draw(scene: Scene, sample: Sample, path: Path, color: str = "dt", extent: float = 60.0) -> None:
    """Write a PNG: points coloured by ``color`` ('dt' or 'intensity'), GT boxes in red with a
    heading tick (solid: with key-sweep points, dashed: without), clutter in grey."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    column = {"dt": 4, "intensity": 3}[color]
    pts = sample.points[::-1]  # key sweep drawn last, on top
    fig, ax = plt.subplots(figsize=(10, 10), dpi=110)
    sc = ax.scatter(pts[:, 0], pts[:, 1], c=pts[:, column], s=1.0, cmap="viridis", linewidths=0)
    fig.colorbar(sc, ax=ax, shrink=0.7, label=color)
    for corner in bev_corners(to_frame(scene.clutter, sample.key.sensor_pose)):
        ax.fill(corner[:, 0], corner[:, 1], color="0.8", zorder=0)
    corners = bev_corners(sample.gt_boxes[:, :7].astype(np.float64))
    for box, corner, label, count in zip(sample.gt_boxes, corners, sample.gt_labels,
                                         sample.gt_num_points):
        style = "-" if count else "--"
        ring = np.vstack([corner, corner[:1]])
        ax.plot(ring[:, 0], ring[:, 1], style, color="red", lw=0.8)
        front = corner[[0, 3]].mean(axis=0)  # corners 0 and 3 are at +l/2
        ax.plot([box[0], front[0]], [box[1], front[1]], style, color="red", lw=0.8)
        if count:
            ax.text(box[0], box[1], scene.class_names[label], fontsize=5, color="darkred",
                    clip_on=True)
    ax.plot(0, 0, marker=(3, 0, -90), color="black", markersize=10)
    ax.set(xlim=(-extent, extent), ylim=(-extent, extent), aspect="equal", xlabel="x (m)",
           ylabel="y (m)", title=f"{len(sample.points)} points, {len(sample.sweeps) + 1} sweeps, "
           f"{int((sample.gt_num_points > 0).sum())}/{len(sample.gt_boxes)} boxes with points")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def benchmark(seed: int = 0, repeats: int = 5) -> None:
    """Print the time per sweep, per 11-sweep sample alone and per sample along a sequence (past
    sweeps reused), and the points per sweep and per sample."""
    scene = generate_scene(seed)
    simulate_sweep(scene, 0)  # warm-up
    start = time.perf_counter()
    sizes = [len(simulate_sweep(scene, i).points) for i in range(repeats)]
    sweep_s = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    for i in range(repeats):
        simulate_sample(scene, 10 + i)
    sample_s = (time.perf_counter() - start) / repeats
    start = time.perf_counter()
    points = [len(s.points) for s in sweep_sequence(scene, 10, 10 + repeats)]
    sequence_s = (time.perf_counter() - start) / repeats
    print(f"{len(scene.boxes)} objects, {len(scene.clutter)} clutter: {sweep_s * 1e3:.1f} ms per "
          f"sweep ({np.mean(sizes):.0f} points), {sample_s * 1e3:.1f} ms per 11-sweep sample "
          f"({np.mean(points):.0f} points), {sequence_s * 1e3:.1f} ms per sample along a sequence")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--key", type=int, default=20, help="key sweep index (20 Hz)")
    parser.add_argument("--color", choices=("dt", "intensity"), default="dt")
    parser.add_argument("--extent", type=float, default=60.0, help="half width of the view, m")
    parser.add_argument("-o", "--output", type=Path, default=Path("sim.png"))
    parser.add_argument("--bench", action="store_true", help="also print the simulator's speed")
    parser.add_argument("--save-cloud", type=Path, metavar="NPY",
                        help="also save the merged 11-sweep cloud [N, 5] x, y, z, intensity, dt "
                             "(bench --cloud reads it)")
    args = parser.parse_args(argv)
    scene = generate_scene(args.seed)
    sample = simulate_sample(scene, args.key, seed=args.seed)
    draw(scene, sample, args.output, args.color, args.extent)
    print(f"wrote {args.output}")
    if args.save_cloud:
        np.save(args.save_cloud, sample.points.astype(np.float32))
        print(f"wrote {args.save_cloud}: {len(sample.points)} points")
    if args.bench:
        benchmark(args.seed)


if __name__ == "__main__":
    main()
