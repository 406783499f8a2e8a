#!/usr/bin/env bash
# The GPU checks, ready for a machine with an NVIDIA GPU (the project never needs one):
#   1. a bf16 training step on the product's path (bench/training.py --throughput on CUDA:
#      tokens/s and the share of the GPU's bf16 matmul peak, measured in the same process);
#   2. vLLM's CUDA build serving the embedded model with two LoRA adapters pushed at runtime
#      (bench/vllm_lora.py --device gpu: aggregate tok/s for 1, 4 and 8 chats, base only and
#      over the adapters, against one chat on base in the same run).
# From the repository root, after `make setup` and
# `make vllm VLLM_REQUIREMENTS=requirements/vllm-gpu.txt VLLM_VENV=.venv-vllm-gpu`:
#
#   bash bench/gpu_check.sh [OUT]     # logs in OUT (default bench/out/gpu)
#
# Each step says why when it cannot run and the script goes on to the next.
set -u
OUT=${1:-bench/out/gpu}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt" ||
    echo "no nvidia-smi: is this a GPU machine?" >&2

if .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    timeout 900 .venv/bin/python bench/training.py --throughput --device cuda --kinds dpo reward \
        --steps 4 2>&1 | tee "$OUT/training.log"
else
    echo "1. skipped: this venv's torch sees no CUDA device (make setup installs the CPU build;" \
         "install torch's CUDA build into .venv for this step)." | tee "$OUT/training.log"
fi

VLLM_PY=${ASSISTANT_VLLM__PYTHON:-.venv-vllm-gpu/bin/python}
if [ -x "$VLLM_PY" ]; then
    ASSISTANT_VLLM__PYTHON=$VLLM_PY timeout 1200 .venv/bin/python bench/vllm_lora.py \
        --device gpu --tokens 128 --chats 1,4,8 2>&1 | tee "$OUT/vllm_lora.log"
else
    echo "2. skipped: no vLLM at $VLLM_PY (make vllm VLLM_REQUIREMENTS=requirements/vllm-gpu.txt" \
         "VLLM_VENV=.venv-vllm-gpu)." | tee "$OUT/vllm_lora.log"
fi
