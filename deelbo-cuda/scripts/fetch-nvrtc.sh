#!/usr/bin/env bash
# Puts the NVRTC runtime compiler (libnvrtc.so.12, from NVIDIA's PyPI wheel
# nvidia-cuda-nvrtc-cu12) under .whl/nvrtc/lib at the repository root, so that the NVRTC compile
# test of deelbo-cuda can run on a machine with no CUDA toolkit and no GPU. Prints the
# LD_LIBRARY_PATH to use. Needs pip (PyPI). Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
dest="$root/.whl/nvrtc"
if ! ls "$dest"/lib/libnvrtc.so.12 >/dev/null 2>&1; then
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    python3 -m pip download --quiet --no-deps --dest "$tmp" "nvidia-cuda-nvrtc-cu12>=12.4,<13"
    python3 -m zipfile -e "$tmp"/nvidia_cuda_nvrtc_cu12-*.whl "$tmp/x"
    mkdir -p "$dest"
    rm -rf "$dest/lib"
    cp -r "$tmp/x/nvidia/cuda_nvrtc/lib" "$dest/lib"
fi
echo "export LD_LIBRARY_PATH=$dest/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
