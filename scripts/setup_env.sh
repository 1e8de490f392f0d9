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
# Editable installs skip data_files and ignore setup.cfg's script_dir. Lay out the rest of the
# prefix as `colcon build --symlink-install` does, so the ROS tools resolve the package with
# AMENT_PREFIX_PATH=<venv>: the ament index marker, share/<pkg>/{package.xml,launch/*,config/*}
# and lib/<pkg>/<console scripts> (`ros2 run`, launch's Node(package=...)). One link per file in
# real folders: ros2 launch searches share/<pkg> with os.walk, which does not enter linked
# folders. Redone on every run, so added and removed files follow.
link_files() {  # link_files DIR FILE...: DIR's links become exactly links to FILE...
  local dir=$1; shift
  if [[ -L "$dir" ]]; then rm "$dir"; fi  # a linked folder (older setups)
  mkdir -p "$dir"
  find "$dir" -maxdepth 1 -type l -delete
  ln -s "$@" "$dir/"
}
share="$venv/share/regnet_pillars_ros"
link_files "$share" "$repo/package.xml"
link_files "$share/launch" "$repo"/launch/*.launch.py
mapfile -t configs < <(find "$repo/config" -maxdepth 1 -type f | sort)
link_files "$share/config" "${configs[@]}"
mapfile -t scripts < <("$venv/bin/python" -c 'from importlib.metadata import distribution
print("\n".join(e.name for e in distribution("regnet_pillars_ros").entry_points
                if e.group == "console_scripts"))')
link_files "$venv/lib/regnet_pillars_ros" "${scripts[@]/#/$venv/bin/}"
mkdir -p "$venv/share/ament_index/resource_index/packages"
ln -sfn "$repo/resource/regnet_pillars_ros" "$venv/share/ament_index/resource_index/packages/"

msg_key=$(digest "pip:$pip_key" scripts/build_msgs.sh $(find msg -type f | sort))
if ! is_current msgs "$msg_key"; then
  echo "== generating vision_msgs and tf2_msgs"
  bash scripts/build_msgs.sh "$venv"
  mark msgs "$msg_key"
fi
echo "== $venv is ready"
