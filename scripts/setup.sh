#!/usr/bin/env bash
# Set up robolearn: a .venv with Python 3.11 and the whole pinned stack: the core plus the simulators, dataset
# formats and test tools (`.[all,dev]` under scripts/constraints.txt). A core-only install elsewhere is just
# `pip install .` (README: Install). Safe to run again: it reinstalls only when pyproject.toml or the
# constraints changed since the last install.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-}
if [ -z "$python" ]; then
  for candidate in python3.11 python3 python; do
    if command -v "$candidate" >/dev/null && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      python=$candidate; break
    fi
  done
fi
[ -n "$python" ] || { echo "setup: robolearn needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$python" -m venv .venv
stamp=.venv/.robolearn-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ scripts/constraints.txt -nt "$stamp" ]; then
  echo "setup: installing robolearn and its dependencies into .venv (a few minutes the first time) ..."
  .venv/bin/python -m pip install --quiet --upgrade pip
  .venv/bin/python -m pip install --quiet -c scripts/constraints.txt -e '.[all,dev]'
  touch "$stamp"
fi
echo "setup: ready (.venv/bin/robolearn)"
