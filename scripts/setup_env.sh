#!/usr/bin/env bash
# Create or update the project venv (default: <repo>/.venv; override with VENV=...):
#   1. the venv itself, from the system Python 3.11 (override with PYTHON=...);
#   2. the pinned packages of requirements.txt + constraints.txt, in one pip command;
#   3. this package, editable, without dependencies;
#   4. the message packages under msg/ (vision_msgs, tf2_msgs), built into the venv prefix.
# Each step leaves a stamp in the venv keyed on a hash of its inputs and is skipped while the
# hash matches, so a second run with nothing changed takes a second or two.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$repo/.venv}
python=${PYTHON:-python3.11}
stamps="$venv/.setup-stamps"
cd "$repo"

# Hash of the names and contents of files; a word that is no file counts by its name.
digest() { for f in "$@"; do echo "$f"; [[ -f "$f" ]] && cat "$f"; done | sha256sum | cut -d' ' -f1; }
is_current() { [[ -f "$stamps/$1" && "$(cat "$stamps/$1")" == "$2" ]]; }
mark() { mkdir -p "$stamps" && echo "$2" > "$stamps/$1"; }
# pip, without the warnings an older pip prints for every package missing from a local file index.
pip() {
  "$venv/bin/python" -m pip --disable-pip-version-check "$@" 2>&1 \
    | { grep -v "^WARNING: Location 'file:" || true; }
}

if [[ ! -x "$venv/bin/python" ]]; then
  echo "== creating $venv with $python"
  "$python" -m venv "$venv"
fi
"$venv/bin/python" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' \
  || { echo "error: $venv must use Python 3.11 (the ROS wheels are cp311)" >&2; exit 1; }

pip_key=$(digest requirements.txt constraints.txt)
if ! is_current pip "$pip_key"; then
  echo "== installing pinned packages (requirements.txt)"
  reqs=$(mktemp)
  trap 'rm -f "$reqs"' EXIT
  if "$venv/bin/python" -c 'import sys, torch; sys.exit(tuple(map(int, torch.__version__.split(".")[:2])) < (2, 4))' 2>/dev/null; then
    echo "   keeping the venv's torch $("$venv/bin/python" -c 'import torch; print(torch.__version__)')"
    grep -v -E '^torch==' requirements.txt > "$reqs"
  else
    cp requirements.txt "$reqs"
  fi
  pip install -q -r "$reqs" -c constraints.txt
  mark pip "$pip_key"
fi

pkg_key=$(digest setup.py setup.cfg package.xml)
if ! is_current package "$pkg_key"; then
  echo "== installing regnet_pillars_ros (editable)"
  pip install -q --no-deps --no-build-isolation -e .
  mark package "$pkg_key"
fi
# Editable installs skip data_files: link share/ like `colcon build --symlink-install` would, so
# get_package_share_directory() finds launch/ and config/ with AMENT_PREFIX_PATH=<venv>.
share="$venv/share/regnet_pillars_ros"
mkdir -p "$share" "$venv/share/ament_index/resource_index/packages"
for item in package.xml launch config; do ln -sfn "$repo/$item" "$share/$item"; done
ln -sfn "$repo/resource/regnet_pillars_ros" "$venv/share/ament_index/resource_index/packages/regnet_pillars_ros"

msg_key=$(digest "pip:$pip_key" scripts/build_msgs.sh $(find msg -type f | sort))
if ! is_current msgs "$msg_key"; then
  echo "== generating vision_msgs and tf2_msgs"
  bash scripts/build_msgs.sh "$venv"
  mark msgs "$msg_key"
fi
echo "== $venv is ready"
