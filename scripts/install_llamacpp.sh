#!/usr/bin/env bash
# Builds llama-cpp-python (llama.cpp in-process, and its OpenAI-compatible server) into the
# venv once, and copies llama.cpp's conversion scripts (checkpoints and LoRA adapters to GGUF)
# from the same sdist into <venv>/share/llama.cpp-convert. PyPI ships llama-cpp-python only
# as an sdist, so it compiles here (~6-12 min on 2 cores; pip keeps the wheel in its cache).
#
# Never fails setup: without a compiler, or when the build fails, it says so and the app
# runs on the transformers engine (with a notice) until it is built.
set -u
VENV=${1:-.venv}
VERSION=0.3.36
BIN="$VENV/bin"

if ! command -v cmake >/dev/null 2>&1 || ! command -v c++ >/dev/null 2>&1; then
    echo "setup: no C++ compiler or no cmake here, so llama.cpp cannot be built: the app will" \
         "run on the slower transformers engine. Install them (Debian: apt-get install" \
         "build-essential cmake) and run \`make setup\` again." >&2
    exit 0
fi

if ! "$BIN/python" -c "import llama_cpp" >/dev/null 2>&1; then
    echo "setup: building llama.cpp (llama-cpp-python $VERSION) once for this venv:" \
         "about 6-12 minutes on 2 cores..."
    start=$(date +%s)
    if ! "$BIN/pip" install --quiet "llama-cpp-python[server]==$VERSION"; then
        echo "setup: building llama-cpp-python failed (see above): the app will run on the" \
             "slower transformers engine. Fix the build and run \`make setup\` again." >&2
        exit 0
    fi
    echo "setup: llama.cpp built in $(( $(date +%s) - start )) s."
fi

# pip keeps the built wheel in its cache, and the build is compiled for the CPU it was made on
# (GGML_NATIVE): a cached wheel from another CPU dies of an illegal instruction (exit 132 =
# 128 + SIGILL) on its first answer. Try it on the embedded model; rebuild without the cache
# if it dies so.
gguf=$("$BIN/python" -c "from assistant.engines.model_files import embedded_gguf; print(embedded_gguf())" 2>/dev/null)
if [ -n "$gguf" ]; then
    "$BIN/python" -m assistant.engines.llamacpp_probe "$gguf" plain 1 >/dev/null 2>&1
    if [ $? -eq 132 ]; then
        echo "setup: the llama.cpp build (from pip's cache) was compiled for another CPU;" \
             "building it again for this one (about 6-12 minutes)..."
        "$BIN/pip" install --quiet --no-cache-dir --force-reinstall --no-deps \
            "llama-cpp-python[server]==$VERSION" ||
        echo "setup: rebuilding llama-cpp-python failed (see above): the app will check it at" \
             "start and run on the transformers engine." >&2
    fi
fi

dest="$VENV/share/llama.cpp-convert"
if [ ! -f "$dest/convert_lora_to_gguf.py" ]; then
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    "$BIN/pip" download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$tmp" &&
    src="llama_cpp_python-$VERSION/vendor/llama.cpp" &&
    tar -xzf "$tmp/llama_cpp_python-$VERSION.tar.gz" -C "$tmp" \
        "$src/convert_hf_to_gguf.py" "$src/convert_lora_to_gguf.py" "$src/conversion" "$src/gguf-py" &&
    mkdir -p "$tmp/out" && cp -r "$tmp/$src/." "$tmp/out/" &&
    rm -rf "$dest" && mkdir -p "$(dirname "$dest")" && mv "$tmp/out" "$dest" ||
    echo "setup: could not copy llama.cpp's conversion scripts: checkpoint folders and trained" \
         "versions will not be servable by llama.cpp until \`make setup\` succeeds." >&2
fi
exit 0
