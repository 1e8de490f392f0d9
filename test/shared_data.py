"""Paths into ../shared beside the repository (mmdet3d fixtures, spec, real point files), which a
fresh clone may lack: tests that need them skip, naming the path (see conftest.py)."""
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
MMDET3D_FIXTURES = SHARED / "fixtures" / "mmdet3d"


def require(path: Path) -> Path:
    """``path``, or skip the test that needs it."""
    if not path.exists():
        pytest.skip(f"{path} not found")
    return path
