"""A frame function captured once as a CUDA graph over a fixed-size cloud buffer, then replayed
(the model layer's `CapturedFrame`; `runtime.factory` hands the class to a `Detector`).

Replaying a graph launches its hundreds of kernels with one call, without Python in between;
the price is fixed tensor sizes, which `Detector.fixed_size_frame` provides (padded voxelization,
top-k candidates), and fixed buffers that each frame's cloud is copied into.
"""
from __future__ import annotations

import torch

from ..model.execution import FrameFn


class CudaGraphFrame:
    """`fn(cloud, count)` on a device buffer with room for 1.5 times the rows of the cloud it was
    captured with: each frame is copied into the buffer's first rows (through pinned host memory,
    so the copy does not block the host) and `count` says how many are live."""

    HEADROOM = 1.5
    ALIGN = 4096
    WARMUP = 3  # eager runs before the capture: cuDNN's algorithm choice, anchors, allocator pools

    def __init__(self, fn: FrameFn, example: torch.Tensor, device: torch.device):
        rows = -(-max(1, int(example.shape[0] * self.HEADROOM)) // self.ALIGN) * self.ALIGN
        self.cloud = torch.zeros((rows, example.shape[1]), dtype=torch.float32, device=device)
        self.count = torch.zeros((), dtype=torch.long, device=device)
        self.staging = torch.empty(self.cloud.shape, dtype=torch.float32, pin_memory=True)
        self.load(example)
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.WARMUP):
                fn(self.cloud, self.count)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        # thread_local: a model swap captures the new model's graph on the loader thread while the
        # inference thread keeps running (and synchronising) frames of the old one; by default
        # such calls from any thread would abort the capture.
        with torch.cuda.graph(self.graph, capture_error_mode="thread_local"):
            self.outputs = fn(self.cloud, self.count)

    def fits(self, cloud: torch.Tensor) -> bool:
        """Whether `cloud` [N, C] fits the buffer (no more rows, the same columns)."""
        return cloud.shape[0] <= self.cloud.shape[0] and cloud.shape[1] == self.cloud.shape[1]

    def load(self, cloud: torch.Tensor) -> None:
        """Copy `cloud` (host or device, float32 or float64) into the buffer's first rows."""
        n = cloud.shape[0]
        if cloud.device.type == "cpu":
            # The previous frame's copy out of the staging buffer finished before its results
            # were read, so the buffer is free to refill.
            self.staging[:n].copy_(cloud)
            cloud = self.staging[:n]
        self.cloud[:n].copy_(cloud, non_blocking=True)
        self.count.fill_(n)

    def replay(self) -> tuple[torch.Tensor, ...]:
        """Run the graph on the loaded cloud; the outputs are overwritten by the next replay."""
        self.graph.replay()
        return self.outputs
