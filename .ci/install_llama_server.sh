#!/usr/bin/env bash
# Build llama.cpp's llama-server (CPU) once, outside the repository, for the remote-engine
# tests and the decode benchmark's reference column. Idempotent: prints the binary's path.
# Sources: the llama.cpp vendored in the llama-cpp-python sdist on PyPI (no git, no hub).
set -euo pipefail

VERSION=0.3.36
TOOLS="${CODEASSIST_TOOLS:-$HOME/.cache/codeassist-tools}"
SRC="$TOOLS/llama_cpp_python-$VERSION/vendor/llama.cpp"
BIN="$SRC/build/bin"

if [ -x "$BIN/llama-server" ] && [ -x "$BIN/llama-bench" ]; then
    echo "$BIN/llama-server"
    exit 0
fi
mkdir -p "$TOOLS"
if ! command -v cmake >/dev/null; then
    python3 -m pip install cmake >&2  # the PyPI wheel; into the active venv when there is one
fi
if [ ! -d "$SRC" ]; then
    download=$(mktemp -d)
    python3 -m pip download --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$download" >&2
    tar xzf "$download/llama_cpp_python-$VERSION.tar.gz" -C "$TOOLS"
    rm -rf "$download"
fi
# A CPU build of the two tools (~15-45 min on 2 cores); tests, examples, UI and curl off.
cmake -S "$SRC" -B "$SRC/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_CURL=OFF -DLLAMA_BUILD_WEBUI=OFF -DLLAMA_BUILD_UI=OFF >&2
cmake --build "$SRC/build" -j"$(nproc)" --target llama-server llama-bench >&2
echo "$BIN/llama-server"
