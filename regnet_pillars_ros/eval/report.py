"""The evaluation report: ``index.md`` and ``index.html`` (no external assets) with PNGs next to
them: scores, per-class AP and TP errors, key-frame accounting, latency histogram, PR curves (the
devkit's metrics_details.json) and bird's-eye views of a few key frames with GT and detections.
"""
from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..model.boxes import bev_corners
from .replay import FrameResult
from .scoring import Accounting

TP_METRICS = ("trans_err", "scale_err", "orient_err", "vel_err", "attr_err")
TP_HEADERS = ("ATE (m)", "ASE", "AOE (rad)", "AVE (m/s)", "AAE")
DIST_THRESHOLDS = ("0.5", "1.0", "2.0", "4.0")
BEV_EXTENT = 55.0  # metres around the sensor
BEV_MIN_SCORE = 0.3  # detections drawn (the node's default score_threshold)


@dataclass(frozen=True)
class BevFrame:
    """One drawn key frame: its LiDAR points [N, >=3], ground truth boxes [G, 7+] and names,
    detections (LiDAR frame)."""

    frame: FrameResult
    points: np.ndarray
    gt_boxes: np.ndarray
    gt_names: list[str]


# -- blocks rendered to both markdown and HTML -------------------------------------------------

Block = tuple  # ("h", level, text) | ("p", text) | ("table", headers, rows) | ("img", file, alt)


def _md(blocks: list[Block]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append("#" * block[1] + " " + block[2])
        elif kind == "p":
            out.append(block[1])
        elif kind == "table":
            headers, rows = block[1], block[2]
            out.append("\n".join(["| " + " | ".join(headers) + " |",
                                  "|" + "---|" * len(headers)]
                                 + ["| " + " | ".join(map(str, r)) + " |" for r in rows]))
        elif kind == "img":
            out.append(f"![{block[2]}]({block[1]})")
    return "\n\n".join(out) + "\n"


def _html(blocks: list[Block], title: str) -> str:
    body = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            body.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r)
                           + "</tr>" for r in block[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
        elif kind == "img":
            body.append(f'<p><img src="{html.escape(block[1])}" alt="{html.escape(block[2])}" '
                        'style="max-width:100%"></p>')
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto}"
             "table{border-collapse:collapse}td,th{border:1px solid #bbb;padding:2px 8px;"
             "text-align:right}th{background:#eee}")
    return (f"<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}"
            f"</title><style>{style}</style></head><body>\n" + "\n".join(body)
            + "\n</body></html>\n")


def fmt_num(value: float | None, digits: int = 3) -> str:
    """A table cell: ``value`` to ``digits`` decimals, 'n/a' for None, NaN or infinity."""
    return "n/a" if value is None or not np.isfinite(value) else f"{value:.{digits}f}"


# -- figures -------------------------------------------------------------------------------


def pyplot():
    """matplotlib.pyplot with the file-only Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def latency_png(path: Path, latencies_ms: list[float], what: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.5), dpi=100)
    ax.hist(latencies_ms, bins=min(40, max(5, len(latencies_ms) // 2)), color="tab:blue")
    for q, style in ((50, "-"), (90, "--"), (99, ":")):
        ax.axvline(np.percentile(latencies_ms, q), color="k", ls=style, lw=1, label=f"p{q}")
    ax.set(xlabel=f"{what} (ms)", ylabel="key frames", title=f"{what}, {len(latencies_ms)} frames")
    ax.legend()
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def pr_curves_png(path: Path, details: dict, class_names: list[str]) -> None:
    """One panel per class: precision over recall at each distance threshold."""
    plt = pyplot()
    cols = 5
    rows = -(-len(class_names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 2.8 * rows), dpi=90, squeeze=False)
    for ax, name in zip(axes.flat, class_names):
        for dist in DIST_THRESHOLDS:
            curve = details.get(f"{name}:{dist}")
            if curve:
                ax.plot(curve["recall"], curve["precision"], lw=1, label=f"{dist} m")
        ax.set(title=name, xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision")
    for ax in list(axes.flat)[len(class_names):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def bev_png(path: Path, bev: BevFrame, title: str) -> None:
    """Points (height-coloured), ground truth (green) and the detections scoring at least
    `BEV_MIN_SCORE` (red, score-shaded)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 7), dpi=100)
    pts = bev.points
    ax.scatter(pts[:, 0], pts[:, 1], s=0.3, c=pts[:, 2], cmap="viridis", vmin=-3, vmax=3,
               linewidths=0)
    for corners in bev_corners(np.asarray(bev.gt_boxes, np.float64)[:, :7]):
        ring = np.vstack([corners, corners[:1]])
        ax.plot(ring[:, 0], ring[:, 1], color="limegreen", lw=1.2)
    dets = bev.frame.detections
    shown = total = 0
    if dets is not None and len(dets):
        keep = np.flatnonzero(np.asarray(dets.scores) >= BEV_MIN_SCORE)
        shown, total = len(keep), len(dets)
        for corners, score in zip(bev_corners(np.asarray(dets.boxes, np.float64)[keep, :7]),
                                  dets.scores[keep]):
            ring = np.vstack([corners, corners[:1]])
            ax.plot(ring[:, 0], ring[:, 1], color="red", lw=0.8, alpha=float(score))
    ax.plot([], [], color="limegreen", label=f"ground truth ({len(bev.gt_boxes)})")
    ax.plot([], [], color="red",
            label=f"detections, score >= {BEV_MIN_SCORE} ({shown} of {total})")
    ax.legend(loc="upper right", fontsize=8)
    ax.set(xlim=(-BEV_EXTENT, BEV_EXTENT), ylim=(-BEV_EXTENT, BEV_EXTENT), aspect="equal",
           xlabel="x (m)", ylabel="y (m)", title=title)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


