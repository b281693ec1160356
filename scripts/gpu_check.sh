#!/usr/bin/env bash
# The GPU check (issue 15): on a machine with an NVIDIA GPU, its own Python 3.12, CUDA torch and numpy 2, and no
# network, run the `cuda`-marked tests and time training and batch-1 inference into docs/gpu.md (< 8 minutes).
#
#   bash scripts/gpu_check.sh --prepare   # here, with the package index: wheels for Python 3.12 -> gpu_wheels/
#   bash scripts/gpu_check.sh             # there: installs robolearn's core from gpu_wheels/ only (--no-index)
#
# The GPU run never touches an index and keeps the machine's torch and numpy: a venv with --system-site-packages
# sees them, and pip adds only the pure-Python packages the core lacks. PYTHON= picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
wheels=${ROBOLEARN_WHEELS:-gpu_wheels}

# The core's dependencies that the check needs. Left out: torch and numpy (the machine brings its own), scipy (only
# interval statistics import it), and the LeRobot-format and video-encoding libraries (pyarrow, av, imageio-ffmpeg,
# ~150 MB of wheels that nothing in the check imports); robolearn itself is installed with --no-deps.
gpu_requirements() {
  "${PYTHON_PREP:-${PYTHON:-.venv/bin/python}}" - <<'PY'
import re, tomllib
skip = {"torch", "numpy", "scipy", "pyarrow", "av", "imageio-ffmpeg"}
deps = tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]
print("\n".join(d for d in deps if re.split(r"[<>=!~ \[]", d)[0].lower() not in skip))
print("pytest>=8\npytest-timeout>=2.3")
PY
}

if [ "${1:-}" = "--prepare" ]; then
  python=${PYTHON:-.venv/bin/python}
  # the core's dependencies (torch and numpy excluded: the GPU machine brings its own), the test runner, and the
  # build backend pip needs to install robolearn from the tree
  mapfile -t reqs < <(gpu_requirements)
  reqs+=("setuptools>=77")
  mkdir -p "$wheels"
  # hydra's antlr4 runtime is published only as source: build its (pure-Python) wheel here
  "$python" -m pip wheel --quiet --no-deps --wheel-dir "$wheels" "antlr4-python3-runtime==4.9.*"
  "$python" -m pip download --quiet --dest "$wheels" --find-links "$wheels" --only-binary=:all: \
    --implementation cp --python-version 3.12 \
    --abi cp312 --abi abi3 --abi none \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform any \
    "${reqs[@]}"
  rm -f "$wheels"/numpy-*.whl  # the GPU machine has its own numpy 2 (15 MB saved: the folder must travel)
  echo "gpu_check: $(ls "$wheels" | wc -l) wheels, $(du -sh "$wheels" | cut -f1) in $wheels/ (take this folder to the GPU machine)"
  exit 0
fi

start=$SECONDS
python=${PYTHON:-python3}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
[ -d "$wheels" ] || { echo "gpu_check: no $wheels/; run 'bash scripts/gpu_check.sh --prepare' where pip can reach the index" >&2; exit 1; }
venv=${ROBOLEARN_GPU_VENV:-.gpu_venv}
[ -x "$venv/bin/python" ] || "$python" -m venv --system-site-packages "$venv"
PYTHON_PREP="$venv/bin/python" gpu_requirements > "$venv/gpu-requirements.txt"
"$venv/bin/python" -m pip install --quiet --no-index --find-links "$wheels" -r "$venv/gpu-requirements.txt"
"$venv/bin/python" -m pip install --quiet --no-index --find-links "$wheels" --no-deps -e .
"$venv/bin/python" -c 'import torch, numpy; assert torch.cuda.is_available(), "CUDA is not available to torch";
print(f"torch {torch.__version__}, numpy {numpy.__version__}, {torch.cuda.get_device_name()}")'
echo "gpu_check: installed in $((SECONDS - start)) s"

# every test file with cuda-marked tests (files that need a simulator are never collected)
mapfile -t files < <(grep -l "pytest.mark.cuda" tests/test_*.py)
status=0
mkdir -p docs
timeout 240 "$venv/bin/python" -m pytest -m cuda -q -rs -p no:cacheprovider "${files[@]}" | tee docs/gpu_tests.txt || status=$?
echo "gpu_check: tests done at $((SECONDS - start)) s (exit $status)"
timeout $((450 - (SECONDS - start))) "$venv/bin/python" scripts/bench_gpu.py --out docs/gpu.md \
  --budget-s $((420 - (SECONDS - start))) || status=$?
echo "gpu_check: finished in $((SECONDS - start)) s (exit $status); table in docs/gpu.md"
exit $status
