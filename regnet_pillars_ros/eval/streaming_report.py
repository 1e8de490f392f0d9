"""The streaming part of the evaluation report: offline and streaming scores side by side, the
ages of the outputs used, the clouds skipped, and the score against the detector's frame time.

Blocks in the form of `report.write_report`'s score blocks; `summary_record` is the same content
as JSON (``streaming.json``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .report import TP_HEADERS, TP_METRICS, Block, fmt_num, pyplot
from .streaming import NO_OUTPUT_YET, StreamedFrame

PLOT = "streaming_latency.png"


@dataclass(frozen=True)
class StreamingRun:
    """One scored streaming variant: the frame time (ms) the node's scheduling ran with (None:
    the live node's own), the forecast, the key frames and the outputs behind them, the clouds
    run and skipped, and the metric's scores (None when not scored)."""

    frame_ms: float | None
    forecast: str
    frames: list[StreamedFrame]
    processed: int
    skipped: int
    scores: object = None

    @property
    def ages_ms(self) -> list[float]:
        return [f.age_ms for f in self.frames if f.age_ms is not None]

    @property
    def before_first_output(self) -> int:
        return sum(f.result.reason == NO_OUTPUT_YET for f in self.frames)

    @property
    def label(self) -> str:
        frame = "live node" if self.frame_ms is None else f"{self.frame_ms:g} ms frames"
        return f"{frame}, forecast {self.forecast}"


def headline(scores) -> tuple[str, float]:
    """The metric's headline number: NDS (nuScenes) or mAP (Lyft)."""
    return ("NDS", scores.nds) if hasattr(scores, "nds") else ("mAP", scores.mean_ap)


def _score_rows(columns: list[object]) -> list[list[str]]:
    """mAP, NDS and TP errors (nuScenes), then AP per class; one column per scores object (the
    first one scored; None: not scored, n/a)."""
    first = columns[0]
    rows = [["mAP", *(fmt_num(s and s.mean_ap, 4) for s in columns)]]
    if hasattr(first, "nds"):
        rows.append(["NDS", *(fmt_num(s and s.nds, 4) for s in columns)])
        rows += [[name, *(fmt_num(s and s.tp_errors.get(metric)) for s in columns)]
                 for metric, name in zip(TP_METRICS, TP_HEADERS)]
    rows += [[f"AP {name}", *(fmt_num(s and s.class_ap.get(name)) for s in columns)]
             for name in first.class_ap]
    return rows


def _ages(run: StreamingRun) -> list[str]:
    ages = run.ages_ms
    quantiles = np.percentile(ages, [0, 50, 90, 100]) if ages else [np.nan] * 4
    return [fmt_num(q, 0) for q in quantiles]


