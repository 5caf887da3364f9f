#!/usr/bin/env bash
# Starts a single-node Thicket server with its data in ./data (no configuration needed).
# The first run compiles in release mode (RocksDB and DataFusion: long on 2 cores).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bash "$here/scripts/setup.sh"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/thicket-target}"
cargo build --release --manifest-path "$here/Cargo.toml" -p thicket-api --bin thicket
exec "$CARGO_TARGET_DIR/release/thicket" serve "$@"
