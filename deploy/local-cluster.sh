#!/usr/bin/env bash
# Three Thicket nodes on this machine (loopback), as in the README. Data, certificates and
# logs go to ${DIR:-./local-cluster}; Ctrl-C stops all three (SIGTERM: drain and flush).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bash "$here/scripts/setup.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/thicket-target}"
cargo build --release --manifest-path "$here/Cargo.toml" -p thicket-api --bin thicket
T="$CARGO_TARGET_DIR/release/thicket"
DIR="${DIR:-./local-cluster}"
mkdir -p "$DIR"
[ -e "$DIR/certs/ca.pem" ] || "$T" certs --dir "$DIR/certs" --nodes 1,2,3
P=1=127.0.0.1:7401,2=127.0.0.1:7402,3=127.0.0.1:7403
pids=()
for i in 1 2 3; do
  "$T" serve --node-id $i --data-dir "$DIR/n$i" --http 127.0.0.1:808$i \
    --cluster 127.0.0.1:740$i --peers $P --certs-dir "$DIR/certs" >"$DIR/n$i.log" 2>&1 &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null; wait' INT TERM EXIT
echo "nodes on http://127.0.0.1:8081 8082 8083 (logs in $DIR/n*.log); Ctrl-C stops them"
wait
