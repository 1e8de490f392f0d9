#!/usr/bin/env bash
# Build the message packages under msg/ with the pip rosidl toolchain and install them into a venv.
# Usage: scripts/build_msgs.sh VENV
# Needs cmake, gcc and g++ on PATH. Fixes from ../shared/notes/ros-on-pypi.md:
# AMENT_PREFIX_PATH and CMAKE_PREFIX_PATH point at the venv, Python3_EXECUTABLE is the venv's,
# BUILD_TESTING is off, and the wheels' cmake files lose their manylinux include paths.
set -euo pipefail

venv=$(cd "$1" && pwd)
repo=$(cd "$(dirname "$0")/.." && pwd)
py="$venv/bin/python"
build_root=$(mktemp -d)
trap 'rm -rf "$build_root"' EXIT

# The wheels were built in a manylinux image; point their exported include dirs at this venv.
py_inc=$("$py" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')
np_inc=$("$py" -c 'import numpy; print(numpy.get_include())')
{ grep -rlZ --include='*.cmake' 'cp311-cp311' "$venv/share" || true; } | xargs -0 -r sed -i \
  -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" \
  -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g"

# Run a command with its output in a log; show the log's end if it fails.
quiet() {
  local log="$build_root/last.log"
  "$@" >"$log" 2>&1 || { tail -n 60 "$log" >&2; echo "error: failed: $*" >&2; return 1; }
}

export AMENT_PREFIX_PATH="$venv"
# Both packages depend only on the wheels' message packages, so the order is free.
for pkg in tf2_msgs vision_msgs; do
  echo "== building $pkg into $venv"
  quiet cmake -S "$repo/msg/$pkg" -B "$build_root/$pkg" -Wno-dev \
    -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_INSTALL_PREFIX="$venv" \
    -DCMAKE_PREFIX_PATH="$venv" \
    -DPython3_EXECUTABLE="$py" \
    -DBUILD_TESTING=OFF
  quiet cmake --build "$build_root/$pkg" -j "${BUILD_JOBS:-2}"
  quiet cmake --install "$build_root/$pkg"
done