# -- the page ------------------------------------------------------------------------------


def bev_choice(frames: list[FrameResult], count: int) -> list[FrameResult]:
    """``count`` key frames spread evenly over the replayed ones (time order per scene)."""
    ordered = sorted(frames, key=lambda f: (f.key.scene, f.key.stamp_ns))
    if not ordered:
        return []
    picks = np.unique(np.linspace(0, len(ordered) - 1, min(count, len(ordered))).round())
    return [ordered[int(i)] for i in picks]


def nuscenes_blocks(out: Path, scores, class_names: list[str]) -> list[Block]:
    """NuScenesScores: summary, per-class AP and TP errors, PR curves (metrics_details.json)."""
    blocks: list[Block] = [
        ("h", 2, "Scores (nuScenes detection, detection_cvpr_2019)"),
        ("table", ["mAP", "NDS", *TP_HEADERS],
         [[fmt_num(scores.mean_ap, 4), fmt_num(scores.nds, 4),
           *(fmt_num(scores.tp_errors.get(m)) for m in TP_METRICS)]]),
        ("h", 3, "Per class"),
        ("table", ["class", "AP", *(f"AP@{d} m" for d in DIST_THRESHOLDS), *TP_HEADERS],
         [[name, fmt_num(scores.class_ap.get(name)),
           *(fmt_num(scores.class_ap_at.get(name, {}).get(float(d))) for d in DIST_THRESHOLDS),
           *(fmt_num(scores.class_tp_errors.get(name, {}).get(m)) for m in TP_METRICS)]
          for name in class_names])]
    details = out / "metrics_details.json"
    if details.is_file():
        pr_curves_png(out / "pr_curves.png", json.loads(details.read_text()), class_names)
        blocks += [("h", 3, "Precision-recall curves (devkit metric data)"),
                   ("img", "pr_curves.png", "PR curves per class and distance threshold")]
    return blocks


def lyft_blocks(scores) -> list[Block]:
    """LyftScores: mAP and per-class AP, over and at each 3D IoU threshold."""
    thresholds = sorted(scores.map_at)
    blocks: list[Block] = [
        ("h", 2, "Scores (Lyft: mAP over 3D IoU 0.5:0.05:0.95, lyft-dataset-sdk)"),
        ("table", ["mAP", *(f"@{t:g}" for t in thresholds)],
         [[fmt_num(scores.mean_ap, 4), *(fmt_num(scores.map_at[t]) for t in thresholds)]]),
        ("h", 3, "Per class (the ground truth's classes)"),
        ("table", ["class", "AP", *(f"@{t:g}" for t in thresholds)],
         [[name, fmt_num(ap), *(fmt_num(scores.class_ap_at[name][t]) for t in thresholds)]
          for name, ap in scores.class_ap.items()])]
    if scores.unscored_classes:
        blocks.append(("p", "Predicted classes without ground truth (not scored): "
                       + ", ".join(scores.unscored_classes)))
    return blocks


def write_report(out: Path, title: str, settings: list[tuple[str, str]], acc: Accounting,
                 frames: list[FrameResult], latency_what: str,
                 score_blocks: list[Block] | None = None, bevs: list[BevFrame] = ()) -> Path:
    """Write ``out/index.md`` and ``out/index.html`` (and their PNGs); returns the HTML path."""
    blocks: list[Block] = [("h", 1, title), ("table", ["setting", "value"], settings)]
    if score_blocks is not None:
        blocks += score_blocks
    else:
        blocks.append(("p", "Not scored: no --dataroot (the metric's ground truth comes from "
                       "the devkit tables)."))
    blocks += [("h", 2, "Key frames"),
               ("table", ["seen in the bags", "scored", "dropped", "not in the split"],
                [[acc.seen, len(acc.scored), len(acc.dropped), len(acc.not_in_split)]])]
    if acc.dropped:
        blocks.append(("table", ["dropped key frame", "reason"], sorted(acc.dropped.items())))
    latencies = [f.latency_ms for f in frames if f.latency_ms is not None]
    if latencies:
        latency_png(out / "latency.png", latencies, latency_what)
        p = np.percentile(latencies, [50, 90, 99])
        blocks += [("h", 2, "Latency"),
                   ("table", ["frames", "p50 (ms)", "p90 (ms)", "p99 (ms)", "max (ms)"],
                    [[len(latencies), *(f"{v:.1f}" for v in p), f"{max(latencies):.1f}"]]),
                   ("img", "latency.png", "latency histogram")]
    if bevs:
        blocks.append(("h", 2, "Bird's-eye views (LiDAR frame; green: ground truth, red: "
                       f"detections scoring at least {BEV_MIN_SCORE})"))
        for i, bev in enumerate(bevs):
            name = f"bev_{i}.png"
            key = bev.frame.key
            bev_png(out / name, bev, f"{key.scene}, {key.sample_token[:8]}")
            blocks.append(("img", name, f"key frame {key.sample_token}"))
    (out / "index.md").write_text(_md(blocks))
    path = out / "index.html"
    path.write_text(_html(blocks, title))
    return path