def streaming_blocks(out: Path, base_scores, baseline: str, headline_runs: list[StreamingRun],
                     sweep: list[StreamingRun], how: str,
                     marks: dict[float, str] | None = None) -> list[Block]:
    """The report's own scores (``baseline``: offline, or the live node's key frames) next to
    the ``headline_runs``, the outputs used, and (with more than one simulated frame time) the
    sweep's table and plot written to ``out`` (``marks``: frame times named in the plot)."""
    blocks: list[Block] = [
        ("h", 2, "Streaming: the newest output at each key frame"),
        ("p", how)]
    if base_scores is not None:
        blocks.append(("table", ["", baseline, *(f"streaming, {r.label}" for r in headline_runs)],
                       _score_rows([base_scores, *(r.scores for r in headline_runs)])))
    blocks += [
        ("h", 3, "Outputs used"),
        ("table", ["run", "clouds run", "clouds skipped", "key frames before the first output",
                   "age min (ms)", "age p50 (ms)", "age p90 (ms)", "age max (ms)"],
         [[r.label, r.processed, r.skipped, r.before_first_output, *_ages(r)]
          for r in headline_runs])]
    simulated = [r for r in sweep if r.frame_ms is not None]
    frame_times = sorted({r.frame_ms for r in simulated})
    scored = [r for r in simulated if r.scores is not None]
    if len(frame_times) > 1 and scored:
        forecasts = sorted({r.forecast for r in simulated})
        metric = headline(scored[0].scores)[0]
        by_key = {(r.frame_ms, r.forecast): r for r in simulated}

        def value(run: StreamingRun) -> str:
            return fmt_num(run.scores and headline(run.scores)[1], 4)

        first = [by_key[ms, forecasts[0]] for ms in frame_times]
        latency_png(out / PLOT, scored, base_scores, baseline,
                    sorted({r.frame_ms for r in simulated} - {r.frame_ms for r in scored}), marks)
        blocks += [
            ("h", 3, f"{metric} against the detector's frame time"),
            ("table", ["frame time (ms)", *(f"{metric}, forecast {f}" for f in forecasts),
                       "clouds skipped", "key frames before the first output", "age p50 (ms)"],
             [[f"{run.frame_ms:g}", *(value(by_key[run.frame_ms, f]) for f in forecasts),
               run.skipped, run.before_first_output, _ages(run)[1]] for run in first]),
            ("img", PLOT, f"{metric} against the frame time")]
    return blocks


def latency_png(path: Path, runs: list[StreamingRun], base_scores, baseline: str,
                unscored_ms: list[float] = (), marks: dict[float, str] | None = None) -> None:
    """The headline metric against the frame time (symmetric log axis), one line per
    forecast; the baseline (the report's own scores) dashed; frame times at which no output
    reached any key frame, and the ``marks`` (frame time -> what it is), as vertical lines."""
    plt = pyplot()
    metric = headline(runs[0].scores)[0]
    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=100)
    for forecast in sorted({r.forecast for r in runs}):
        line = sorted((r.frame_ms, headline(r.scores)[1]) for r in runs if r.forecast == forecast)
        ax.plot(*zip(*line), marker="o", label=f"streaming, forecast {forecast}")
    if base_scores is not None:
        ax.axhline(headline(base_scores)[1], color="k", ls="--", lw=1, label=baseline)
    for ms in unscored_ms:
        ax.axvline(ms, color="tab:red", ls=":", lw=1, label=f"{ms:g} ms: no output by any key "
                   "frame")
    for ms, what in (marks or {}).items():
        ax.axvline(ms, color="tab:gray", ls=":", lw=1.5, label=f"{what}: {ms:g} ms")
    ax.set_xscale("symlog", linthresh=50)
    right = max([r.frame_ms for r in runs] + list(unscored_ms) + list(marks or ()))
    ax.set_xlim(-5, right * 1.2)
    ax.set_xticks([t for t in (0, 25, 50, *(100 * 2 ** k for k in range(10))) if t <= right])
    ax.xaxis.set_major_formatter(lambda value, _: f"{value:g}")
    ax.set(xlabel="detector frame time (ms)", ylabel=metric, ylim=(0, None),
           title=f"streaming {metric} against the frame time")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)


def summary_record(baseline: str, base_scores, runs: list[StreamingRun]) -> dict:
    """streaming.json: the baseline's scores, every run's frame time (null: the live node),
    forecast, scores, clouds and ages."""
    def scores_record(scores) -> dict | None:
        if scores is None:
            return None
        record = {"mAP": scores.mean_ap, "class_AP": scores.class_ap}
        if hasattr(scores, "nds"):
            record.update(NDS=scores.nds, tp_errors=scores.tp_errors)
        return record

    return {"baseline": baseline, "baseline_scores": scores_record(base_scores),
            "runs": [{"frame_ms": r.frame_ms, "forecast": r.forecast, "processed": r.processed,
                      "skipped": r.skipped, "before_first_output": r.before_first_output,
                      "ages_ms": r.ages_ms, "scores": scores_record(r.scores)} for r in runs]}
