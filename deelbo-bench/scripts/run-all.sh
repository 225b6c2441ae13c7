#!/usr/bin/env bash
# deelbo GPU checks on a machine with an NVIDIA driver and no Rust toolchain: the binaries that
# deelbo-bench/scripts/gpu-bundle.sh put next to this script. Run from the repository
# root: `bash .device-bin/run-all.sh` (RUN_CPU_BENCH=1 also runs the CPU criterion bench).
# Logs and JSON go to $OUT (or .device-bin/out). Exits non-zero if any step failed.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
out="${OUT:-$here/out}"
mkdir -p "$out"

# cudarc (CUDA 12.8 bindings) dlopens libnvrtc.so / libnvrtc.so.12 / libcuda.so.1. A CUDA 13
# install ships libnvrtc.so.13: expose whichever NVRTC is there under the name libnvrtc.so.
nvrtc="$(ls /usr/local/cuda/lib64/libnvrtc.so.1[23]* /usr/local/cuda/targets/*/lib/libnvrtc.so.1[23]* 2>/dev/null | grep -v builtins | head -1 || true)"
if [ -z "$nvrtc" ]; then
    nvrtc="$(find /usr /opt -name 'libnvrtc.so.1[23]*' -not -name '*builtins*' 2>/dev/null | head -1 || true)"
fi
shim="$(mktemp -d)"
if [ -n "$nvrtc" ]; then
    ln -sf "$nvrtc" "$shim/libnvrtc.so"
    export LD_LIBRARY_PATH="$shim:$(dirname "$nvrtc")${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    echo "NVRTC: $nvrtc"
else
    echo "NVRTC: not found (the GPU tests will fail with CudaError::NoNvrtc)"
fi
for d in /usr/local/nvidia/lib64 /usr/lib/x86_64-linux-gnu; do
    [ -e "$d/libcuda.so.1" ] && export LD_LIBRARY_PATH="$LD_LIBRARY_PATH:$d"
done
export CRITERION_HOME="${CRITERION_HOME:-/tmp/deelbo-criterion}"
nvidia-smi -L 2>/dev/null | tee "$out/gpu.txt"

failed=()
step() {
    local name="$1"
    shift
    echo
    echo "=== $name: $*"
    if "$@" 2>&1 | tee -a "$out/log.txt"; then :; else failed+=("$name"); fi
}

step tests-no-driver "$here/tests/no_driver" --nocapture
step tests-nvrtc "$here/tests/nvrtc_compile" --nocapture
step tests-noise-host "$here/tests/noise_mirror_host" --nocapture
step tests-items-host "$here/tests/kernel_items_host" --nocapture
step tests-gpu "$here/tests/gpu_fused" --nocapture --test-threads=1
step example-01 "$here/examples/01_fused_forward"
step example-02 "$here/examples/02_training_steps"
step example-03 "$here/examples/03_register_usage" sm_90
step report "$here/bin/deelbo-bench-report" --json "$out/report.json"
step criterion-gpu "$here/benches/fused_gpu" --bench --noplot
if [ "${RUN_CPU_BENCH:-0}" = 1 ]; then
    step criterion-cpu "$here/benches/fused_cpu" --bench --noplot
fi
step torch-eager python3 "$root/deelbo-bench/scripts/torch_eager.py" \
    --deelbo-json "$out/report.json" --json "$out/torch.json"
step torch-cpu python3 "$root/deelbo-bench/scripts/torch_cpu.py" \
    --deelbo-json "$out/report.json" --json "$out/torch_cpu.json"
rm -rf "$shim"

echo
if [ ${#failed[@]} -eq 0 ]; then
    echo "all steps passed; logs in $out"
else
    echo "FAILED steps: ${failed[*]}; logs in $out"
    exit 1
fi
