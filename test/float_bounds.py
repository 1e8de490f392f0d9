"""Tolerances from rounding arithmetic, for tests that compare results of different kernels.

float32: in whatever order a kernel sums (blocked, vectorised, with fused multiply-adds), a
float32 sum of n products lies within gamma(n) * sum(|a_i| * |b_i|) of the exact sum (Higham,
"Accuracy and Stability of Numerical Algorithms", 2nd ed., section 3.1). Tests compare against a
float64 reference, whose own error is 2^29 times smaller, with that bound.

float64: where two implementations of the same algebra are compared through whole layers, both
run in float64 and FLOAT64_RTOL bounds their difference.
"""
from __future__ import annotations

import torch

FLOAT32_UNIT_ROUNDOFF = 2.0 ** -24

# float64's unit roundoff (1.1e-16) times a few thousand operations behind any value is below
# 1e-12 of the largest value; 1e-10 leaves a margin of 100 and is still 1000 times tighter than
# one float32 rounding.
FLOAT64_RTOL = 1e-10


def gamma(n: int) -> float:
    """Bound on the relative error of n successive float32 roundings: n u / (1 - n u)."""
    nu = n * FLOAT32_UNIT_ROUNDOFF
    return nu / (1 - nu)


def assert_within(got: torch.Tensor, exact: torch.Tensor, bound: torch.Tensor | float,
                  what: str = "") -> None:
    """|got - exact| <= bound element by element (compared in float64); names the worst element."""
    assert got.shape == exact.shape, f"{what}: shape {tuple(got.shape)} != {tuple(exact.shape)}"
    got, exact = got.detach().double(), exact.detach().double()
    error = (got - exact).abs()
    excess = error - torch.as_tensor(bound, dtype=torch.float64)
    if excess.numel() and float(excess.max()) > 0:
        worst = tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape))
        raise AssertionError(f"{what}: error {float(error[worst]):.3g} at {worst} exceeds the "
                             f"rounding bound {float(error[worst] - excess[worst]):.3g} "
                             f"({int((excess > 0).sum())} elements over)")


def assert_close_float64(got: torch.Tensor, expected: torch.Tensor, what: str = "") -> None:
    """Two float64 results of the same algebra agree within FLOAT64_RTOL of the larger's maximum."""
    assert got.dtype == expected.dtype == torch.float64, f"{what}: compare float64 results"
    scale = (max(float(expected.detach().abs().max()), float(got.detach().abs().max()))
             if expected.numel() else 0.0)
    assert_within(got, expected, FLOAT64_RTOL * scale, what)
