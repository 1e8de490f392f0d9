"""Model serving for detector_node: the generation a frame uses, and model swaps behind it.

A `Generation` is what one frame reads: the model, the live parameters and a number that grows
with every change of either; it is replaced as a whole. A model swap loads and warms the new
model on a loader thread while the serving generation keeps running frames; of the swaps
requested meanwhile the latest wins. ROS-free: the node wires the two callbacks to its topics
and parameters, and the log records reach ROS through the node's log bridge.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Callable, Mapping

import numpy as np

from ..model import Detector, get_preset
from ..model.checkpoint import require_file
from ..pipeline.frame import OutputFilter
from ..runtime.factory import build_detector
from .params import parse_class_thresholds

log = logging.getLogger(__name__)
MODEL_PARAMS = ("preset", "checkpoint")  # the rest of the live parameters apply at once


@dataclass(frozen=True)
class ModelKey:
    """What the ``preset`` and ``checkpoint`` parameters ask for ('' = the preset's default)."""

    preset: str
    checkpoint: str = ""

    def __str__(self) -> str:
        return self.preset + (f" ({self.checkpoint})" if self.checkpoint else "")


@dataclass(frozen=True)
class LoadOptions:
    """The node's fixed model parameters."""

    device: str = "auto"
    box_convention: str = "auto"
    backend: str = "torch"
    precision: str = "fp32"
    cuda_graph: bool = False

    def load(self, key: ModelKey, warm_points: np.ndarray | None = None) -> Detector:
        """Build ``key``'s model and warm it on ``warm_points`` (a recent cloud, or synthetic
        points); raises with the reason (CheckpointError, ValueError)."""
        t0 = time.perf_counter()
        detector = build_detector(key.preset, key.checkpoint or None, device=self.device,
                                  box_convention=self.box_convention, backend=self.backend,
                                  precision=self.precision, cuda_graph=self.cuda_graph)
        detector.warmup(warm_points)
        log.info("model ready: %s (%s), box convention %s, %s on %s, %.1f s to load and warm",
                 key.preset, detector.source, detector.box_convention, detector.backend.name,
                 detector.device, time.perf_counter() - t0)
        return detector


@dataclass(frozen=True)
class Generation:
    """One model with the live parameters it serves under; frames carry its number."""

    number: int
    key: ModelKey
    detector: Detector
    live: Mapping[str, Any]

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.detector.preset.class_names

    def summary(self) -> dict[str, object]:
        """What /diagnostics says about the serving model."""
        d = self.detector
        return dict(preset=self.key.preset, checkpoint=d.source, backend=d.backend.name,
                    box_convention=d.box_convention, device=d.device, generation=self.number)

    def parameters(self) -> dict[str, Any]:
        """The parameter values a swap may change behind the user's back: the model's, and
        class_score_thresholds (entries for classes the model lacks are dropped)."""
        return {"preset": self.key.preset, "checkpoint": self.key.checkpoint,
                "class_score_thresholds": list(self.live["class_score_thresholds"])}

    @cached_property
    def output_filter(self) -> OutputFilter:
        return OutputFilter(self.live["score_threshold"],
                            parse_class_thresholds(self.live["class_score_thresholds"]),
                            self.live["max_detections"])


@dataclass(frozen=True)
class Outcome:
    """A swap's state ('loading', 'ready', 'failed') and what to say about it."""

    state: str
    key: ModelKey
    detail: str

    def __str__(self) -> str:
        return f"{self.state}: {self.key}: {self.detail}"


def split_by_class(entries: list[str], class_names: tuple[str, ...]) -> tuple[list[str], list[str]]:
    """class_score_thresholds entries -> (those naming a class of the model, the others)."""
    known = set(class_names)
    kept = [e for e in entries if not e.strip() or e.partition("=")[0].strip() in known]
    return kept, [e for e in entries if e not in kept]


def check_classes(entries: list[str], preset: str) -> None:
    """ValueError naming the class_score_thresholds entries that ``preset`` has no class for."""
    names = get_preset(preset).class_names
    unknown = split_by_class(entries, names)[1]
    if unknown:
        raise ValueError(f"class_score_thresholds: {', '.join(unknown)} not a class of {preset} "
                         f"(classes: {', '.join(names)})")


class ModelServer:
    """The serving generation and a loader thread for swaps (latest request wins).

    ``on_commit(generation)`` runs under the server's lock whenever a generation starts serving,
    so a frame published through `publish_if_current` never follows a newer generation's
    announcement. ``on_outcome(outcome)`` reports swaps; it may call back into the server.
    """

    def __init__(self, options: LoadOptions, key: ModelKey, live: Mapping[str, Any],
                 on_commit: Callable[[Generation], None],
                 on_outcome: Callable[[Outcome], None]) -> None:
        self._options = options
        self._on_commit, self._on_outcome = on_commit, on_outcome
        self._lock = threading.RLock()
        self._wake = threading.Condition(self._lock)
        live = {k: v for k, v in live.items() if k not in MODEL_PARAMS}
        check_classes(live["class_score_thresholds"], key.preset)
        self._current = Generation(0, key, options.load(key), live)
        self._wanted = key  # the newest request; the serving key once it is served or failed
        self._closed = False
        self._loading: ModelKey | None = None
        self.warm_points: np.ndarray | None = None  # a recent cloud: swaps warm the model on it
        on_commit(self._current)
        threading.Thread(target=self._run, name="model-loader", daemon=True).start()

    @property
    def current(self) -> Generation:
        return self._current

    def change(self, values: Mapping[str, Any]) -> None:
        """Apply parameter values at once: live ones to the serving model, ``preset`` and
        ``checkpoint`` as a request for a model (loaded in the background). ValueError when
        class_score_thresholds names a class that the requested model lacks, or the checkpoint
        file does not exist; nothing changes then."""
        with self._lock:
            key = replace(self._wanted, **{k: values[k] for k in MODEL_PARAMS if k in values})
            live = {k: v for k, v in values.items() if k not in MODEL_PARAMS}
            if key.checkpoint and key != self._wanted:
                require_file(key.checkpoint)
            if "class_score_thresholds" in live:
                check_classes(live["class_score_thresholds"], key.preset)
            if key != self._wanted:
                self._wanted = key
                self._wake.notify()
            if any(self._current.live.get(k) != v for k, v in live.items()):
                self._serve(self._current.detector, self._current.key,
                            {**self._current.live, **live})

    def publish_if_current(self, generation: Generation, publish: Callable[[], None]) -> bool:
        """Run ``publish`` if ``generation`` still serves (no commit can interleave)."""
        with self._lock:
            if generation is not self._current:
                return False
            publish()
            return True

    def close(self) -> ModelKey | None:
        """Stop taking requests; returns the model whose load is in flight, which is abandoned
        (never waited for)."""
        with self._lock:
            self._closed = True
            self._wake.notify()
            return self._loading

    def _serve(self, detector: Detector, key: ModelKey, live: dict) -> None:
        self._current = Generation(self._current.number + 1, key, detector, live)
        self._notify(self._on_commit, self._current)

    def _run(self) -> None:
        while True:
            with self._lock:
                self._wake.wait_for(lambda: self._closed or self._wanted != self._current.key)
                if self._closed:
                    return
                key = self._loading = self._wanted
                self._report(Outcome("loading", key, f"still serving {self._current.key}"))
            t0 = time.perf_counter()
            try:
                detector, error = self._options.load(key, self.warm_points), None
            except Exception as exc:  # any failure leaves the serving model in place
                detector, error = None, f"{type(exc).__name__}: {exc}"
            with self._lock:
                self._loading = None
                if self._closed:
                    return
                if key != self._wanted:
                    log.info("model %s loaded but no longer requested; dropped", key)
                    continue
                if detector is None:
                    self._fail(key, error)
                else:
                    self._swap(key, detector, time.perf_counter() - t0)

    def _swap(self, key: ModelKey, detector: Detector, seconds: float) -> None:
        live = dict(self._current.live)
        kept, dropped = split_by_class(live["class_score_thresholds"],
                                       detector.preset.class_names)
        live["class_score_thresholds"] = kept
        self._serve(detector, key, live)
        detail = f"generation {self._current.number}, {seconds:.1f} s to load and warm"
        if dropped:
            detail += (f"; class_score_thresholds {', '.join(dropped)} dropped: not a class of "
                       f"{key.preset}")
        self._report(Outcome("ready", key, detail))

    def _fail(self, key: ModelKey, error: str) -> None:
        serving = self._current
        self._wanted = serving.key
        kept, dropped = split_by_class(serving.live["class_score_thresholds"],
                                       serving.class_names)
        if dropped:  # entries accepted for the model that failed
            self._serve(serving.detector, serving.key,
                        {**serving.live, "class_score_thresholds": kept})
        detail = f"{error}; still serving {serving.key}, the request falls back to it"
        if dropped:
            detail += f"; class_score_thresholds {', '.join(dropped)} dropped"
        self._report(Outcome("failed", key, detail))

    def _report(self, outcome: Outcome) -> None:
        level = {"failed": logging.ERROR}.get(outcome.state, logging.INFO)
        log.log(level, "model swap %s", outcome)
        self._notify(self._on_outcome, outcome)

    def _notify(self, callback: Callable[[Any], None], arg: Any) -> None:
        try:
            callback(arg)
        except Exception as exc:  # e.g. publishing as the node shuts down: the loader lives on
            if not self._closed:
                log.error("model server callback %s failed: %s: %s",
                          getattr(callback, "__name__", callback), type(exc).__name__, exc)
