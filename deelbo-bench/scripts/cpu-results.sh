#!/usr/bin/env bash
# Regenerates everything in deelbo-bench/results/cpu/ with one command:
#
#   deelbo-bench/scripts/cpu-results.sh            # all cores, D = 2.5e7 and 1e8, 15 repetitions
#   THREADS=2 REPS=21 SIZES=2.5e7,1e8 OUT=/tmp/cpu deelbo-bench/scripts/cpu-results.sh
#
# 1. deelbo-bench-report (release) on the CPU only: in one process and at one thread count for
#    every row, the memory ceilings, the fused forward on every noise path, backward, backward +
#    SGD, the eager multi-pass version on the same threads and the noise alone, interleaved
#    repetition by repetition; medians, GB/s and fractions of the ceiling (report.txt/json).
# 2. The same harness on one thread at D = 1e5 (in cache): the per-core noise speed per path
#    (one_core.txt/json).
# 3. PyTorch CPU in place at the same sizes and thread count, and the ratios
#    (torch_cpu.txt/json; "skipped" without PyTorch).
# machine.txt records the CPU and the load average before and after: other processes on the
# machine slow these rows, so rerun on a quiet machine for the numbers of record.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
out="${OUT:-$root/deelbo-bench/results/cpu}"
threads="${THREADS:-$(nproc)}"
reps="${REPS:-15}"
sizes="${SIZES:-2.5e7,1e8}"
mkdir -p "$out"

cargo build --release -p deelbo-bench --bin deelbo-bench-report
report="$root/target/release/deelbo-bench-report"
{
    echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
    echo "cpu: $(lscpu 2>/dev/null | sed -n 's/^Model name: *//p'), $(nproc) cores"
    echo "avx512: $(grep -o 'avx512[a-z]*' /proc/cpuinfo 2>/dev/null | sort -u | tr '\n' ' ')"
    echo "command: THREADS=$threads REPS=$reps SIZES=$sizes deelbo-bench/scripts/cpu-results.sh"
    echo "load before: $(cat /proc/loadavg 2>/dev/null)"
} >"$out/machine.txt"

"$report" --no-gpu --sizes "$sizes" --reps "$reps" --threads "$threads" \
    --json "$out/report.json" | tee "$out/report.txt"
"$report" --no-gpu --sizes 1e5 --reps "$((reps * 4))" --threads 1 \
    --json "$out/one_core.json" | tee "$out/one_core.txt"
python3 "$root/deelbo-bench/scripts/torch_cpu.py" --deelbo-json "$out/report.json" \
    --reps "$reps" --json "$out/torch_cpu.json" | tee "$out/torch_cpu.txt"

echo "load after: $(cat /proc/loadavg 2>/dev/null)" >>"$out/machine.txt"
echo "results in $out"
