#!/usr/bin/env bash
# The test command: set-up, formatting, lints, then every test of the workspace.
# Reuses a target directory outside the clone when one exists (builds take ~30 min cold).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/thicket-target}"
# Property tests: bounded case counts so CI stays well inside its time limit.
export PROPTEST_CASES="${PROPTEST_CASES:-64}"
start=$(date +%s)
echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy (warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace --all-targets
echo "== done in $(( $(date +%s) - start ))s"
