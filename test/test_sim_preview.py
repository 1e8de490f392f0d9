"""The simulator stays free of ROS and torch; its bird's-eye-view preview writes a PNG."""
import json
import subprocess
import sys

import numpy as np

from regnet_pillars_ros.sim.preview import main

PROBE = """
import json, sys
import regnet_pillars_ros.sim.lidar, regnet_pillars_ros.sim.preview, regnet_pillars_ros.sim.sweeps
heavy = ("rclpy", "torch", "matplotlib")
print(json.dumps(sorted({m.split(".")[0] for m in sys.modules} & set(heavy))))
"""


def test_simulator_imports_neither_ros_nor_torch():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


def test_preview_writes_png(tmp_path, capsys):
    out = tmp_path / "sim.png"
    cloud = tmp_path / "cloud.npy"
    main(["--seed", "0", "--key", "2", "--color", "intensity", "-o", str(out), "--save-cloud",
          str(cloud)])
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(out) in capsys.readouterr().out
    points = np.load(cloud)
    assert points.dtype == np.float32 and points.shape[1] == 5
    # 11 sweeps at 20 Hz
    np.testing.assert_allclose(np.unique(points[:, 4]), np.arange(11) * 0.05, atol=1e-6)
