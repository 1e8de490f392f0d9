"""`colcon build` of the package puts its files where ROS 2 tools look for them:
the ament index marker, share/<pkg>/{package.xml,launch,config} for `ros2 launch` and
`get_package_share_directory`, console scripts in lib/<pkg> for `ros2 run`, package data."""
import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ament_index_python.packages import get_package_prefix, get_package_share_directory

from conftest import REPO

PKG = "regnet_pillars_ros"
SOURCES = ["package.xml", "setup.py", "setup.cfg", "resource", "launch", "config", PKG]
SCRIPTS = {"detector_node": f"{PKG}.ros.node:main", "regnet-pillars": f"{PKG}.cli:console_main"}


def repo_files(folder: str, pattern: str) -> list[str]:
    return sorted(p.name for p in (REPO / folder).glob(pattern) if p.is_file())


@pytest.fixture(scope="module")
def install(tmp_path_factory) -> Path:
    """Copy the package into a fresh workspace and `colcon build --merge-install` it."""
    ws = tmp_path_factory.mktemp("ws")
    for name in SOURCES:
        src, dst = REPO / name, ws / "src" / PKG / name
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        else:
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    colcon = Path(sys.executable).parent / "colcon"
    result = subprocess.run([str(colcon), "--log-base", "log", "build", "--merge-install",
                             "--base-paths", "src", "--build-base", "build", "--install-base", "install"],
                            cwd=ws, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return ws / "install"


@pytest.fixture
def ament_prefix(install, monkeypatch) -> Path:
    monkeypatch.setenv("AMENT_PREFIX_PATH", str(install))
    return install


def test_ament_index_finds_package(ament_prefix):
    assert (ament_prefix / "share/ament_index/resource_index/packages" / PKG).is_file()
    assert Path(get_package_prefix(PKG)) == ament_prefix
    share = Path(get_package_share_directory(PKG))
    assert share == ament_prefix / "share" / PKG
    assert (share / "package.xml").read_text() == (REPO / "package.xml").read_text()


def test_launch_and_config_files_in_share(ament_prefix):
    share = Path(get_package_share_directory(PKG))
    assert "fastdds_profile.xml" in repo_files("config", "*")
    for folder, pattern in (("launch", "*.launch.py"), ("config", "*")):
        assert repo_files(folder, pattern) == sorted(p.name for p in (share / folder).glob(pattern))
        for name in repo_files(folder, pattern):
            assert (share / folder / name).read_bytes() == (REPO / folder / name).read_bytes()


def test_console_scripts_where_ros2_run_looks(ament_prefix):
    lib = Path(get_package_prefix(PKG)) / "lib" / PKG
    for script in SCRIPTS:
        assert (lib / script).is_file() and os.access(lib / script, os.X_OK), script
    (egg_info,) = (ament_prefix / "lib").glob(f"python3.*/site-packages/{PKG}-*.egg-info")
    entry_points = configparser.ConfigParser(delimiters="=")
    entry_points.read(egg_info / "entry_points.txt")
    assert {k: v.strip() for k, v in entry_points["console_scripts"].items()} == SCRIPTS


def test_package_data_installed(install):
    (site,) = (install / "lib").glob("python3.*/site-packages")
    shipped = sorted(p.relative_to(REPO) for p in (REPO / PKG).rglob("*.json"))
    assert shipped, "the package ships data files (model/presets.json)"
    for rel in shipped:
        assert (site / rel).read_bytes() == (REPO / rel).read_bytes(), rel


def test_installed_cli_runs(install):
    """The `regnet-pillars` script of the install resolves its entry point and runs."""
    if not (REPO / PKG / "cli.py").exists():
        pytest.skip("regnet_pillars_ros/cli.py is not written yet")
    (site,) = (install / "lib").glob("python3.*/site-packages")
    env = dict(os.environ, PYTHONPATH=str(site))
    result = subprocess.run([str(install / "lib" / PKG / "regnet-pillars"), "--help"], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "usage" in result.stdout.lower()
