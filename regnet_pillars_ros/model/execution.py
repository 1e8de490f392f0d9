"""What a `Detector` runs on, as interfaces that the runtime layer implements.

- `InferenceBackend`: the network from pillars to raw head maps (runtime/backends.py: torch,
  onnxruntime). It is called with the pillar tensors `(points, point_pillar, coors, num_points)`
  and a `stage(name)` context-manager factory for timing, and returns the head maps level after
  level (cls, reg, dir, cls, reg, dir, ...) as float32 tensors on the detector's device.
- `PaddedBackend`: a backend that also runs fixed-size inputs (`voxelize_fixed`), which a
  captured frame needs.
- `FrameCapture`: builds a `CapturedFrame` that replays `Detector.fixed_size_frame` on a
  fixed-size cloud buffer (runtime/cuda_graph.py: a CUDA graph).
"""
from __future__ import annotations

import contextlib
from typing import Callable, ContextManager, Protocol

import torch

StageTimer = Callable[[str], ContextManager[None]]
NetworkInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
FrameFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


def no_timing(_: str) -> ContextManager[None]:
    return contextlib.nullcontext()


class InferenceBackend(Protocol):
    name: str

    def __call__(self, inputs: NetworkInputs,
                 stage: StageTimer = no_timing) -> list[torch.Tensor]: ...


class PaddedBackend(InferenceBackend, Protocol):
    def network_padded(self, inputs: NetworkInputs) -> list[torch.Tensor]:
        """Head maps of fixed-size inputs (padding pillars on the canvas' spare row)."""
        ...


class CapturedFrame(Protocol):
    """A frame function captured for clouds up to a size, replayed on each loaded cloud."""

    def fits(self, cloud: torch.Tensor) -> bool:
        """Whether `cloud` [N, C] fits the captured buffer."""
        ...

    def load(self, cloud: torch.Tensor) -> None:
        """Copy `cloud` into the buffer."""
        ...

    def replay(self) -> tuple[torch.Tensor, ...]:
        """The frame function's outputs for the loaded cloud."""
        ...


# (frame function `fn(cloud, count)`, an example cloud that sizes the buffer, device) -> frame.
FrameCapture = Callable[[FrameFn, torch.Tensor, torch.device], CapturedFrame]
