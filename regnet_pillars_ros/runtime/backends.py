"""Inference backends: run the network from pillars to raw head maps, behind one small interface.

A backend is called with the pillar tensors `(points, point_pillar, coors, num_points)` and a
`stage(name)` context-manager factory for timing, and returns the raw head maps level after
level (cls, reg, dir, cls, reg, dir, ...) as float32 torch tensors on the detector's device.
Voxelization before and decoding/NMS after stay in torch on that same device.
"""
from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Callable, ContextManager, Protocol

import numpy as np
import torch

from ..model.network import PointPillarsNet, fold_batchnorm

StageTimer = Callable[[str], ContextManager[None]]
NetworkInputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]

BACKENDS = ("torch", "onnxruntime")
PRECISIONS = ("fp32", "fp16")


class InferenceBackend(Protocol):
    name: str

    def __call__(self, inputs: NetworkInputs, stage: StageTimer) -> list[torch.Tensor]: ...


def no_timing(_: str) -> ContextManager[None]:
    return contextlib.nullcontext()


class TorchBackend:
    """The PyTorch network, fp32 or fp16 (autocast on CUDA; the pillar encoder stays fp32).

    Runs a copy of the network with BatchNorm folded into the convolutions and, by default, in
    channels-last layout (about 15% faster on a 2-core CPU); `net` keeps the loaded weights as
    they are, for exports and inspection.
    """

    name = "torch"

    def __init__(self, net: PointPillarsNet, device: torch.device, precision: str = "fp32", channels_last: bool = True):
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        if precision == "fp16" and device.type != "cuda":
            raise ValueError("precision fp16 needs a CUDA device (half-precision convolutions are slow or missing on CPU)")
        self.net = net.to(device).eval()
        self.device = device
        self.precision = precision
        self.channels_last = channels_last
        self.runner = copy.deepcopy(self.net)
        fold_batchnorm(self.runner)
        if channels_last:
            self.runner.to(memory_format=torch.channels_last)

    def __call__(self, inputs: NetworkInputs, stage: StageTimer = no_timing) -> list[torch.Tensor]:
        net = self.runner
        with stage("encoder"):
            canvas = net.encode(*inputs)
            if self.channels_last:
                canvas = canvas.contiguous(memory_format=torch.channels_last)
        autocast = torch.autocast("cuda", dtype=torch.float16) if self.precision == "fp16" else contextlib.nullcontext()
        with autocast:
            with stage("backbone"):
                feats = net.pts_backbone(canvas)
            with stage("neck"):
                feats = net.pts_neck(feats)
            with stage("head"):
                maps = [m for level in net.pts_bbox_head(feats) for m in level]
        return [m.float() for m in maps]


def onnx_providers(device: torch.device, trt_cache_dir: Path | None = None) -> list:
    """TensorRT -> CUDA -> CPU, keeping those this onnxruntime build offers (CPU only for a CPU device)."""
    import onnxruntime as ort

    available = set(ort.get_available_providers())
    wanted: list = []
    if device.type == "cuda":
        if "TensorrtExecutionProvider" in available:
            trt_options = {"device_id": device.index or 0, "trt_fp16_enable": False}
            if trt_cache_dir is not None:
                trt_cache_dir.mkdir(parents=True, exist_ok=True)
                trt_options.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(trt_cache_dir))
            wanted.append(("TensorrtExecutionProvider", trt_options))
        if "CUDAExecutionProvider" in available:
            wanted.append(("CUDAExecutionProvider", {"device_id": device.index or 0}))
    wanted.append("CPUExecutionProvider")
    return wanted


class OnnxRuntimeBackend:
    """An exported network (see `export.py`) in onnxruntime; IO binding keeps CUDA tensors on the GPU."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, device: torch.device, trt_cache_dir: Path | None = None):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3  # onnxruntime warns about dynamic output shapes on every run
        self.session = ort.InferenceSession(str(onnx_path), options, providers=onnx_providers(device, trt_cache_dir))
        self.providers = self.session.get_providers()
        self.device = device
        self.on_gpu = device.type == "cuda" and self.providers[0] != "CPUExecutionProvider"
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def __call__(self, inputs: NetworkInputs, stage: StageTimer = no_timing) -> list[torch.Tensor]:
        with stage("network"):
            if self.on_gpu:
                return self._run_bound(inputs)
            feed = {name: t.detach().cpu().numpy() for name, t in zip(self.input_names, inputs)}
            outputs = self.session.run(self.output_names, feed)
            return [torch.from_numpy(np.ascontiguousarray(o)).to(self.device) for o in outputs]

    def _run_bound(self, inputs: NetworkInputs) -> list[torch.Tensor]:
        binding = self.session.io_binding()
        index = self.device.index or 0
        for name, tensor in zip(self.input_names, inputs):
            tensor = tensor.contiguous()
            binding.bind_input(name, "cuda", index, _numpy_dtype(tensor.dtype), tuple(tensor.shape), tensor.data_ptr())
        for name in self.output_names:
            binding.bind_output(name, "cuda", index)
        self.session.run_with_iobinding(binding)
        return [torch.from_dlpack(o.to_dlpack()) if hasattr(o, "to_dlpack") else torch.from_numpy(o.numpy()).to(self.device)
                for o in binding.get_outputs()]


def _numpy_dtype(dtype: torch.dtype) -> type:
    return {torch.float32: np.float32, torch.int64: np.int64}[dtype]
