#!/usr/bin/env bash
# Builds every GPU-relevant test, bench, example and harness binary of deelbo in release mode on
# a machine WITH a Rust toolchain, and copies them with a runner script into .device-bin/ at the
# repository root (ignored by git), for a GPU machine WITHOUT a Rust toolchain:
#
#   deelbo-bench/scripts/gpu-bundle.sh          # here: builds, fills .device-bin/
#   bash .device-bin/run-all.sh                        # there, from the repository root
#
# run-all.sh writes its logs and JSON to $OUT (or .device-bin/out). Binaries are linked against
# glibc only; libcuda and libnvrtc are loaded at run time (run-all.sh finds them).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
dest="$root/.device-bin"
rm -rf "$dest"
mkdir -p "$dest/tests" "$dest/benches" "$dest/bin" "$dest/examples"

json="$(mktemp)"
trap 'rm -f "$json"' EXIT
cargo test --release --no-run -p deelbo-cuda --message-format=json >"$json"
cargo bench --no-run -p deelbo-bench --message-format=json >>"$json"
cargo build --release -p deelbo-cuda --examples
cargo build --release -p deelbo-bench --bin deelbo-bench-report

python3 - "$json" "$dest" <<'PY'
import json, shutil, sys, os
path, dest = sys.argv[1], sys.argv[2]
for line in open(path):
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    if msg.get("reason") != "compiler-artifact" or not msg.get("executable"):
        continue
    target = msg["target"]
    kind = target["kind"][0]
    name = target["name"]
    if kind == "test":
        sub = "tests"
    elif kind == "bench" and name.startswith("fused_"):
        sub = "benches"
    else:
        continue
    shutil.copy2(msg["executable"], os.path.join(dest, sub, name))
    print(f"{sub}/{name}")
PY
for ex in 01_fused_forward 02_training_steps 03_register_usage; do
    cp "target/release/examples/$ex" "$dest/examples/$ex"
done
cp target/release/deelbo-bench-report "$dest/bin/"
cp deelbo-bench/scripts/run-all.sh "$dest/run-all.sh"
chmod +x "$dest/run-all.sh"
du -sh "$dest"
echo "bundle ready: carry .device-bin and run 'bash .device-bin/run-all.sh' on the GPU machine"
